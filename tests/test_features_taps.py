"""Default Head2Toe taps per family, explicit names and globs, layouts and tap validation."""

import re

import numpy as np
import pytest
import timm
import torch
from timm.layers import LayerNorm2d
from torch import nn

from skh2t.features import IntermediateFeatureTransformer, default_taps, model_family
from skh2t.features.taps import (
    TapRef,
    describe_modules,
    infer_layout,
    resolve_layers,
)

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)


def meta_model(name):
    """Build a timm model on the meta device: structure only, no memory, no init cost."""
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False)


def fitted(backbone, **params):
    params = {"weights": None, "image_size": 32, "target_size": 64, **params}
    return IntermediateFeatureTransformer(backbone=backbone, **params).fit(IMAGES)


def names(taps):
    return [tap.name for tap in taps]


# --- Head2Toe defaults on the real architectures (structure only) ---------------------------


def test_resnet50_has_the_52_taps_of_the_official_code():
    model = meta_model("resnet50")
    taps = names(default_taps(model))
    assert model_family(model) == "resnet"
    assert len(taps) == 52
    assert taps[0] == "act1"  # stem output
    convs = [
        f"layer{stage}.{block}.conv{conv}:input"
        for stage, blocks in zip((1, 2, 3, 4), (3, 4, 6, 3), strict=True)
        for block in range(blocks)
        for conv in (1, 2, 3)
    ]
    assert taps[1:49] == convs  # the input of each of the three convolutions of every unit
    assert taps[49:] == ["layer4", "fc:input", "fc"]  # final map, pre-logits, logits


def test_vit_b16_has_53_taps():
    model = meta_model("vit_base_patch16_224")
    taps = names(default_taps(model))
    assert model_family(model) == "vit"
    assert len(taps) == 53
    assert taps[:2] == ["patch_embed", "pos_drop"]  # embedding outputs
    per_block = [
        [f"blocks.{i}.norm1", f"blocks.{i}.attn", f"blocks.{i}.mlp.fc2:input", f"blocks.{i}.mlp"]
        for i in range(12)
    ]
    assert taps[2:50] == [tap for block in per_block for tap in block]
    assert taps[50:] == ["norm", "head:input", "head"]


@pytest.mark.parametrize(
    ("name", "family", "n_taps", "final_map"),
    [
        # stem + DS block (2 convs) + 15 inverted residuals x 3 convs + final map + head (2)
        ("efficientnet_b0", "efficientnet", 51, "bn2"),
        ("tf_efficientnet_lite0", "efficientnet", 51, "bn2"),
        # stem + DS (2) + 14 IR x 3 + last ConvBnAct (1) + final map + head (2)
        ("mobilenetv3_large_100", "mobilenetv3", 49, "blocks"),
        # stem + 18 blocks x 3 (conv_dw, fc1, fc2 inputs) + 4 stage outputs + head (2)
        ("convnext_tiny", "convnext", 61, "stages.3"),
    ],
)
def test_convolutional_families(name, family, n_taps, final_map):
    model = meta_model(name)
    taps = names(default_taps(model))
    assert model_family(model) == family
    assert len(taps) == n_taps
    assert taps[-3:] == [final_map, *taps[-2:]]
    assert taps[-2].endswith(":input")  # pre-logits: the classifier's input
    assert not taps[-1].endswith(":input")  # logits
    assert all(".se." not in tap for tap in taps)  # squeeze-excitation gates are not taps


def test_head_without_classifier_gives_pre_logits_only():
    with torch.device("meta"):
        model = timm.create_model("resnet50", pretrained=False, num_classes=0)
    assert names(default_taps(model))[-2:] == ["layer4", "fc:input"]


# --- the defaults on tiny models, through a fitted transformer -------------------------------


def test_test_resnet_taps_and_shapes():
    transformer = fitted("test_resnet")
    assert transformer.backbone_family_ == "resnet"
    assert names(transformer.taps_) == names(default_taps(transformer.backbone_))
    by_name = {tap.name: tap for tap in transformer.taps_}
    assert by_name["act1"].layout == "nchw"
    assert by_name["fc"].raw_shape == (1000,)
    assert by_name["fc:input"].layout == "nc"


def test_test_vit_taps_are_token_maps():
    transformer = fitted("test_vit")
    assert transformer.backbone_family_ == "vit"
    layouts = {tap.name: tap.layout for tap in transformer.taps_}
    assert layouts["blocks.0.attn"] == "nlc"
    assert layouts["blocks.0.mlp.fc2:input"] == "nlc"
    assert layouts["head"] == "nc"
    # image_size 32 with 16 px patches: 4 patches + the class token
    assert {tap.name: tap.raw_shape for tap in transformer.taps_}["pos_drop"][0] == 5


def test_test_efficientnet_drops_the_block_input_that_is_the_stem_output():
    transformer = fitted("test_efficientnet")
    fitted_names = names(transformer.taps_)
    static_names = names(default_taps(transformer.backbone_))
    assert "bn1" in fitted_names
    assert "blocks.0.0.conv:input" in static_names
    assert "blocks.0.0.conv:input" not in fitted_names  # the very same tensor as bn1's output
    assert fitted_names == [name for name in static_names if name != "blocks.0.0.conv:input"]


def test_convnext_mlp_taps_are_channels_last():
    transformer = fitted("test_convnext")
    layouts = {tap.name: tap.layout for tap in transformer.taps_}
    assert layouts["stages.1.blocks.0.mlp.fc1:input"] == "nhwc"
    assert layouts["stages.1.blocks.0.conv_dw:input"] == "nchw"
    assert layouts["head.fc"] == "nc"


class SmallNet(nn.Module):
    """A plain module: the generic default taps apply."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))  # `act` is shared: it runs twice
        return self.fc(self.pool(x).flatten(1))


def test_generic_fallback_reads_layer_inputs_and_the_output():
    model = SmallNet()
    assert model_family(model) == "generic"
    static = names(default_taps(model))
    assert static == ["conv1:input", "conv2:input", "fc:input", "unused:input", "output"]
    transformer = IntermediateFeatureTransformer(backbone=model, image_size=16, target_size=64)
    transformer.fit(IMAGES)
    # conv1's input is the image itself and `unused` never runs: both dropped from the defaults
    assert names(transformer.taps_) == ["conv2:input", "fc:input", "output"]
    assert transformer.taps_[-1].raw_shape == (5,)


# --- explicit names, globs and their errors ---------------------------------------------------


def test_names_globs_and_input_suffix():
    model = meta_model("test_resnet")
    taps = resolve_layers(model, ["layer1.0", "layer*.0.conv1:input", "fc", "layer1.0"])
    assert names(taps) == [
        "layer1.0",
        "layer1.0.conv1:input",
        "layer2.0.conv1:input",
        "layer3.0.conv1:input",
        "layer4.0.conv1:input",
        "fc",
    ]
    assert resolve_layers(model, "fc:output") == [TapRef("fc")]
    assert resolve_layers(model, "output") == [TapRef("")]


def test_unknown_layer_lists_close_and_available_names():
    model = meta_model("test_resnet")
    with pytest.raises(ValueError, match=r"named 'layer1.0.conv9'") as error:
        resolve_layers(model, ["layer1.0.conv9"])
    message = str(error.value)
    close_names = message.split("Close names: ")[1].split(". Available")[0]
    assert "layer1.0.conv1" in close_names.split(", ")
    assert re.search(r"Available modules \(\d+\): conv1, conv1.0", message)
    with pytest.raises(ValueError, match=r"No module of ResNet matches the pattern 'block\*'"):
        resolve_layers(model, "block*")
    with pytest.raises(ValueError, match="Unknown suffix"):
        resolve_layers(model, "fc:grad")
    with pytest.raises(ValueError, match="layers is empty"):
        resolve_layers(model, [])
    with pytest.raises(TypeError, match="must be strings"):
        resolve_layers(model, [3])


def test_module_listing_is_truncated():
    message = describe_modules([f"m{i}" for i in range(100)], limit=10)
    assert message.startswith("Available modules (100): m0, m1,")
    assert "... and 90 more" in message
    assert "m50" not in message


def test_unknown_layer_error_through_the_transformer():
    transformer = IntermediateFeatureTransformer(
        backbone="test_resnet", weights=None, layers="nope"
    )
    with pytest.raises(ValueError, match="No module of ResNet is named 'nope'"):
        transformer.fit(IMAGES)


def test_explicit_shared_or_unused_modules_fail_clearly():
    transformer = IntermediateFeatureTransformer(backbone=SmallNet(), layers=["act"], image_size=8)
    with pytest.raises(ValueError, match="'act' runs 2 times per forward pass"):
        transformer.fit(IMAGES)
    transformer.set_params(layers=["fc", "unused"])
    with pytest.raises(ValueError, match="'unused' did not run"):
        transformer.fit(IMAGES)


def test_explicit_taps_may_repeat_a_tensor():
    transformer = fitted("test_resnet", layers=["maxpool", "layer1.0.conv1:input"])
    assert names(transformer.taps_) == ["maxpool", "layer1.0.conv1:input"]
    features = transformer.transform(IMAGES)
    first, second = transformer.taps_
    np.testing.assert_array_equal(features[:, first.columns], features[:, second.columns])


class FiveD(nn.Module):
    def __init__(self):
        super().__init__()
        self.expand = nn.Identity()

    def forward(self, x):
        return self.expand(x[:, :, None]).mean(dim=(2, 3, 4))


def test_explicit_unpoolable_activation_fails_clearly():
    transformer = IntermediateFeatureTransformer(backbone=FiveD(), layers="expand", image_size=8)
    with pytest.raises(ValueError, match="gives 5-D activations"):
        transformer.fit(IMAGES)


# --- layouts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "hook", "rank", "expected"),
    [
        (nn.Conv2d(3, 3, 1), "input", 4, "nchw"),
        (nn.Linear(3, 3), "input", 4, "nhwc"),
        (nn.Linear(3, 3), "output", 3, "nlc"),
        (nn.LayerNorm(3), "output", 4, "nhwc"),
        (LayerNorm2d(3), "output", 4, "nchw"),
        (nn.Conv1d(3, 3, 1), "input", 3, "ncl"),
        (nn.BatchNorm1d(3), "output", 3, "ncl"),
        (nn.ReLU(), "output", 2, "nc"),
        (nn.ReLU(), "output", 5, None),
    ],
)
def test_infer_layout(module, hook, rank, expected):
    assert infer_layout(module, hook, rank) == expected


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning:timm.layers.interpolate")
def test_windowed_attention_activations_are_not_per_image():
    """MaxViT attends within windows: its qkv inputs have one row per window, not per image."""
    qkv = "stages.0.blocks.0.attn_block.attn.qkv"
    auto = fitted("test_maxvit", image_size=64)
    assert auto.backbone_family_ == "generic"
    assert f"{qkv}:input" in names(default_taps(auto.backbone_))
    assert f"{qkv}:input" not in names(auto.taps_)  # (in the last stage, one window per image)
    explicit = IntermediateFeatureTransformer(
        backbone="test_maxvit", weights=None, image_size=64, layers=[f"{qkv}:input"]
    )
    with pytest.raises(ValueError, match="does not hold one row per image"):
        explicit.fit(IMAGES)


def test_mobilenetv4_blocks_contribute_their_nested_convolutions():
    model = meta_model("mobilenetv4_conv_small")
    taps = names(default_taps(model))
    assert model_family(model) == "mobilenetv3"
    assert "blocks.2.0.dw_start.conv:input" in taps
    assert "blocks.2.0.pw_exp.conv:input" in taps
