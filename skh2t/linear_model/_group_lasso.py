"""GroupLassoClassifier: multinomial logistic regression with a group-lasso penalty."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_feature_names,
    _check_n_features,
    _check_sample_weight,
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from skh2t._compact import CompactStateMixin
from skh2t._prediction import LinearSoftmaxMixin
from skh2t.linear_model._path import (
    GroupStructure,
    PenalisedFit,
    Refit,
    SolverSettings,
    alpha_max,
    group_lasso_path,
    n_to_keep,
    refit_kept,
    select_features,
)
from skh2t.linear_model._solver import MultinomialLogistic
from skh2t.linear_model._solver.dask_rows import DaskRows, is_dask_array
from skh2t.linear_model._solver.working_set import ColumnSummary

# Rows of a dask array predicted at a time (computed block by block, never whole).
PREDICT_BLOCK_ROWS = 4096


def validate_dask_data(estimator, X, y=None, *, reset: bool = True):
    """:func:`validate_data` for a 2-D dask array ``X``, nothing computed but reductions.

    Returns its rows as a :class:`DaskRows` (float32 or float64, whole rows per
    chunk: rechunked lazily if needed; other dtypes converted lazily to
    float64) and, with ``y``, the labels as a 1-D ndarray. Checks the shape,
    the number of features (sets ``n_features_in_`` when ``reset``) and that
    every entry is finite (a dask reduction).
    """
    if X.ndim == 2 and X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    rows = DaskRows.of(X)
    n_samples, n_features = rows.shape
    if n_samples < 1 or n_features < 1:
        raise ValueError(
            f"Found array with {n_samples} sample(s) and {n_features} feature(s) "
            f"(shape={rows.shape}) while a minimum of 1 is required."
        )
    _check_feature_names(estimator, X, reset=reset)
    _check_n_features(estimator, X, reset=reset)
    if not rows.all_finite():
        raise ValueError("Input X contains NaN or infinity.")
    if y is None:
        return rows
    if is_dask_array(y):
        y = y.compute()
    y = column_or_1d(np.asarray(y), warn=True)
    check_consistent_length(np.empty((n_samples, 0)), y)
    return rows, y


def validate_rows(estimator, X, y, *, dtype=(np.float64, np.float32)):
    """``(X, y)`` validated for a fit: a dask array's rows (:func:`validate_dask_data`), or
    scikit-learn's ``validate_data`` (C order, float32 or float64) for anything else."""
    if is_dask_array(X):
        return validate_dask_data(estimator, X, y)
    return validate_data(estimator, X, y, dtype=list(dtype), order="C")


class BlockwisePredictionMixin:
    """``decision_function`` (hence ``predict``, ``predict_proba``, ``score``) of a dask array,
    :data:`PREDICT_BLOCK_ROWS` rows computed at a time; returns an ndarray."""

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Class scores ``X @ coef_.T + intercept_``; 1-D for binary problems.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)
            Samples; a dask array is computed block by block of
            ``PREDICT_BLOCK_ROWS`` rows, never whole.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Confidence scores; for binary problems, of ``classes_[1]``.
        """
        if not is_dask_array(X):
            return super().decision_function(X)
        check_is_fitted(self)
        rows = DaskRows.of(X)
        _check_n_features(self, X, reset=False)
        parts = [
            super(BlockwisePredictionMixin, self).decision_function(block)
            for _, block in rows.column_chunks(None, PREDICT_BLOCK_ROWS)
        ]
        return np.concatenate(parts)


class GroupLassoClassifier(
    CompactStateMixin, BlockwisePredictionMixin, LinearSoftmaxMixin, ClassifierMixin, BaseEstimator
):
    """Softmax classifier with a group-lasso penalty and Head2Toe's select-and-refit.

    Minimises, over coefficients ``W`` (one row per feature, one column per
    class) and an unpenalised intercept ``b``::

        mean_i s_i * CE(softmax(x_i W + b), y_i) + alpha * sum_g w_g * ||W_g||_2

    where ``s_i`` are the sample weights normalised to mean one, ``W_g`` is the
    block of rows of the features in group ``g`` (by default one row: one
    feature across all classes, the Head2Toe penalty) and ``w_g`` defaults to
    ``sqrt(group size)``. The problem is solved by accelerated proximal
    gradient (FISTA, adaptive step, restart) inside a working-set loop, to a
    KKT tolerance relative to ``alpha``.

    With ``keep_fraction`` or ``n_features_to_select`` set, the features are
    then scored by the sum of squares of their row of ``W``, the best ones are
    kept, and a fresh softmax head with a small ridge penalty ``refit_l2`` is
    fitted on them (Head2Toe, Evci et al. 2022). The proximal solver gives
    exact zeros, so features with zero weight are ranked after the others by
    their dual score (how close they are to entering the model); Head2Toe's
    dense Adam solution ranks every feature too. ``coef_`` is always expressed
    in the full input space, with zeros for dropped features.

    Parameters
    ----------
    alpha : float, default=1e-3
        Group-lasso strength, absolute. ``alpha >= alpha_max(X, y)`` gives
        all-zero coefficients. Ignored when ``alpha_fraction`` is set.
    alpha_fraction : float in (0, 1], default=None
        Group-lasso strength relative to the data being fitted: ``fit(X, y)``
        uses ``alpha_fraction * alpha_max(X, y)`` (reported as ``alpha_``).
        Inside ``GridSearchCV`` or a pipeline whose features change (e.g. the
        target size), the strength is then relative per fold and per feature
        matrix, as Head2Toe's protocol asks. When set, ``alpha`` is ignored.
    groups : array-like of shape (n_features,), "feature_name_prefix" or None, default=None
        Group label of every feature (e.g. the layer it comes from): all
        strings or all finite numbers, never a mix. ``None`` puts every
        feature in a group of its own. ``"feature_name_prefix"``
        groups the columns of a DataFrame by their name up to the last
        ``"__"``: with ``IntermediateFeatureTransformer(...).set_output(
        transform="pandas")`` before it in a pipeline, one group per tap,
        whatever the pooling (so it survives a grid search over target sizes).
    group_weights : array-like of shape (n_groups,), default=None
        Weight of every group, in the order of ``np.unique(groups)``.
        ``None`` uses the square root of each group's size.
    keep_fraction : float in (0, 1], default=None
        Fraction of features kept by Head2Toe selection, ``floor(n_features *
        keep_fraction)`` (at least one). ``None`` with ``n_features_to_select``
        also ``None`` disables selection: the penalised fit is the model.
    n_features_to_select : int, default=None
        Number of features kept by selection, as an alternative to
        ``keep_fraction``.
    refit_l2 : float, default=1e-4
        Ridge strength of the refitted head, ``refit_l2 / 2 * ||W||^2`` added
        to the mean loss; keeps the refit finite on separable data.
        With fewer training rows than kept features (every VTAB-1k-sized
        refit) and ``refit_l2 > 0``, the refit is solved in the row space of
        the kept columns, through their Gram matrix: the same minimiser, at
        the cost of an ``n_samples x n_samples`` problem (see
        :ref:`the user guide <group-lasso-cv>`).
    renormalize_groups : array-like of shape (n_features,), "feature_name_prefix" or None, \
default=None
        The official Head2Toe refit: after selection, the kept columns of every
        group (e.g. every tap; ``"feature_name_prefix"`` as for ``groups``) are
        divided by their own L2 norm, per sample, before the refit and before
        every prediction; groups with no kept column drop out. ``None``: the
        refit reads the kept columns as they are. Only used with selection.
        See :ref:`official-refit` in the user guide.
    fit_intercept : bool, default=True
        Whether to fit an (unpenalised) intercept.
    class_weight : dict or "balanced", default=None
        Weights of the classes, multiplied into the sample weights: finite,
        ``>= 0``, and at least two classes must keep a positive weight. As in
        scikit-learn, a class missing from the dict has weight 1, and a key
        that is not a class is an error when a class is missing.
    tol : float, default=1e-4
        The penalised fit stops when every group's KKT violation is below
        ``tol * alpha * w_g`` and every entry of the intercept gradient below
        ``tol * alpha / s``, with ``s`` the root mean square of the weighted
        norms of the centred columns (the natural scale of a coefficient's
        gradient): violations relative to the penalty, which do not change
        when ``X`` is multiplied by a constant. With ``alpha=0``, ``s``
        takes the place of ``alpha``. The refit of the kept features (a
        smooth problem) stops when no entry of the gradient of its mean loss
        exceeds ``tol``, as scikit-learn's ``LogisticRegression(tol=...)``
        with L-BFGS does.
    max_iter : int, default=5000
        Maximum number of FISTA iterations (and of L-BFGS iterations for the
        refit). Iterations are cheap (products with the working set only);
        on wide Head2Toe features at small ``alpha_fraction`` a solve can take
        thousands of them.
    warm_start : bool, default=False
        Start from the previous penalised solution when refitting.
    verbose : int, default=0
        Print solver progress when positive.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    alpha_ : float
        The absolute group-lasso strength used: ``alpha``, or
        ``alpha_fraction * alpha_max_``.
    alpha_max_ : float
        ``alpha_max`` of the training data; only set when ``alpha_fraction`` is.
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        Coefficients of the final model in the full input space. Binary
        problems have one row, for ``classes_[1]``. With
        ``renormalize_groups``, they apply to the re-normalised kept columns.
    intercept_ : ndarray of shape (1,) or (n_classes,)
        Intercept of the final model.
    group_lasso_coef_ : ndarray of the shape of ``coef_``
        Coefficients of the penalised fit (before selection and refit).
    group_lasso_intercept_ : ndarray of the shape of ``intercept_``
        Intercept of the penalised fit.
    feature_scores_ : ndarray of shape (n_features,)
        Head2Toe relevance of every feature: the sum of squares of its row of
        the penalised coefficients.
    dual_scores_ : ndarray of shape (n_features,)
        ``||grad_g|| / (alpha * w_g)`` of every feature's group at the
        solution: 1 for groups in the model, below 1 for the others, and the
        closer to 1 the sooner the group would enter as ``alpha`` decreases.
    support_ : ndarray of shape (n_features,)
        Mask of the features used by the final model: the top
        ``feature_scores_``; when more features are asked for than have a
        non-zero weight, the zero-weight ones with the highest
        ``dual_scores_`` complete the selection.
    group_labels_ : ndarray of shape (n_groups,)
        The distinct group labels.
    group_weights_ : ndarray of shape (n_groups,)
        The group weights used.
    renormalize_index_ : ndarray of shape (n_features,) or None
        With ``renormalize_groups``: the re-normalisation group of every
        feature (an index); else ``None``.
    kkt_violation_ : float
        Largest KKT violation of the penalised fit, relative to ``alpha * w_g``
        (``alpha / s`` for the intercept; see ``tol``).
    objective_ : float
        Value of the penalised objective at the solution.
    n_iter_ : ndarray of shape (1,)
        FISTA iterations of the penalised fit.
    refit_n_iter_ : int
        L-BFGS iterations of the refit (0 without selection).
    n_not_converged_ : int
        This fit's solves that stopped short of ``tol`` (0, 1 or 2: the
        penalised solve and the refit; each also raised a ``ConvergenceWarning``).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when ``X`` has string column names.

    See Also
    --------
    sklearn.linear_model.LogisticRegression : Multinomial logistic regression with L1/L2 penalties.

    Notes
    -----
    With an intercept, a column whose values span at most the rounding unit
    of its dtype (``eps * max|x_j|``) is constant to the arithmetic: its
    gradient is exactly zero (rather than rounding), so it never enters the
    model and all-constant data has ``alpha_max`` exactly 0.

    The solver and the refit run BLAS on one thread, whatever the thread
    settings around them: their products are thin (one column per class)
    and, on a machine whose cores are shared, a multi-threaded BLAS made them
    several times slower. Parallelise over fits instead, e.g. the folds of
    :class:`~skh2t.GroupLassoClassifierCV` or ``GridSearchCV`` with ``n_jobs``.
    For ``float32`` data the full-gradient products that rank the groups run
    in single precision (half the memory traffic) and the subproblems in
    ``float64``; when the two disagree near the solution, the optimality check
    is redone in ``float64``, so even tight tolerances are certified.

    Out of core: ``X`` may be a numpy memmap or a 2-D dask array (float32 or
    float64, chunked by rows; chunked by columns too, it is rechunked to whole
    rows, lazily), and neither is loaded whole. The products with all of
    ``X`` stream its rows (on a dask array, ``X.T @ R`` is a dask reduction,
    one task per row block, so the fit runs on a ``distributed`` cluster too;
    the input checks, finiteness included, are dask reductions). The
    penalised solve then never holds its working set in ``float64``: each
    round gathers the working set's columns once in ``X``'s dtype if they
    take at most ``WORKING_SET_FRACTION`` (1/8) of ``X``'s bytes, else gathers
    them from ``X`` block by block at every product, and converts, centres and
    scales them a block of rows at a time (``BLOCK_FRACTION``, 1/64 of
    ``X``'s bytes; both in ``skh2t.linear_model._solver.streamed``): the same
    solution within ``tol``. In memory, the working set is kept in ``float64``
    instead (faster products, about four copies of ``n_samples x working set``).
    The refit of the kept features gathers those columns (``n_samples x
    n_kept``). ``predict``, ``decision_function`` and ``score`` compute a dask
    array ``PREDICT_BLOCK_ROWS`` (4096) rows at a time and return ndarrays.
    See :ref:`benchmarks <bench-out-of-core>` for the memory used.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skh2t import GroupLassoClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16.0
    >>> clf = GroupLassoClassifier(alpha=0.002, keep_fraction=0.25).fit(X, y)
    >>> int(clf.get_support().sum())
    16
    >>> clf.coef_.shape
    (10, 64)
    >>> bool(clf.score(X, y) > 0.9)
    True
    """

    _parameter_constraints: dict = {
        "alpha": [Interval(Real, 0, None, closed="left")],
        "alpha_fraction": [Interval(Real, 0, 1, closed="right"), None],
        "groups": ["array-like", StrOptions({"feature_name_prefix"}), None],
        "group_weights": ["array-like", None],
        "keep_fraction": [Interval(Real, 0, 1, closed="right"), None],
        "n_features_to_select": [Interval(Integral, 1, None, closed="left"), None],
        "refit_l2": [Interval(Real, 0, None, closed="left")],
        "renormalize_groups": ["array-like", StrOptions({"feature_name_prefix"}), None],
        "fit_intercept": ["boolean"],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        alpha: float = 1e-3,
        alpha_fraction: float | None = None,
        groups: ArrayLike | str | None = None,
        group_weights: ArrayLike | None = None,
        keep_fraction: float | None = None,
        n_features_to_select: int | None = None,
        refit_l2: float = 1e-4,
        renormalize_groups: ArrayLike | str | None = None,
        fit_intercept: bool = True,
        class_weight: dict | str | None = None,
        tol: float = 1e-4,
        max_iter: int = 5000,
        warm_start: bool = False,
        verbose: int = 0,
    ):
        self.alpha = alpha
        self.alpha_fraction = alpha_fraction
        self.groups = groups
        self.group_weights = group_weights
        self.keep_fraction = keep_fraction
        self.n_features_to_select = n_features_to_select
        self.refit_l2 = refit_l2
        self.renormalize_groups = renormalize_groups
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None):
        """Fit the penalised model, then (optionally) select features and refit.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; float32 data stays float32 for the large products.
        y : array-like of shape (n_samples,)
            Class labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; an integer weight is equivalent to repeating
            the sample.

        Returns
        -------
        self : GroupLassoClassifier
            The fitted classifier.
        """
        X, y = validate_rows(self, X, y)
        problem = self._problem(X, y, sample_weight)
        columns = ColumnSummary.of(X, problem.datafit, self.fit_intercept)
        alpha = self.alpha
        self.__dict__.pop("alpha_max_", None)  # not left over from an earlier relative fit
        if self.alpha_fraction is not None:
            self.alpha_max_ = alpha_max(
                X, problem.datafit, problem.groups, self.fit_intercept, columns
            )
            alpha = self.alpha_fraction * self.alpha_max_
        settings = self._solver_settings()
        start = self._warm_start(X.shape[1], problem.datafit)
        path = group_lasso_path(
            X, problem.datafit, problem.groups, [alpha], settings, start, columns
        )
        fit = next(path)
        if not fit.converged:
            _warn_not_converged(fit, self.tol, self.max_iter)
        refit = None
        support = select_features(fit, problem.n_keep)
        if problem.n_keep is not None:
            refit = refit_kept(
                X,
                problem.datafit,
                support,
                self.refit_l2,
                settings,
                renormalize_index=problem.renormalize_index,
                intercept_init=fit.intercept,
            )
            if not refit.converged:
                warn_refit_not_converged(self.max_iter)
        record_fit(self, problem, fit, support, refit)
        return self

    def _problem(self, X: np.ndarray, y: np.ndarray, sample_weight) -> Problem:
        """The checked problem of validated data: labels, weights, groups and selection size."""
        names = getattr(self, "feature_names_in_", None)
        return Problem.of(self.get_params(), X.shape[1], y, sample_weight, names)

    def _solver_settings(self) -> SolverSettings:
        return SolverSettings(self.fit_intercept, self.tol, self.max_iter, self.verbose)

    def _warm_start(self, n_features: int, datafit: MultinomialLogistic):
        """With ``warm_start``, the previous penalised solution if its shape fits; else ``None``."""
        previous = getattr(self, "group_lasso_coef_", None) if self.warm_start else None
        expected_shape = (1 if datafit.n_classes == 2 else datafit.n_classes, n_features)
        if previous is not None and previous.shape == expected_shape:
            return from_public(previous, self.group_lasso_intercept_)
        return None

    def alpha_max(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> float:
        """Smallest ``alpha`` for which the penalised solution is all zero.

        Uses this estimator's ``groups``, ``group_weights``, ``fit_intercept``
        and ``class_weight``; does not fit or change the estimator.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Class labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        alpha_max : float
            ``max_g ||grad_g|| / w_g`` at zero coefficients and the optimal
            intercept; with an intercept, numerically constant columns (see
            Notes) have a zero gradient, so constant data gives exactly 0.
        """
        probe = self.__class__(**self.get_params())
        X, y = validate_rows(probe, X, y)
        problem = probe._problem(X, y, sample_weight)
        return alpha_max(X, problem.datafit, problem.groups, self.fit_intercept)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.classifier_tags.multi_class = True
        return tags


@dataclass(frozen=True)
class Problem:
    """A checked group-lasso problem: what every fit of one estimator on one data set shares.

    Built from an estimator's parameters (``get_params()``), so that a
    cross-validation can build one per fold without fitting, or changing, an
    estimator.
    """

    classes: np.ndarray
    datafit: MultinomialLogistic
    groups: GroupStructure
    group_labels: np.ndarray
    renormalize_index: np.ndarray | None  # only with selection
    n_keep: int | None  # features kept by selection; None without selection

    @classmethod
    def of(
        cls,
        params: dict,
        n_features: int,
        y: np.ndarray,
        sample_weight: ArrayLike | None,
        feature_names: np.ndarray | None = None,
    ) -> Problem:
        """Check the labels, weights, groups and selection size of the data ``(n_features, y)``."""
        classes, datafit = make_datafit(y, sample_weight, params["class_weight"])
        labels, groups = _group_structure(params, n_features, feature_names)
        n_keep = _selection_size(params, n_features)
        renormalize_index = None
        if n_keep is not None and params["renormalize_groups"] is not None:
            renormalize_index = _renormalize_index(params, n_features, feature_names)
        return cls(classes, datafit, groups, labels, renormalize_index, n_keep)


def make_datafit(
    y: np.ndarray, sample_weight: ArrayLike | None, class_weight: dict | str | None
) -> tuple[np.ndarray, MultinomialLogistic]:
    """The classes and the weighted multinomial datafit of labels ``y``; checks the weights."""
    check_classification_targets(y)
    encoder = LabelEncoder().fit(y)
    classes = encoder.classes_
    y_encoded = encoder.transform(y)
    sample_weight = _check_sample_weight(
        sample_weight, np.empty((len(y), 0)), dtype=np.float64, ensure_non_negative=True
    )
    # Before the class weights too: compute_class_weight divides by each class's weight.
    _check_weighted_classes(classes, y_encoded, sample_weight, "GroupLassoClassifier")
    if class_weight is not None:
        _check_class_weight(class_weight)
        weights = compute_class_weight(
            class_weight, classes=classes, y=y, sample_weight=sample_weight
        )
        sample_weight = sample_weight * weights[y_encoded]
        _check_weighted_classes(classes, y_encoded, sample_weight, "GroupLassoClassifier")
    return classes, MultinomialLogistic(y_encoded, classes.shape[0], sample_weight)


def _group_structure(
    params: dict, n_features: int, feature_names: np.ndarray | None
) -> tuple[np.ndarray, GroupStructure]:
    groups = params["groups"]
    if isinstance(groups, str):
        groups = _groups_from_feature_names(feature_names)
    labels, group_index = _encode_groups(groups, n_features)
    weights = _check_group_weights(params["group_weights"], group_index, labels.shape[0])
    return labels, GroupStructure(group_index, weights)


def _renormalize_index(
    params: dict, n_features: int, feature_names: np.ndarray | None
) -> np.ndarray:
    groups = params["renormalize_groups"]
    if isinstance(groups, str):
        groups = _groups_from_feature_names(feature_names, name="renormalize_groups")
    return _encode_groups(groups, n_features, name="renormalize_groups")[1]


def _selection_size(params: dict, n_features: int) -> int | None:
    keep_fraction, n_select = params["keep_fraction"], params["n_features_to_select"]
    if keep_fraction is not None and n_select is not None:
        raise ValueError(
            "Set only one of keep_fraction and n_features_to_select, not both "
            f"(got {keep_fraction} and {n_select})."
        )
    if n_select is not None and n_select > n_features:
        raise ValueError(
            f"n_features_to_select={n_select} is larger than the "
            f"number of features ({n_features}); use at most {n_features}."
        )
    return n_to_keep(n_features, keep_fraction, n_select)


def record_fit(
    estimator: GroupLassoClassifier,
    problem: Problem,
    fit: PenalisedFit,
    support: np.ndarray,
    refit: Refit | None,
) -> GroupLassoClassifier:
    """Set the fitted attributes of ``estimator`` from a solution and its refit; return it.

    The one writer of a GroupLassoClassifier's fitted state: ``fit`` calls it
    on itself, the cross-validations on a fresh estimator per grid point.
    """
    estimator.classes_ = problem.classes
    estimator.group_labels_ = problem.group_labels
    estimator.group_weights_ = problem.groups.group_weights
    estimator.alpha_ = float(fit.alpha)
    estimator.n_iter_ = np.array([fit.n_iter])
    estimator.kkt_violation_ = fit.kkt_violation
    estimator.objective_ = fit.objective
    estimator.group_lasso_coef_, estimator.group_lasso_intercept_ = to_public(
        fit.coef, fit.intercept
    )
    estimator.feature_scores_ = fit.feature_scores
    estimator.dual_scores_ = fit.dual_scores
    estimator.support_ = support
    estimator.renormalize_index_ = problem.renormalize_index
    estimator.n_not_converged_ = int(not fit.converged) + int(
        refit is not None and not refit.converged
    )
    if refit is None:
        estimator.refit_n_iter_ = 0
        estimator.coef_ = estimator.group_lasso_coef_.copy()
        estimator.intercept_ = estimator.group_lasso_intercept_.copy()
    else:
        record_refit(estimator, refit, problem.datafit.n_classes)
    return estimator


def record_refit(estimator: GroupLassoClassifier, refit: Refit, n_classes: int) -> None:
    """Set the head of a fitted estimator (``coef_``, ``intercept_``, ``refit_n_iter_``)
    from a refit of its kept features (``refit.kept`` indexes its features)."""
    estimator.refit_n_iter_ = refit.n_iter
    coef = np.zeros((estimator.support_.shape[0], n_classes))
    coef[refit.kept] = refit.coef
    estimator.coef_, estimator.intercept_ = to_public(coef, refit.intercept)


def warn_refit_not_converged(max_iter: int, what: str = "the selected features") -> None:
    """The ``ConvergenceWarning`` of a refit that stopped at ``max_iter``."""
    warnings.warn(
        f"The refit of {what} did not converge in max_iter={max_iter} L-BFGS iterations. "
        "Increase max_iter or refit_l2.",
        ConvergenceWarning,
        stacklevel=3,
    )


def to_public(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_features, n_classes) solver layout to scikit-learn's (n_classes, n_features)."""
    if coef.shape[1] == 2:
        return (coef[:, 1] - coef[:, 0])[None, :], np.array([intercept[1] - intercept[0]])
    return coef.T.copy(), intercept.copy()


def from_public(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's layout back to the solver's (binary: the symmetric split)."""
    if coef.shape[0] == 1:
        half, half_intercept = coef[0] / 2.0, intercept[0] / 2.0
        return np.column_stack([-half, half]), np.array([-half_intercept, half_intercept])
    return coef.T.copy(), intercept.copy()


def _warn_not_converged(result, tol: float, max_iter: int) -> None:
    violation = f"the relative KKT violation is {result.kkt_violation:.2e} > tol={tol:g}"
    if result.stalled:
        message = (
            f"GroupLassoClassifier stopped at the limit of numerical precision: {violation} "
            "(checked in float64). Use a larger tol."
        )
    elif result.outer_limit:
        message = (
            f"GroupLassoClassifier stopped after {result.n_outer} working-set rounds (their "
            f"limit), with {result.n_iter} of max_iter={max_iter} iterations used: "
            f"{violation}. Use a larger tol or alpha."
        )
    else:
        message = (
            f"GroupLassoClassifier did not converge in max_iter={max_iter} iterations: "
            f"{violation}. Increase max_iter or tol."
        )
    warnings.warn(message, ConvergenceWarning, stacklevel=3)


def _check_weighted_classes(
    classes: np.ndarray, y_encoded: np.ndarray, sample_weight: np.ndarray, estimator: str
) -> None:
    """Raise unless the samples with positive weight cover at least two classes."""
    if classes.shape[0] < 2:
        raise ValueError(
            f"{estimator} needs samples of at least 2 classes in the data, "
            f"but the data contains only one class: {classes[0]!r}."
        )
    weighted_classes = classes[np.unique(y_encoded[sample_weight > 0])]
    if weighted_classes.shape[0] < 2:
        which = (
            f"only one class has any weight: {weighted_classes[0]!r}"
            if weighted_classes.size
            else "no class has any weight"
        )
        raise ValueError(
            f"{estimator} needs samples of at least 2 classes with positive weight "
            f"(sample_weight, times class_weight if set), but {which}."
        )


def _check_class_weight(class_weight: dict | str) -> None:
    """Raise unless a ``class_weight`` dict maps to finite, non-negative numbers.

    Keys that are not classes are left to scikit-learn's ``compute_class_weight``.
    """
    if not isinstance(class_weight, dict):
        return
    try:
        weights = np.array(list(class_weight.values()), dtype=np.float64)
    except (TypeError, ValueError):
        weights = np.array([np.nan])
    if weights.ndim != 1 or not np.all(np.isfinite(weights) & (weights >= 0)):
        raise ValueError(
            "Negative, infinite or NaN values in `class_weight`: weights must be finite "
            f"numbers >= 0; got {class_weight!r}."
        )


def _groups_from_feature_names(
    feature_names: np.ndarray | None, *, name: str = "groups"
) -> np.ndarray:
    if feature_names is None:
        raise ValueError(
            f"{name}='feature_name_prefix' needs feature names, but X has none: fit on a "
            "pandas DataFrame, e.g. put IntermediateFeatureTransformer(...).set_output("
            "transform='pandas') before this classifier in the pipeline."
        )
    return np.array([str(name).rpartition("__")[0] or str(name) for name in feature_names])


def _encode_groups(
    groups: ArrayLike | None, n_features: int, *, name: str = "groups"
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct group labels and the group index of every feature."""
    if groups is None:
        return np.arange(n_features), np.arange(n_features)
    labels = np.asarray(groups)
    if labels.ndim != 1 or labels.shape[0] != n_features:
        raise ValueError(
            f"{name} must hold one group label per feature: got shape {labels.shape} "
            f"for X with {n_features} features. Pass an array of length {n_features}."
        )
    if labels.dtype.kind not in "biuUS" or not isinstance(groups, np.ndarray):
        # Lists and object arrays: NumPy would turn [1, "a"] into ["1", "a"].
        labels = _labels_of_one_kind(list(groups), name)
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise ValueError(
            f"{name} contains NaN or infinity: give every feature a finite number or a "
            "string as its group label."
        )
    return np.unique(labels, return_inverse=True)


def _labels_of_one_kind(labels: list, name: str) -> np.ndarray:
    """The labels as an array of strings or of numbers; a ValueError for anything else."""
    is_string = [isinstance(label, str) for label in labels]
    is_number = [isinstance(label, Real) for label in labels]
    neither = [i for i, (a, b) in enumerate(zip(is_string, is_number, strict=True)) if not a | b]
    if neither:
        raise ValueError(
            f"{name} must hold a string or a number as the label of every feature; "
            f"feature {neither[0]} has {labels[neither[0]]!r}."
        )
    if any(is_string) and any(is_number):
        first_string, first_number = is_string.index(True), is_number.index(True)
        raise ValueError(
            f"{name} mixes strings and numbers (e.g. {labels[first_number]!r} and "
            f"{labels[first_string]!r}), which would be compared as strings: use labels of "
            "one kind."
        )
    return np.array(labels, dtype=str if any(is_string) else None)


def _check_group_weights(
    group_weights: ArrayLike | None, group_index: np.ndarray, n_groups: int
) -> np.ndarray:
    if group_weights is None:
        return np.sqrt(np.bincount(group_index, minlength=n_groups).astype(np.float64))
    weights = np.asarray(group_weights, dtype=np.float64)
    if weights.shape != (n_groups,):
        raise ValueError(
            f"group_weights must have one weight per group ({n_groups} groups, in the "
            f"order of np.unique(groups)); got shape {weights.shape}."
        )
    if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise ValueError("group_weights must be finite and strictly positive.")
    return weights
