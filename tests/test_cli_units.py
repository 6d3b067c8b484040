"""Unit tests of the command line's helpers: options, reports, errors, plots, threads."""

import argparse

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from skh2t.cli.errors import UsageError, one_line, usage_errors
from skh2t.cli.options import comma_list, fraction, positive_int, weights_value
from skh2t.cli.plot import plot_kept_per_tap
from skh2t.cli.report import write_json
from skh2t.protocol import MethodResult, format_table
from skh2t.threads import blas_threads

# --- options, reports, errors, threads ---------------------------------------------


def test_option_parsers():
    assert comma_list(positive_int)("1024, 2048") == [1024, 2048]
    assert weights_value("None") is None
    for bad in ("0", "1.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            fraction(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="duplicate"):
        comma_list(positive_int)("3,3")


def test_usage_errors_are_one_line():
    with pytest.raises(UsageError, match=r"^ctx: a b$"), usage_errors(ValueError, context="ctx"):
        raise ValueError("a\n  b")
    assert one_line(KeyError()) == "KeyError"


def test_table_and_json(tmp_path):
    def outcome(method, cv, test, n_features, n_available, seconds):
        return MethodResult(method, {}, cv, {}, 1024, None, n_features, n_available, seconds,
                            0.0, 0, test_accuracy=test)  # fmt: skip

    rows = [
        outcome("linear probe (last layer)", 0.82, 0.8146, 1280, 50664, 0.21),
        outcome("Head2Toe", 0.88, 0.8842, 10132, 50664, 2.13),
    ]
    table = format_table(rows).splitlines()
    assert len({len(line) for line in table[:2]}) == 1  # header and rule aligned
    assert table[2].split()[-6:] == ["0.8146", "1280", "of", "50664", "(2.5%)", "0.2"]
    write_json(tmp_path / "r.json", {"a": np.arange(2), "b": np.float32(0.5)})
    assert (tmp_path / "r.json").read_text() == '{\n  "a": [\n    0,\n    1\n  ],\n  "b": 0.5\n}\n'


def test_plot_is_written(tmp_path):
    path = tmp_path / "kept.png"
    plot_kept_per_tap(["stem", "block1", "head"], np.array([3, 0, 5]), np.array([10, 10, 5]), path)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_blas_threads_limits_and_restores():
    def numpy_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = numpy_threads()
    with blas_threads(1):
        assert set(numpy_threads()) == {1}
    assert numpy_threads() == before


def test_the_largest_seed_draws_both_the_training_and_the_test_images():
    from skh2t.cli.data import LabelledImages, split_train_test
    from skh2t.cli.options import MAX_SEED, seed

    assert seed(str(MAX_SEED)) == MAX_SEED
    target = np.arange(40) % 2
    data = LabelledImages(np.zeros((40, 4, 4), np.uint8), target, ["a", "b"], "test")
    train, test = split_train_test(data, None, 10, 6, MAX_SEED)
    assert (len(train), len(test)) == (10, 6)
    assert np.bincount(test.target).tolist() == [3, 3]
