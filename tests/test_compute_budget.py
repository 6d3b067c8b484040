"""Head2Toe under a compute budget: fit, predict, export a prefix of the backbone; the CLI."""

import joblib
import numpy as np
import pytest

from skh2t import Head2ToeClassifier
from skh2t.cli import main
from skh2t.export import compact_module, inference_cost
from skh2t.features import ComputeBudgetError
from tests.image_data import images_and_labels

IMAGES, LABELS = images_and_labels(24, size=32)
TINY = {"backbone": "test_resnet", "weights": None, "image_size": 32}
GRID = {"target_sizes": [64], "alpha_fractions": [0.1], "keep_fractions": [0.2], "cv": 2}


@pytest.fixture(scope="module", params=[0.5, 0.8])
def budgeted(request):
    model = Head2ToeClassifier(**TINY, **GRID, compute_budget=request.param, random_state=0)
    return model.fit(IMAGES, LABELS)


def test_a_budgeted_model_reads_only_taps_within_its_budget(budgeted):
    costs = budgeted.transformer_.tap_costs_
    assert np.all(costs <= budgeted.compute_budget)
    assert budgeted.predict(IMAGES).shape == LABELS.shape
    full = Head2ToeClassifier(**TINY, **GRID, random_state=0).fit(IMAGES, LABELS)
    assert len(budgeted.transformer_.taps_) < len(full.transformer_.taps_)


def test_its_exported_module_costs_at_most_the_budget_plus_the_head(budgeted):
    cost = inference_cost(budgeted)
    module = compact_module(budgeted)
    head = 2 * module.n_features * len(budgeted.classes_)  # the linear head's multiply-adds
    assert 0 < cost.flops <= budgeted.compute_budget * cost.backbone_flops + head
    assert cost.share < 1


def test_run_and_export_with_a_budget_on_the_command_line(tmp_path, capsys):
    argv = ["run", "--dataset", "fashion-mnist", "--n-train", "20", "--n-test", "10"]
    argv += ["--backbone", "test_resnet", "--weights", "none", "--image-size", "32"]
    argv += ["--folds", "2", "--target-sizes", "64", "--alpha-fractions", "0.1"]
    argv += ["--keep-fractions", "0.2", "--cs", "1", "--compute-budget", "0.6"]
    argv += ["--output-dir", str(tmp_path), "-q", "--n-jobs", "1"]
    assert main(argv) == 0
    model = joblib.load(tmp_path / "model.joblib")
    assert np.all(model.transformer_.tap_costs_ <= 0.6)
    capsys.readouterr()
    assert (
        main(["export", str(tmp_path / "model.joblib"), "-o", str(tmp_path / "m.pt2"), "-q"]) == 0
    )
    out = capsys.readouterr().out
    share = float(out.split("MFLOPs, ")[1].split("%")[0]) / 100
    assert 0 < share <= 0.6 + 0.01
    assert "latency" in out


def test_a_budget_no_tap_fits_in_is_one_line_and_exit_2(tmp_path, capsys):
    argv = [
        "extract",
        "--dataset",
        "fashion-mnist",
        "--n-samples",
        "10",
        "-o",
        str(tmp_path / "f.npz"),
    ]
    argv += ["--backbone", "test_resnet", "--weights", "none", "--image-size", "32"]
    assert main([*argv, "--compute-budget", "0.001"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "compute_budget=0.001 keeps no tap" in err[0]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--compute-budget", "0"])
    assert exit_info.value.code == 2


def test_a_grid_of_budgets_is_searched_and_the_cheapest_within_one_se_wins():
    model = Head2ToeClassifier(**TINY, **GRID, compute_budgets=[0.5, 0.8, 1.0], random_state=0).fit(
        IMAGES, LABELS
    )
    results = model.cv_results_
    assert [p["compute_budget"] for p in results["params"]] == [0.5, 0.8, 1.0]
    assert "param_compute_budget" in results
    mean, std = results["mean_test_score"], results["std_test_score"]
    budgets = np.array([p["compute_budget"] for p in results["params"]])

    def cheapest_within(best: int) -> float:
        return budgets[mean >= mean[best] - std[best] / np.sqrt(model.n_splits_)].min()

    ties = np.flatnonzero(mean == mean.max())  # the tie rule picks one of them
    cheapest = model.best_params_["compute_budget"]
    assert cheapest in {cheapest_within(best) for best in ties}
    assert mean[model.best_index_] == mean[budgets == cheapest].max()
    assert np.all(model.transformer_.tap_costs_ <= cheapest)
    # The final model is that budget's model refitted: the same as a fit at that budget. Exact:
    # the taps' activations come from the same calls on the same batches (a pass stopped after
    # the last tap computes its prefix as the whole pass does), so the solvers see the same floats.
    single = Head2ToeClassifier(**TINY, **GRID, compute_budget=cheapest, random_state=0)
    single.fit(IMAGES, LABELS)
    assert [t.name for t in single.transformer_.taps_] == [t.name for t in model.transformer_.taps_]
    np.testing.assert_array_equal(single.get_support(), model.get_support())
    assert model.predict(IMAGES).shape == LABELS.shape


def test_each_budgets_cross_validation_reads_its_taps_columns():
    grid = Head2ToeClassifier(**TINY, **GRID, compute_budgets=[0.6, 1.0], random_state=0)
    grid.fit(IMAGES, LABELS)
    single = Head2ToeClassifier(**TINY, **GRID, compute_budget=0.6, random_state=0)
    single.fit(IMAGES, LABELS)
    # The same columns, in the same fold order: the same scores, up to float rounding.
    np.testing.assert_allclose(
        grid.cv_results_["mean_test_score"][0], single.cv_results_["mean_test_score"][0]
    )


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"compute_budget": 0.5, "compute_budgets": [0.5, 1.0]}, ValueError, "not both"),
        ({"compute_budgets": [0.001, 1.0]}, ComputeBudgetError, "keeps no tap"),
        ({"compute_budgets": [0.5, 1.5]}, ValueError, "compute_budgets"),
    ],
)
def test_bad_budget_grids_are_refused_before_any_extraction(params, error, message, monkeypatch):
    import skh2t.features.joint as joint

    monkeypatch.setattr(joint, "extract_jointly", lambda *a, **k: pytest.fail("extracted"))
    with pytest.raises(error, match=message):
        Head2ToeClassifier(**TINY, **GRID, **params).fit(IMAGES, LABELS)
