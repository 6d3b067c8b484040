"""Shared fixtures and the ``slow`` marker of the test suite.

``pytest`` runs everything (the README's command); ``pytest -m "not slow"`` leaves out
the tests marked ``@pytest.mark.slow`` (process pools, Dask, real weights, subprocesses,
reference solvers) and the slow docstring examples listed here.
"""

from collections.abc import Callable

import numpy as np
import pytest

from tests.image_data import images_and_labels

# Docstring examples (collected from skh2t/) that take seconds; marked slow like the tests.
SLOW_DOCTESTS = (
    "skh2t.probes.l2_probe_cv",
    "skh2t.export.files.export_model",
    "skh2t.export.files.read_metadata",
    "skh2t.export.build.compact_module",
    "skh2t.export.files.load_exported",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name in SLOW_DOCTESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op PyTorch thread for a module: tiny models run faster and steadier so on a
    shared CPU (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def make_images() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """``make_images(n_images, seed=0, size=32)``: random uint8 images and 0/1 labels
    (:func:`tests.image_data.images_and_labels`)."""
    return images_and_labels
