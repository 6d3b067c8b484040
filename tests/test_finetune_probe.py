"""Head probing to a target energy: it stops at the first step that meets the target."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from skh2t.finetune.probe import (
    ProbeSettings,
    TargetEnergy,
    _probe_steps,
    head_energy,
    probe_to_target,
    train_probe,
)

SETTINGS = ProbeSettings(lr=0.01, batch_size=16)


@pytest.fixture
def problem():
    generator = torch.Generator().manual_seed(0)
    targets = torch.arange(96) % 3
    features = torch.randn(96, 8, generator=generator) + 1.5 * nn.functional.one_hot(targets, 8)
    return features, targets


def seeded_head() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(8, 3)


@pytest.mark.parametrize("target", [TargetEnergy(accuracy=0.8), TargetEnergy(loss=0.7)])
def test_stops_at_the_first_step_that_meets_the_target(problem, target):
    features, targets = problem
    head = seeded_head()
    result = probe_to_target(
        head,
        features,
        targets,
        target,
        max_epochs=100,
        settings=SETTINGS,
        generator=torch.Generator().manual_seed(1),
    )
    assert result.reached
    assert result.steps > 1
    assert result.energy == head_energy(head, features, targets)
    assert result.epochs == -(-result.steps // 6)  # 96 / 16 = 6 steps per epoch

    replay = seeded_head()
    steps = _probe_steps(
        replay,
        features,
        targets,
        epochs=100,
        settings=SETTINGS,
        generator=torch.Generator().manual_seed(1),
    )
    for _ in itertools.islice(steps, result.steps - 1):
        pass
    assert not target.reached(head_energy(replay, features, targets))
    next(steps)
    assert torch.equal(replay.weight, head.weight)


def test_a_head_that_already_meets_the_target_is_not_trained(problem):
    features, targets = problem
    head = seeded_head()
    before = head.weight.detach().clone()
    loss = head_energy(head, features, targets)["loss"]
    result = probe_to_target(
        head,
        features,
        targets,
        TargetEnergy(loss=loss + 1e-6),
        max_epochs=5,
        settings=SETTINGS,
        generator=torch.Generator(),
    )
    assert (result.steps, result.epochs, result.reached) == (0, 0, True)
    assert torch.equal(head.weight, before)


def test_an_unreachable_target_runs_max_epochs_like_train_probe(problem):
    features, targets = problem
    head, reference = seeded_head(), seeded_head()
    result = probe_to_target(
        head,
        features,
        targets,
        TargetEnergy(accuracy=1.0, loss=1e-9),
        max_epochs=3,
        settings=SETTINGS,
        generator=torch.Generator().manual_seed(2),
    )
    snapshot = train_probe(
        reference,
        features,
        targets,
        epochs=3,
        settings=SETTINGS,
        generator=torch.Generator().manual_seed(2),
        snapshots=[3],
    )[3]
    assert not result.reached
    assert (result.steps, result.epochs) == (18, 3)
    assert torch.equal(head.weight, snapshot["weight"])


def test_either_bound_of_the_target_is_enough():
    target = TargetEnergy(accuracy=0.9, loss=0.5)
    assert target.reached({"accuracy": 0.95, "loss": 1.0})
    assert target.reached({"accuracy": 0.5, "loss": 0.4})
    assert not target.reached({"accuracy": 0.85, "loss": 0.6})
    assert not TargetEnergy().reached({"accuracy": 1.0, "loss": 0.0})


def test_a_target_reads_as_its_bounds():
    assert str(TargetEnergy(accuracy=0.9, loss=0.5)) == "training accuracy >= 0.9 or loss <= 0.5"
    assert str(TargetEnergy(loss=0.01)) == "training loss <= 0.01"
