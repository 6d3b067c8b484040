"""Head2ToeClassifier: the whole Head2Toe protocol as one scikit-learn classifier on images."""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
from joblib import Memory, Parallel, delayed, effective_n_jobs
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.metrics import check_scoring, get_scorer_names
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from skh2t._constraints import N_JOBS
from skh2t._precisions import DEFAULT_PRECISION, PRECISIONS
from skh2t._prediction import renormalize_columns
from skh2t.linear_model import GroupLassoClassifier
from skh2t.linear_model._fold_path import (
    FoldOrder,
    FoldPath,
    PathGrid,
    path_cv_results,
    score_path_on_fold,
)
from skh2t.linear_model._group_lasso import (
    _check_weighted_classes,
    make_datafit,
    record_refit,
    warn_refit_not_converged,
)
from skh2t.linear_model._path import SolverSettings, refit_columns
from skh2t.linear_model._search import (
    cheapest_within_one_standard_error,
    first_best,
    fraction_grid,
    integer_grid,
    simplicity_order,
    split_folds,
    warn_not_converged,
)
from skh2t.linear_model._solver.rows import out_of_core
from skh2t.progress import progress_bar

__all__ = ["Head2ToeClassifier", "selection_folds", "selection_rows"]


class Head2ToeClassifier(ClassifierMixin, BaseEstimator):
    """Head2Toe (Evci et al., ICML 2022) on images: the VTAB-1k protocol in one estimator.

    ``fit`` extracts the features of every training image for every pooling
    of the grid (``target_sizes`` or ``pool_strides``) from **one** forward
    pass per image; then, on every fold of ``cv`` and every pooling, solves
    the group-lasso problem along the warm-started path of ``alpha_fractions``
    (fractions of that fold's own ``alpha_max``) and, per alpha, selects and
    refits once per keep fraction. The best (pooling, alpha fraction, keep
    fraction) by mean validation score is refitted on all images. When the
    folds' validation sets partition the images (``cv`` an int, ``KFold``,
    ``StratifiedKFold``), the rows of the features are moved, in place, into
    fold order, so that every fold trains on two slices of them instead of a
    copy; the refit gets them back in the images' order. Prediction
    goes through the images in chunks and keeps only the head's scores, so
    its memory grows with ``batch_size`` and the number of kept features,
    never with the number of images times all the features.

    Parameters
    ----------
    backbone, weights, layers, image_size, backbone_kwargs, batch_size, cache, device, precision
        As in :class:`~skh2t.features.IntermediateFeatureTransformer`; the
        features are pooled per tap and L2-normalised per example and tap.
    compute_budget : float in (0, 1], default=None
        Read only the taps whose share of the backbone's forward FLOPs is at
        most this (:class:`~skh2t.features.IntermediateFeatureTransformer`'s
        ``compute_budget``): extraction runs only that prefix of the network,
        in ``fit`` and in ``predict``, and so does the exported model
        (:func:`skh2t.export.compact_module`). ``None``: every tap.
    compute_budgets : sequence of float in (0, 1], default=None
        If set, budgets to choose from instead of one ``compute_budget``: the
        features of the largest are extracted, and each budget's
        cross-validation reads its taps' columns of them. The choice favours
        the cheaper model: the smallest budget whose best point comes within
        one standard error (over the folds) of the best point of the whole
        grid, then that budget's best point.
    target_sizes : sequence of int, default=(1024, 2048)
        Target sizes per tap to choose from (the paper's grid spans 512 to 8192).
    pool_strides : sequence of int, default=None
        If set, pooling strides to choose from instead of ``target_sizes``.
    alpha_fractions : sequence of float in (0, 1], default=(0.1, 0.03, 0.01)
        Group-lasso strengths, as fractions of the ``alpha_max`` of the data
        of each fit (each fold's training part; all images in the final refit).
    keep_fractions : sequence of float in (0, 1], default=(0.02, 0.05, 0.1, 0.2)
        Fractions of the features that the selection keeps (the paper's grid
        spans 0.01 to 0.2). The default grid is ``skh2t run``'s.
    renormalize_kept : bool, default=True
        The official refit: each tap's kept columns are divided by their own
        L2 norm per example before the refit and at prediction (taps with no
        kept column drop out). ``False``: the refit reads the kept columns of
        the full-tap-normalised features. See :ref:`official-refit`.
    cv : int, cross-validation generator or iterable, default=5
        An int is the number of stratified folds, shuffled with ``random_state``.
    scoring : str or callable, default=None
        Validation score to maximise (``None``: accuracy). A callable is called
        as ``scoring(head, X_valid, y_valid)`` with the group-lasso head and
        the validation images' features (and ``sample_weight=`` their weights
        when ``fit`` is given ``sample_weight``).
    refit_l2, tol, max_iter
        As in :class:`~skh2t.GroupLassoClassifier`.
    n_jobs : int, default=None
        Processes for the cross-validation, one (fold, pooling) path per task
        (joblib; ``-1``: all cores). The scores do not depend on it: every
        path runs BLAS on one thread, in this process as in a worker, so
        from the same features it gives the same floats wherever it runs.
        (The features are extracted before, as ``extraction_n_jobs`` says.)
    extraction_n_jobs : int, default=None
        The transformer's ``n_jobs``: parallel extraction in chunks of whole
        batches (also through a Dask cluster). ``None``: in this process, with
        PyTorch's own threads, the fastest on a few cores.
    random_state : int, RandomState instance or None, default=None
        Shuffling of the folds when ``cv`` is an int.
    selection_samples : int, default=None
        For many images: run the selection (the cross-validation of the whole
        grid and the penalised fit at its best point) on a stratified random
        subsample of this many training images (drawn with ``random_state``),
        then refit the plain head on the kept features of **every** training
        image. ``None``, or at least the number of images: the whole protocol
        on all of them. ``cv`` then splits the subsample. See
        :ref:`scaling-many-images`.
    feature_store : path-like, default=None
        A directory for the training features on disk: they are extracted
        into ``.npy`` files there (:func:`skh2t.features.store.write_features`,
        one forward pass per image, a chunk of images in memory at a time)
        and read back from them; the files are deleted at the end of ``fit``,
        unless ``store_features=True`` without a subsample: then
        ``training_features_`` are read-only memmaps of them, and the files
        stay (in a ``skh2t-features-*`` sub-folder) until you delete them.
        Its free space is checked before extraction. ``None``: in memory
        (with ``selection_samples``: the subsample's features, then a second
        pass over all images that keeps only the chosen pooling's kept
        columns).
    feature_store_dtype : {"float32", "float16"}, default="float32"
        The dtype of the features in ``feature_store``; ``"float16"`` halves
        the disk space and the reads (the features are L2-normalised, in
        [-1, 1]), and needs ``selection_samples`` (the solvers run on float32
        rows in memory).
    store_features : bool, default=False
        Keep the training features of every pooling of the grid after ``fit``
        (``training_features_``), e.g. to fit baselines on them without a
        second pass of the backbone (:func:`skh2t.compare_methods` does). They
        are as large as all the poolings' features together, and are pickled
        with the model; delete the attribute when done. With
        ``selection_samples``, the subsample's features.
    verbose : int, default=0
        Progress bars for the extraction, the cross-validation and prediction.

    Attributes
    ----------
    cv_results_ : dict of ndarray
        One entry per grid point, in the manner of ``GridSearchCV``:
        ``param_target_size`` (or ``param_pool_stride``),
        ``param_alpha_fraction``, ``param_keep_fraction``, ``params``,
        ``split<k>_test_score``, ``mean_test_score``, ``std_test_score``,
        ``rank_test_score``, ``mean_fit_time``, ``std_fit_time``,
        ``mean_score_time``, ``std_score_time`` (a point's fit time is its
        share of its path: its alpha's solve divided among the keep
        fractions, plus its own refit). ``pandas.DataFrame(cv_results_)``
        shows it.
    best_index_ : int
        The chosen row of ``cv_results_``: the best mean score; ties go to
        the smaller keep fraction, then the larger alpha fraction, then the
        smaller target size (or stride).
    best_params_ : dict
        Its parameters: the pooling, ``alpha_fraction`` and ``keep_fraction``.
    best_score_ : float
        Its mean validation score.
    alpha_ : float
        The absolute group-lasso strength of the final refit.
    transformer_ : IntermediateFeatureTransformer
        The fitted feature extractor of the chosen pooling.
    classifier_ : GroupLassoClassifier
        The head refitted on all images (with ``selection_samples``: its
        penalised fit and selection on the subsample, its ``coef_`` and
        ``intercept_`` refitted on the kept features of all images).
    best_estimator_ : Pipeline
        ``Pipeline([("features", transformer_), ("head2toe", classifier_)])``,
        e.g. for :func:`skh2t.plotting.plot_kept_features`.
    n_cv_not_converged_ : int
        Penalised fits and refits of the cross-validation that stopped at
        ``max_iter`` (one ``ConvergenceWarning`` says how many).
    n_not_converged_ : int
        Every solve of ``fit`` that stopped short of ``tol``: the
        cross-validation's and the final refit's (``classifier_.n_not_converged_``).
    selection_indices_ : ndarray of int or None
        The training images the selection ran on (increasing), with
        ``selection_samples``; ``None`` when it ran on all of them.
    training_features_ : dict of int to ndarray of shape (n_images, n_features)
        With ``store_features=True`` only: the training images' features
        (float32, rows in the images' order; the ``selection_indices_``
        images' only, with a subsample) for every pooling of the grid,
        keyed by target size (or stride); ``transformer_.repool(...)`` gives
        the transformer of another pooling.
    refit_time_ : float
        Seconds of the final refit on all images (features already extracted).
    kept_taps_ : list of str
        Names of the taps with at least one kept feature, in network order.
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    n_splits_ : int
        Number of cross-validation folds.

    See Also
    --------
    skh2t.GroupLassoClassifierCV : The same path on one feature matrix.
    skh2t.probes : The linear-probe baselines.
    skh2t.export.compact_module : The fitted model as one torch module, for ONNX and TorchScript.

    Notes
    -----
    The result is that of a ``GridSearchCV`` of a ``Pipeline`` over the same
    grid with ``GroupLassoClassifier(alpha_fraction=...)`` and the same folds,
    up to the solver's tolerance (warm and cold starts agree within ``tol``),
    at a fraction of the cost: one forward pass per image for the whole grid,
    one penalised solve per (fold, pooling, alpha).

    Examples
    --------
    >>> import numpy as np
    >>> from skh2t import Head2ToeClassifier
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    >>> labels = np.arange(24) % 2
    >>> images[labels == 1, :16] //= 4  # class 1: a darker top half
    >>> clf = Head2ToeClassifier(
    ...     backbone="test_resnet", weights=None, image_size=32, target_sizes=[64, 256],
    ...     alpha_fractions=[0.3, 0.1], keep_fractions=[0.05, 0.2], cv=3, random_state=0,
    ... ).fit(images, labels)
    >>> sorted(clf.best_params_)
    ['alpha_fraction', 'keep_fraction', 'target_size']
    >>> len(clf.cv_results_["params"])  # 2 target sizes x 2 alphas x 2 keep fractions
    8
    >>> clf.predict(images[:4]).shape
    (4,)
    """

    _parameter_constraints: dict = {
        "backbone": [object],  # a name or a torch module: checked by the transformer
        "weights": [str, os.PathLike, None],
        "layers": [str, list, tuple],
        "image_size": [Interval(Integral, 1, None, closed="left"), None],
        "backbone_kwargs": [dict, None],
        "compute_budget": [Interval(Real, 0, 1, closed="right"), None],
        "compute_budgets": ["array-like", None],
        "target_sizes": ["array-like"],
        "pool_strides": ["array-like", None],
        "alpha_fractions": ["array-like"],
        "keep_fractions": ["array-like"],
        "renormalize_kept": ["boolean"],
        "cv": ["cv_object"],
        "scoring": [StrOptions(set(get_scorer_names())), callable, None],
        "refit_l2": [Interval(Real, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "cache": [str, os.PathLike, Memory, None],
        "n_jobs": N_JOBS,
        "extraction_n_jobs": N_JOBS,
        "device": [object],  # a string or a torch.device: checked by the transformer
        "precision": [StrOptions(set(PRECISIONS))],
        "random_state": ["random_state"],
        "selection_samples": [Interval(Integral, 2, None, closed="left"), None],
        "feature_store": [str, os.PathLike, None],
        "feature_store_dtype": [StrOptions({"float32", "float16"})],
        "store_features": ["boolean"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        backbone: Any = "tf_efficientnet_lite0",
        weights: str | os.PathLike | None = "auto",
        layers: str | list[str] = "auto",
        image_size: int | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        compute_budget: float | None = None,
        compute_budgets: Sequence[float] | None = None,
        target_sizes: Sequence[int] = (1024, 2048),
        pool_strides: Sequence[int] | None = None,
        alpha_fractions: Sequence[float] = (0.1, 0.03, 0.01),
        keep_fractions: Sequence[float] = (0.02, 0.05, 0.1, 0.2),
        renormalize_kept: bool = True,
        cv=5,
        scoring=None,
        refit_l2: float = 1e-4,
        tol: float = 1e-4,
        max_iter: int = 5000,
        batch_size: int = 64,
        cache: str | os.PathLike | Memory | None = None,
        n_jobs: int | None = None,
        extraction_n_jobs: int | None = None,
        device: Any = "cpu",
        precision: str = DEFAULT_PRECISION,
        random_state=None,
        selection_samples: int | None = None,
        feature_store: str | os.PathLike | None = None,
        feature_store_dtype: str = "float32",
        store_features: bool = False,
        verbose: int = 0,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.layers = layers
        self.image_size = image_size
        self.backbone_kwargs = backbone_kwargs
        self.compute_budget = compute_budget
        self.compute_budgets = compute_budgets
        self.target_sizes = target_sizes
        self.pool_strides = pool_strides
        self.alpha_fractions = alpha_fractions
        self.keep_fractions = keep_fractions
        self.renormalize_kept = renormalize_kept
        self.cv = cv
        self.scoring = scoring
        self.refit_l2 = refit_l2
        self.tol = tol
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.cache = cache
        self.n_jobs = n_jobs
        self.extraction_n_jobs = extraction_n_jobs
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.selection_samples = selection_samples
        self.feature_store = feature_store
        self.feature_store_dtype = feature_store_dtype
        self.store_features = store_features
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: ArrayLike, sample_weight: ArrayLike | None = None):
        """Extract once, cross-validate the whole grid, refit the best point on all images.

        Parameters
        ----------
        X : array-like of images or list of paths / PIL images
            As for :meth:`IntermediateFeatureTransformer.fit`.
        y : array-like of shape (n_images,)
            Class labels.
        sample_weight : array-like of shape (n_images,), default=None
            Non-negative weights used to fit and to score every fold, and in
            the final refit. The labels and weights are checked (at least two
            classes with positive weight) before any image is extracted.

        Returns
        -------
        self : Head2ToeClassifier
            Fitted.
        """
        from skh2t.features.images import as_images

        images = as_images(X)
        y = check_image_labels(y, len(images))
        weighted_scores = sample_weight is not None
        sample_weight = _check_sample_weight(
            sample_weight, np.empty((len(y), 0)), ensure_non_negative=True
        )
        classes, y_encoded = np.unique(y, return_inverse=True)
        _check_weighted_classes(classes, y_encoded, sample_weight, "Head2ToeClassifier")
        grid = _Grid.of(self)
        selection = selection_rows(y, self.selection_samples, self.random_state)
        self._check_feature_store(selection)
        chosen_rows = slice(None) if selection is None else selection
        y_selected, weight_selected = y[chosen_rows], sample_weight[chosen_rows]
        subsample = None if selection is None else self.selection_samples
        folds = selection_folds(self.cv, y_selected, self.random_state, subsample)
        transformers = self._fit_transformers(images, grid)
        feature_sets = grid.feature_sets(transformers)  # before extraction: checks the budgets
        store = self._write_store(transformers, images)
        try:
            features = self._selection_features(transformers, images, selection, store)
            chosen = self._select(
                features, feature_sets, y_selected, weight_selected, folds, grid, weighted_scores
            )
            self.__dict__.pop("training_features_", None)  # not left over from an earlier fit
            if self.store_features:
                self.training_features_ = dict(zip(grid.poolings, features, strict=True))
            X = chosen.columns_of(features[chosen.pooling])
            del features  # without store_features, only the chosen pooling's is needed
            self._refit(chosen.transformer, X, y_selected, weight_selected)
            del X
            self.selection_indices_ = selection
            if selection is not None:
                self._refit_on_all_images(chosen, images, y, sample_weight, store)
        finally:
            if store is not None and not self._keeps_store(selection):
                store.remove()
        self.n_not_converged_ = self.n_cv_not_converged_ + self.classifier_.n_not_converged_
        return self

    def _keeps_store(self, selection: np.ndarray | None) -> bool:
        """Whether the store outlives ``fit``: when ``training_features_`` are its memmaps."""
        return self.store_features and selection is None

    def _check_feature_store(self, selection: np.ndarray | None) -> None:
        if self.feature_store_dtype != "float32" and self.feature_store is None:
            raise ValueError(
                f"feature_store_dtype={self.feature_store_dtype!r} is the dtype of the "
                "features on disk: set feature_store to a directory, or leave it float32."
            )
        if self.feature_store_dtype != "float32" and selection is None:
            raise ValueError(
                f"feature_store_dtype={self.feature_store_dtype!r} needs selection_samples "
                "smaller than the number of images: the cross-validation streams the stored "
                'features, which must then be float32. Set selection_samples, or use "float32".'
            )

    def _write_store(self, transformers: list, images):
        """The training features of every pooling in a new store on disk (``None`` without
        ``feature_store``)."""
        if self.feature_store is None:
            return None
        from skh2t.features.store import write_features

        return write_features(
            transformers,
            images,
            self.feature_store,
            dtype=self.feature_store_dtype,
            verbose=bool(self.verbose),
        )

    def _selection_features(self, transformers, images, selection, store) -> list[np.ndarray]:
        """Every pooling's features of the images the selection runs on: all images (in
        memory, or the store's read-only memmaps) or the subsample's rows (in memory)."""
        if store is None:
            chosen = images if selection is None else images.take(selection)
            return self._training_features(transformers, chosen)
        if selection is None:
            return [store.memmap(p) for p in range(len(transformers))]
        return [store.read_rows(p, selection) for p in range(len(transformers))]

    def _select(self, features, feature_sets, y, sample_weight, folds, grid, weighted_scores):
        """Cross-validate the grid on ``features``; return the chosen feature set.

        In memory, the rows are moved into fold order (each fold then trains on
        two slices, not a copy), and those still needed back; on disk, every
        fold trains on all rows with its validation rows' weights at zero.
        """
        on_disk = out_of_core(features[0])
        by_fold = None if on_disk else FoldOrder.of(folds, len(y))
        order = np.arange(len(y))
        if by_fold is not None:
            order, folds = by_fold.order, by_fold.folds
            for X in features:
                by_fold.apply_in_place(X)
        paths = self._cross_validate(
            features,
            feature_sets,
            y[order],
            sample_weight[order],
            folds,
            grid,
            weighted_scores,
            by_weight=on_disk,
        )
        chosen = feature_sets[self._record_search(paths, grid, len(folds))]
        if by_fold is not None:  # back in the images' order: only the features still needed
            needed = range(len(features)) if self.store_features else [chosen.pooling]
            for p in needed:
                by_fold.restore_in_place(features[p])
        return chosen

    def _refit_on_all_images(self, chosen, images, y, sample_weight, store) -> None:
        """Refit ``classifier_``'s plain head on its kept columns of every training image."""
        head = self.classifier_
        kept = np.flatnonzero(head.support_)
        X_kept = self._kept_columns(chosen, kept, images, store)
        if head.renormalize_index_ is not None:
            renormalize_columns(X_kept, head.renormalize_index_[kept])
        _, datafit = make_datafit(y, sample_weight, head.class_weight)
        settings = SolverSettings(head.fit_intercept, head.tol, head.max_iter, 0)
        started = time.perf_counter()
        with progress_bar(
            desc=f"Refitting the head on {len(y)} images",
            unit=" iterations",  # no total: tqdm writes the count and the unit together
            disable=not self.verbose,
        ) as bar:
            refit = refit_columns(
                X_kept, datafit, head.refit_l2, settings, copy=False, on_iteration=bar.update
            )
        record_refit(head, dataclasses.replace(refit, kept=kept), datafit.n_classes)
        # The penalised fit converged iff its KKT violation is within tol (the solver's test).
        head.n_not_converged_ = int(head.kkt_violation_ > head.tol) + int(not refit.converged)
        self.refit_time_ += time.perf_counter() - started
        if not refit.converged:
            warn_refit_not_converged(self.max_iter, f"the kept features on all {len(y)} images")

    def _kept_columns(self, chosen, kept: np.ndarray, images, store) -> np.ndarray:
        """Columns ``kept`` of the chosen feature set for every training image, float32:
        read from the store, or extracted again (only the chosen pooling, in chunks)."""
        if store is not None:
            columns = kept if chosen.columns is None else chosen.columns[kept]
            return store.read_columns(chosen.pooling, columns, verbose=bool(self.verbose))
        from skh2t.features.joint import iter_transform_jointly

        out = np.empty((len(images), kept.shape[0]), dtype=np.float32)
        chunks = iter_transform_jointly(
            [chosen.transformer],
            images,
            chunk_size=512,
            desc="Extracting kept features",
            verbose=bool(self.verbose),
        )
        for rows, (features,) in chunks:
            out[rows] = features[:, kept]
        return out

    def _refit(self, transformer, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray):
        """Fit the best point's head on all images; set the final model's attributes."""
        self.transformer_ = transformer.set_params(verbose=0)
        self.classifier_ = self._head(transformer).set_params(
            alpha_fraction=self.best_params_["alpha_fraction"],
            keep_fraction=self.best_params_["keep_fraction"],
        )
        started = time.perf_counter()
        self.classifier_.fit(X, y, sample_weight=sample_weight)
        self.refit_time_ = time.perf_counter() - started
        self.best_estimator_ = Pipeline([("features", transformer), ("head2toe", self.classifier_)])
        self.alpha_ = self.classifier_.alpha_
        self.classes_ = self.classifier_.classes_
        support = self.classifier_.support_
        self.kept_taps_ = [tap.name for tap in transformer.taps_ if support[tap.columns].any()]

    def _fit_transformers(self, images, grid: _Grid) -> list:
        """One fitted transformer per pooling of the grid, all sharing one backbone."""
        from skh2t.features import IntermediateFeatureTransformer

        first = IntermediateFeatureTransformer(
            backbone=self.backbone,
            weights=self.weights,
            layers=self.layers,
            image_size=self.image_size,
            backbone_kwargs=self.backbone_kwargs,
            compute_budget=grid.largest_budget(self.compute_budget),
            normalization="l2",
            batch_size=self.batch_size,
            cache=self.cache,
            n_jobs=self.extraction_n_jobs,
            device=self.device,
            precision=self.precision,
            verbose=self.verbose,
            **grid.pooling_params(grid.poolings[0]),
        ).fit(images.take([0]))
        return [first] + [first.repool(**grid.pooling_params(p)) for p in grid.poolings[1:]]

    def _training_features(self, transformers: list, images) -> list[np.ndarray]:
        from skh2t.features.joint import transform_jointly

        return transform_jointly(transformers, images)

    def _head(self, transformer) -> GroupLassoClassifier:
        return self._head_of_groups(transformer.feature_groups_)

    def _head_of_groups(self, groups: np.ndarray) -> GroupLassoClassifier:
        return GroupLassoClassifier(
            renormalize_groups=groups if self.renormalize_kept else None,
            refit_l2=self.refit_l2,
            tol=self.tol,
            max_iter=self.max_iter,
        )

    def _cross_validate(
        self,
        features: list[np.ndarray],
        feature_sets: list[_FeatureSet],
        y: np.ndarray,
        sample_weight: np.ndarray,
        folds: list,
        grid: _Grid,
        weighted_scores: bool,
        by_weight: bool = False,
    ) -> list[FoldPath]:
        """Every (feature set, fold) path, set by set, folds in order (``by_weight``: as
        :func:`~skh2t.linear_model._fold_path.score_path_on_fold`'s)."""
        matrices = [s.columns_of(features[s.pooling]) for s in feature_sets]
        heads = [self._head_of_groups(s.groups).get_params() for s in feature_sets]
        scorer = None  # the heads' own accuracy (block by block on features on disk)
        if self.scoring is not None:
            head = self._head_of_groups(feature_sets[0].groups)
            scorer = check_scoring(head, scoring=self.scoring)
        path_grid = PathGrid(np.array(grid.alpha_fractions), grid.keep_fractions, relative=True)
        tasks = [(p, f) for p in range(len(matrices)) for f in range(len(folds))]
        # Widest features first: the longest paths start early and short ones fill the end.
        schedule = sorted(range(len(tasks)), key=lambda i: -matrices[tasks[i][0]].shape[1])
        n_jobs = min(effective_n_jobs(self.n_jobs), len(tasks))
        with progress_bar(
            total=len(tasks),
            desc="Head2Toe cross-validation",
            unit="path",
            disable=not self.verbose,
        ) as bar:
            results = Parallel(n_jobs=n_jobs, return_as="generator")(
                delayed(score_path_on_fold)(
                    heads[p],
                    matrices[p],
                    y,
                    sample_weight,
                    *folds[f],
                    path_grid,
                    scorer,
                    weighted_scores,
                    by_weight=by_weight,
                )
                for p, f in (tasks[i] for i in schedule)
            )
            paths = [None] * len(tasks)
            for i, path in zip(schedule, results, strict=True):
                paths[i] = path
                bar.update()
        self.n_cv_not_converged_ = sum(path.n_not_converged for path in paths)
        warn_not_converged(
            self.n_cv_not_converged_,
            "penalised fit(s) or refit(s) of the cross-validation",
            f"increase max_iter (now {self.max_iter}) or tol",
        )
        return paths

    def _record_search(self, paths: list[FoldPath], grid: _Grid, n_splits: int) -> int:
        """Set the search's attributes; return the chosen feature set's index."""
        n_sets = len(grid.poolings) * len(grid.budgets)
        shape = (n_sets, len(grid.alpha_fractions), len(grid.keep_fractions))
        points = [
            {**grid.set_params(s), "alpha_fraction": alpha, "keep_fraction": keep}
            for s in range(n_sets)
            for alpha in grid.alpha_fractions
            for keep in grid.keep_fractions
        ]
        self.n_splits_ = n_splits
        results = path_cv_results(points, paths, leading=n_sets)
        self.cv_results_ = results
        # Simplest first: the smaller keep fraction, the larger alpha (alphas decrease),
        # the smaller budget, the smaller pooling (sets: poolings outer, budgets inner).
        order = simplicity_order(shape, [(2, True), (1, True), (0, True)])
        if grid.has_budgets:
            budget = np.array([point["compute_budget"] for point in points])
            self.best_index_ = cheapest_within_one_standard_error(
                results["mean_test_score"], results["std_test_score"], n_splits, budget, order
            )
        else:
            self.best_index_ = first_best(results["mean_test_score"], order)
        self.best_params_ = dict(results["params"][self.best_index_])
        self.best_score_ = float(results["mean_test_score"][self.best_index_])
        return int(np.unravel_index(self.best_index_, shape)[0])

    def decision_function(self, X: Any) -> np.ndarray:
        """Class scores of the images, computed in chunks.

        Parameters
        ----------
        X : array-like of images or list of paths / PIL images
            As for :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_images,) or (n_images, n_classes)
            As :meth:`GroupLassoClassifier.decision_function`.
        """
        return self._in_chunks(X, "decision_function")

    def predict(self, X: Any) -> np.ndarray:
        """Class of every image.

        Parameters
        ----------
        X : array-like of images or list of paths / PIL images
            As for :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_images,)
        """
        return self._in_chunks(X, "predict")

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of the images.

        Parameters
        ----------
        X : array-like of images or list of paths / PIL images
            As for :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_images, n_classes)
        """
        return self._in_chunks(X, "predict_proba")

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of images or list of paths / PIL images
            As for :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_images, n_classes)
        """
        return self._in_chunks(X, "predict_log_proba")

    def get_support(self, indices: bool = False) -> np.ndarray:
        """Mask (or indices) of the kept features among ``transformer_``'s output columns.

        Parameters
        ----------
        indices : bool, default=False
            Return integer indices instead of a boolean mask.

        Returns
        -------
        ndarray
        """
        check_is_fitted(self)
        return self.classifier_.get_support(indices=indices)

    def _in_chunks(self, X: Any, method: str) -> np.ndarray:
        """``classifier_.method`` of the features of ``X``, a chunk of images at a time."""
        from skh2t.features.images import as_images

        check_is_fitted(self)
        head = getattr(self.classifier_, method)
        images = as_images(X)
        extractor = self._runtime_transformer()
        chunk = extractor.batch_size * max(1, effective_n_jobs(extractor.n_jobs))
        parts = []
        with progress_bar(
            total=len(images), desc="Predicting", unit="img", disable=not self.verbose
        ) as bar:
            for start in range(0, len(images), chunk):
                rows = np.arange(start, min(start + chunk, len(images)))
                parts.append(head(extractor.transform(images.take(rows))))
                bar.update(rows.size)
        return np.concatenate(parts)

    def _runtime_transformer(self):
        """``transformer_`` with this estimator's runtime settings, which may have changed
        since fit (e.g. another machine's device): a shallow copy (the same backbone), so
        prediction leaves ``transformer_`` as fitted."""
        return copy.copy(self.transformer_).set_params(
            batch_size=self.batch_size,
            device=self.device,
            precision=self.precision,
            n_jobs=self.extraction_n_jobs,
            verbose=0,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("precision", "float32")  # pickled before the parameter existed
        for name, value in _LATER_PARAMETERS.items():  # their defaults: the behaviour then
            state.setdefault(name, value)
        if "classifier_" in state:
            state.setdefault("selection_indices_", None)
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.classifier_tags.multi_class = True
        tags.non_deterministic = False
        return tags


def check_image_labels(y: ArrayLike, n_images: int, name: str = "y") -> np.ndarray:
    """``y`` as an array of one classification label per image, or a ``ValueError`` naming
    ``name``."""
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n_images:
        raise ValueError(
            f"{name} must hold one label per image: got shape {y.shape} for {n_images} images."
        )
    check_classification_targets(y)
    return y


# Parameters added after models were first pickled, with the value that gives the behaviour
# of those models.
_LATER_PARAMETERS = {
    "compute_budget": None,
    "compute_budgets": None,
    "store_features": False,
    "selection_samples": None,
    "feature_store": None,
    "feature_store_dtype": "float32",
}


def selection_rows(
    y: np.ndarray, selection_samples: int | None, random_state=None
) -> np.ndarray | None:
    """The images a Head2ToeClassifier's selection runs on: a stratified random subsample of
    ``selection_samples`` of them (sorted indices), or ``None`` for all.

    Each class keeps its share of the images (as ``train_test_split(...,
    stratify=y)``), drawn with ``random_state``.

    Parameters
    ----------
    y : ndarray of shape (n_images,)
    selection_samples : int or None
        ``None``, or at least ``len(y)``: all images (``None`` is returned).
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    ndarray of int or None

    Examples
    --------
    >>> y = np.repeat([0, 1], [80, 20])
    >>> rows = selection_rows(y, 10, random_state=0)
    >>> np.bincount(y[rows]).tolist()
    [8, 2]
    >>> selection_rows(y, 100) is None
    True
    """
    if selection_samples is None or selection_samples >= len(y):
        return None
    split = StratifiedShuffleSplit(
        n_splits=1, train_size=selection_samples, random_state=random_state
    )
    try:
        rows, _ = next(split.split(np.zeros((len(y), 1)), y))
    except ValueError as error:
        raise ValueError(
            f"selection_samples={selection_samples} cannot be a stratified subsample of "
            f"these {len(y)} images ({error}); use a larger selection_samples."
        ) from None
    return np.sort(rows)


def selection_folds(cv, y: np.ndarray, random_state=None, selection_samples=None) -> list:
    """The cross-validation folds of the images a selection runs on, as
    :class:`Head2ToeClassifier` splits them.

    Parameters
    ----------
    cv : int, cross-validation generator or iterable
        As Head2ToeClassifier's ``cv`` (an int: shuffled stratified folds).
    y : ndarray of shape (n_selected,)
        The labels of the images the selection runs on.
    random_state : int, RandomState instance or None, default=None
    selection_samples : int, default=None
        The subsample's size when ``y`` is a subsample's labels: a split that
        fails then names it.

    Returns
    -------
    list of (train, test) index arrays
    """
    try:
        return split_folds(cv, y, random_state)
    except ValueError as error:
        if selection_samples is None:
            raise
        raise ValueError(
            f"selection_samples={selection_samples}: cv splits that subsample of "
            f"{len(y)} images, and here it cannot ({error}). Use a larger "
            "selection_samples, or folds of the subsample's rows."
        ) from None


class _Grid:
    """The validated grid of a Head2ToeClassifier: poolings, budgets, alpha and keep fractions."""

    def __init__(
        self,
        pooling_name: str,
        poolings: list[int],
        budgets: list[float] | None,
        alphas: list,
        keeps: list,
    ):
        self.pooling_name = pooling_name
        self.poolings = poolings
        self.has_budgets = budgets is not None
        self.budgets = budgets if budgets is not None else [None]  # increasing
        self.alpha_fractions = alphas  # decreasing: the path runs downwards
        self.keep_fractions = keeps  # increasing

    @classmethod
    def of(cls, estimator: Head2ToeClassifier) -> _Grid:
        if estimator.pool_strides is not None:
            name, values = "pool_stride", estimator.pool_strides
        else:
            name, values = "target_size", estimator.target_sizes
        poolings = integer_grid(values, name + "s")
        budgets = None
        if estimator.compute_budgets is not None:
            if estimator.compute_budget is not None:
                raise ValueError(
                    "Set compute_budget (one budget) or compute_budgets (a grid), not both."
                )
            budgets = fraction_grid(estimator.compute_budgets, "compute_budgets")
        alphas = fraction_grid(estimator.alpha_fractions, "alpha_fractions")[::-1]
        keeps = fraction_grid(estimator.keep_fractions, "keep_fractions")
        return cls(name, poolings, budgets, alphas, keeps)

    def pooling_params(self, value: int) -> dict[str, int]:
        """The transformer parameters of one pooling of the grid."""
        if self.pooling_name == "pool_stride":
            return {"pool_stride": value}
        return {"target_size": value, "pool_stride": None}

    def largest_budget(self, compute_budget: float | None) -> float | None:
        """The budget the extraction reads: the grid's largest, else ``compute_budget``."""
        return self.budgets[-1] if self.has_budgets else compute_budget

    def set_params(self, index: int) -> dict[str, Any]:
        """The grid parameters of the ``index``-th feature set (poolings outer, budgets inner)."""
        pooling, budget = divmod(index, len(self.budgets))
        params: dict[str, Any] = {self.pooling_name: self.poolings[pooling]}
        if self.has_budgets:
            params["compute_budget"] = self.budgets[budget]
        return params

    def feature_sets(self, transformers: list) -> list[_FeatureSet]:
        """Every (pooling, budget) of the grid, poolings outer: its transformer and columns."""
        return [
            _FeatureSet.of(p, transformer, budget)
            for p, transformer in enumerate(transformers)
            for budget in self.budgets
        ]


class _FeatureSet:
    """The features of one (pooling, compute budget): which columns of a pooling's matrix."""

    def __init__(self, pooling: int, transformer, columns: np.ndarray | None):
        self.pooling = pooling  # index among the grid's poolings
        self.transformer = transformer
        self.columns = columns  # None: all of them
        self.groups = transformer.feature_groups_

    @classmethod
    def of(cls, pooling: int, transformer, budget: float | None) -> _FeatureSet:
        if budget is None:
            return cls(pooling, transformer, None)
        within = transformer.within_budget(budget)  # a ComputeBudgetError if no tap fits
        starts = {tap.ref: tap.start for tap in transformer.taps_}
        columns = np.concatenate(
            [np.arange(starts[t.ref], starts[t.ref] + t.n_features) for t in within.taps_]
        )
        if columns.size == transformer.taps_[-1].stop:
            return cls(pooling, within, None)
        return cls(pooling, within, columns)

    def columns_of(self, X: np.ndarray) -> np.ndarray:
        """This set's columns of its pooling's features (a copy unless it is all of them)."""
        return X if self.columns is None else np.ascontiguousarray(X[:, self.columns])
