"""GroupLassoClassifierCV: alpha (and keep fraction) chosen by cross-validation on a warm path."""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.metrics import check_scoring, get_scorer_names
from sklearn.model_selection import check_cv
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, validate_data

from skh2t._compact import CompactStateMixin
from skh2t._constraints import N_JOBS
from skh2t._prediction import LinearSoftmaxMixin
from skh2t.linear_model._group_lasso import GroupLassoClassifier, _groups_from_feature_names
from skh2t.threads import on_one_blas_thread

# Fitted attributes of the refitted GroupLassoClassifier exposed by the CV estimator.
_COPIED_ATTRIBUTES = (
    "classes_",
    "alpha_max_",
    "coef_",
    "intercept_",
    "group_lasso_coef_",
    "group_lasso_intercept_",
    "feature_scores_",
    "dual_scores_",
    "support_",
    "group_labels_",
    "group_weights_",
    "renormalize_index_",
    "kkt_violation_",
    "objective_",
    "n_iter_",
    "refit_n_iter_",
)


class GroupLassoClassifierCV(CompactStateMixin, LinearSoftmaxMixin, ClassifierMixin, BaseEstimator):
    """GroupLassoClassifier with ``alpha`` and ``keep_fraction`` chosen by cross-validation.

    Like :class:`~sklearn.linear_model.LogisticRegressionCV`: in every fold the
    penalised problem is solved along a decreasing path of ``alphas``, each
    solve warm-started from the previous solutions (extrapolated linearly in
    ``log(alpha)`` from the last two; their support seeds the working set).
    The penalised fit does not depend on the keep fraction, so every keep
    fraction is scored from the same solution by re-running only the
    selection and the refit. Folds run in parallel with joblib. The best
    mean score picks ``alpha_`` and ``keep_fraction_`` (ties go to the
    smaller keep fraction, then the larger alpha: the sparser model); the
    model is then refitted on all data.

    Parameters
    ----------
    alphas : int or array-like of shape (n_alphas,), default=8
        Absolute strengths. An int gives that many alphas on a geometric grid
        from ``alpha_max`` (of the whole training data) down to ``eps *
        alpha_max``; an array gives the alphas themselves (finite, ``>= 0``).
        Ignored when ``alpha_fractions`` is set.
    alpha_fractions : array-like of float in (0, 1], default=None
        Relative strengths, as ``GroupLassoClassifier(alpha_fraction=...)``:
        fractions of the ``alpha_max`` of each fold's training part in
        cross-validation, and of all the data in the final refit (Head2Toe's
        protocol). When set, ``alphas`` and ``eps`` are ignored.
    eps : float, default=1e-2
        Ratio of the smallest to the largest alpha of the grid.
    keep_fractions : array-like of float in (0, 1], default=None
        Keep fractions to choose from (Head2Toe selection and refit). ``None``:
        no selection, the penalised fit is the model.
    cv : int, cross-validation generator or iterable, default=5
        As in scikit-learn: an int is the number of stratified folds.
    scoring : str or callable, default=None
        Score to maximise; ``None`` is the accuracy. A callable is called as
        ``scoring(estimator, X_valid, y_valid)``, with
        ``sample_weight=`` the validation rows' weights when ``fit`` is given
        ``sample_weight``.
    groups, group_weights, refit_l2, renormalize_groups, fit_intercept, class_weight, tol, \
max_iter
        As in :class:`GroupLassoClassifier`.
    n_jobs : int, default=None
        Folds run in parallel on this many workers (joblib). The scores do
        not depend on it: every fold runs BLAS on one thread, in this process
        as in a worker, so it gives the same floats wherever it runs.
    verbose : int, default=0
        Verbosity of joblib and of the solver.

    Attributes
    ----------
    alphas_ : ndarray of shape (n_alphas,)
        The alphas tried, in decreasing order; with ``alpha_fractions``, the
        fractions times ``alpha_max_`` of all the data (each fold used its own
        ``alpha_max``).
    alpha_fractions_ : ndarray of shape (n_alphas,) or None
        The fractions tried, in decreasing order (``None`` without
        ``alpha_fractions``).
    keep_fractions_ : list
        The keep fractions tried (``[None]`` without selection).
    scores_ : ndarray of shape (n_folds, n_alphas, n_keep_fractions)
        Validation score of every fold, alpha and keep fraction.
    mean_scores_ : ndarray of shape (n_alphas, n_keep_fractions)
        Mean validation score over folds.
    alpha_ : float
        The chosen alpha, absolute (that of the final refit).
    alpha_fraction_ : float or None
        The chosen fraction of ``alpha_max`` (``None`` without ``alpha_fractions``).
    keep_fraction_ : float or None
        The chosen keep fraction.
    best_score_ : float
        Mean validation score of the chosen pair.
    coef_, intercept_, classes_, support_, feature_scores_, n_iter_ : ndarray
        Those of the :class:`GroupLassoClassifier` refitted on all data
        (see there; also ``group_lasso_coef_``, ``dual_scores_`` and the others).
    n_features_in_ : int
        Number of features seen during fit.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skh2t import GroupLassoClassifierCV
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = GroupLassoClassifierCV(alphas=4, keep_fractions=[0.5, 1.0], cv=3).fit(X, y)
    >>> clf.scores_.shape
    (3, 4, 2)
    >>> bool(clf.best_score_ > 0.9), clf.alpha_ in clf.alphas_
    (True, True)
    """

    _parameter_constraints: dict = {
        "alphas": [Interval(Integral, 1, None, closed="left"), "array-like"],
        "alpha_fractions": ["array-like", None],
        "eps": [Interval(Real, 0, 1, closed="neither")],
        "keep_fractions": ["array-like", None],
        "cv": ["cv_object"],
        "scoring": [StrOptions(set(get_scorer_names())), callable, None],
        "groups": ["array-like", StrOptions({"feature_name_prefix"}), None],
        "group_weights": ["array-like", None],
        "refit_l2": [Interval(Real, 0, None, closed="left")],
        "renormalize_groups": ["array-like", StrOptions({"feature_name_prefix"}), None],
        "fit_intercept": ["boolean"],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": N_JOBS,
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        alphas: int | ArrayLike = 8,
        alpha_fractions: ArrayLike | None = None,
        eps: float = 1e-2,
        keep_fractions: ArrayLike | None = None,
        cv=5,
        scoring=None,
        groups: ArrayLike | str | None = None,
        group_weights: ArrayLike | None = None,
        refit_l2: float = 1e-4,
        renormalize_groups: ArrayLike | str | None = None,
        fit_intercept: bool = True,
        class_weight: dict | str | None = None,
        tol: float = 1e-4,
        max_iter: int = 5000,
        n_jobs: int | None = None,
        verbose: int = 0,
    ):
        self.alphas = alphas
        self.alpha_fractions = alpha_fractions
        self.eps = eps
        self.keep_fractions = keep_fractions
        self.cv = cv
        self.scoring = scoring
        self.groups = groups
        self.group_weights = group_weights
        self.refit_l2 = refit_l2
        self.renormalize_groups = renormalize_groups
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
        self.tol = tol
        self.max_iter = max_iter
        self.n_jobs = n_jobs
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None):
        """Cross-validate the alpha path and keep fractions, then refit on all data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Class labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights used both to fit and to score every fold.

        Returns
        -------
        self : GroupLassoClassifierCV
            The fitted estimator.
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], order="C")
        weighted_scores = sample_weight is not None
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        base = self._base_estimator()
        checked = clone(base)  # labels, weights and groups, before any fold
        datafit = checked._make_datafit(X, y, sample_weight)
        checked._make_penalty(X.shape[1], 1.0)
        if self.keep_fractions is not None:
            checked.set_params(keep_fraction=1.0)._renormalize_index(X.shape[1])
        relative = self.alpha_fractions is not None
        if relative:
            self.alpha_fractions_ = _fraction_grid(self.alpha_fractions, "alpha_fractions")[::-1]
            path_alphas = self.alpha_fractions_
        else:
            self.alpha_fractions_ = None
            path_alphas = self.alphas_ = self._alpha_grid(checked, X, datafit)
        self.keep_fractions_ = self._keep_fraction_grid()
        folds = list(check_cv(self.cv, y, classifier=True).split(X, y))
        scorer = check_scoring(base, scoring=self.scoring)
        scores = Parallel(n_jobs=self.n_jobs, verbose=self.verbose)(
            delayed(_score_path)(
                base,
                X,
                y,
                sample_weight,
                train,
                test,
                path_alphas,
                self.keep_fractions_,
                scorer,
                relative_alphas=relative,
                weighted_scores=weighted_scores,
            )
            for train, test in folds
        )
        self.scores_ = np.stack(scores)
        self.mean_scores_ = self.scores_.mean(axis=0)
        best_alpha, best_fraction = _best_grid_point(self.mean_scores_, self.keep_fractions_)
        self.keep_fraction_ = self.keep_fractions_[best_fraction]
        self.best_score_ = float(self.mean_scores_[best_alpha, best_fraction])
        refit = base.set_params(keep_fraction=self.keep_fraction_)
        if relative:
            self.alpha_fraction_ = float(self.alpha_fractions_[best_alpha])
            refit.set_params(alpha_fraction=self.alpha_fraction_)
        else:
            self.alpha_fraction_ = None
            refit.set_params(alpha=float(self.alphas_[best_alpha]))
        refit.fit(X, y, sample_weight=sample_weight)
        if relative:
            self.alphas_ = self.alpha_fractions_ * refit.alpha_max_
        self.alpha_ = refit.alpha_
        for name in _COPIED_ATTRIBUTES:
            if hasattr(refit, name):
                setattr(self, name, getattr(refit, name))
            else:  # e.g. alpha_max_ of an earlier fit with alpha_fractions
                self.__dict__.pop(name, None)
        return self

    def _base_estimator(self) -> GroupLassoClassifier:
        # Folds see arrays: resolve the names once, here.
        names = getattr(self, "feature_names_in_", None)
        groups, renormalize_groups = self.groups, self.renormalize_groups
        if isinstance(groups, str):
            groups = _groups_from_feature_names(names)
        if isinstance(renormalize_groups, str):
            renormalize_groups = _groups_from_feature_names(names, name="renormalize_groups")
        return GroupLassoClassifier(
            groups=groups,
            group_weights=self.group_weights,
            refit_l2=self.refit_l2,
            renormalize_groups=renormalize_groups,
            fit_intercept=self.fit_intercept,
            class_weight=self.class_weight,
            tol=self.tol,
            max_iter=self.max_iter,
            verbose=max(0, self.verbose - 1),
        )

    def _alpha_grid(self, checked: GroupLassoClassifier, X, datafit) -> np.ndarray:
        """The alphas; an int of them spaced from ``alpha_max`` of the checked data."""
        if isinstance(self.alphas, Integral):
            alpha_max = checked._alpha_max_of(X, datafit)
            return alpha_max * np.geomspace(1.0, self.eps, self.alphas)
        alphas = np.asarray(self.alphas, dtype=np.float64)
        if alphas.ndim != 1 or alphas.size == 0 or not np.all(np.isfinite(alphas) & (alphas >= 0)):
            raise ValueError(
                f"alphas must be a positive int or a non-empty 1-D array of finite alphas >= 0; "
                f"got {self.alphas!r}."
            )
        return np.sort(alphas)[::-1]

    def _keep_fraction_grid(self) -> list:
        if self.keep_fractions is None:
            return [None]
        return [float(f) for f in _fraction_grid(self.keep_fractions, "keep_fractions")]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.classifier_tags.multi_class = True
        return tags


def _fraction_grid(values: ArrayLike, name: str) -> np.ndarray:
    """A validated grid of fractions in (0, 1], sorted increasingly, without duplicates."""
    fractions = np.asarray(values, dtype=np.float64)
    if (
        fractions.ndim != 1
        or fractions.size == 0
        or np.any(~((fractions > 0) & (fractions <= 1)))
        or np.unique(fractions).size != fractions.size
    ):
        raise ValueError(
            f"{name} must be a non-empty 1-D list of distinct fractions in (0, 1]; got {values!r}."
        )
    return np.sort(fractions)


def _best_grid_point(mean_scores: np.ndarray, keep_fractions: list) -> tuple[int, ...]:
    """Index of the best mean score on a grid of shape ``(..., n_alphas, n_keep_fractions)``.

    The one tie-break rule of skh2t's model selection: among equal means, the
    smaller keep fraction, then the larger alpha (alphas are in decreasing
    order), then the earlier index of the leading axes (e.g. the smaller
    target size): the sparser, cheaper model.

    Examples
    --------
    >>> scores = np.array([[0.8, 0.9], [0.9, 0.7]])  # 2 alphas x 2 keep fractions
    >>> _best_grid_point(scores, [0.1, 0.2])
    (1, 0)
    """
    fractions = np.array([np.inf if f is None else f for f in keep_fractions])
    order = np.argsort(fractions, kind="stable")
    # Axes (fraction, alpha, leading...): argmax returns the first maximum in that order.
    ranked = np.moveaxis(mean_scores[..., order], (-1, -2), (0, 1))
    fraction, alpha, *leading = np.unravel_index(int(np.argmax(ranked)), ranked.shape)
    return (*(int(i) for i in leading), int(alpha), int(order[fraction]))


@on_one_blas_thread
def _score_path(
    base: GroupLassoClassifier,
    X: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    alphas: np.ndarray,
    keep_fractions: list,
    scorer,
    *,
    relative_alphas: bool = False,
    weighted_scores: bool = True,
    on_alpha: Callable[[], None] | None = None,
) -> np.ndarray:
    """Scores of one fold along the warm-started alpha path, every keep fraction per alpha.

    The penalised fit does not depend on the keep fraction: it is solved once
    per alpha, and only the selection and the refit run once per fraction.
    ``relative_alphas``: the alphas are fractions of ``alpha_max`` of the
    fold's training rows (computed here, on the fold's one copy of them).
    ``weighted_scores``: call ``scorer`` with the validation rows'
    ``sample_weight`` (else as ``scorer(estimator, X, y)``, the signature of
    any scikit-learn scoring callable). ``on_alpha`` is called after every
    alpha (progress bars).

    BLAS runs on one thread throughout (not only in the solvers): the number
    of threads changes the last bits of its products, and this function runs
    in this process or in a joblib worker depending on ``n_jobs``. On one
    thread, a fold gives the same floats wherever it runs.
    """
    clf = clone(base)
    X_train, datafit = clf._prepare(X[train], y[train], sample_weight[train])
    if relative_alphas:
        alphas = alphas * clf.alpha_max(X_train, y[train], sample_weight[train])
    X_test, y_test = X[test], y[test]
    score_params = {"sample_weight": sample_weight[test]} if weighted_scores else {}
    scores = np.empty((len(alphas), len(keep_fractions)))
    solved: list[tuple[float, np.ndarray, np.ndarray]] = []
    for i, alpha in enumerate(alphas):
        start = _predicted_start(solved, alpha)
        result = clf._fit_penalised(X_train, datafit, alpha, start)
        solved = [*solved[-1:], (alpha, result.coef, result.intercept)]
        for j, fraction in enumerate(keep_fractions):
            clf.set_params(keep_fraction=fraction)._select_and_refit(X_train, datafit, result)
            scores[i, j] = scorer(clf, X_test, y_test, **score_params)
        if on_alpha is not None:
            on_alpha()
    return scores


def _predicted_start(solved: list, alpha: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Start of the solve at ``alpha`` from the solutions at the previous alphas.

    The solution path is piecewise smooth in ``log(alpha)``: rows that are
    non-zero at the last two alphas are extrapolated linearly (a secant
    predictor, which leaves less for the solver to correct than the last
    solution alone); rows that just entered, whose kink lies between them, and
    the zero rows keep their last value. ``None`` (start from zero) on the
    first alpha.
    """
    if not solved:
        return None
    previous_alpha, coef, intercept = solved[-1]
    if len(solved) < 2 or min(alpha, previous_alpha, solved[-2][0]) <= 0:
        return coef, intercept
    older_alpha, older_coef, older_intercept = solved[-2]
    if previous_alpha == older_alpha:
        return coef, intercept
    step = np.log(alpha / previous_alpha) / np.log(previous_alpha / older_alpha)
    both = np.any(coef != 0, axis=1) & np.any(older_coef != 0, axis=1)
    coef = coef.copy()
    coef[both] += step * (coef[both] - older_coef[both])
    return coef, intercept + step * (intercept - older_intercept)
