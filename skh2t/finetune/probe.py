"""Head probing: training the linear head on frozen penultimate features, and its energy."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from skh2t.finetune.network import iterate_minibatches


def train_probe(
    head: nn.Linear,
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
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
        saved[0] = _copy_state(head)
    if epochs == 0:
        return saved
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    head.train()
    for epoch in range(1, epochs + 1):
        for index in iterate_minibatches(features.shape[0], batch_size, generator):
            logits = head(features[index]) / temperature
            loss = F.cross_entropy(logits, targets[index], label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if epoch in wanted:
            saved[epoch] = _copy_state(head)
    return saved


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


def _copy_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}
