"""The on-disk feature store: .npy files written and read in row chunks."""

import numpy as np
import pytest

from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.joint import transform_jointly
from skh2t.features.store import FeatureStore, InsufficientDiskSpaceError, write_features
from tests.image_data import images_and_labels
from tests.networks import small_convnet

IMAGES, _ = images_and_labels(21, size=16)


@pytest.fixture(scope="module")
def transformers():
    first = IntermediateFeatureTransformer(
        backbone=small_convnet(), image_size=16, target_size=64, batch_size=4
    ).fit(IMAGES[:1])
    return [first, first.repool(target_size=16)]


def test_write_features_stores_every_poolings_features_in_the_images_order(transformers, tmp_path):
    expected = transform_jointly(transformers, IMAGES)
    store = write_features(transformers, IMAGES, tmp_path, chunk_size=5)
    assert store.directory.parent == tmp_path
    assert store.directory.name.startswith("skh2t-")
    for index, features in enumerate(expected):
        on_disk = np.load(store.matrices[index].path)  # a plain .npy file
        # Extracted in other batches (chunks of 5 images): other convolution kernels.
        np.testing.assert_allclose(on_disk, features, rtol=1e-5, atol=1e-6)
        # Reads of the same file: the same floats.
        np.testing.assert_array_equal(store.memmap(index), on_disk)
        rows = np.array([20, 3, 7])
        np.testing.assert_array_equal(store.read_rows(index, rows), on_disk[rows])
        np.testing.assert_array_equal(store.read_rows(index, slice(4, 9)), on_disk[4:9])
        columns = np.array([0, 5, features.shape[1] - 1])
        np.testing.assert_array_equal(store.read_columns(index, columns), on_disk[:, columns])
    assert store.nbytes == sum(f.nbytes for f in expected)
    store.remove()
    assert not store.directory.exists()


def test_a_float16_store_holds_the_features_to_float16_rounding(transformers, tmp_path):
    full = write_features(transformers, IMAGES, tmp_path)
    expected = full.read_rows(0, slice(None))
    store = write_features(transformers, IMAGES, tmp_path, dtype="float16")
    assert store.memmap(0).dtype == np.float16
    assert store.nbytes == full.nbytes // 2
    read = store.read_rows(0, slice(None))
    assert read.dtype == np.float32
    # L2-normalised features lie in [-1, 1]: float16 rounds them by at most 2**-11 relative
    # (the two stores come from the same chunks, so from the same float32 values).
    np.testing.assert_allclose(read, expected, rtol=2**-11, atol=2**-24)
    assert not np.array_equal(read, expected)


def test_small_disks_and_bad_dtypes_are_refused_before_writing(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        "skh2t.features.store.shutil.disk_usage", lambda path: usage._replace(free=2**30)
    )
    with pytest.raises(InsufficientDiskSpaceError, match=r"need 3\.0 GB on disk .* 1\.0 GB free"):
        FeatureStore.create(tmp_path / "s", n_rows=1024, widths=[3 * 2**18], dtype="float32")
    assert list((tmp_path / "s").iterdir()) == []
    with pytest.raises(ValueError, match="dtype must be one of"):
        FeatureStore.create(tmp_path, n_rows=2, widths=[3], dtype="float64")


def test_a_truncated_file_is_an_error_not_garbage(tmp_path):
    store = FeatureStore.create(tmp_path, n_rows=4, widths=[3])
    store.write(slice(0, 4), [np.ones((4, 3), np.float32)])
    with open(store.matrices[0].path, "r+b") as file:
        file.truncate(store.matrices[0].offset + 12)
    with pytest.raises(OSError, match="ended early"):
        store.read_rows(0, np.array([2]))
    with pytest.raises(ValueError, match="got shape"):
        store.write(slice(0, 2), [np.ones((3, 3))])
