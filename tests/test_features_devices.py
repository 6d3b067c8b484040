"""The device parameter: devices this machine cannot run are refused before any work."""

import numpy as np
import pytest
import torch

from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.devices import available_devices, resolve_device, resolve_runtime

TINY = {"backbone": "test_resnet", "weights": None, "image_size": 32, "target_size": 64}
IMAGES = np.random.default_rng(0).integers(0, 256, (4, 24, 24, 3), dtype=np.uint8)


@pytest.fixture
def no_accelerator(monkeypatch):
    for kind in ("cuda", "mps", "xpu"):
        monkeypatch.setattr(getattr(torch, kind), "is_available", lambda: False)


@pytest.mark.parametrize(
    ("device", "problem"),
    [
        ("mps", "device='mps' but MPS is not available here"),
        ("xpu:0", "device='xpu:0' but XPU is not available here"),
        ("meta", "device='meta' cannot run a backbone: a 'meta' device holds no data"),
    ],
)
def test_a_device_this_machine_cannot_run_is_a_value_error(device, problem, no_accelerator):
    with pytest.raises(ValueError, match=rf"^{problem}; use 'cpu' or 'auto'\.$"):
        resolve_device(device)
    assert available_devices() == ["cpu", "auto"]


def test_the_message_lists_the_devices_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.mps, "is_available", lambda: False)
    assert available_devices()[:2] == ["cpu", "cuda"]
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"'cuda:3' but this machine has 1 CUDA device\(s\); use "):
        resolve_device("cuda:3")
    with pytest.raises(ValueError, match=r"use 'cpu', 'cuda'.* or 'auto'\.$"):
        resolve_device("meta")


def test_a_model_of_an_absent_accelerator_falls_back_but_meta_never(no_accelerator):
    with pytest.warns(UserWarning, match="MPS is not available here; running on the CPU"):
        assert resolve_runtime("mps", "float32", fallback_to_cpu=True).device.type == "cpu"
    with pytest.raises(ValueError, match="'meta' device holds no data"):
        resolve_device("meta", fallback_to_cpu=True)


@pytest.mark.parametrize("device", ["mps", "meta"])
def test_fit_refuses_the_device_before_loading_the_backbone(device, no_accelerator, monkeypatch):
    from skh2t.features import transformer as transformer_module

    def refuse(*args, **kwargs):
        raise AssertionError("the backbone was loaded")

    monkeypatch.setattr(transformer_module, "load_backbone", refuse)
    with pytest.raises(ValueError, match=f"device='{device}'"):
        IntermediateFeatureTransformer(**TINY, device=device).fit(IMAGES)
