"""Head2ToeClassifier on many images: features on disk, selection on a subsample, refit on all."""

import errno
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from skh2t import Head2ToeClassifier
from skh2t._prediction import renormalize_columns
from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.store import InsufficientDiskSpaceError
from skh2t.head2toe import selection_rows
from skh2t.linear_model._group_lasso import make_datafit, to_public
from skh2t.linear_model._path import SolverSettings, refit_columns
from tests.image_data import images_and_labels
from tests.networks import small_convnet
from tests.rounding import assert_same_support

IMAGES, LABELS = images_and_labels(60, size=16)
GRID = {"target_sizes": [16, 64], "alpha_fractions": [0.3, 0.1], "keep_fractions": [0.1, 0.4]}
TIGHT = {"tol": 1e-7, "max_iter": 20_000}


def head2toe(**params) -> Head2ToeClassifier:
    defaults = {"backbone": small_convnet(), "image_size": 16, "batch_size": 8, **GRID}
    return Head2ToeClassifier(**{**defaults, **TIGHT, "random_state": 0, **params})


def store_folders(directory) -> list:
    return sorted(directory.glob("skh2t-features-*"))


@pytest.fixture(scope="module")
def in_memory():
    return head2toe(cv=3).fit(IMAGES, LABELS)


def test_a_float32_store_gives_the_search_and_model_of_the_features_in_memory(tmp_path):
    # The log-loss, not the accuracy: on 20 validation images a near-tie may flip one.
    in_memory = head2toe(cv=3, scoring="neg_log_loss").fit(IMAGES, LABELS)
    on_disk = head2toe(cv=3, scoring="neg_log_loss", feature_store=tmp_path).fit(IMAGES, LABELS)
    # The same problems: folds trained by weight on the memmap vs on slices in memory.
    np.testing.assert_allclose(
        on_disk.cv_results_["mean_test_score"], in_memory.cv_results_["mean_test_score"], atol=1e-4
    )
    assert on_disk.best_params_ == in_memory.best_params_
    assert_same_support(on_disk.classifier_, in_memory.classifier_)  # by weight vs slices
    np.testing.assert_allclose(on_disk.classifier_.coef_, in_memory.classifier_.coef_, atol=1e-3)
    assert store_folders(tmp_path) == []  # deleted at the end of fit
    assert on_disk.selection_indices_ is None


def test_selection_on_a_subsample_is_the_search_of_the_subsample_and_a_refit_on_all(tmp_path):
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(np.zeros(40), LABELS[:40]))
    model = head2toe(cv=folds, selection_samples=40).fit(IMAGES, LABELS)
    rows = model.selection_indices_
    assert rows.shape == (40,)
    assert np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, selection_rows(LABELS, 40, random_state=0))
    # The search is that of the subsample alone, on the same folds (which index it).
    alone = head2toe(cv=folds).fit(IMAGES[rows], LABELS[rows])
    np.testing.assert_allclose(
        model.cv_results_["mean_test_score"], alone.cv_results_["mean_test_score"], atol=1e-9
    )
    assert model.best_params_ == alone.best_params_
    head = model.classifier_
    # The same images in the same batches, the same folds: the same floats, the same support.
    assert np.array_equal(head.support_, alone.classifier_.support_)
    np.testing.assert_allclose(head.group_lasso_coef_, alone.classifier_.group_lasso_coef_)
    # The head: the plain refit of the kept (re-normalised) columns of all 60 images.
    features = model.transformer_.transform(IMAGES)
    kept = np.flatnonzero(head.support_)
    X_kept = features[:, kept].copy()
    renormalize_columns(X_kept, head.renormalize_index_[kept])
    _, datafit = make_datafit(LABELS, None, None)
    settings = SolverSettings(tol=1e-7, max_iter=20_000)
    expected = refit_columns(X_kept, datafit, head.refit_l2, settings)  # the copying path
    coef, intercept = to_public(expected.coef, expected.intercept)
    # Both stop at a gradient of 1e-7 on a problem of curvature >= refit_l2 = 1e-4: each
    # is within 1e-3 of the minimiser.
    np.testing.assert_allclose(head.coef_[:, kept], coef, atol=2e-3)
    np.testing.assert_allclose(head.intercept_, intercept, atol=2e-3)
    assert np.all(head.coef_[:, ~head.support_] == 0)
    assert not np.allclose(head.coef_, alone.classifier_.coef_, atol=1e-3)  # all rows count


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_store_with_a_subsample_reads_the_rows_and_kept_columns_from_disk(tmp_path, dtype):
    # One image per batch: an image's features are then the same floats whichever images
    # are extracted with it (the store extracts all 60, the in-memory path the 40 first).
    params = {"cv": 3, "selection_samples": 40, "batch_size": 1}
    in_memory = head2toe(**params).fit(IMAGES, LABELS)
    model = head2toe(**params, feature_store=tmp_path, feature_store_dtype=dtype)
    model.fit(IMAGES, LABELS)
    assert np.array_equal(model.selection_indices_, in_memory.selection_indices_)
    if dtype == "float32":  # the same floats, read back from the files
        np.testing.assert_allclose(
            model.cv_results_["mean_test_score"], in_memory.cv_results_["mean_test_score"]
        )
        assert np.array_equal(model.get_support(), in_memory.get_support())
        np.testing.assert_allclose(model.classifier_.coef_, in_memory.classifier_.coef_, atol=1e-4)
    else:  # three digits on disk: a close model
        agreement = np.mean(model.predict(IMAGES) == in_memory.predict(IMAGES))
        assert agreement >= 0.9
    assert store_folders(tmp_path) == []


def test_without_a_store_the_refit_extracts_only_the_chosen_pooling_again(monkeypatch):
    model = small_convnet()
    rows = []
    model.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    head2toe(backbone=model, cv=3, selection_samples=30).fit(IMAGES, LABELS)
    # The shape probe, the 30 subsample images for the whole grid, then all 60 images once.
    assert rows[0] == 2
    assert sum(rows[1:]) == 30 + 60


def test_store_features_with_a_subsample_keeps_the_subsample_features():
    model = head2toe(cv=3, selection_samples=30, store_features=True).fit(IMAGES, LABELS)
    for target_size, features in model.training_features_.items():
        transformer = model.transformer_.repool(target_size=target_size)
        expected = transformer.transform(IMAGES[model.selection_indices_])
        np.testing.assert_allclose(features, expected, atol=1e-6)


def forward_counter():
    model = small_convnet()
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return model, calls


def test_float16_without_a_subsample_is_refused_before_any_forward_pass(tmp_path):
    model, calls = forward_counter()
    with pytest.raises(ValueError, match="feature_store_dtype='float16' needs selection_samples"):
        head2toe(backbone=model, feature_store=tmp_path, feature_store_dtype="float16").fit(
            IMAGES, LABELS
        )
    assert calls == []


def test_float16_without_a_store_is_refused_before_any_forward_pass():
    model, calls = forward_counter()
    with pytest.raises(ValueError, match="is the dtype of the features on disk: set feature_s"):
        head2toe(backbone=model, selection_samples=30, feature_store_dtype="float16").fit(
            IMAGES, LABELS
        )
    assert calls == []


def test_a_subsample_too_small_to_stratify_is_refused_before_any_forward_pass():
    model, calls = forward_counter()
    with pytest.raises(ValueError, match="selection_samples=2: cv splits"):
        head2toe(backbone=model, selection_samples=2).fit(IMAGES, LABELS)
    assert calls == []


def test_folds_of_all_images_with_a_subsample_are_refused_before_any_forward_pass():
    model, calls = forward_counter()
    folds = list(StratifiedKFold(3).split(np.zeros(len(LABELS)), LABELS))  # of all 60 images
    message = r"cv splits that subsample of 30 images.*index row \d+ but there are 30 rows"
    with pytest.raises(ValueError, match=message):
        head2toe(backbone=model, cv=folds, selection_samples=30).fit(IMAGES, LABELS)
    assert calls == []


def test_a_disk_too_small_for_the_store_is_refused_before_extraction(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        "skh2t.features.store.shutil.disk_usage",
        lambda path: usage._replace(free=1000),
    )
    model, calls = forward_counter()
    with pytest.raises(InsufficientDiskSpaceError, match=r"has 0\.0 GB free") as error:
        head2toe(backbone=model, feature_store=tmp_path).fit(IMAGES, LABELS)
    assert error.value.errno == errno.ENOSPC
    assert "float16" in str(error.value)
    assert calls == [1]  # only fit's shape probe (on one image), no extraction
    assert store_folders(tmp_path) == []


def test_the_store_is_deleted_when_fit_fails_after_extraction(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("cross-validation failed")

    monkeypatch.setattr(Head2ToeClassifier, "_cross_validate", fail)
    with pytest.raises(RuntimeError, match="cross-validation failed"):
        head2toe(cv=3, feature_store=tmp_path).fit(IMAGES, LABELS)
    assert store_folders(tmp_path) == []


def test_selection_rows_keeps_every_class_share():
    y = np.repeat(np.arange(4), [500, 300, 150, 50])
    rows = selection_rows(y, 100, random_state=1)
    assert np.bincount(y[rows]).tolist() == [50, 30, 15, 5]
    assert np.array_equal(rows, selection_rows(y, 100, random_state=1))
    assert selection_rows(y, None) is None
    assert selection_rows(y, 1000) is None


def test_the_transformer_and_predictions_do_not_depend_on_where_the_features_were(
    in_memory, tmp_path
):
    model = head2toe(cv=3, feature_store=tmp_path).fit(IMAGES, LABELS)
    assert isinstance(model.transformer_, IntermediateFeatureTransformer)
    assert np.mean(model.predict(IMAGES) == in_memory.predict(IMAGES)) >= 0.95


def test_store_features_on_disk_are_memmaps_of_files_that_stay(tmp_path):
    model = head2toe(cv=3, feature_store=tmp_path, store_features=True).fit(IMAGES, LABELS)
    (folder,) = store_folders(tmp_path)
    for target_size, features in model.training_features_.items():
        assert isinstance(features, np.memmap)
        assert folder in Path(features.filename).parents
        expected = model.transformer_.repool(target_size=target_size).transform(IMAGES)
        np.testing.assert_allclose(features, expected, atol=1e-6)


def test_a_model_pickled_before_the_many_images_parameters_still_loads(in_memory):
    import pickle

    state = in_memory.__getstate__()
    for name in ["selection_samples", "feature_store", "feature_store_dtype", "store_features"]:
        del state[name]
    del state["selection_indices_"]
    old = Head2ToeClassifier.__new__(Head2ToeClassifier)
    old.__setstate__(state)
    loaded = pickle.loads(pickle.dumps(old))
    assert loaded.get_params()["selection_samples"] is None
    assert loaded.selection_indices_ is None
    # The same model (pickled and loaded) on the same images: the same calls, the same floats.
    assert np.array_equal(loaded.predict(IMAGES[:5]), in_memory.predict(IMAGES[:5]))


def test_verbose_shows_the_refit_on_all_images(capsys):
    model = head2toe(cv=3, selection_samples=30, verbose=1).fit(IMAGES, LABELS)
    err = capsys.readouterr().err
    assert "Refitting the head on 60 images" in err
    assert f"{model.classifier_.refit_n_iter_}" in err.split("Refitting the head on 60 images")[-1]
