"""Tests of skh2t.datasets.stratified_subsample."""

import numpy as np
import pytest
from sklearn.exceptions import DataConversionWarning

from skh2t.datasets import stratified_subsample


def labels(counts):
    """Shuffled labels 0..k-1 with the given number of samples each."""
    y = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(0).permutation(y)


def test_default_is_1000_balanced():
    y = labels([600] * 10)
    idx = stratified_subsample(y, random_state=0)
    assert idx.dtype == np.int64
    assert len(idx) == 1000
    assert np.all(np.diff(idx) > 0)  # increasing, no duplicates
    assert np.bincount(y[idx]).tolist() == [100] * 10


def test_remainder_goes_to_first_classes_whatever_the_seed():
    y = labels([50] * 10)
    for seed in range(5):
        idx = stratified_subsample(y, n_samples=103, random_state=seed)
        assert np.bincount(y[idx]).tolist() == [11, 11, 11] + [10] * 7


def test_imbalanced_data_gives_a_balanced_sample():
    y = labels([500, 20, 100])
    idx = stratified_subsample(y, n_samples=60, random_state=1)
    assert np.bincount(y[idx]).tolist() == [20, 20, 20]


def test_reproducible_and_seed_dependent():
    y = labels([100] * 5)
    a = stratified_subsample(y, n_samples=50, random_state=42)
    np.testing.assert_array_equal(a, stratified_subsample(y, n_samples=50, random_state=42))
    b = stratified_subsample(y, n_samples=50, random_state=43)
    assert not np.array_equal(a, b)
    rng = np.random.RandomState(42)
    np.testing.assert_array_equal(a, stratified_subsample(y, n_samples=50, random_state=rng))
    # A shared RandomState advances: the next call differs.
    assert not np.array_equal(a, stratified_subsample(y, n_samples=50, random_state=rng))


def test_every_sample_can_be_drawn():
    y = labels([10, 10])
    seen = np.zeros(len(y), dtype=int)
    for seed in range(200):
        seen[stratified_subsample(y, n_samples=4, random_state=seed)] += 1
    assert seen.min() > 0
    # Each sample is drawn with probability 2 / 10: 40 times in 200 draws on average.
    assert 15 < seen.min() <= seen.max() < 70


def test_string_labels_and_list_input():
    y = ["cat", "dog", "cat", "bird", "dog", "bird", "cat"]
    idx = stratified_subsample(y, n_samples=3, random_state=0)
    assert sorted(np.asarray(y)[idx].tolist()) == ["bird", "cat", "dog"]


def test_n_per_class_int():
    y = labels([30, 40, 50])
    idx = stratified_subsample(y, n_per_class=7, random_state=0)
    assert np.bincount(y[idx]).tolist() == [7, 7, 7]
    assert len(stratified_subsample(y, n_per_class=0)) == 0


def test_n_per_class_mapping():
    y = np.array(["a", "b", "c"] * 10)
    idx = stratified_subsample(y, n_per_class={"a": 4, "c": 2}, random_state=0)
    values, counts = np.unique(y[idx], return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == {"a": 4, "c": 2}
    with pytest.raises(ValueError, match=r"n_per_class has labels \['z'\] not in y"):
        stratified_subsample(y, n_per_class={"a": 1, "z": 1})
    with pytest.raises(ValueError, match=r"n_per_class\['a'\] must be a non-negative int"):
        stratified_subsample(y, n_per_class={"a": -1})


def test_n_samples_and_n_per_class_are_exclusive():
    with pytest.raises(ValueError, match="not both"):
        stratified_subsample([0, 1] * 5, n_samples=4, n_per_class=2)


def test_class_with_too_few_samples():
    y = labels([100, 3, 100])
    with pytest.raises(ValueError, match=r"class 1 has 3 \(requested 10\)"):
        stratified_subsample(y, n_samples=30)
    with pytest.raises(ValueError, match=r"class 1 has 3 \(requested 4\)"):
        stratified_subsample(y, n_per_class=4)


def test_too_many_samples():
    with pytest.raises(ValueError, match=r"n_samples=1000 is larger than the data set \(20 "):
        stratified_subsample(labels([10, 10]))


def test_fewer_samples_than_classes():
    with pytest.raises(ValueError, match=r"smaller than the number of classes \(3\)"):
        stratified_subsample(labels([5, 5, 5]), n_samples=2)


@pytest.mark.parametrize("n", [-1, 2.0, "10", True, None])
def test_invalid_counts(n):
    y = labels([10, 10])
    if n is not None:
        with pytest.raises(ValueError, match="n_samples must be a non-negative int"):
            stratified_subsample(y, n_samples=n)
    with pytest.raises(ValueError, match="n_per_class must be a non-negative int"):
        stratified_subsample(y, n_per_class=n if n is not None else 1.5)


def test_column_vector_warns():
    y = labels([5, 5]).reshape(-1, 1)
    with pytest.warns(DataConversionWarning):
        idx = stratified_subsample(y, n_samples=4, random_state=0)
    assert np.bincount(y[idx, 0]).tolist() == [2, 2]


def test_2d_labels_rejected():
    with pytest.raises(ValueError, match="1d array"):
        stratified_subsample(np.zeros((4, 2)), n_samples=2)
