"""``skh2t run`` and ``skh2t fit`` on many images: --n-train all, --selection-samples,
--feature-store, --feature-store-dtype, and their one-line errors.

Fast: a random-weight ``test_resnet`` at 32 px on a folder of 36 images, 2 folds.
"""

import contextlib
import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import joblib
import numpy as np
import pytest

import skh2t.features.joint as joint
from skh2t import Head2ToeClassifier
from skh2t.cli import main
from skh2t.cli.data import LabelledImages, split_train_test
from skh2t.cli.many_images import n_train_value
from tests.test_cli import CLASSES, GRID, TINY, write_folder

N_PER_CLASS = 12
N_IMAGES = N_PER_CLASS * len(CLASSES)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("images") / "colours", n_per_class=N_PER_CLASS)


def error_line(capsys):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("skh2t")
    assert "Traceback" not in captured.err
    return lines[0]


def no_extraction(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("extracted before checking the options")

    monkeypatch.setattr(joint, "extract_jointly", refuse)


@pytest.fixture(scope="module")
def subsampled_run(folder, tmp_path_factory):
    """``skh2t run --n-train all --n-test 9 --selection-samples 15 --feature-store``."""
    out = tmp_path_factory.mktemp("run")
    store = tmp_path_factory.mktemp("store")
    argv = ["run", "--dataset", str(folder), "--n-train", "all", "--n-test", "9", *TINY, *GRID]
    argv += ["--selection-samples", "15", "--feature-store", str(store)]
    argv += ["--output-dir", str(out), "--quiet"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    results = json.loads((out / "results.json").read_text())
    return {"code": code, "stdout": stdout.getvalue(), "results": results, "out": out}


def test_run_on_all_but_the_held_out_test_images_selects_on_a_subsample(subsampled_run):
    assert subsampled_run["code"] == 0
    results = subsampled_run["results"]
    assert results["data"]["n_train"] == N_IMAGES - 9
    assert results["data"]["n_test"] == 9
    assert results["selection"] == {
        "selection_samples": 15,
        "n_selection": 15,
        "n_train": N_IMAGES - 9,
        "subsample": True,
    }
    assert results["config"]["n_train"] == "all"
    assert results["config"]["feature_store_dtype"] == "float32"
    caption = "probes and Head2Toe's selection: 15 of 27 training images; Head2Toe's head "
    assert caption + "refitted on all" in subsampled_run["stdout"]


def test_the_saved_model_is_the_estimator_with_the_options(subsampled_run):
    model = joblib.load(subsampled_run["out"] / "model.joblib")
    assert isinstance(model, Head2ToeClassifier)
    assert model.selection_samples == 15
    assert model.feature_store_dtype == "float32"
    assert len(model.selection_indices_) == 15


def test_the_feature_store_is_emptied_after_the_run(subsampled_run):
    store = subsampled_run["results"]["config"]["feature_store"]
    assert list(Path(store).iterdir()) == []


def test_run_without_a_subsample_records_all_images(folder, tmp_path):
    argv = ["run", "--dataset", str(folder), "--n-train", "all", "--n-test", "12", *TINY, *GRID]
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert main([*argv, "--output-dir", str(tmp_path), "--quiet"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["selection"]["n_selection"] == results["selection"]["n_train"] == 24
    assert results["selection"]["subsample"] is False
    assert "selection:" not in stdout.getvalue()


def test_fit_selects_on_a_subsample_and_refits_on_every_image(folder, tmp_path, capsys):
    out = tmp_path / "model.joblib"
    argv = ["fit", "--dataset", str(folder), "--n-train", "all", *TINY, "--target-size", "64"]
    argv += ["--selection-samples", "12", "--feature-store", str(tmp_path / "store")]
    argv += ["--feature-store-dtype", "float16", "-o", str(out), "-q"]
    assert main(argv) == 0
    assert f"{N_IMAGES} images (features selected on 12)" in capsys.readouterr().out
    pipeline = joblib.load(out)
    assert list(pipeline.named_steps) == ["features", "head2toe"]
    head = pipeline["head2toe"]
    assert head.alpha_fraction == pytest.approx(0.03)
    assert head.keep_fraction == pytest.approx(0.2)
    assert sorted(head.classes_) == sorted(CLASSES)
    assert set(pipeline.predict(sorted(str(p) for p in folder.rglob("*.png"))[:5])) <= set(CLASSES)


def test_fit_with_all_images_and_no_new_option_is_the_plain_fit(folder, tmp_path, capsys):
    out = tmp_path / "model.joblib"
    argv = ["fit", "--dataset", str(folder), "--n-train", "ALL", *TINY, "--target-size", "64"]
    assert main([*argv, "-o", str(out), "-q"]) == 0
    assert f"{N_IMAGES} images," in capsys.readouterr().out


@pytest.mark.parametrize("command", ["run", "fit"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--feature-store-dtype", "float16"], "needs --feature-store DIR"),
        (
            ["--feature-store-dtype", "float16", "--feature-store", "STORE"],
            "needs --selection-samples smaller than the",
        ),
        (["--selection-samples", "4"], "too few for 2 cross-validation folds"),  # --folds 2
        (["--selection-samples", "2"], "--selection-samples: selection_samples=2 cannot be"),
        (["--feature-store", "A_FILE"], "is not a directory"),
    ],
)
def test_many_images_errors_are_one_line_before_any_extraction(
    command, options, message, folder, tmp_path, capsys, monkeypatch
):
    no_extraction(monkeypatch)
    (tmp_path / "A_FILE").write_text("")
    paths = {"STORE": str(tmp_path / "store"), "A_FILE": str(tmp_path / "A_FILE")}
    options = [paths.get(option, option) for option in options]
    argv = [command, "--dataset", str(folder), *TINY, *options]
    argv += ["--n-train", "all"]
    if command == "run":
        argv += ["--n-test", "9", "--folds", "2", "--output-dir", str(tmp_path)]
    else:
        argv += ["-o", str(tmp_path / "m")]
    assert main(argv) == 2
    assert message in error_line(capsys)


@pytest.mark.parametrize("command", ["run", "fit"])
def test_too_little_disk_space_is_one_line(command, folder, tmp_path, capsys, monkeypatch):
    no_extraction(monkeypatch)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=1, used=1, free=0))
    argv = [command, "--dataset", str(folder), *TINY, "--n-train", "all"]
    argv += ["--selection-samples", "18", "--feature-store", str(tmp_path / "store")]
    if command == "run":
        argv += ["--n-test", "9", *GRID, "--output-dir", str(tmp_path)]
    else:
        argv += ["--target-size", "64", "-o", str(tmp_path / "m")]
    assert main([*argv, "-q"]) == 2
    line = error_line(capsys)
    assert line.startswith("skh2t: error: --feature-store: the features need ")
    assert "[Errno" not in line


@pytest.mark.parametrize("command", ["run", "fit"])
@pytest.mark.parametrize("value", ["0", "-3", "most", "1.5"])
def test_a_bad_n_train_is_one_line(command, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--n-train", value])
    assert exit_info.value.code == 2
    assert f"expected a positive integer or 'all', got '{value}'" in error_line(capsys)


@pytest.mark.parametrize("value", ["1", "0", "x"])
def test_selection_samples_below_two_is_one_line(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--selection-samples", value])
    assert exit_info.value.code == 2
    assert "expected an integer of at least 2" in error_line(capsys)


def test_n_train_all_with_a_single_folder_needs_held_out_test_images(folder, tmp_path, capsys):
    argv = ["run", "--dataset", str(folder), *TINY, "--n-train", "all"]
    assert main([*argv, "--output-dir", str(tmp_path)]) == 2
    assert "--n-train all leaves no test images" in error_line(capsys)
    assert main([*argv, "--n-test", str(N_IMAGES), "--output-dir", str(tmp_path)]) == 2
    assert "leaves no training images" in error_line(capsys)


def _pool(n_per_class=5):
    target = np.repeat([0, 1], n_per_class)
    return LabelledImages(np.zeros((len(target), 2, 2, 3), np.uint8), target, ["a", "b"], "pool")


def test_split_with_all_holds_out_n_test_and_trains_on_the_rest():
    train, test = split_train_test(_pool(), None, "all", 4, random_state=0)
    assert (len(train), len(test)) == (6, 4)
    assert np.bincount(test.target).tolist() == [2, 2]
    separate = _pool(3)
    train, test = split_train_test(_pool(), separate, "all", None, random_state=0)
    assert len(train) == 10
    assert test is separate
    train, test = split_train_test(_pool(), separate, "all", 2, random_state=0)
    assert (len(train), len(test)) == (10, 2)


def test_n_train_value():
    assert n_train_value("all") == n_train_value(" All ") == "all"
    assert n_train_value("7") == 7
