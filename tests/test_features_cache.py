"""The feature cache: the backbone runs once per image and extraction setup, never stale."""

import io
import os
from contextlib import contextmanager
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from timm.models.resnet import ResNet
from torch import nn

from skh2t import GroupLassoClassifier
from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.cache import CACHE_SUBDIRECTORY, ENTRY_SUFFIX
from tests.image_data import images_and_labels
from tests.rounding import assert_rows_close

TINY = {"backbone": "test_resnet", "weights": None, "image_size": 32, "target_size": 128}


X, Y = images_and_labels(40)


@contextmanager
def forwarded_images(model_class=ResNet):
    """Count the images that go through any ``model_class`` in this process."""
    counts = []

    def count(module, args):
        if isinstance(module, model_class):
            counts.append(args[0].shape[0])

    handle = nn.modules.module.register_module_forward_pre_hook(count)
    try:
        yield counts
    finally:
        handle.remove()


def features(cache=None, **params):
    return IntermediateFeatureTransformer(**{**TINY, **params}, cache=cache)


def entries(directory):
    return sorted(Path(directory, CACHE_SUBDIRECTORY).glob(f"*/*{ENTRY_SUFFIX}"))


# --- the same output, with and without the cache ------------------------------------------------


@pytest.mark.parametrize("normalization", ["l2", None, "standard"])
def test_cached_features_equal_uncached_bit_for_bit(tmp_path, normalization):
    expected = features(normalization=normalization).fit_transform(X)
    cached = features(tmp_path, normalization=normalization)
    np.testing.assert_array_equal(cached.fit_transform(X), expected)  # cold
    with forwarded_images() as counts:
        np.testing.assert_array_equal(cached.transform(X), expected)  # warm
        np.testing.assert_array_equal(cached.transform(X[::-1]), expected[::-1])
    assert sum(counts) == 0
    assert len(entries(tmp_path)) == len(X)


def test_a_restart_reads_the_cache_and_runs_nothing(tmp_path):
    expected = features(tmp_path).fit_transform(X)
    with forwarded_images() as counts:
        again = features(tmp_path).fit_transform(X)  # a new object, the tap shapes cached too
        via_memory = features(joblib.Memory(tmp_path, verbose=0)).fit_transform(X)
    assert sum(counts) == 0
    np.testing.assert_array_equal(again, expected)
    np.testing.assert_array_equal(via_memory, expected)


def test_a_partly_cached_batch_computes_only_the_new_images(tmp_path):
    transformer = features(tmp_path).fit(X[:1])
    first = transformer.transform(X[:25])
    with forwarded_images() as counts:
        both = transformer.transform(X)
    assert sum(counts) == len(X) - 25
    np.testing.assert_array_equal(both[:25], first)
    assert_rows_close(both, features().fit_transform(X))  # batches of 25 and 15 against 40


# --- grid search: the backbone runs once per image and pooling ----------------------------------


@pytest.mark.slow
def test_grid_search_runs_the_backbone_once_per_image_and_pooling(tmp_path):
    target_sizes, alphas, n_folds = [64, 128, 256], [1e-3, 1e-2], 5
    grid = {"features__target_size": target_sizes, "clf__alpha": alphas}
    pipeline = Pipeline([("features", features(tmp_path)), ("clf", GroupLassoClassifier())])
    with forwarded_images() as counts:
        search = GridSearchCV(pipeline, grid, cv=StratifiedKFold(n_folds)).fit(X, Y)
    # Each target size pools differently, so each needs one pass per image; the tap shapes
    # are found once (one pass over the first image, twice). Without the cache, every fit
    # and score runs the backbone: 6 candidates x 5 folds x 40 images, and the refit.
    assert sum(counts) == len(target_sizes) * len(X) + 2
    assert len(entries(tmp_path)) == len(target_sizes) * len(X)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    best = search.best_estimator_
    expected = features(target_size=best["features"].target_size).fit_transform(X)
    assert_rows_close(best["features"].transform(X), expected)  # filled by the folds' batches


@pytest.mark.slow
def test_a_grid_over_the_classifier_only_runs_the_backbone_once_per_image(tmp_path):
    pipeline = Pipeline([("features", features(tmp_path)), ("clf", GroupLassoClassifier())])
    with forwarded_images() as counts:
        GridSearchCV(pipeline, {"clf__alpha": [1e-3, 3e-3, 1e-2]}, cv=5).fit(X, Y)
    assert sum(counts) == len(X) + 2


# --- never stale ---------------------------------------------------------------------------------


@pytest.fixture
def changed_checkpoint(tmp_path):
    """A checkpoint for test_resnet: the seeded random weights, one bias changed."""
    model = features().fit(X[:1]).backbone_
    state = {key: value.clone() for key, value in model.state_dict().items()}
    state["fc.bias"] += 1.0
    path = tmp_path / "changed.pth"
    torch.save(state, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "change",
    [
        "weights",
        {"image_size": 48},
        {"layers": ["layer1", "layer2.0.conv1:input", "fc"]},
        {"target_size": 512},
        {"pool_stride": 2},
        {"normalization": None},
        {"precision": "bfloat16"},
    ],
)
def test_a_changed_setup_misses_the_cache(tmp_path, changed_checkpoint, change):
    cache = tmp_path / "cache"
    features(cache).fit_transform(X)
    if change == "weights":
        change = {"weights": changed_checkpoint}
    with forwarded_images() as counts:
        changed = features(cache, **change).fit_transform(X)
    assert sum(counts) >= len(X)
    np.testing.assert_array_equal(changed, features(**change).fit_transform(X))


def test_changed_pixels_miss_the_cache(tmp_path):
    transformer = features(tmp_path)
    transformer.fit_transform(X)
    edited = X.copy()
    edited[3, 0, 0, 0] ^= 1
    with forwarded_images() as counts:
        result = transformer.transform(edited)
    assert sum(counts) == 1
    expected = features().fit_transform(edited)
    np.testing.assert_array_equal(result[3], features().fit_transform(edited[3:4])[0])
    assert_rows_close(result, expected)  # row 3 in a batch of its own


def test_the_same_pixels_in_another_layout_hit_the_cache(tmp_path):
    transformer = features(tmp_path)
    expected = transformer.fit_transform(X)
    with forwarded_images() as counts:
        result = transformer.transform(np.ascontiguousarray(X.transpose(0, 3, 1, 2)))
    assert sum(counts) == 0
    np.testing.assert_array_equal(result, expected)


def test_weights_changed_after_fit_miss_the_cache(tmp_path):
    transformer = features(tmp_path)
    before = transformer.fit_transform(X)
    with torch.no_grad():
        transformer.backbone_.fc.bias.add_(1.0)
    with forwarded_images() as counts:
        after = transformer.transform(X)
    assert sum(counts) == len(X)
    fc = transformer.taps_[-1].columns
    assert not np.allclose(after[:, fc], before[:, fc])
    fresh = clone(transformer).set_params(
        backbone=transformer.backbone_, weights="auto", cache=None
    )
    np.testing.assert_array_equal(after, fresh.fit_transform(X))


def test_files_are_keyed_by_their_content(tmp_path):
    paths = []
    for index, image in enumerate(X[:4]):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(image).save(paths[-1])
    transformer = features(tmp_path / "cache")
    expected = transformer.fit_transform(paths)
    os.replace(paths[0], tmp_path / "renamed.png")
    paths[0] = tmp_path / "renamed.png"
    Image.fromarray(X[5]).save(paths[1])  # same name, other content
    with forwarded_images() as counts:
        result = transformer.transform(paths)
    assert sum(counts) == 1
    np.testing.assert_array_equal(result[[0, 2, 3]], expected[[0, 2, 3]])
    assert_rows_close(result[1], features().fit_transform(X[5:6])[0])


def test_damaged_entries_are_recomputed(tmp_path):
    transformer = features(tmp_path)
    expected = transformer.fit_transform(X)
    first, second, *_ = entries(tmp_path)
    first.write_bytes(first.read_bytes()[:-4])  # truncated
    data = bytearray(second.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte
    second.write_bytes(bytes(data))
    with forwarded_images() as counts:
        repaired = transformer.transform(X)
    assert sum(counts) == 2
    assert_rows_close(repaired, expected)  # two images in a batch of two
    # The others are read back bit for bit (the two may or may not round the same way).
    assert (repaired == expected).all(axis=1).sum() >= len(X) - 2
    with forwarded_images() as counts:
        np.testing.assert_array_equal(transformer.transform(X), repaired)
    assert sum(counts) == 0


# --- parameters, errors, pickling -------------------------------------------------------------


def test_a_cache_that_is_not_a_writable_directory_is_a_clear_error(tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    for cache in (not_a_directory, not_a_directory / "below"):
        with pytest.raises(ValueError, match="must be a writable directory"):
            features(cache).fit(X)


def test_an_unwritable_cache_warns_and_still_extracts(tmp_path, monkeypatch):
    transformer = features(tmp_path).fit(X)

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("skh2t.features.cache._write_atomically", refuse)
    with pytest.warns(RuntimeWarning, match="disk full"):
        result = transformer.transform(X)
    np.testing.assert_array_equal(result, features().fit_transform(X))


def pickled(obj):
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    return buffer.getvalue()


def test_a_pickled_transformer_keeps_using_its_cache_and_stays_small(tmp_path):
    transformer = features(tmp_path)
    expected = transformer.fit_transform(X)
    payload = pickled(transformer)
    assert len(payload) < len(pickled(features().fit(X))) + 4096
    with forwarded_images() as counts:
        loaded = joblib.load(io.BytesIO(payload))
        np.testing.assert_array_equal(loaded.transform(X), expected)
    assert sum(counts) == 0


# --- records and parameters changed after fit ----------------------------------------------


def tap_records(directory):
    return sorted(Path(directory, CACHE_SUBDIRECTORY, "taps").glob("*.json"))


def test_an_edited_tap_record_is_not_trusted(tmp_path):
    expected = features(tmp_path).fit_transform(X[:4])
    (record,) = tap_records(tmp_path)
    text = record.read_text()
    edited = text.replace("[32, 16, 16]", "[32, 8, 32]", 1)  # one tap's shape, changed by hand
    assert edited != text
    record.write_text(edited)
    with forwarded_images() as counts:
        refitted = features(tmp_path).fit(X[:4])
    assert counts == [2]  # the shape probe ran again instead of reading the edited record
    np.testing.assert_array_equal(refitted.transform(X[:4]), expected)
    assert record.read_text() == text  # and rewrote the record


def test_one_failed_entry_does_not_skip_the_others(tmp_path, monkeypatch):
    from skh2t.features import cache as cache_module

    write = cache_module._write_atomically
    calls = []

    def failing_once(path, data):
        calls.append(path)
        if len(calls) == 2:  # the first entry (after setup.json)
            raise OSError("disk full")
        write(path, data)

    transformer = features(tmp_path).fit(X[:1])
    monkeypatch.setattr(cache_module, "_write_atomically", failing_once)
    with pytest.warns(RuntimeWarning, match="1 image"):
        transformer.transform(X[:5])
    assert len(entries(tmp_path)) == 4


def test_the_cache_parameter_set_after_fit_is_the_one_used(tmp_path):
    transformer = features(tmp_path / "a").fit(X[:2])
    transformer.set_params(cache=None)
    transformer.transform(X[:3])
    assert entries(tmp_path / "a") == []
    transformer.set_params(cache=tmp_path / "b")
    expected = transformer.transform(X[:3])
    assert len(entries(tmp_path / "b")) == 3
    with forwarded_images() as counts:
        np.testing.assert_array_equal(transformer.transform(X[:3]), expected)
    assert counts == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=oct)
def test_cache_files_are_created_as_open_creates_files(tmp_path, umask):
    previous = os.umask(umask)
    try:
        features(tmp_path).fit(X[:1]).transform(X[:3])  # tap record, setup.json, entries
    finally:
        os.umask(previous)
    files = [p for p in Path(tmp_path, CACHE_SUBDIRECTORY).rglob("*") if p.is_file()]
    assert len(files) == 1 + 1 + 3
    assert {p.stat().st_mode & 0o777 for p in files} == {0o666 & ~umask}
    assert not [p for p in files if p.name.endswith(".tmp")]  # no temporary file left
