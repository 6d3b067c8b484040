"""Tests of ``skh2t run``, the command's help and entry points, and its one-line errors.

Fast: a random-weight ``test_resnet`` at 32 px, a few dozen images, 2 folds.
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.exceptions import ConvergenceWarning

from skh2t.cli import build_parser, main
from skh2t.datasets import load_fashion_mnist
from skh2t.protocol import ALL_TAPS as ALL_L2
from skh2t.protocol import HEAD2TOE, LAST_LAYER

TINY = ["--backbone", "test_resnet", "--weights", "none", "--image-size", "32"]
GRID = [
    "--folds", "2", "--target-sizes", "64,256", "--alpha-fractions", "0.3,0.1",
    "--keep-fractions", "0.1,0.5", "--cs", "1,100", "--n-jobs", "1",
]  # fmt: skip
CLASSES = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def write_folder(root, n_per_class=10, size=24, seed=0):
    """An image folder: one sub-folder per class, noisy images of the class colour."""
    rng = np.random.default_rng(seed)
    for name, colour in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            noise = rng.integers(-40, 40, (size, size, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("images") / "colours")


@pytest.fixture(scope="module")
def folder_run(folder, tmp_path_factory):
    """One ``skh2t run`` on the folder; its exit code, outputs and stdout."""
    out = tmp_path_factory.mktemp("run")
    argv = ["run", "--dataset", str(folder), "--n-train", "18", *TINY, *GRID]
    argv += ["--output-dir", str(out), "--quiet"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    with open(out / "results.json") as file:
        results = json.load(file)
    return {
        "code": code,
        "out": out,
        "folder": folder,
        "results": results,
        "stdout": stdout.getvalue(),
    }


def error_line(capsys):
    """The single stderr line of a failed command (asserts there is exactly one)."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("skh2t: error: ")
    assert "Traceback" not in captured.err
    return lines[0]


# --- help and entry points ---------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["run"], ["extract"], ["fit"], ["predict"]])
def test_help_of_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: skh2t {' '.join(command)}".strip() in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "required: COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["run", "--batch-size", "0"], ["fit", "--no-such-option"], ["predict"], ["nonsense"]],
)
def test_argument_errors_are_one_line_pointing_to_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("skh2t")
    assert ": error: " in line
    assert line.endswith("--help')")


@pytest.mark.slow
def test_python_m_skh2t_help():
    result = subprocess.run(
        [sys.executable, "-m", "skh2t", "run", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "--keep-fractions" in result.stdout


@pytest.mark.slow
def test_console_script_exits_2_in_one_line_without_traceback():
    script = shutil.which("skh2t")
    if script is None:
        pytest.skip("the skh2t console script is not installed (pip install -e .)")
    result = subprocess.run(
        [script, "run", "--dataset", "no-such-dataset"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("skh2t: error: unknown dataset 'no-such-dataset'")
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


# --- skh2t run ---------------------------------------------------------------------------


def test_run_defaults_are_the_documented_protocol():
    args = build_parser().parse_args(["run"])
    assert args.dataset == "fashion-mnist"
    assert args.backbone == "tf_efficientnet_lite0"
    assert args.weights == "auto"
    assert (args.n_train, args.n_test, args.folds, args.random_state) == (1000, None, 5, 0)
    assert args.image_size == 64
    assert args.target_sizes == [1024, 2048]
    assert args.alpha_fractions == [0.1, 0.03, 0.01]
    assert args.renormalize_kept
    assert args.n_jobs == -1
    assert args.keep_fractions == [0.02, 0.05, 0.1, 0.2]
    assert args.Cs == [1.0, 10.0, 100.0]
    assert args.output_dir == "skh2t_results"
    assert args.blas_threads == 1
    assert args.precision == "float32"


def test_run_prints_the_table_and_the_choices(folder_run):
    assert folder_run["code"] == 0
    table = folder_run["stdout"]
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["method", "CV", "acc"]
    for method in (LAST_LAYER, ALL_L2, HEAD2TOE):
        assert any(line.startswith(method) for line in lines[2:5]), table
    assert "Head2Toe: target_size=" in table
    assert "keep_fraction=" in table
    assert "results.json" in lines[-1]


def test_run_json_has_config_cv_scores_timings_versions(folder_run):
    results = folder_run["results"]
    assert results["argv"][:3] == ["run", "--dataset", str(folder_run["folder"])]
    assert results["config"]["n_train"] == 18
    assert results["config"]["target_sizes"] == [64, 256]
    assert results["config"]["precision"] == "float32"
    assert results["data"]["n_train"] == 18
    assert results["data"]["n_test"] == 12  # the folder's other images
    assert results["data"]["train_per_class"] == [6, 6, 6]
    assert results["data"]["classes"] == sorted(CLASSES)
    assert set(results["methods"]) == {LAST_LAYER, ALL_L2, HEAD2TOE}
    h2t = results["methods"][HEAD2TOE]
    assert len(h2t["cv_results"]) == 2 * 2 * 2  # target sizes x alphas x keep fractions
    assert all(len(row["fold_scores"]) == 2 for row in h2t["cv_results"])
    best = max(row["mean"] for row in h2t["cv_results"])
    assert h2t["cv_accuracy"] == pytest.approx(best)
    assert len(results["methods"][ALL_L2]["cv_results"]) == 2 * 2  # target sizes x Cs
    assert len(results["methods"][LAST_LAYER]["cv_results"]) == 2
    assert results["methods"][LAST_LAYER]["params"]["tap"] == "fc:input"
    for method in results["methods"].values():
        assert 0.0 <= method["test_accuracy"] <= 1.0
        assert method["fit_seconds"] >= 0
    assert {"total_seconds", "head2toe_fit_seconds", "test_seconds"} <= set(results["timings"])
    assert {"skh2t", "torch", "timm", "scikit-learn"} <= set(results["versions"])


@pytest.mark.parametrize(("method", "shown"), [(LAST_LAYER, "tap"), (ALL_L2, "target_size")])
def test_run_json_rows_of_the_probes_are_their_cv_results(folder_run, method, shown):
    summary = folder_run["results"]["methods"][method]
    rows = summary["cv_results"]
    assert all(set(row) == {"params", "fold_scores", "mean"} for row in rows)
    assert all(set(row["params"]) == {shown, "C"} for row in rows)
    assert all(row["mean"] == pytest.approx(np.mean(row["fold_scores"])) for row in rows)
    chosen = [row for row in rows if row["params"] == summary["params"]]
    assert len(chosen) == 1
    assert chosen[0]["mean"] == summary["cv_accuracy"] == max(row["mean"] for row in rows)


def test_run_kept_features_per_tap_add_up(folder_run):
    results = folder_run["results"]
    h2t = results["methods"][HEAD2TOE]
    kept = results["head2toe_kept_per_tap"]
    assert sum(row["kept"] for row in kept) == h2t["n_features"]
    T = str(h2t["params"]["target_size"])
    taps = results["features"][T]["taps"]
    assert [row["tap"] for row in kept] == [tap["name"] for tap in taps]
    assert all(0 <= row["kept"] <= row["n_features"] for row in kept)


def test_run_saves_the_plot_and_a_model_that_predicts(folder_run, folder):
    out = folder_run["out"]
    with open(out / "kept_per_tap.png", "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    model = joblib.load(out / "model.joblib")
    files = sorted(str(p) for p in (folder / "red").iterdir())[:3]
    assert set(model.predict(files)) <= set(CLASSES)


@pytest.mark.slow
def test_run_on_fashion_mnist_with_a_test_subsample(tmp_path, capsys):
    try:
        load_fashion_mnist(subset="test")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    argv = ["run", "--n-train", "20", "--n-test", "30", *TINY, "--folds", "2"]
    argv += ["--target-sizes", "64", "--alpha-fractions", "0.3", "--keep-fractions", "0.2"]
    argv += ["--cs", "10"]
    argv += ["--output-dir", str(tmp_path), "--no-save-model", "--quiet", "--n-jobs", "1"]
    assert main(argv) == 0
    with open(tmp_path / "results.json") as file:
        results = json.load(file)
    assert results["data"]["train_source"] == "fashion-mnist (train)"
    assert results["data"]["test_source"] == "fashion-mnist (test)"
    assert results["data"]["train_per_class"] == [2] * 10
    assert results["data"]["test_per_class"] == [3] * 10
    assert not os.path.exists(tmp_path / "model.joblib")
    assert "Head2Toe" in capsys.readouterr().out


# --- one-line errors ---------------------------------------------------------------------


def test_unknown_dataset(capsys):
    assert main(["run", "--dataset", "imagenet-21k"]) == 2
    assert "unknown dataset 'imagenet-21k'" in error_line(capsys)


def test_unknown_backbone(capsys, folder):
    assert main(["run", "--dataset", str(folder), "--backbone", "resnet5O"]) == 2
    line = error_line(capsys)
    assert "--backbone" in line
    assert "Unknown timm model 'resnet5O'" in line


def test_missing_weights_file(capsys, folder, tmp_path):
    argv = ["fit", "--dataset", str(folder), "--weights", str(tmp_path / "none.pth")]
    assert main(argv) == 2
    assert "--weights" in error_line(capsys)


def test_n_train_larger_than_the_data(capsys, folder):
    assert main(["run", "--dataset", str(folder), "--n-train", "1000", *TINY]) == 2
    assert "--n-train 1000 is larger than the data" in error_line(capsys)


def test_n_train_using_up_the_folder(capsys, folder):
    assert main(["run", "--dataset", str(folder), "--n-train", "30", *TINY]) == 2
    assert "leaves no test images" in error_line(capsys)


def test_missing_test_dataset(capsys, folder, tmp_path):
    argv = ["run", "--dataset", str(folder), "--test-dataset", str(tmp_path / "gone")]
    assert main([*argv, *TINY]) == 2
    assert "unknown dataset" in error_line(capsys)


def test_output_dir_that_is_a_file(capsys, folder, tmp_path):
    (tmp_path / "results").write_text("")
    argv = ["run", "--dataset", str(folder), "--output-dir", str(tmp_path / "results"), *TINY]
    assert main(argv) == 2
    assert "--output-dir: [Errno 17] File exists" in error_line(capsys)


def test_folder_without_class_folders(capsys, tmp_path):
    assert main(["run", "--dataset", str(tmp_path), *TINY]) == 2
    assert "No class sub-folders" in error_line(capsys)


def test_too_many_folds_for_the_classes(capsys, folder):
    argv = ["run", "--dataset", str(folder), "--n-train", "9", "--folds", "5", *TINY]
    assert main(argv) == 2
    assert "--folds 5 needs at least 5 training images per class" in error_line(capsys)


@pytest.mark.parametrize(
    "option",
    [
        ["--keep-fractions", "0"],
        ["--keep-fractions", "0.1,0.1"],
        ["--alpha-fractions", "x"],
        ["--n-train", "-3"],
        ["--target-sizes", ""],
    ],
)
def test_bad_option_values_are_argparse_errors(option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *option])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "skh2t run: error: argument" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_run_counts_the_fits_stopped_at_max_iter(folder, tmp_path, capsys):
    argv = ["run", "--dataset", str(folder), "--n-train", "18", *TINY, *GRID]
    argv += ["--max-iter", "2", "--output-dir", str(tmp_path), "--no-save-model", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    with open(tmp_path / "results.json") as file:
        h2t = json.load(file)["methods"][HEAD2TOE]
    # 2 target sizes x 2 folds x 2 alphas penalised fits, each with 2 refits, and the final fit
    assert h2t["n_not_converged"] >= 2 * 2 * 2
    assert f"note: {h2t['n_not_converged']} fit(s) stopped at their iteration limit" in out


def _commands_with(option):
    """The subcommands whose parser has ``option``."""
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(
        name for name, sub in commands.choices.items() if option in sub._option_string_actions
    )


@pytest.mark.parametrize("value", ["0", "x"])
def test_n_jobs_zero_is_an_argparse_error_before_any_work(value, folder, capsys):
    commands = _commands_with("--n-jobs")
    assert "run" in commands
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--dataset", str(folder), *TINY, "--n-jobs", value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"skh2t {command}: error: argument --n-jobs: expected a non-zero integer" in err
        assert "Traceback" not in err
    assert build_parser().parse_args(["run", "--n-jobs", "-2"]).n_jobs == -2


@pytest.mark.parametrize("value", ["-1", "99999999999", str(2**32), "seven"])
def test_a_bad_random_state_names_random_state(value, folder, capsys):
    commands = _commands_with("--random-state")
    assert {"run", "fit", "extract"} <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--dataset", str(folder), *TINY, "--random-state", value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        (line,) = err.strip().splitlines()
        assert line.startswith(f"skh2t {command}: error: argument --random-state: expected a seed")
        assert "--n-train" not in line


def _warn_before_fit(monkeypatch, cls):
    """Make ``cls.fit`` raise a ConvergenceWarning and another warning first."""
    fit = cls.fit

    def warning_fit(self, *args, **kwargs):
        warnings.warn("device='cuda' but CUDA is not available here", UserWarning, stacklevel=2)
        warnings.warn("stopped at max_iter", ConvergenceWarning, stacklevel=2)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(cls, "fit", warning_fit)


@pytest.mark.parametrize("command", ["run", "fit"])
def test_run_and_fit_count_convergence_warnings_and_show_the_others(
    command, folder, tmp_path, monkeypatch, capsys
):
    from skh2t import GroupLassoClassifier, Head2ToeClassifier

    _warn_before_fit(monkeypatch, Head2ToeClassifier if command == "run" else GroupLassoClassifier)
    argv = [command, "--dataset", str(folder), *TINY]
    if command == "run":
        argv += ["--n-train", "18", *GRID, "--output-dir", str(tmp_path), "--no-save-model"]
        argv += ["--max-iter", "1"]  # every group-lasso solve stops at its limit
    else:
        argv += ["--target-size", "64", "-o", str(tmp_path / "m.joblib"), "--max-iter", "1"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    shown = [w for w in caught if "CUDA is not available" in str(w.message)]
    assert [w.category for w in shown] == [UserWarning]
    assert not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    captured = capsys.readouterr()
    if command == "run":
        with open(tmp_path / "results.json") as file:
            n_not_converged = json.load(file)["methods"][HEAD2TOE]["n_not_converged"]
        # every penalised solve: 2 folds x 2 target sizes x 2 alphas, and the final fit's
        assert n_not_converged >= 2 * 2 * 2 + 1
        assert f"note: {n_not_converged} fit(s) stopped at their iteration limit" in captured.out
    else:
        assert "note: the solver stopped at --max-iter" in captured.err


def test_test_classes_that_differ_are_named_as_plain_strings(folder, tmp_path, capsys):
    other = write_folder(tmp_path / "other", n_per_class=2)
    (other / "red").rename(other / "zz")
    argv = ["run", "--dataset", str(folder), "--test-dataset", str(other), *TINY, "--n-train", "18"]
    assert main([*argv, "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    line = error_line(capsys)
    assert "the test classes ['blue', 'green', 'zz'] differ from the training classes " in line
    assert "['blue', 'green', 'red']" in line
    assert "np.str_" not in line
