"""Tests of ``skh2t finetune``: runs on a folder and on Fashion-MNIST, its model through
``skh2t predict``, its report, and its one-line errors before any training.

Fast: a random-weight ``test_resnet`` at 32 px, a dozen or two images, one or two epochs.
"""

import contextlib
import io
import json
import shutil

import joblib
import numpy as np
import pytest
from PIL import Image

from skh2t.cli import build_parser, main, predict
from skh2t.cli.data import load_dataset, split_train_test
from skh2t.datasets import load_fashion_mnist
from skh2t.finetune import DRIFT_METRICS, FineTuneClassifier, kept_feature_drift

TINY = ["--backbone", "test_resnet", "--weights", "none", "--image-size", "32"]
SHORT = ["--probe-epochs", "2", "--epochs", "2", "--batch-size", "6"]
CLASSES = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
OUTPUTS = ("results.json", "feature_drift.png", "model.joblib")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of 8 noisy 20x20 images of the class colour."""
    root = tmp_path_factory.mktemp("images") / "colours"
    rng = np.random.default_rng(0)
    for name, colour in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(8):
            noise = rng.integers(-40, 40, (20, 20, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def finetune(argv):
    """Run ``skh2t finetune``; its exit code, stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["finetune", *argv])
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def folder_run(folder, tmp_path_factory):
    """``skh2t finetune`` on 12 of the folder's 24 images (3 held out), with progress."""
    out = tmp_path_factory.mktemp("finetune")
    argv = ["--dataset", str(folder), "--n-train", "12", "--validation-fraction", "0.25"]
    code, stdout, stderr = finetune([*argv, *TINY, *SHORT, "--output-dir", str(out)])
    with open(out / "results.json") as file:
        results = json.load(file)
    return {"code": code, "out": out, "stdout": stdout, "stderr": stderr, "results": results}


def error_line(capsys):
    """The single stderr line of a failed command (asserts there is exactly one)."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(("skh2t: error: ", "skh2t finetune: error: "))
    assert "Traceback" not in captured.err
    return lines[0]


# --- a run on an image folder -------------------------------------------------------------


def test_a_folder_run_prints_the_summary_and_writes_its_outputs(folder_run):
    assert folder_run["code"] == 0
    lines = folder_run["stdout"].splitlines()
    labels = [line.split("  ")[0] for line in lines if line and not line.startswith("wrote")]
    assert labels == [
        "data",
        "backbone",
        "head probing",
        "energy",
        "fine-tuning",
        "validation",
        "feature drift",
        "test",
        "time",
    ]
    assert "12 training images of" in lines[0]
    assert "3 classes" in lines[0]
    assert "2 epochs (4 steps)" in lines[2]  # 9 training images in batches of 6: 2 a epoch
    assert "(3 held-out images)" in lines[5]
    out = folder_run["out"]
    assert lines[-1] == "wrote " + ", ".join(str(out / name) for name in OUTPUTS)
    png = (out / "feature_drift.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert len(png) > 10_000


def test_progress_goes_to_stderr(folder_run):
    assert "Fine-tuning test_resnet at 32 px on 12 images" in folder_run["stderr"]
    assert "Test images" in folder_run["stderr"]
    assert "Fine-tuning" not in folder_run["stdout"]


def test_the_saved_model_is_the_fine_tuned_classifier_with_the_options(folder_run):
    model = joblib.load(folder_run["out"] / "model.joblib")
    assert isinstance(model, FineTuneClassifier)
    params = model.get_params()
    expected = {"backbone": "test_resnet", "weights": None, "image_size": 32, "epochs": 2}
    expected |= {"probe_epochs": 2, "batch_size": 6, "validation_fraction": 0.25}
    assert {key: params[key] for key in expected} == expected
    assert params["random_state"] == 0
    assert params["verbose"] == 0  # it predicts quietly
    assert model.classes_.tolist() == sorted(CLASSES)
    assert model.n_iter_ == 2
    assert folder_run["results"]["params"] == json.loads(json.dumps(params))


def test_results_json_has_accuracy_energy_drift_settings_versions_times(folder_run, folder):
    results = folder_run["results"]
    model = joblib.load(folder_run["out"] / "model.joblib")
    assert results["command"] == "skh2t finetune"
    assert results["config"]["n_train"] == 12
    assert results["data"]["n_train"] == 12
    assert results["data"]["n_test"] == 12  # the folder's images not drawn for training
    assert results["data"]["train_per_class"] == [4, 4, 4]
    _, test = split_train_test(load_dataset(str(folder)), None, 12, None, 0)
    accuracy = np.mean(model.predict(test.images) == test.labels)
    assert results["test_accuracy"] == pytest.approx(accuracy)
    assert results["energy"] == pytest.approx(model.energy_)
    assert results["drift"] == pytest.approx(kept_feature_drift(model))
    assert results["drift"]["feature_distance"] > 0  # two epochs moved the features
    assert results["probing"] == {"probe_epochs": 2, "probe_steps": 4, "target_reached": None}
    assert results["fine_tuning"]["kept_epoch"] == 2
    assert results["fine_tuning"]["lr"] == pytest.approx(1e-4)  # lr "auto" with AdamW
    history = results["history"]
    assert history["epoch"] == [0, 1, 2]
    assert history["train_loss"][0] is None  # NaN before the first step: null in JSON
    assert history["val_accuracy"][-1] == results["validation_accuracy"]
    assert set(DRIFT_METRICS) <= set(history)
    assert results["n_validation"] == 3
    assert {"torch", "timm", "skh2t"} <= set(results["versions"])
    assert set(results["timings"]) == {"fit_seconds", "test_seconds", "total_seconds"}
    assert results["model_file"] == str(folder_run["out"] / "model.joblib")
    assert "probe_epochs_search" not in results


# --- skh2t predict on the fine-tuned model -------------------------------------------------


def test_predict_reads_the_fine_tuned_model(folder_run, folder, capsys):
    path = folder_run["out"] / "model.joblib"
    assert main(["predict", "--model", str(path), "--folder", str(folder), "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    files = sorted(str(p) for p in folder.rglob("*.png"))
    assert [line.split("\t")[0] for line in lines] == files
    expected = joblib.load(path).predict(files)  # fewer files than a chunk: the same batches
    assert [line.split("\t")[1] for line in lines] == expected.tolist()


def test_predict_applies_its_runtime_options_to_the_fine_tuned_model(folder_run, folder, capsys):
    path = str(folder_run["out"] / "model.joblib")
    model = joblib.load(path)
    argv = ["predict", "--model", path, "--precision", "bfloat16", "--batch-size", "5"]
    predict._configure(model, build_parser().parse_args(argv))
    assert (model.precision, model.batch_size, model.device) == ("bfloat16", 5, "cpu")
    files = sorted(str(p) for p in (folder / "red").glob("*.png"))
    assert main([*argv, *files, "-q"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(files)
    assert main(["predict", "--model", path, *files, "--precision", "float16"]) == 2
    assert "--precision: precision='float16' runs on CUDA devices only" in error_line(capsys)


# --- Fashion-MNIST, -q, probing to a target, "auto" ----------------------------------------


def test_fashion_mnist_quietly_probing_to_a_target(tmp_path, capsys):
    try:
        load_fashion_mnist(subset="test")
    except (FileNotFoundError, ValueError):
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    argv = ["--n-train", "20", "--n-test", "30", *TINY, "--epochs", "1", "--batch-size", "10"]
    argv += ["--probe-epochs", "3", "--probe-target-loss", "50", "--output-dir", str(tmp_path)]
    assert main(["finetune", *argv, "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # -q: no progress at all
    assert "until training loss 50 (reached)" in captured.out
    with open(tmp_path / "results.json") as file:
        results = json.load(file)
    assert results["data"]["train_source"] == "fashion-mnist (train)"
    assert results["data"]["test_source"] == "fashion-mnist (test)"
    assert len(results["data"]["classes"]) == 10
    assert sum(results["data"]["test_per_class"]) == 30
    assert results["probing"]["target_reached"] is True
    assert results["probing"]["probe_steps"] <= 1  # a loss of 50 is met at once
    assert results["params"]["probe_target_loss"] == 50
    assert 0 <= results["test_accuracy"] <= 1
    assert all((tmp_path / name).exists() for name in OUTPUTS)


def test_probe_epochs_auto_reports_its_search(folder, tmp_path, capsys):
    argv = ["--dataset", str(folder), "--n-train", "12", "--validation-fraction", "0.25", *TINY]
    argv += ["--probe-epochs", "auto", "--probe-epochs-grid", "0,1", "--epochs", "1"]
    assert main(["finetune", *argv, "--batch-size", "6", "--output-dir", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "chosen on validation accuracy among 0,1" in out
    with open(tmp_path / "results.json") as file:
        results = json.load(file)
    search = results["probe_epochs_search"]
    assert search["params"] == [{"probe_epochs": 0}, {"probe_epochs": 1}]
    assert results["probing"]["probe_epochs"] in (0, 1)
    assert joblib.load(tmp_path / "model.joblib").probe_epochs_grid == (0, 1)


def test_a_target_not_reached_is_noted_and_epochs_0_keeps_the_pretrained_features(
    folder, tmp_path, capsys
):
    argv = ["--dataset", str(folder), "--n-train", "12", *TINY, "--epochs", "0"]
    argv += ["--probe-epochs", "1", "--probe-target-loss", "1e-9", "--validation-fraction", "0"]
    assert main(["finetune", *argv, "--output-dir", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "(not reached)" in out
    assert "note: head probing stopped after --probe-epochs 1 epochs, short of its target" in out
    assert "validation" not in out  # no split
    with open(tmp_path / "results.json") as file:
        results = json.load(file)
    assert results["probing"]["target_reached"] is False
    assert results["validation_accuracy"] is None
    assert results["drift"]["feature_distance"] == 0.0  # no fine-tuning: no drift
    assert results["drift"]["feature_cosine"] == 1.0


# --- errors: one line on stderr, exit 2, before any training -------------------------------


@pytest.fixture
def no_training(monkeypatch):
    def fit(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(FineTuneClassifier, "fit", fit)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--probe-epochs", "auto", "--probe-target-accuracy", "0.9"],
            "--probe-epochs auto and --probe-target-accuracy are two ways to choose how long",
        ),
        (
            ["--probe-epochs", "auto", "--probe-target-loss", "0.5"],
            "--probe-epochs auto and --probe-target-loss are two ways to choose how long",
        ),
        (["--probe-epochs-grid", "0,3"], "--probe-epochs-grid lists the candidates of"),
        (
            ["--probe-epochs", "auto", "--validation-fraction", "0"],
            "--probe-epochs auto chooses on validation accuracy and needs --validation-fraction",
        ),
        (
            ["--n-train", "3", "--validation-fraction", "0.5"],
            "--validation-fraction 0.5 of --n-train 3 holds out 2 images and leaves 1 to train",
        ),
        (["--n-train", "100"], "--n-train 100 is larger than the data"),
        (["--n-test", "50"], "--n-test 50 is larger than the data"),
        (["--backbone", "no_such_net"], "--backbone: "),
        (["--weights", "missing.pth"], "--weights: 'missing.pth' is not 'auto', 'timm', 'none'"),
        (["--device", "bogus"], "--device: "),
        (["--precision", "float16"], "--precision: precision='float16' runs on CUDA devices only"),
        (["--test-dataset", "no/such/folder"], "unknown dataset 'no/such/folder'"),
    ],
)
def test_bad_inputs_are_one_line_before_any_training(
    argv, message, folder, tmp_path, capsys, no_training, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    base = ["--dataset", str(folder), "--n-train", "12", *TINY, "--output-dir", str(out)]
    assert main(["finetune", *base, *argv, "-q"]) == 2
    assert message in error_line(capsys)
    assert not out.exists() or not any(out.iterdir())


def test_bad_data_is_one_line_before_any_training(folder, tmp_path, capsys, no_training):
    argv = ["finetune", *TINY, "--output-dir", str(tmp_path / "out"), "-q"]
    assert main([*argv, "--dataset", "no-such-dataset"]) == 2
    assert "unknown dataset 'no-such-dataset'" in error_line(capsys)
    one = tmp_path / "one"
    shutil.copytree(folder / "red", one / "red")
    assert main([*argv, "--dataset", str(one)]) == 2
    assert "1 class ('red'); a classifier needs at least 2" in error_line(capsys)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "blue" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    # Drawn for training or left for the test: the images of both are read first.
    assert main([*argv, "--dataset", str(broken), "--n-train", "12"]) == 2
    assert "zz_broken.png" in error_line(capsys)
    other = tmp_path / "other"
    shutil.copytree(folder / "red", other / "red")
    shutil.copytree(folder / "blue", other / "sky")
    argv += ["--dataset", str(folder), "--n-train", "12", "--test-dataset", str(other)]
    assert main(argv) == 2
    assert "the test classes ['red', 'sky'] differ from the training classes" in error_line(capsys)


def test_outputs_that_cannot_be_written_fail_first(folder, tmp_path, capsys, no_training):
    argv = ["finetune", "--dataset", str(folder), "--n-train", "12", *TINY, "-q"]
    (tmp_path / "file").write_text("")
    assert main([*argv, "--output-dir", str(tmp_path / "file")]) == 2
    assert "--output-dir: " in error_line(capsys)
    (tmp_path / "out" / "feature_drift.png").mkdir(parents=True)  # where a file must go
    assert main([*argv, "--output-dir", str(tmp_path / "out")]) == 2
    line = error_line(capsys)
    assert "--output-dir: " in line
    assert "feature_drift.png' is a directory" in line


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--probe-epochs", "-1"], "--probe-epochs"),
        (["--probe-epochs", "many"], "--probe-epochs"),
        (["--probe-epochs-grid", "1,1"], "--probe-epochs-grid"),
        (["--probe-target-accuracy", "1.5"], "--probe-target-accuracy"),
        (["--probe-target-loss", "0"], "--probe-target-loss"),
        (["--epochs", "-1"], "--epochs"),
        (["--lr", "0"], "--lr"),
        (["--lr", "fast"], "--lr"),
        (["--optimizer", "adam"], "--optimizer"),
        (["--batch-size", "0"], "--batch-size"),
        (["--validation-fraction", "1"], "--validation-fraction"),
        (["--cache", "dir"], "unrecognized arguments: --cache"),
    ],
)
def test_bad_option_values_are_argparse_errors(argv, option, capsys, no_training):
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", *argv])
    assert exit_info.value.code == 2
    line = error_line(capsys)
    assert option in line
    assert line.endswith("--help')")


def test_option_defaults_are_the_library_defaults():
    args = build_parser().parse_args(["finetune"])
    library = FineTuneClassifier().get_params()
    for name in ("probe_epochs", "epochs", "lr", "optimizer", "batch_size"):
        assert getattr(args, name) == library[name]
    assert args.validation_fraction == library["validation_fraction"]
    assert args.probe_epochs_grid is None  # the library's grid
    assert (args.dataset, args.n_train, args.image_size) == ("fashion-mnist", 1000, 64)
