"""From a fitted Head2Toe model to a :class:`~skh2t.export.module.CompactHead2Toe`."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from skh2t.export.module import CompactHead2Toe, TapReader, TapReadout
from skh2t.export.taps import tap_extractor
from skh2t.features.backbones import parameter_dtype
from skh2t.features.devices import resolve_device
from skh2t.features.transformer import IntermediateFeatureTransformer


@dataclass(frozen=True)
class _FittedParts:
    transformer: IntermediateFeatureTransformer
    coef: np.ndarray  # (n_outputs, n_features)
    intercept: np.ndarray
    classes: np.ndarray
    support: np.ndarray  # bool, (n_features,)
    renormalize_index: np.ndarray | None


def compact_module(model: Any, *, device: str | torch.device = "cpu") -> CompactHead2Toe:
    """One ``torch.nn.Module`` that computes a fitted Head2Toe model's logits from images.

    The module reads only the taps that have kept features, through a copy of
    the backbone cut after the deepest of them (a ``torch.fx`` graph of only
    the operations those taps need, when the backbone can be traced and the
    graph gives the same activations; otherwise the whole backbone with
    hooks), pools and normalises each tap as at fit time and applies the
    linear head to the kept columns only. See :ref:`deploy` in the user guide.

    Parameters
    ----------
    model : Head2ToeClassifier or Pipeline
        A fitted :class:`~skh2t.Head2ToeClassifier`, or a fitted ``Pipeline``
        of an :class:`~skh2t.features.IntermediateFeatureTransformer` and a
        linear classifier with ``coef_``, ``intercept_`` and ``classes_`` (such
        as :class:`~skh2t.GroupLassoClassifier`, whose ``support_`` and
        re-normalisation are honoured).
    device : {"cpu", "cuda", "auto"} or str, default="cpu"
        Where the module lives.

    Returns
    -------
    CompactHead2Toe
        In eval mode. Its input is a float32 batch ``(N, 3, H, W)`` in
        ``[0, 1]`` at the model's image size (:meth:`CompactHead2Toe.prepare`
        makes one from any images the model takes); its output the logits
        ``(N, n_classes)`` in the order of ``classes_``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from skh2t import GroupLassoClassifier
    >>> from skh2t.features import IntermediateFeatureTransformer
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    >>> y = np.arange(40) % 4
    >>> model = make_pipeline(
    ...     IntermediateFeatureTransformer(
    ...         backbone="test_resnet", weights=None, image_size=32, target_size=256),
    ...     GroupLassoClassifier(alpha_fraction=0.1, keep_fraction=0.05),
    ... ).fit(images, y)
    >>> module = compact_module(model)
    >>> module.n_features, model[-1].support_.sum()
    (138, np.int64(138))
    >>> logits = module(module.prepare(images[:5]))
    >>> np.allclose(logits.detach().numpy(), model.decision_function(images[:5]), atol=1e-4)
    True
    """
    parts = _fitted_parts(model)
    target = resolve_device(device)
    extraction = parts.transformer.extraction_
    taps, readouts = _readouts(parts)
    backbone = copy.deepcopy(extraction.module).cpu().eval()
    preprocess = extraction.preprocess
    # Two random images, normalised as the transformer does: what the traced graph is checked on.
    images = torch.rand((2, 3, *preprocess.size), generator=torch.Generator().manual_seed(0))
    example = preprocess(images, dtype=parameter_dtype(backbone))
    standardize = None
    kept = np.flatnonzero(parts.support)
    statistics = extraction.standardization
    if statistics is not None:
        standardize = (statistics.mean[kept], statistics.scale[kept])
    order, spans = _renormalization_order(parts, kept)
    weight = parts.coef[:, kept]
    if order is not None:
        weight = weight[:, order]
    module = CompactHead2Toe(
        taps=tap_extractor(backbone, taps, [TapReader(r) for r in readouts], example),
        readouts=readouts,
        mean=preprocess.mean,
        std=preprocess.std,
        image_size=preprocess.size,
        standardize=standardize,
        order=order,
        renormalize=spans,
        weight=weight,
        bias=parts.intercept,
        classes=parts.classes,
        interpolation=preprocess.interpolation,
    )
    return module.to(target)


def _fitted_parts(model: Any) -> _FittedParts:
    from skh2t.head2toe import Head2ToeClassifier

    if isinstance(model, Head2ToeClassifier):
        check_is_fitted(model)
        transformer, classifier = model.transformer_, model.classifier_
    elif isinstance(model, Pipeline):
        steps = [step for _, step in model.steps if step not in (None, "passthrough")]
        if len(steps) != 2 or not isinstance(steps[0], IntermediateFeatureTransformer):
            raise TypeError(
                "A Pipeline to export must have two steps: an IntermediateFeatureTransformer "
                f"and a linear classifier; got {[type(s).__name__ for s in steps]}."
            )
        transformer, classifier = steps
    else:
        raise TypeError(
            "Expected a fitted Head2ToeClassifier, or a Pipeline of an "
            f"IntermediateFeatureTransformer and a linear classifier; got {type(model).__name__}."
        )
    check_is_fitted(transformer)
    check_is_fitted(classifier)
    missing = [a for a in ("coef_", "intercept_", "classes_") if not hasattr(classifier, a)]
    if missing:
        raise TypeError(
            f"{type(classifier).__name__} is not a linear classifier: it has no "
            f"{', '.join(missing)}. Export needs scores X @ coef_.T + intercept_."
        )
    coef = np.atleast_2d(np.asarray(classifier.coef_, dtype=np.float64))
    n_features = transformer.extraction_.n_features
    if coef.shape[1] != n_features:
        raise ValueError(
            f"The classifier reads {coef.shape[1]} features but the transformer makes "
            f"{n_features}; refit the pipeline."
        )
    support = getattr(classifier, "support_", None)
    support = np.any(coef != 0, axis=0) if support is None else np.asarray(support, dtype=bool)
    if not support.any():
        support = support.copy()
        support[0] = True  # a constant model still needs one (zero-weight) column
    return _FittedParts(
        transformer=transformer,
        coef=coef,
        intercept=np.atleast_1d(np.asarray(classifier.intercept_, dtype=np.float64)),
        classes=np.asarray(classifier.classes_),
        support=support,
        renormalize_index=getattr(classifier, "renormalize_index_", None),
    )


def _readouts(parts: _FittedParts) -> tuple[list, list[TapReadout]]:
    """The used taps, and how each becomes kept features."""
    extraction = parts.transformer.extraction_
    l2 = extraction.l2
    groups = parts.renormalize_index
    refs, readouts = [], []
    for tap in extraction.taps:
        kept = np.flatnonzero(parts.support[tap.columns])
        if kept.size == 0:
            continue
        # Re-normalising kept columns of one tap cancels the tap's own norm.
        full_norm = l2 and not (groups is not None and _groups_within(groups, parts.support, tap))
        refs.append(tap.ref)
        readouts.append(TapReadout(tap.name, tap.plan, tuple(int(i) for i in kept), full_norm))
    return refs, readouts


def _groups_within(groups: np.ndarray, support: np.ndarray, tap) -> bool:
    """Whether every re-normalisation group of the tap's kept columns lies inside the tap."""
    inside = groups[tap.columns][support[tap.columns]]
    outside = np.ones(groups.shape[0], dtype=bool)
    outside[tap.columns] = False
    return not np.isin(groups[outside & support], inside).any()


def _renormalization_order(parts: _FittedParts, kept: np.ndarray):
    """A permutation of the kept columns making each group contiguous (or None), and the spans."""
    if parts.renormalize_index is None:
        return None, []
    groups = parts.renormalize_index[kept]
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    bounds = np.flatnonzero(np.diff(sorted_groups)) + 1
    edges = [0, *bounds.tolist(), groups.size]
    spans = [(int(a), int(b)) for a, b in itertools.pairwise(edges)]
    identity = np.array_equal(order, np.arange(order.size))
    return (None if identity else order), spans
