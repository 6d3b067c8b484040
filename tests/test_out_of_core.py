"""Group-lasso fits on features that are not in memory: a numpy memmap and a dask array."""

import subprocess
import sys

import numpy as np
import pytest

from skh2t import GroupLassoClassifier, GroupLassoClassifierCV
from skh2t.linear_model import _fold_path
from skh2t.linear_model._fold_path import PathGrid, score_path_on_fold
from skh2t.linear_model._group_lasso import make_datafit
from skh2t.linear_model._solver import dask_rows, streamed, working_set
from skh2t.linear_model._solver.rows import StackedRows
from skh2t.linear_model._solver.streamed import BlockDesign
from skh2t.linear_model._solver.working_set import ColumnSummary, full_gradient
from tests.rounding import assert_same_predictions, assert_same_support

da = pytest.importorskip("dask.array")

TOL = 1e-6  # tight, so that two solutions within it have the same support and close weights


def _data(n=600, d=240, seed=0, dtype=np.float32):
    """Four classes, a signal in the first 12 columns, a constant column."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    X = rng.standard_normal((n, d))
    X[:, :12] += 0.8 * (y[:, None] == np.arange(12) % 4)
    X[:, 30] = 1.5
    return X.astype(dtype), y


@pytest.fixture
def memmap_data(tmp_path):
    X, y = _data()
    np.save(tmp_path / "X.npy", X)
    return X, np.load(tmp_path / "X.npy", mmap_mode="r"), y


def no_float64_working_set(monkeypatch):
    """Make any in-memory working-set gather (float64 copies of its columns) an error."""

    def refuse(*args, **kwargs):
        raise AssertionError("the working set was gathered in float64")

    monkeypatch.setattr(working_set._CentredColumns, "take", refuse)
    monkeypatch.setattr(working_set.Design, "of_transposed", refuse)


def _assert_same_fit(ours, reference, atol=1e-4):
    assert_same_support(ours, reference)  # other code paths: equal but for near-ties
    scale = np.abs(reference.group_lasso_coef_).max()
    np.testing.assert_allclose(
        ours.group_lasso_coef_, reference.group_lasso_coef_, rtol=0, atol=atol * scale
    )
    assert ours.kkt_violation_ <= ours.tol


@pytest.mark.parametrize("kept_fraction", [0.0, 1.0], ids=["streamed", "gathered once"])
def test_block_design_products_equal_the_centred_scaled_columns(monkeypatch, kept_fraction):
    monkeypatch.setattr(streamed, "WORKING_SET_FRACTION", kept_fraction)
    X, _y = _data(n=700)
    features = np.array([0, 5, 30, 31, 100, 239])
    center = X.astype(np.float64).mean(axis=0)
    constant = np.zeros(X.shape[1], dtype=bool)
    constant[30] = True
    scale = np.linspace(0.5, 2.0, features.shape[0])
    design = BlockDesign.of(StackedRows.of(X), features, center, constant)
    design.rows_per_block = 256  # several blocks, the last one short
    assert (design.columns is None) == (kept_fraction == 1.0)
    dense = X[:, features].astype(np.float64) - center[features]
    dense[:, 2] = 0.0
    weight = np.random.default_rng(1).random(X.shape[0])
    np.testing.assert_allclose(design.weighted_squares(weight), (dense * dense).T @ weight)
    design, dense = design.scaled(scale), dense / scale
    coef = np.random.default_rng(2).standard_normal((features.shape[0], 3))
    residual = np.random.default_rng(3).standard_normal((X.shape[0], 3))
    np.testing.assert_allclose(design.dot(coef), dense @ coef, atol=1e-12)
    np.testing.assert_allclose(design.tdot(residual), dense.T @ residual, atol=1e-10)
    np.testing.assert_allclose(design.dot(coef[:, 0]), dense @ coef[:, 0], atol=1e-12)
    np.testing.assert_allclose(design.tdot(residual[:, 0]), dense.T @ residual[:, 0], atol=1e-10)


def test_memmap_rows_are_out_of_core_and_their_copies_are_not(memmap_data):
    X, mapped, _ = memmap_data
    assert StackedRows.of(mapped).out_of_core
    assert StackedRows.of(mapped, np.r_[0:100, 300:600]).out_of_core  # views of the file
    assert not StackedRows.of(mapped, np.arange(0, 600, 2)).out_of_core  # gathered: a copy
    assert not StackedRows.of(X).out_of_core


def test_full_gradient_out_of_core_equals_in_memory(memmap_data):
    X, mapped, y = memmap_data
    _, datafit = make_datafit(y, None, None)
    summary = ColumnSummary.of(X, datafit, True)
    coef = np.zeros((X.shape[1], 4))
    coef[[0, 7, 50]] = np.random.default_rng(0).standard_normal((3, 4))
    intercept = np.full(4, 0.1)
    for in_float64 in (False, True):
        expected = full_gradient(X, datafit, coef, intercept, summary.center, in_float64=in_float64)
        got = full_gradient(mapped, datafit, coef, intercept, summary.center, in_float64=in_float64)
        assert got[0] == pytest.approx(expected[0], rel=1e-12)
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[2], expected[2], rtol=1e-12)


@pytest.mark.parametrize("kept_fraction", [0.0, 1.0], ids=["streamed", "gathered once"])
@pytest.mark.parametrize("alpha_fraction", [0.7, 0.15])
def test_memmap_fit_equals_in_memory_without_a_float64_working_set(
    memmap_data, monkeypatch, alpha_fraction, kept_fraction
):
    X, mapped, y = memmap_data
    params = {"alpha_fraction": alpha_fraction, "tol": TOL, "max_iter": 20_000}
    reference = GroupLassoClassifier(**params).fit(X, y)
    monkeypatch.setattr(streamed, "WORKING_SET_FRACTION", kept_fraction)
    no_float64_working_set(monkeypatch)
    ours = GroupLassoClassifier(**params).fit(mapped, y)
    assert 0 < reference.support_.sum() < X.shape[1] - 1  # a real selection
    _assert_same_fit(ours, reference)


def _dask(X, chunks=(128, -1)):
    return da.from_array(X, chunks=chunks)


@pytest.fixture
def never_whole(monkeypatch):
    """Make computing the whole dask matrix through DaskRows an error."""

    def refuse(self):
        raise AssertionError("the dask array was computed whole")

    monkeypatch.setattr(dask_rows.DaskRows, "as_array", refuse)


@pytest.mark.parametrize("chunks", [(128, -1), (150, 100)], ids=["by rows", "by rows and columns"])
def test_dask_fit_equals_in_memory(monkeypatch, never_whole, chunks):
    X, y = _data()
    params = {"alpha_fraction": 0.2, "keep_fraction": 0.05, "tol": TOL, "max_iter": 20_000}
    reference = GroupLassoClassifier(**params).fit(X, y)
    no_float64_working_set(monkeypatch)
    ours = GroupLassoClassifier(**params).fit(_dask(X, chunks), y)
    _assert_same_fit(ours, reference)
    assert ours.n_features_in_ == X.shape[1]
    assert not hasattr(ours, "feature_names_in_")
    scores = ours.decision_function(_dask(X[:300], chunks))
    assert isinstance(scores, np.ndarray)
    assert scores.shape == (300, 4)
    np.testing.assert_allclose(scores, reference.decision_function(X[:300]), atol=1e-3)
    clear = assert_same_predictions(ours.predict(_dask(X)), ours, X)  # blocks of rows
    unclear = np.count_nonzero(~clear) / len(y)
    assert ours.score(_dask(X), y) == pytest.approx(ours.score(X, y), abs=unclear + 1e-12)
    assert ours.alpha_max(_dask(X), y) == pytest.approx(reference.alpha_max_, rel=1e-5)


def test_dask_products_are_computed_per_row_block(never_whole):
    X, _y = _data(n=500)
    rows = StackedRows.of(_dask(X, (128, 60)))
    assert isinstance(rows, dask_rows.DaskRows)
    assert len(rows.array.chunks[1]) == 1
    residual = np.random.default_rng(0).standard_normal((500, 3))
    np.testing.assert_allclose(rows.tdot(residual), X.T.astype(np.float64) @ residual, rtol=1e-4)
    np.testing.assert_array_equal(rows.take(np.array([3, 9])), X[:, [3, 9]])
    top, bottom = rows.column_extremes()
    np.testing.assert_array_equal(top, X.max(axis=0))
    np.testing.assert_array_equal(bottom, X.min(axis=0))
    pieces = list(rows.chunks(100))
    assert [start for start, _ in pieces] == [0, 100, 200, 300, 400]
    np.testing.assert_array_equal(np.concatenate([piece for _, piece in pieces]), X)
    subset = rows.subset(np.arange(10, 20))
    assert isinstance(subset, dask_rows.DaskRows)
    np.testing.assert_array_equal(subset.take(np.array([0])), X[10:20, [0]])


def test_dask_input_is_checked_without_computing_it():
    X, y = _data(n=200, d=40)
    bad = X.copy()
    bad[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        GroupLassoClassifier().fit(_dask(bad), y)
    with pytest.raises(ValueError, match="2-D"):
        GroupLassoClassifier().fit(_dask(X[:, 0], 100), y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        GroupLassoClassifier().fit(_dask(X), y[:-1])
    fitted = GroupLassoClassifier(alpha_fraction=0.5).fit(_dask(X.astype(np.int64)), y)
    assert fitted.n_features_in_ == 40
    with pytest.raises(ValueError, match="features"):
        fitted.predict(_dask(X[:, :10]))


def test_dask_cv_equals_in_memory_and_trains_folds_by_weight(monkeypatch, never_whole):
    X, y = _data(n=450, d=120)
    params = {"alpha_fractions": [0.6, 0.2], "keep_fractions": [0.05, 0.2], "cv": 3, "tol": TOL}
    reference = GroupLassoClassifierCV(**params).fit(X, y)
    by_weight = []
    original = _fold_path._training_rows

    def spy(X, y, w, train, test, by_weight_flag):
        by_weight.append(by_weight_flag)
        return original(X, y, w, train, test, by_weight_flag)

    monkeypatch.setattr(_fold_path, "_training_rows", spy)
    ours = GroupLassoClassifierCV(**params).fit(_dask(X, (100, 50)), y)
    assert by_weight == [True, True, True]
    # Accuracies of the same problems solved along other code paths: a near-tie may move
    # one validation row (1 / len(y) of a mean over folds that partition the rows).
    np.testing.assert_allclose(ours.scores_, reference.scores_, atol=1 / len(y) + 1e-9)
    assert (ours.alpha_fraction_, ours.keep_fraction_) == (
        reference.alpha_fraction_,
        reference.keep_fraction_,
    )
    assert_same_support(ours, reference)
    assert ours.n_features_in_ == 120
    assert_same_predictions(ours.predict(_dask(X)), ours, X)


def test_dask_cv_with_a_scorer_predicts_lazy_validation_rows(never_whole):
    X, y = _data(n=300, d=60)
    params = {"alpha_fractions": [0.5], "cv": 3, "scoring": "neg_log_loss", "tol": TOL}
    reference = GroupLassoClassifierCV(**params).fit(X, y)
    ours = GroupLassoClassifierCV(**params).fit(_dask(X), y)
    np.testing.assert_allclose(ours.scores_, reference.scores_, rtol=1e-4)


def test_score_path_on_fold_accepts_a_dask_array(never_whole):
    X, y = _data(n=300, d=60)
    weight = np.ones(300)
    train, test = np.arange(100, 300), np.arange(100)
    params = GroupLassoClassifier(tol=TOL).get_params()
    grid = PathGrid(np.array([0.6, 0.3]), [0.1, 0.5], relative=True)
    expected = score_path_on_fold(params, X, y, weight, train, test, grid, None, by_weight=True)
    for by_weight in (True, False):
        got = score_path_on_fold(
            params, _dask(X), y, weight, train, test, grid, None, by_weight=by_weight
        )
        np.testing.assert_allclose(got.scores, expected.scores, atol=1e-9)


def test_skh2t_does_not_import_dask():
    code = "import sys, skh2t, skh2t.linear_model; assert 'dask' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_fit_on_a_distributed_cluster_equals_in_memory():
    distributed = pytest.importorskip("distributed")
    X, y = _data(n=400, d=80)
    params = {"alpha_fraction": 0.3, "tol": TOL, "max_iter": 20_000}
    reference = GroupLassoClassifier(**params).fit(X, y)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
        distributed.get_task_stream(client) as tasks,
    ):
        ours = GroupLassoClassifier(**params).fit(_dask(X, (100, -1)), y)
    assert any("thin_left_product" in task["key"] for task in tasks.data)  # ran on the cluster
    _assert_same_fit(ours, reference)
