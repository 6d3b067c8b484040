"""Extraction and grid search in other processes: joblib's loky workers and a Dask cluster.

The backbone here is a tiny CNN that writes a line ``"<pid> <batch size>"`` to a
log file at every forward pass, so forward passes made in worker processes can
be counted.
"""

import os
from contextlib import contextmanager
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from torch import nn

from skh2t import GroupLassoClassifier
from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.cache import CACHE_SUBDIRECTORY, ENTRY_SUFFIX
from tests.image_data import images_and_labels


class LoggingNet(nn.Module):
    """A tiny CNN that appends ``"<pid> <batch size>"`` to ``log`` at every forward pass."""

    def __init__(self, log):
        super().__init__()
        self.log = str(log)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same weights in every instance
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 8, 3, stride=2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 2)

    def forward(self, x):
        with open(self.log, "a") as log:
            log.write(f"{os.getpid()} {x.shape[0]}\n")
        x = self.conv2(self.conv1(x).relu()).relu()
        return self.fc(self.pool(x).flatten(1))


def forward_log(path):
    """(pid, batch size) of every forward pass logged so far."""
    if not Path(path).exists():
        return []
    return [tuple(map(int, line.split())) for line in Path(path).read_text().splitlines()]


X, Y = images_and_labels(40, size=16)


def features(log, **params):
    return IntermediateFeatureTransformer(
        backbone=LoggingNet(log), image_size=16, target_size=64, **params
    )


def entries(directory):
    return sorted(Path(directory, CACHE_SUBDIRECTORY).glob(f"*/*{ENTRY_SUFFIX}"))


# --- joblib's process workers (loky) ----------------------------------------------------------


def test_parallel_extraction_equals_serial_and_runs_in_the_workers(tmp_path):
    log = tmp_path / "forward.log"
    serial = features(log, batch_size=8).fit_transform(X)
    log.unlink()
    parallel = features(log, batch_size=8, n_jobs=2).fit(X[:1])
    log.unlink()
    np.testing.assert_array_equal(parallel.transform(X), serial)
    passes = forward_log(log)
    assert sorted(size for _, size in passes) == [8] * 5
    assert os.getpid() not in {pid for pid, _ in passes}


class ThreadLoggingNet(nn.Module):
    """A tiny CNN that appends PyTorch's thread count to ``log`` at every forward pass."""

    def __init__(self, log):
        super().__init__()
        self.log = str(log)
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        with open(self.log, "a") as log:
            log.write(f"{torch.get_num_threads()}\n")
        return self.conv(x)


@contextmanager
def torch_threads(n):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize(("caller", "n_jobs", "per_task"), [(4, 2, 2), (2, 2, 1), (1, 2, 1)])
def test_worker_processes_run_pytorch_with_the_callers_share_of_threads(
    tmp_path, caller, n_jobs, per_task
):
    log = tmp_path / "threads.log"
    transformer = IntermediateFeatureTransformer(
        backbone=ThreadLoggingNet(log), image_size=16, target_size=64, batch_size=8
    ).fit(X[:1])
    log.unlink()
    with torch_threads(caller):
        transformer.set_params(n_jobs=n_jobs).transform(X)
        assert torch.get_num_threads() == caller
    assert log.read_text().split() == [str(per_task)] * 5


@pytest.mark.slow
def test_parallel_extraction_is_serial_extraction_with_the_workers_thread_count():
    transformer = IntermediateFeatureTransformer(
        backbone="test_efficientnet", weights=None, image_size=64, target_size=256, batch_size=8
    ).fit(X[:1])
    with torch_threads(4):  # two tasks of two threads each
        parallel = transformer.set_params(n_jobs=2).transform(X)
    transformer.set_params(n_jobs=1)
    with torch_threads(2):
        np.testing.assert_array_equal(transformer.transform(X), parallel)
    with torch_threads(1):  # another thread count: the same up to float32 rounding
        one_thread = transformer.transform(X)
    # unit-norm tap vectors, each reached through at most one rounding step per tap
    atol = len(transformer.taps_) * np.finfo(np.float32).eps
    np.testing.assert_allclose(one_thread, parallel, rtol=0, atol=atol)


def test_parallel_extraction_in_threads_gives_every_task_its_own_backbone(tmp_path):
    log = tmp_path / "forward.log"
    serial = features(log, batch_size=4).fit_transform(X)
    transformer = features(log, batch_size=4, n_jobs=2).fit(X[:1])
    with joblib.parallel_backend("threading"):
        threaded = transformer.transform(X)  # hooks of two tasks on one module would mix
    np.testing.assert_array_equal(threaded, serial)


@pytest.mark.slow
def test_the_cache_is_shared_by_worker_processes(tmp_path):
    log, cache = tmp_path / "forward.log", tmp_path / "cache"
    pipeline = Pipeline([("features", features(log, cache=cache)), ("clf", GroupLassoClassifier())])
    grid = {"features__target_size": [32, 128], "clf__alpha": [1e-3, 1e-2]}
    first = GridSearchCV(pipeline, grid, cv=StratifiedKFold(4), n_jobs=2).fit(X, Y)
    workers = {pid for pid, _ in forward_log(log)} - {os.getpid()}
    assert workers  # the fits ran in the workers, and wrote the entries there
    assert len(entries(cache)) == 2 * len(X)
    # Workers processing the same images at the same moment may both compute them; still
    # far fewer passes than the 16 fits x 40 images without a cache.
    assert sum(size for _, size in forward_log(log)) <= 2 * (2 * len(X) + 2)

    joblib.externals.loky.get_reusable_executor().shutdown(wait=True)  # fresh workers
    log.unlink()
    second = GridSearchCV(clone(pipeline), grid, cv=StratifiedKFold(4), n_jobs=2).fit(X, Y)
    assert forward_log(log) == []  # every fit, score and the refit read the cache
    np.testing.assert_array_equal(
        second.cv_results_["mean_test_score"], first.cv_results_["mean_test_score"]
    )


# --- a real Dask cluster: scheduler and worker processes ----------------------------------------


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.mark.slow
def test_grid_search_on_dask_matches_the_serial_one(dask_client, tmp_path):
    log = tmp_path / "forward.log"
    # Several batches per fit: each fit's extraction is split again, into tasks of its own.
    pipeline = Pipeline(
        [("features", features(log, batch_size=8)), ("clf", GroupLassoClassifier())]
    )
    grid = {"features__target_size": [32, 128], "clf__alpha": [1e-3, 1e-2]}
    serial = GridSearchCV(pipeline, grid, cv=StratifiedKFold(3)).fit(X, Y)
    log.unlink()
    with joblib.parallel_backend("dask"):
        on_dask = GridSearchCV(pipeline, grid, cv=StratifiedKFold(3), n_jobs=-1).fit(X, Y)
    worker_pids = set(dask_client.run(os.getpid).values())
    assert {pid for pid, _ in forward_log(log)} >= worker_pids  # both workers ran fits
    np.testing.assert_array_equal(
        on_dask.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"]
    )
    assert on_dask.best_params_ == serial.best_params_
    np.testing.assert_array_equal(on_dask.predict_proba(X), serial.predict_proba(X))


@pytest.mark.slow
def test_extraction_on_dask_equals_serial_and_fills_the_cache(dask_client, tmp_path):
    log, cache = tmp_path / "forward.log", tmp_path / "cache"
    serial = features(log, batch_size=8).fit_transform(X)
    transformer = features(log, batch_size=8, cache=cache).fit(X[:1])
    log.unlink()
    with joblib.parallel_backend("dask"):
        on_dask = transformer.set_params(n_jobs=-1).transform(X)
    np.testing.assert_array_equal(on_dask, serial)
    passes = forward_log(log)
    assert sorted(size for _, size in passes) == [8] * 5
    assert {pid for pid, _ in passes} == set(dask_client.run(os.getpid).values())
    assert len(entries(cache)) == len(X)  # written by this process, from the workers' results
    np.testing.assert_array_equal(transformer.transform(X), serial)


@pytest.mark.slow
def test_workers_extract_in_the_transformer_precision(tmp_path):
    log = tmp_path / "forward.log"
    exact = features(log, batch_size=8).fit_transform(X)
    serial = features(log, batch_size=8, precision="bfloat16").fit_transform(X)
    parallel = features(log, batch_size=8, precision="bfloat16", n_jobs=2).fit(X[:1])
    log.unlink()
    np.testing.assert_array_equal(parallel.transform(X), serial)
    assert os.getpid() not in {pid for pid, _ in forward_log(log)}
    assert not np.array_equal(serial, exact)
