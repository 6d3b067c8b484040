"""Head probing: training the linear head on frozen penultimate features, and its energy."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from skh2t.finetune.network import iterate_minibatches
from skh2t.finetune.training import cpu_state


@dataclass(frozen=True)
class ProbeSettings:
    """How head probing trains: Adam's learning rate, the batch size and the probing loss."""

    lr: float
    batch_size: int
    label_smoothing: float = 0.0
    temperature: float = 1.0


@dataclass(frozen=True)
class TargetEnergy:
    """Where head probing stops: a training accuracy reached or a training loss reached.

    Either bound may be ``None``; probing stops at the first step where one that
    is set holds (accuracy ``>= accuracy``, loss ``<= loss``).
    """

    accuracy: float | None = None
    loss: float | None = None

    def __str__(self) -> str:
        bounds = [f"accuracy >= {self.accuracy:g}"] if self.accuracy is not None else []
        bounds += [f"loss <= {self.loss:g}"] if self.loss is not None else []
        return "training " + " or ".join(bounds) if bounds else "none"

    def reached(self, energy: dict[str, float]) -> bool:
        """Whether ``energy`` (as :func:`head_energy` returns it) meets the target."""
        return (self.accuracy is not None and energy["accuracy"] >= self.accuracy) or (
            self.loss is not None and energy["loss"] <= self.loss
        )


@dataclass(frozen=True)
class ProbeToTarget:
    """What :func:`probe_to_target` did: steps and epochs begun, whether the target was met."""

    steps: int
    epochs: int
    reached: bool
    energy: dict[str, float]


def train_probe(
    head: nn.Linear,
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int,
    settings: ProbeSettings,
    generator: torch.Generator,
    snapshots: Iterable[int] = (),
) -> dict[int, dict[str, torch.Tensor]]:
    """Train ``head`` in place for ``epochs`` epochs of Adam on frozen ``features``.

    The probing loss is the cross-entropy of ``logits / temperature`` with
    ``label_smoothing``. Returns copies of the head's state after every epoch
    count in ``snapshots`` (0 is the initial head), so a sweep over probing
    lengths costs one probe run.
    """
    wanted = set(snapshots)
    saved: dict[int, dict[str, torch.Tensor]] = {}
    if 0 in wanted:
        saved[0] = cpu_state(head)
    for epoch, last_of_epoch in _probe_steps(
        head, features, targets, epochs=epochs, settings=settings, generator=generator
    ):
        if last_of_epoch and epoch in wanted:
            saved[epoch] = cpu_state(head)
    return saved


def probe_to_target(
    head: nn.Linear,
    features: torch.Tensor,
    targets: torch.Tensor,
    target: TargetEnergy,
    *,
    max_epochs: int,
    settings: ProbeSettings,
    generator: torch.Generator,
) -> ProbeToTarget:
    """Train ``head`` in place until its energy on ``features`` meets ``target``.

    The energy (:func:`head_energy`, the plain cross-entropy and accuracy on
    all of ``features``) is checked before the first step and after every
    step, so probing stops within one minibatch of the target; at most
    ``max_epochs`` epochs. This is the cheap probing rule of Ren et al.
    (2023): one probe run and one fine-tuning, however mild the target.

    Examples
    --------
    >>> features = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(8, 1)
    >>> targets = torch.tensor([0, 1]).repeat(8)
    >>> head = nn.Linear(2, 2)
    >>> _ = head.weight.data.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    >>> result = probe_to_target(
    ...     head, features, targets, TargetEnergy(accuracy=1.0), max_epochs=50,
    ...     settings=ProbeSettings(lr=0.1, batch_size=4), generator=torch.Generator(),
    ... )
    >>> result.reached, result.energy["accuracy"], 0 < result.steps < 200
    (True, 1.0, True)
    """
    energy = head_energy(head, features, targets)
    steps, epochs_begun = 0, 0
    if not target.reached(energy):
        for epochs_begun, _ in _probe_steps(  # noqa: B007 (read after the loop)
            head, features, targets, epochs=max_epochs, settings=settings, generator=generator
        ):
            steps += 1
            energy = head_energy(head, features, targets)
            if target.reached(energy):
                break
    return ProbeToTarget(steps, epochs_begun, target.reached(energy), energy)


def _probe_steps(
    head: nn.Linear,
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int,
    settings: ProbeSettings,
    generator: torch.Generator,
) -> Iterator[tuple[int, bool]]:
    """Adam steps on the probing loss; yields ``(epoch, last step of the epoch)`` after each."""
    if epochs == 0:
        return
    optimizer = torch.optim.Adam(head.parameters(), lr=settings.lr)
    head.train()
    for epoch in range(1, epochs + 1):
        batches = iterate_minibatches(features.shape[0], settings.batch_size, generator)
        for position, index in enumerate(batches):
            logits = head(features[index]) / settings.temperature
            loss = F.cross_entropy(logits, targets[index], label_smoothing=settings.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            yield epoch, position == len(batches) - 1


@torch.no_grad()
def head_energy(head: nn.Linear, features: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Training loss (plain cross-entropy) and accuracy of ``head`` on frozen ``features``.

    This is the "energy" of Ren et al. (2023): what the head leaves for
    fine-tuning to reduce when fine-tuning starts.

    Examples
    --------
    >>> head = nn.Linear(2, 2)
    >>> _ = head.weight.data.zero_(), head.bias.data.zero_()
    >>> energy = head_energy(head, torch.eye(2), torch.tensor([0, 1]))
    >>> round(energy["loss"], 4), energy["accuracy"]
    (0.6931, 0.5)
    """
    logits = head(features)
    return {
        "loss": float(F.cross_entropy(logits, targets)),
        "accuracy": float((logits.argmax(dim=1) == targets).double().mean()),
    }
