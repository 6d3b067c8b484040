"""Forward hooks: functools.partial callbacks, input/output reads, clean removal, eval mode."""

import functools

import pytest
import torch
from torch import nn

from skh2t.features.hooks import eval_mode, hooks_attached
from skh2t.features.taps import TapRef


class TupleOut(nn.Module):
    def forward(self, x):
        return x * 2, "extra"


def test_hooks_are_partials_and_are_removed():
    model = nn.Sequential(nn.Linear(3, 3), TupleOut())
    taps = [TapRef("0", "input"), TapRef("1")]
    seen = {}

    def record(index, module, tensor):
        seen[index] = tensor.clone()

    with hooks_attached(model, taps, record):
        pre_hooks = list(model[0]._forward_pre_hooks.values())
        hooks = list(model[1]._forward_hooks.values())
        assert all(isinstance(hook, functools.partial) for hook in pre_hooks + hooks)
        x = torch.ones(2, 3)
        output, _ = model(x)
    assert torch.equal(seen[0], x)
    assert torch.equal(seen[1], output)  # the first tensor of a returned tuple
    assert not model[0]._forward_pre_hooks
    assert not model[1]._forward_hooks


def test_hooks_are_removed_when_the_forward_pass_fails():
    model = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(RuntimeError), hooks_attached(model, [TapRef("0")], print):
        model(torch.ones(2, 4))  # wrong width
    assert not model[0]._forward_hooks


def test_a_module_that_passes_no_tensor_fails_clearly():
    class NoTensor(nn.Module):
        def forward(self, x):
            return None

    model = nn.Sequential(NoTensor())
    with (
        pytest.raises(TypeError, match="tapped NoTensor passed no tensor"),
        hooks_attached(model, [TapRef("0")], print),
    ):
        model(torch.ones(1))


def test_eval_mode_restores_each_module_even_after_errors():
    model = nn.Sequential(nn.Dropout(), nn.BatchNorm1d(2)).train()
    model[1].eval()
    modes = []

    def fail_inside():
        with eval_mode(model):
            modes.extend(module.training for module in model.modules())
            raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        fail_inside()
    assert modes == [False, False, False]
    assert model.training
    assert model[0].training
    assert not model[1].training
