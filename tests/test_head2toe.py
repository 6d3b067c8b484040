"""Head2ToeClassifier: the protocol of GridSearchCV over a Pipeline, from one pass per image."""

import subprocess
import sys

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)
from threadpoolctl import threadpool_info, threadpool_limits

from skh2t import GroupLassoClassifier, Head2ToeClassifier
from skh2t.features import IntermediateFeatureTransformer
from skh2t.plotting import kept_features_per_tap
from tests.image_data import images_and_labels
from tests.networks import small_convnet
from tests.rounding import head_rounding_bound

IMAGES, LABELS = images_and_labels(30, size=16)
GRID = {"target_sizes": [16, 64, 256], "alpha_fractions": [0.3, 0.1], "keep_fractions": [0.1, 0.4]}
TIGHT = {"tol": 1e-7, "max_iter": 20_000}


def head2toe(**params) -> Head2ToeClassifier:
    defaults = {"backbone": small_convnet(), "image_size": 16, "batch_size": 8, **GRID}
    return Head2ToeClassifier(**{**defaults, **params})


@pytest.fixture(scope="module")
def folds():
    return list(StratifiedKFold(3, shuffle=True, random_state=0).split(IMAGES, LABELS))


@pytest.fixture(scope="module")
def fitted(folds):
    return head2toe(cv=folds, **TIGHT).fit(IMAGES, LABELS)


def test_one_forward_pass_per_image_for_three_target_sizes():
    model = small_convnet()
    rows = []
    model.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    head2toe(backbone=model, cv=3).fit(IMAGES, LABELS)
    # The shape probe (one image, twice) at fit, then every image exactly once.
    assert rows[0] == 2
    assert sum(rows[1:]) == len(IMAGES)


@pytest.mark.slow
@pytest.mark.parametrize("renormalize_kept", [True, False])
def test_cv_scores_are_those_of_grid_search_over_a_pipeline(folds, renormalize_kept):
    estimator = head2toe(cv=folds, renormalize_kept=renormalize_kept, **TIGHT)
    estimator.fit(IMAGES, LABELS)
    features = IntermediateFeatureTransformer(backbone=small_convnet(), image_size=16)
    head = GroupLassoClassifier(
        renormalize_groups="feature_name_prefix" if renormalize_kept else None, **TIGHT
    )
    pipeline = Pipeline([("features", features.set_output(transform="pandas")), ("head", head)])
    grid = GridSearchCV(
        pipeline,
        {
            "features__target_size": GRID["target_sizes"],
            "head__alpha_fraction": sorted(GRID["alpha_fractions"], reverse=True),
            "head__keep_fraction": GRID["keep_fractions"],
        },
        cv=folds,
    ).fit(IMAGES, LABELS)
    ours, theirs = estimator.cv_results_, grid.cv_results_
    assert [p["target_size"] for p in ours["params"]] == list(theirs["param_features__target_size"])
    assert [p["alpha_fraction"] for p in ours["params"]] == list(
        theirs["param_head__alpha_fraction"]
    )
    assert [p["keep_fraction"] for p in ours["params"]] == list(theirs["param_head__keep_fraction"])
    for k in range(len(folds)):
        np.testing.assert_array_equal(ours[f"split{k}_test_score"], theirs[f"split{k}_test_score"])
    np.testing.assert_array_equal(ours["rank_test_score"], theirs["rank_test_score"])
    assert estimator.best_score_ == pytest.approx(grid.best_score_)
    # GridSearchCV breaks ties in its own order: refit the pipeline at our choice.
    chosen = estimator.best_params_
    best = clone(pipeline).set_params(
        features__target_size=chosen["target_size"],
        head__alpha_fraction=chosen["alpha_fraction"],
        head__keep_fraction=chosen["keep_fraction"],
    )
    best.fit(IMAGES, LABELS)
    assert estimator.alpha_ == pytest.approx(best[-1].alpha_)
    np.testing.assert_array_equal(estimator.get_support(), best[-1].get_support())
    np.testing.assert_allclose(
        estimator.predict_proba(IMAGES), best.predict_proba(IMAGES), atol=1e-6
    )


def test_best_point_follows_the_tie_rule_and_cv_results_show_as_a_table(fitted):
    pd = pytest.importorskip("pandas")
    table = pd.DataFrame(fitted.cv_results_)
    assert len(table) == 3 * 2 * 2
    assert {"param_target_size", "mean_test_score", "rank_test_score", "split2_test_score"} <= set(
        table.columns
    )
    best = table.iloc[fitted.best_index_]
    assert best["mean_test_score"] == table["mean_test_score"].max() == fitted.best_score_
    assert best["rank_test_score"] == 1
    assert fitted.best_params_ == best["params"]
    tied = table[table["mean_test_score"] == fitted.best_score_]
    key = ["param_keep_fraction", "param_alpha_fraction", "param_target_size"]
    order = tied.sort_values(key, ascending=[True, False, True])
    assert order.index[0] == fitted.best_index_


def test_the_final_model_is_the_best_point_refitted_on_all_images(fitted):
    params = fitted.best_params_
    assert fitted.transformer_.target_size == params["target_size"]
    assert fitted.classifier_.alpha_fraction == params["alpha_fraction"]
    assert fitted.classifier_.keep_fraction == params["keep_fraction"]
    X = fitted.transformer_.transform(IMAGES)
    refit = clone(fitted.classifier_).fit(X, LABELS)
    # Bit for bit: the features come in the same batches as at fit, and the solvers run
    # on one BLAS thread (skh2t.threads), so the same products in the same order.
    np.testing.assert_array_equal(refit.coef_, fitted.classifier_.coef_)
    assert fitted.best_estimator_[0] is fitted.transformer_
    rows = kept_features_per_tap(fitted)
    assert [row["tap"] for row in rows if row["kept"]] == fitted.kept_taps_
    assert sum(row["kept"] for row in rows) == fitted.get_support().sum()
    assert fitted.refit_time_ >= 0
    assert fitted.n_splits_ == 3


def test_prediction_goes_through_the_images_in_chunks(fitted, monkeypatch):
    pipeline = fitted.best_estimator_
    expected = pipeline.predict_proba(IMAGES), pipeline.decision_function(IMAGES)
    bound = head_rounding_bound(pipeline, IMAGES)
    seen = []
    transform = fitted.transformer_.transform

    def recording(X):
        seen.append(len(X))
        return transform(X)

    monkeypatch.setattr(fitted.transformer_, "transform", recording)
    # Both extract in the same batches, so the features are the same floats; the head's
    # float32 product of 8 rows and that of 30 may run in other BLAS kernels (they do on
    # an AMD EPYC), equal up to the rounding of a dot product of the kept features.
    scores = fitted.decision_function(IMAGES)
    assert np.all(np.abs(scores - expected[1]) <= bound)
    # A binary softmax moves at most a quarter as much as its score.
    proba = fitted.predict_proba(IMAGES)
    assert np.all(np.abs(proba - expected[0]) <= bound[:, None] / 4 + 1e-15)
    assert seen[:4] == [8, 8, 8, 6]  # batch_size images at a time
    assert np.all(np.abs(expected[1]) > bound)  # no score within rounding of a tie:
    assert np.array_equal(fitted.predict(IMAGES), pipeline.predict(IMAGES))  # same classes
    assert fitted.score(IMAGES, LABELS) == pipeline.score(IMAGES, LABELS)
    log_proba = fitted.predict_log_proba(IMAGES)
    np.testing.assert_allclose(np.exp(log_proba), proba, rtol=1e-13)


@pytest.mark.slow
def test_pickle_stores_no_weights_and_predicts_identically_in_a_fresh_process(tmp_path):
    named = Head2ToeClassifier(
        backbone="test_resnet", weights=None, image_size=16, cv=2, random_state=0, **GRID
    ).fit(IMAGES, LABELS)
    path = tmp_path / "h2t.joblib"
    joblib.dump(named, path)
    np.save(tmp_path / "images.npy", IMAGES)
    expected = named.predict_proba(IMAGES)
    np.save(tmp_path / "expected.npy", expected)
    loaded = joblib.load(path)
    assert not loaded.transformer_.extraction_.backbone.is_built  # rebuilt on first use
    script = (
        "import joblib, numpy as np;"
        f"m = joblib.load({str(path)!r});"
        f"p = m.predict_proba(np.load({str(tmp_path / 'images.npy')!r}));"
        f"assert np.array_equal(p, np.load({str(tmp_path / 'expected.npy')!r})), 'differs'"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_works_inside_cross_val_score_and_grid_search():
    small = {"alpha_fractions": [0.1], "keep_fractions": [0.4], "cv": 2, "random_state": 0}
    scores = cross_val_score(head2toe(**small, target_sizes=[64]), IMAGES, LABELS, cv=2)
    assert scores.shape == (2,)
    assert np.all((scores >= 0) & (scores <= 1))
    grid = GridSearchCV(
        head2toe(**small), {"renormalize_kept": [True, False]}, cv=2, refit=False
    ).fit(IMAGES, LABELS)
    assert len(grid.cv_results_["params"]) == 2


def test_pooling_strides_instead_of_target_sizes():
    model = head2toe(pool_strides=[2, 8], cv=2, random_state=0).fit(IMAGES, LABELS)
    assert set(model.best_params_) == {"pool_stride", "alpha_fraction", "keep_fraction"}
    assert model.transformer_.pool_stride == model.best_params_["pool_stride"]
    assert [p["pool_stride"] for p in model.cv_results_["params"]][::4] == [2, 8]


def test_random_state_shuffles_the_folds_reproducibly():
    a = head2toe(cv=3, random_state=1).fit(IMAGES, LABELS)
    b = head2toe(cv=3, random_state=1).fit(IMAGES, LABELS)
    np.testing.assert_array_equal(
        a.cv_results_["split0_test_score"], b.cv_results_["split0_test_score"]
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"target_sizes": [64, 64]}, "target_sizes must be a non-empty 1-D list of distinct"),
        ({"target_sizes": [0]}, "target_sizes"),
        ({"pool_strides": [1.5]}, "pool_strides"),
        ({"alpha_fractions": [0.0, 0.1]}, "alpha_fractions must be a non-empty"),
        ({"keep_fractions": []}, "keep_fractions must be a non-empty"),
        ({"keep_fractions": [1.2]}, "keep_fractions"),
        ({"alpha_fractions": [np.nan]}, "alpha_fractions must be a non-empty"),
        ({"alpha_fractions": [0.1, np.inf]}, "alpha_fractions must be a non-empty"),
        ({"keep_fractions": [0.1, np.nan]}, "keep_fractions must be a non-empty"),
    ],
)
def test_bad_grids_are_refused_before_any_forward_pass(params, message):
    model = small_convnet()
    rows = []
    model.register_forward_pre_hook(lambda module, args: rows.append(1))
    with pytest.raises(ValueError, match=message):
        head2toe(backbone=model, **params).fit(IMAGES, LABELS)
    assert rows == []


@pytest.mark.parametrize(
    ("labels", "weights", "message"),
    [
        (np.zeros(len(LABELS), dtype=int), None, "only one class: np.int64\\(0\\)"),
        (LABELS, np.where(LABELS == 0, 1.0, -1.0), "Negative values .* `sample_weight`"),
        (LABELS, np.where(LABELS == 0, 1.0, 0.0), "only one class has any weight"),
    ],
)
def test_bad_labels_or_weights_are_refused_before_any_forward_pass(labels, weights, message):
    model = small_convnet()
    rows = []
    model.register_forward_pre_hook(lambda module, args: rows.append(1))
    with pytest.raises(ValueError, match=message):
        head2toe(backbone=model).fit(IMAGES, labels, sample_weight=weights)
    assert rows == []


@pytest.mark.parametrize("parameter", ["n_jobs", "extraction_n_jobs"])
def test_n_jobs_zero_is_refused_before_any_forward_pass(parameter):
    model = small_convnet()
    rows = []
    model.register_forward_pre_hook(lambda module, args: rows.append(1))
    with pytest.raises(ValueError, match=f"'{parameter}' parameter"):
        head2toe(backbone=model, **{parameter: 0}).fit(IMAGES, LABELS)
    assert rows == []


def test_bad_labels_and_unfitted_use_are_clear():
    with pytest.raises(ValueError, match="one label per image"):
        head2toe().fit(IMAGES, LABELS[:-1])
    with pytest.raises(ValueError, match="Unknown label type"):
        head2toe().fit(IMAGES, np.linspace(0, 1, len(IMAGES)))
    with pytest.raises(NotFittedError):
        head2toe().predict(IMAGES)


def test_sample_weight_reaches_the_folds_and_the_refit(folds):
    weights = np.where(LABELS == 0, 2.0, 0.5)
    model = head2toe(cv=folds, **TIGHT).fit(IMAGES, LABELS, sample_weight=weights)
    X = model.transformer_.transform(IMAGES)
    expected = clone(model.classifier_).fit(X, LABELS, sample_weight=weights)
    np.testing.assert_array_equal(model.classifier_.coef_, expected.coef_)
    unweighted = head2toe(cv=folds, **TIGHT).fit(IMAGES, LABELS)
    assert not np.array_equal(
        unweighted.cv_results_["mean_test_score"], model.cv_results_["mean_test_score"]
    ) or not np.array_equal(unweighted.classifier_.coef_, model.classifier_.coef_)


@pytest.mark.parametrize(
    "check",
    [
        check_parameters_default_constructible,
        check_no_attributes_set_in_init,
        check_get_params_invariance,
        check_set_params,
    ],
)
def test_scikit_learn_checks_that_apply_to_image_input(check):
    check("Head2ToeClassifier", Head2ToeClassifier())


def test_parallel_cross_validation_gives_the_same_search(folds, fitted):
    parallel = head2toe(cv=folds, n_jobs=2, **TIGHT).fit(IMAGES, LABELS)
    for key in ("mean_test_score", "split0_test_score", "split2_test_score"):
        np.testing.assert_array_equal(parallel.cv_results_[key], fitted.cv_results_[key])
    assert parallel.best_params_ == fitted.best_params_
    np.testing.assert_array_equal(parallel.classifier_.coef_, fitted.classifier_.coef_)


def single_threaded_log_loss(head, X, y):
    """Minus the log-loss, which shows any last-bit difference (an accuracy hides them until
    a near-tie flips a prediction); fails unless BLAS runs on one thread."""
    threads = {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    assert threads == {1}, f"a fold ran BLAS with {threads} threads"
    return -log_loss(y, head.predict_proba(X), labels=head.classes_)


def test_cv_results_are_the_same_floats_whatever_n_jobs(folds):
    """The folds run here (with two BLAS threads around them, as on a multi-core machine)
    and in two worker processes give the same floats."""
    params = {"cv": folds, "scoring": single_threaded_log_loss, "target_sizes": [16, 64]}
    with threadpool_limits(limits=2, user_api="blas"):
        sequential = head2toe(n_jobs=1, **params).fit(IMAGES, LABELS)
    parallel = head2toe(n_jobs=2, **params).fit(IMAGES, LABELS)
    for key in ("mean_test_score", "split0_test_score", "split1_test_score"):
        np.testing.assert_array_equal(parallel.cv_results_[key], sequential.cv_results_[key])
    assert parallel.best_params_ == sequential.best_params_


def test_a_scoring_callable_gets_sample_weight_only_when_fit_does(folds):
    calls = []

    def weighted_accuracy(head, X, y, **params):
        calls.append(sorted(params))
        return head.score(X, y, **params)

    params = {"cv": folds, "scoring": weighted_accuracy, "target_sizes": [16]}
    head2toe(**params).fit(IMAGES, LABELS)
    assert calls
    assert all(names == [] for names in calls)
    calls.clear()
    head2toe(**params).fit(IMAGES, LABELS, sample_weight=np.where(LABELS == 0, 2.0, 1.0))
    assert calls
    assert all(names == ["sample_weight"] for names in calls)


def test_scoring_and_progress_bars(capsys):
    model = head2toe(
        cv=2, random_state=0, scoring="balanced_accuracy", verbose=1, target_sizes=[16, 64]
    ).fit(IMAGES, LABELS)
    assert np.all(
        (model.cv_results_["mean_test_score"] >= 0) & (model.cv_results_["mean_test_score"] <= 1)
    )
    model.predict(IMAGES)
    err = capsys.readouterr().err
    assert "Head2Toe cross-validation" in err
    assert "Predicting" in err


def test_unconverged_cross_validation_fits_are_counted_and_warned_once():
    model = head2toe(cv=2, random_state=0, max_iter=2, tol=1e-10, target_sizes=[64])
    with pytest.warns(ConvergenceWarning) as caught:
        model.fit(IMAGES, LABELS)
    summaries = [w for w in caught if "of the cross-validation" in str(w.message)]
    assert len(summaries) == 1
    assert model.n_cv_not_converged_ > 0
    assert str(summaries[0].message).startswith(f"{model.n_cv_not_converged_} ")
    converged = head2toe(cv=2, random_state=0, target_sizes=[64]).fit(IMAGES, LABELS)
    assert converged.n_cv_not_converged_ == 0


def test_folds_train_on_views_of_the_features_and_the_refit_sees_the_images_order(
    monkeypatch, folds
):
    """The features' rows are moved into fold order, so each fold's training rows are at most
    two slices of them (no copy); the final refit gets them back in the order of the images."""
    import skh2t.linear_model._fold_path as fold_path

    blocks, of = [], fold_path.StackedRows.of

    def spy(X, rows=None):
        stacked = of(X, rows)
        if rows is not None and len(rows) > len(X) // 2:  # a fold's training rows
            blocks.append([np.shares_memory(block, X) for block in stacked.blocks])
        return stacked

    monkeypatch.setattr(fold_path.StackedRows, "of", staticmethod(spy))
    fitted_rows = []
    fit = GroupLassoClassifier.fit
    monkeypatch.setattr(
        GroupLassoClassifier,
        "fit",
        lambda self, X, y, **kw: fitted_rows.append(X.copy()) or fit(self, X, y, **kw),
    )
    estimator = head2toe(cv=folds, target_sizes=[16], n_jobs=1, **TIGHT).fit(IMAGES, LABELS)
    assert len(blocks) == len(folds)
    assert all(1 <= len(views) <= 2 and all(views) for views in blocks)
    # Bit for bit: extracted in the same batches as at fit, and the rows were only moved.
    np.testing.assert_array_equal(fitted_rows[-1], estimator.transformer_.transform(IMAGES))


def test_store_features_keeps_every_poolings_training_features_in_the_images_order(folds):
    from skh2t.features.joint import transform_jointly

    estimator = head2toe(cv=folds, store_features=True).fit(IMAGES, LABELS)
    stored = estimator.training_features_
    assert list(stored) == GRID["target_sizes"]
    chosen = estimator.transformer_
    transformers = [chosen.repool(target_size=T) for T in stored]
    # Extracted in the same batches and only moved back: the same floats.
    for X, expected in zip(stored.values(), transform_jointly(transformers, IMAGES), strict=True):
        np.testing.assert_array_equal(X, expected)
    estimator.set_params(store_features=False).fit(IMAGES, LABELS)
    assert not hasattr(estimator, "training_features_")  # not left over from the first fit


def test_n_not_converged_counts_the_cross_validation_and_the_final_refit():
    model = head2toe(cv=2, random_state=0, max_iter=2, tol=1e-10, target_sizes=[64])
    with pytest.warns(ConvergenceWarning):
        model.fit(IMAGES, LABELS)
    assert model.classifier_.n_not_converged_ >= 1  # the final penalised solve, at least
    assert model.n_not_converged_ == model.n_cv_not_converged_ + model.classifier_.n_not_converged_
    converged = head2toe(cv=2, random_state=0, target_sizes=[64]).fit(IMAGES, LABELS)
    assert converged.n_not_converged_ == 0


def test_prediction_leaves_the_fitted_transformer_unchanged(fitted):
    before = fitted.transformer_.get_params()
    model = clone(fitted)  # unfitted parameters only: reuse the fitted state below
    model.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    model.set_params(batch_size=5, verbose=1)
    predicted = model.predict(IMAGES)
    assert model.transformer_.get_params() == before
    assert model.transformer_.batch_size == before["batch_size"] != 5
    assert predicted.shape == LABELS.shape
