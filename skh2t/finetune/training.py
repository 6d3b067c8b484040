"""The fine-tuning loop: optimiser, schedule, frozen batch-norm statistics, early stopping.

:func:`fine_tune` trains a :class:`~skh2t.finetune.network.HeadedModel` end to
end and records, after every epoch, the training loss and accuracy, the
held-out accuracy and the drift of the held-out features from the pretrained
ones; it returns a :class:`FineTuneRun`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from skh2t.features.devices import Runtime
from skh2t.finetune.drift import DRIFT_METRICS, feature_drift
from skh2t.finetune.network import (
    HeadedModel,
    embed,
    iterate_minibatches,
    minibatches_per_epoch,
)
from skh2t.finetune.schedule import warmup_cosine
from skh2t.progress import progress_bar

#: The keys of a run's ``history``, one value per epoch (epoch 0: before training).
HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_accuracy", "val_accuracy", *DRIFT_METRICS)


@dataclass(frozen=True)
class TrainingSettings:
    """How to fine-tune: the estimator's parameters that the loop reads."""

    epochs: int
    batch_size: int
    warmup_epochs: float
    optimizer: str  # "adamw" or "sgd"
    lr: float
    weight_decay: float
    freeze_batch_norm: bool
    early_stopping: bool
    n_iter_no_change: int
    verbose: int = 0


@dataclass(frozen=True)
class HeldOut:
    """The images the loop scores and measures drift on, with their pretrained features.

    ``targets`` is ``None`` when there is no validation split (the training
    images stand in, and the held-out accuracy is NaN).
    """

    inputs: torch.Tensor
    targets: torch.Tensor | None
    original_features: torch.Tensor


@dataclass
class FineTuneRun:
    """One fine-tuning: the trained network, its per-epoch history, where it stopped."""

    net: HeadedModel
    history: dict[str, list[float]]
    n_iter: int
    best_epoch: int
    score: float
    probe_epochs: int = 0
    probe_steps: int = 0
    probe_target_reached: bool | None = None
    energy: dict[str, float] = field(default_factory=dict)


def fine_tune(
    net: HeadedModel,
    train_inputs: torch.Tensor,
    train_targets: torch.Tensor,
    held_out: HeldOut,
    settings: TrainingSettings,
    generator: torch.Generator,
    runtime: Runtime,
) -> FineTuneRun:
    """Fine-tune ``net`` (already on ``runtime.device``) on the training images.

    Minibatches come from ``generator``; the learning rate follows a linear
    warm-up then a cosine decay per step. With ``early_stopping`` the weights
    of the best held-out epoch are restored at the end. The backbone's
    forward passes run in ``runtime``'s precision (autocast); the weights,
    the optimiser's state, the head, the logits and the loss stay float32,
    and float16 scales the loss (:class:`torch.amp.GradScaler`).
    """
    n_train = train_inputs.shape[0]
    steps_per_epoch = minibatches_per_epoch(n_train, settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    warmup_steps = round(settings.warmup_epochs * steps_per_epoch)
    optimizer = make_optimizer(net, settings)
    scaler = grad_scaler(runtime)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps)
    )
    history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}

    def record(epoch: int, loss: float, accuracy: float) -> float:
        val_accuracy, drift = _evaluate(net, held_out, settings.batch_size, runtime)
        history["epoch"].append(epoch)
        history["lr"].append(optimizer.param_groups[0]["lr"])
        history["train_loss"].append(loss)
        history["train_accuracy"].append(accuracy)
        history["val_accuracy"].append(val_accuracy)
        for key, value in drift.items():
            history[key].append(value)
        return val_accuracy

    score = record(0, float("nan"), float("nan"))
    best_score, best_epoch, stale = score, 0, 0
    best_state = cpu_state(net) if settings.early_stopping else None
    epochs = progress_bar(
        range(1, settings.epochs + 1),
        desc="Fine-tuning",
        unit="epoch",
        disable=not settings.verbose,
    )
    n_iter = 0
    for epoch in epochs:
        loss, accuracy = _train_epoch(
            net,
            train_inputs,
            train_targets,
            Stepper(optimizer, scheduler, scaler),
            settings,
            generator,
            runtime,
        )
        n_iter = epoch
        score = record(epoch, loss, accuracy)
        epochs.set_postfix(loss=f"{loss:.4f}", val_accuracy=f"{score:.4f}")
        if not settings.early_stopping:
            continue
        if score > best_score:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = cpu_state(net)
        else:
            stale += 1
            if stale >= settings.n_iter_no_change:
                break
    net.eval()
    if settings.early_stopping:
        net.load_state_dict(best_state)
        score = best_score
    else:
        best_epoch = n_iter
    return FineTuneRun(net, history, n_iter, best_epoch, score)


def make_optimizer(net: nn.Module, settings: TrainingSettings) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum 0.9, over the trainable parameters."""
    parameters = [p for p in net.parameters() if p.requires_grad]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=settings.lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=settings.weight_decay,
        )
    return torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)


def grad_scaler(runtime: Runtime) -> torch.amp.GradScaler:
    """The loss scaler of a run: active for float16 only (bfloat16 and float32 need none).

    Examples
    --------
    >>> grad_scaler(Runtime(torch.device("cpu"))).is_enabled()
    False
    """
    enabled = runtime.dtype is torch.float16
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(runtime.device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)  # torch < 2.3


@dataclass(frozen=True)
class Stepper:
    """What one training step updates: the optimiser, the schedule and the loss scaler."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    def step(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` (scaled), step the optimiser and the learning rate."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)  # skipped where float16 gradients overflowed
        self.scaler.update()
        self.scheduler.step()


def freeze_batch_norm_statistics(net: nn.Module) -> None:
    """Put every batch-norm layer in eval mode: its running statistics stay as they are."""
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s state dict on the CPU."""
    return {name: t.detach().to("cpu", copy=True) for name, t in module.state_dict().items()}


def _train_epoch(
    net: HeadedModel,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    stepper: Stepper,
    settings: TrainingSettings,
    generator: torch.Generator,
    runtime: Runtime,
) -> tuple[float, float]:
    """One pass over the training images; their mean loss and accuracy."""
    net.train()
    if settings.freeze_batch_norm:
        freeze_batch_norm_statistics(net)
    total_loss, correct = 0.0, 0
    for index in iterate_minibatches(inputs.shape[0], settings.batch_size, generator):
        logits = net.logits(inputs[index].to(runtime.device), runtime)  # float32
        batch_targets = targets[index].to(runtime.device)
        loss = F.cross_entropy(logits, batch_targets)
        stepper.step(loss)
        total_loss += float(loss.detach()) * len(index)
        correct += int((logits.detach().argmax(dim=1) == batch_targets).sum())
    net.eval()
    return total_loss / inputs.shape[0], correct / inputs.shape[0]


def _evaluate(
    net: HeadedModel, held_out: HeldOut, batch_size: int, runtime: Runtime
) -> tuple[float, dict[str, float]]:
    """Held-out accuracy (NaN without targets) and the drift of the held-out features."""
    current = embed(net.features, held_out.inputs, batch_size=batch_size, runtime=runtime)
    accuracy = float("nan")
    if held_out.targets is not None:
        with torch.no_grad():
            logits = net.head(current.to(runtime.device)).cpu()
        accuracy = float((logits.argmax(dim=1) == held_out.targets).double().mean())
    return accuracy, feature_drift(held_out.original_features, current)
