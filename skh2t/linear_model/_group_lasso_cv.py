"""GroupLassoClassifierCV: alpha (and keep fraction) chosen by cross-validation on a warm path."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from joblib import Parallel, delayed
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.metrics import check_scoring, get_scorer_names
from sklearn.model_selection import check_cv
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight

from skh2t._compact import CompactStateMixin
from skh2t._constraints import N_JOBS
from skh2t._prediction import LinearSoftmaxMixin
from skh2t.linear_model._fold_path import FoldPath, PathGrid, path_cv_results, score_path_on_fold
from skh2t.linear_model._group_lasso import (
    BlockwisePredictionMixin,
    GroupLassoClassifier,
    Problem,
    _groups_from_feature_names,
    validate_rows,
)
from skh2t.linear_model._path import alpha_max
from skh2t.linear_model._search import (
    first_best,
    fraction_grid,
    simplicity_order,
    warn_not_converged,
)
from skh2t.linear_model._solver.dask_rows import DaskRows
from skh2t.linear_model._solver.rows import out_of_core

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


class GroupLassoClassifierCV(
    CompactStateMixin, BlockwisePredictionMixin, LinearSoftmaxMixin, ClassifierMixin, BaseEstimator
):
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
    cv_results_ : dict of ndarray
        One entry per (alpha, keep fraction), alphas decreasing, in
        ``GridSearchCV``'s schema (the layout of every search of skh2t):
        ``param_alpha`` (or ``param_alpha_fraction``), ``param_keep_fraction``,
        ``params``, ``split<k>_test_score``, ``mean_test_score``,
        ``std_test_score``, ``rank_test_score``, ``mean_fit_time``,
        ``std_fit_time``, ``mean_score_time``, ``std_score_time``. A point's fit
        time is its share of the path: its alpha's penalised solve divided
        evenly among the keep fractions, plus its own refit.
    best_index_ : int
        The chosen row of ``cv_results_``.
    n_cv_not_converged_ : int
        Penalised fits and refits of the cross-validation that stopped short
        of ``tol`` (one ``ConvergenceWarning`` says how many).
    n_not_converged_ : int
        Every solve of ``fit`` that stopped short of ``tol``: those of the
        cross-validation and the final refit's (its own ``ConvergenceWarning``).
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

    Notes
    -----
    On a numpy memmap or a 2-D dask array (chunked by rows, as for
    :class:`GroupLassoClassifier`, whose Notes say how the penalised solves
    run out of core), every fold trains on all rows with its validation
    rows' weights at zero (the same problem) instead of on a copy of its
    training rows, and the default accuracy is computed block by block of
    validation rows, so the matrix is streamed rather than copied; with a
    ``scoring``, a dask array's validation rows stay a lazy selection, which
    the fold's model predicts block by block. ``predict``, ``score`` and the
    others compute a dask array block by block too. See
    :ref:`benchmarks <bench-out-of-core>` for what that saves and what
    memory remains.

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
        # Their folds train by weight: no copy of X.
        on_disk = out_of_core(X)
        X, y = validate_rows(self, X, y)
        if isinstance(X, DaskRows):
            X = X.array  # whole rows per chunk; the folds index it lazily
        weighted_scores = sample_weight is not None
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        params = self._head_params()
        keep_fractions = self._keep_fraction_grid()
        checked = Problem.of(  # labels, weights, groups and refit groups, before any fold
            {**params, "keep_fraction": keep_fractions[-1]}, X.shape[1], y, sample_weight
        )
        relative = self.alpha_fractions is not None
        if relative:
            self.alpha_fractions_ = np.array(
                fraction_grid(self.alpha_fractions, "alpha_fractions")[::-1]
            )
            grid = PathGrid(self.alpha_fractions_, keep_fractions, relative=True)
        else:
            self.alpha_fractions_ = None
            self.alphas_ = self._alpha_grid(X, checked)
            grid = PathGrid(self.alphas_, keep_fractions, relative=False)
        self.keep_fractions_ = keep_fractions
        folds = list(check_cv(self.cv, y, classifier=True).split(X, y))
        scorer = None  # the heads' own accuracy (block by block of validation rows out of core)
        if self.scoring is not None:
            scorer = check_scoring(GroupLassoClassifier(**params), scoring=self.scoring)
        paths = Parallel(n_jobs=self.n_jobs, verbose=self.verbose)(
            delayed(score_path_on_fold)(
                params,
                X,
                y,
                sample_weight,
                train,
                test,
                grid,
                scorer,
                weighted_scores,
                by_weight=on_disk,
            )
            for train, test in folds
        )
        self._record_search(paths, grid)
        refit = GroupLassoClassifier(**{**params, "keep_fraction": self.keep_fraction_})
        if relative:
            refit.set_params(alpha_fraction=self.alpha_fraction_)
        else:
            refit.set_params(alpha=float(self.alphas_[self._best_alpha_index]))
        refit.fit(X, y, sample_weight=sample_weight)
        if relative:
            self.alphas_ = self.alpha_fractions_ * refit.alpha_max_
        self.alpha_ = refit.alpha_
        self.n_not_converged_ = self.n_cv_not_converged_ + refit.n_not_converged_
        for name in _COPIED_ATTRIBUTES:
            if hasattr(refit, name):
                setattr(self, name, getattr(refit, name))
            else:  # e.g. alpha_max_ of an earlier fit with alpha_fractions
                self.__dict__.pop(name, None)
        return self

    def _record_search(self, paths: list[FoldPath], grid: PathGrid) -> None:
        """Set the search's attributes from the folds' paths."""
        self.scores_ = np.stack([path.scores for path in paths])
        self.mean_scores_ = self.scores_.mean(axis=0)
        name = "alpha_fraction" if grid.relative else "alpha"
        points = [
            {name: float(alpha), "keep_fraction": keep}
            for alpha in grid.alphas
            for keep in grid.keep_fractions
        ]
        self.cv_results_ = path_cv_results(points, paths)
        # Simplest first: the smaller keep fraction, then the larger alpha (alphas decrease).
        order = simplicity_order(self.mean_scores_.shape, [(1, True), (0, True)])
        best = first_best(self.mean_scores_.ravel(), order)
        best_alpha, best_fraction = np.unravel_index(best, self.mean_scores_.shape)
        self.best_index_ = int(best)
        self._best_alpha_index = int(best_alpha)
        self.keep_fraction_ = grid.keep_fractions[best_fraction]
        self.best_score_ = float(self.mean_scores_[best_alpha, best_fraction])
        self.alpha_fraction_ = float(grid.alphas[best_alpha]) if grid.relative else None
        self.n_cv_not_converged_ = sum(path.n_not_converged for path in paths)
        warn_not_converged(
            self.n_cv_not_converged_,
            "penalised fit(s) or refit(s) of the cross-validation",
            f"increase max_iter (now {self.max_iter}) or tol",
        )

    def _head_params(self) -> dict:
        """The parameters of the fold's GroupLassoClassifier, groups resolved to arrays."""
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
        ).get_params()

    def _alpha_grid(self, X: np.ndarray, checked: Problem) -> np.ndarray:
        """The alphas; an int of them spaced from ``alpha_max`` of the checked data."""
        if isinstance(self.alphas, Integral):
            top = alpha_max(X, checked.datafit, checked.groups, self.fit_intercept)
            return top * np.geomspace(1.0, self.eps, self.alphas)
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
        return fraction_grid(self.keep_fractions, "keep_fractions")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.classifier_tags.multi_class = True
        return tags
