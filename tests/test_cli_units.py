"""Unit tests of the command line's helpers: probes, selection, taps, options, reports, threads."""

import argparse

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_info

from skh2t.cli import probes, selection
from skh2t.cli.errors import UsageError, one_line, usage_errors
from skh2t.cli.extraction import last_layer_tap
from skh2t.cli.options import comma_list, fraction, positive_int, weights_value
from skh2t.cli.plot import plot_kept_per_tap
from skh2t.cli.report import MethodResult, format_table, write_json
from skh2t.cli.threads import blas_threads
from skh2t.features import IntermediateFeatureTransformer


@pytest.fixture(scope="module")
def wide():
    """A wide, low-rank-ish classification problem: 60 rows, 400 features, 3 classes."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    centres = rng.normal(size=(3, 400))
    X = (centres[y] + 2 * rng.normal(size=(60, 400))).astype(np.float32)
    return X, y


# --- L2 probes through the Gram matrix ---------------------------------------------------


def test_gram_matrix_in_blocks(monkeypatch):
    monkeypatch.setattr(probes, "_GRAM_BLOCK", 7)
    X = np.random.default_rng(1).normal(size=(5, 30)).astype(np.float32)
    assert np.allclose(probes.gram_matrix(X), X.astype(float) @ X.T.astype(float))


@pytest.mark.parametrize("C", [0.1, 10.0])
def test_row_space_probe_is_the_probe_on_all_features(wide, C):
    X, y = wide
    head, not_converged = probes.fit_head(X, y, C, max_iter=5000)
    assert not_converged == 0
    direct = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(X.astype(float), y)
    reduced = LogisticRegression(C=C, max_iter=5000, tol=1e-10)
    space = probes.RowSpace.from_gram(probes.gram_matrix(X))
    reduced.fit(space.Z, y)
    coef = reduced.coef_ @ space.basis.T @ X.astype(float)
    assert np.allclose(coef, direct.coef_, atol=1e-5 * np.abs(direct.coef_).max())
    assert np.allclose(reduced.intercept_, direct.intercept_, atol=1e-5)
    assert np.array_equal(head.predict(X), direct.predict(X))


def test_cv_scores_match_fold_by_fold_fits(wide):
    X, y = wide
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    scores, _ = probes.cv_scores(probes.gram_matrix(X), y, folds, [0.01, 1.0])
    for j, (train, valid) in enumerate(folds):
        for i, C in enumerate([0.01, 1.0]):
            model = LogisticRegression(C=C, max_iter=1000).fit(X[train], y[train])
            assert scores[i, j] == pytest.approx(model.score(X[valid], y[valid]), abs=1 / 20)


def test_linear_head_binary_and_columns():
    head = probes.LinearHead(
        np.array([[1.0, -1.0]]), np.array([0.0]), np.array(["no", "yes"]), np.array([0, 2])
    )
    X = np.array([[2.0, 9.0, 1.0], [0.0, 9.0, 3.0]])
    assert head.predict(X).tolist() == ["yes", "no"]
    assert head.n_features == 2


def test_row_space_of_all_zero_features():
    space = probes.RowSpace.from_gram(np.zeros((4, 4)))
    assert space.Z.shape == (4, 1)
    assert not space.Z.any()


# --- Head2Toe selection -------------------------------------------------------------------


def test_cv_scores_cover_the_grid_and_keep_fractions_reuse_the_fit(wide):
    X, y = wide
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    steps = []
    scores, _ = selection.cv_scores(
        {8: X, 16: X[:, :200]},
        y,
        folds,
        [0.3, 0.1],
        [0.05, 0.5],
        selection.SolverSettings(max_iter=2000),
        on_step=lambda: steps.append(1),
    )
    assert len(scores) == 2 * 2 * 2
    assert len(steps) == 2 * 2 * 2  # target sizes x folds x alphas
    assert all(s.shape == (2,) and ((s >= 0) & (s <= 1)).all() for s in scores.values())


def test_cv_scores_are_those_of_cold_fits_at_each_folds_alpha_fraction():
    rng = np.random.default_rng(0)  # a hard problem: the scores differ between grid points
    y = np.repeat([0, 1, 2], 20)
    X = (0.15 * rng.normal(size=(3, 400))[y] + 2 * rng.normal(size=(60, 400))).astype(np.float32)
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    tight = selection.SolverSettings(max_iter=50_000, tol=1e-7)
    scores, n_not_converged = selection.cv_scores({8: X}, y, folds, [0.1, 0.3], [0.05, 0.5], tight)
    assert n_not_converged == 0
    for j, (train, valid) in enumerate(folds):
        for config, fold_scores in scores.items():
            clf = tight.classifier()
            alpha = config.alpha_fraction * clf.alpha_max(X[train], y[train])
            clf.set_params(alpha=alpha, keep_fraction=config.keep_fraction).fit(X[train], y[train])
            assert fold_scores[j] == clf.score(X[valid], y[valid])


def test_best_config_prefers_the_sparser_model_on_ties():
    c = selection.Head2ToeConfig
    scores = {
        c(2048, 0.01, 0.1): np.array([0.9]),
        c(1024, 0.01, 0.1): np.array([0.9]),
        c(1024, 0.03, 0.1): np.array([0.9]),
        c(1024, 0.03, 0.2): np.array([0.9]),
        c(4096, 0.01, 0.02): np.array([0.8]),
    }
    assert selection.best_config(scores) == c(1024, 0.03, 0.1)


def test_fit_final_uses_the_alpha_fraction(wide):
    X, y = wide
    config = selection.Head2ToeConfig(1, 0.2, 0.1)
    clf, _ = selection.fit_final(X, y, config, selection.SolverSettings())
    assert clf.alpha == pytest.approx(0.2 * clf.alpha_max(X, y))
    assert clf.get_support().sum() == 40
    assert not clf.warm_start


# --- taps, options, reports, errors, threads ---------------------------------------------


@pytest.mark.parametrize(
    ("backbone", "expected"),
    [("test_resnet", "fc:input"), ("test_vit", "head:input"), ("test_efficientnet", None)],
)
def test_last_layer_tap_is_the_classifier_input(backbone, expected):
    images = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    transformer = IntermediateFeatureTransformer(
        backbone=backbone, weights=None, image_size=32, target_size=64
    ).fit(images)
    tap = transformer.taps_[last_layer_tap(transformer)]
    if expected is None:  # EfficientNet: "classifier:input"
        expected = "classifier:input"
    assert tap.name == expected
    assert len(tap.pooled_shape) == 1


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
    rows = [
        MethodResult("linear probe (last layer)", 0.82, 0.8146, 1280, 50664, 0.21, {"C": 10.0}),
        MethodResult("Head2Toe", 0.88, 0.8842, 10132, 50664, 2.13, {}),
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
