"""The backbone as a penultimate-feature extractor, and the linear task head on top of it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from skh2t.features.devices import Runtime
from skh2t.features.images import ImageArray, ImageList
from skh2t.features.preprocessing import Preprocessor


def as_feature_extractor(model: nn.Module) -> nn.Module:
    """Drop a timm model's classifier so that ``model(x)`` returns pre-logits features.

    timm models get ``reset_classifier(0)`` (global pooling kept, classifier an
    identity); any other module is used as it is and must already return one
    ``(batch, d)`` feature vector per image. Modifies ``model`` in place.
    """
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(0)
    return model


def preprocess_all(
    images: ImageArray | ImageList,
    preprocess: Preprocessor,
    *,
    batch_size: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Every image resized and normalised once: a ``(n, 3, H, W)`` CPU tensor.

    Fine-tuning revisits each image every epoch; no augmentation is applied, so
    the inputs are computed once.
    """
    batches = [
        preprocess(images.batch(start, start + batch_size), dtype=dtype)
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(batches).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def embed(
    model: nn.Module, inputs: torch.Tensor, *, batch_size: int, runtime: Runtime
) -> torch.Tensor:
    """Penultimate features of preprocessed ``inputs`` in eval mode: a ``(n, d)`` float32
    CPU tensor, computed on ``runtime.device`` in its precision.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        outputs = [
            backbone_features(
                model, inputs[start : start + batch_size].to(runtime.device), runtime
            ).cpu()
            for start in range(0, inputs.shape[0], batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(outputs)


def backbone_features(model: nn.Module, inputs: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """``model(inputs)`` under the runtime's autocast, upcast to float32.

    Only the backbone runs in a reduced precision: the head, its logits and
    the loss see float32 features.

    Examples
    --------
    >>> runtime = Runtime(torch.device("cpu"), torch.bfloat16)
    >>> backbone_features(nn.Linear(3, 2), torch.ones(4, 3), runtime).dtype
    torch.float32
    """
    with runtime.autocast():
        output = _check_features(model(inputs))
    return output.float()


def _check_features(output: torch.Tensor) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            "The backbone must return one feature vector per image, shaped (batch, d); got "
            f"{shape}. timm models are adapted automatically; wrap other modules so that they "
            "return pooled features."
        )
    return output


def random_head(n_features: int, n_classes: int, generator: torch.Generator) -> nn.Linear:
    """A linear head with PyTorch's default initialisation, drawn from ``generator``."""
    head = nn.Linear(n_features, n_classes)
    bound = 1.0 / np.sqrt(n_features)
    with torch.no_grad():
        head.weight.uniform_(-bound, bound, generator=generator)
        head.bias.uniform_(-bound, bound, generator=generator)
    return head


def head_from_probe(probe: object, classes: np.ndarray, n_features: int) -> nn.Linear:
    """A linear head initialised from a fitted linear classifier's ``coef_`` and ``intercept_``.

    The probe must have been fitted on the same penultimate features (same
    backbone, weights and preprocessing) with the same classes, e.g. a
    :class:`~skh2t.GroupLassoClassifier` or a ``LogisticRegression`` fitted on
    the output of :meth:`FineTuneClassifier.penultimate_features` of an unfitted
    clone. A binary probe's single row ``w`` becomes the two rows ``(0, w)``.
    """
    missing = [name for name in ("coef_", "intercept_", "classes_") if not hasattr(probe, name)]
    if missing:
        raise ValueError(
            f"head must be 'linear' or a fitted linear classifier with coef_, intercept_ and "
            f"classes_; {type(probe).__name__} lacks {', '.join(missing)} (is it fitted?)."
        )
    probe_classes = np.asarray(probe.classes_)
    if probe_classes.shape != classes.shape or not np.array_equal(probe_classes, classes):
        raise ValueError(
            f"The head probe was fitted on classes {probe_classes.tolist()}, but y has classes "
            f"{classes.tolist()}."
        )
    coef = np.atleast_2d(np.asarray(probe.coef_, dtype=np.float64))
    intercept = np.atleast_1d(np.asarray(probe.intercept_, dtype=np.float64))
    if coef.shape[1] != n_features:
        raise ValueError(
            f"The head probe has {coef.shape[1]} input features but the backbone's penultimate "
            f"layer has {n_features}. Only a probe fitted on the penultimate features can "
            "initialise the head (a Head2Toe probe on intermediate taps cannot)."
        )
    if coef.shape[0] == 1 and len(classes) == 2:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    head = nn.Linear(n_features, len(classes))
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(coef))
        head.bias.copy_(torch.from_numpy(intercept))
    return head


class HeadedModel(nn.Module):
    """A feature extractor followed by a linear head."""

    def __init__(self, features: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(inputs))

    def logits(self, inputs: torch.Tensor, runtime: Runtime) -> torch.Tensor:
        """float32 logits: the features in the runtime's precision, the head in float32."""
        return self.head(backbone_features(self.features, inputs, runtime))


def minibatches_per_epoch(n: int, batch_size: int) -> int:
    """How many batches :func:`iterate_minibatches` makes of ``n`` examples.

    Examples
    --------
    >>> minibatches_per_epoch(9, 4), minibatches_per_epoch(10, 4)
    (2, 3)
    """
    return len(iterate_minibatches(n, batch_size, torch.Generator()))


def iterate_minibatches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Index batches of one epoch, shuffled with ``generator`` (a fixed order for a fixed seed).

    A last batch of a single example is merged into the previous one (batch
    normalisation cannot train on one example).

    Examples
    --------
    >>> [len(b) for b in iterate_minibatches(9, 4, torch.Generator().manual_seed(0))]
    [4, 5]
    """
    batches = list(torch.split(torch.randperm(n, generator=generator), batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches
