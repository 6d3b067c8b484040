"""Tests of ``skh2t extract``, ``skh2t fit`` and ``skh2t predict`` (a random ``test_resnet``)."""

import os

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.pipeline import Pipeline

from skh2t import GroupLassoClassifier
from skh2t.cli import main, predict
from skh2t.cli.main import build_parser
from skh2t.datasets import load_image_folder
from skh2t.features import IntermediateFeatureTransformer

TINY = ["--backbone", "test_resnet", "--weights", "none", "--image-size", "32"]
CLASSES = {"cat": (220, 120, 40), "sky": (60, 120, 230)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes of 8 noisy 20x20 images each, one in a nested folder."""
    root = tmp_path_factory.mktemp("images") / "pets"
    rng = np.random.default_rng(1)
    for name, colour in CLASSES.items():
        for i in range(8):
            path = root / name / ("nested" if i == 0 else "") / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            noise = rng.integers(-30, 30, (20, 20, 3))
            Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(path)
    return root


@pytest.fixture(scope="module")
def model_file(folder, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.joblib"
    argv = ["fit", "--dataset", str(folder), *TINY, "--target-size", "256"]
    argv += ["--alpha-fraction", "0.1", "--keep-fraction", "0.2", "-o", str(path), "--quiet"]
    assert main(argv) == 0
    return path


def error_line(capsys):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("skh2t: error: ")
    return lines[0]


def test_extract_a_folder_to_npz(folder, tmp_path, capsys):
    out = tmp_path / "features.npz"
    argv = ["extract", "--dataset", str(folder), *TINY, "--target-size", "256", "-o", str(out)]
    assert main([*argv, "--quiet"]) == 0
    assert "16 images x 2760 features" in capsys.readouterr().out
    with np.load(out) as data:
        assert data["X"].shape == (16, 2760)
        assert data["X"].dtype == np.float32
        assert sorted(set(data["y"])) == sorted(CLASSES)
        assert data["feature_names"][0] == "act1__0"
        assert data["groups"].shape == (2760,)
        assert data["tap_names"][data["groups"][-1]] == "fc"
        assert len(data["paths"]) == 16
        # Every tap is L2-normalised per image.
        first = data["groups"] == 0
        assert np.allclose(np.linalg.norm(data["X"][:, first], axis=1), 1, atol=1e-5)


def test_extract_files_and_a_subset(folder, tmp_path):
    files = sorted(str(p) for p in (folder / "sky").glob("*.png"))[:3]
    out = tmp_path / "files.npz"
    assert main(["extract", *files, *TINY, "--target-size", "64", "-o", str(out), "-q"]) == 0
    with np.load(out) as data:
        assert data["X"].shape[0] == 3
        assert "y" not in data
        assert data["paths"].tolist() == files
    argv = ["extract", "--dataset", str(folder), "--n-samples", "4", *TINY, "-o", str(out)]
    assert main([*argv, "-q"]) == 0
    with np.load(out) as data:
        assert sorted(data["y"].tolist()) == ["cat", "cat", "sky", "sky"]


def test_fit_saves_a_pipeline_predicting_class_names(model_file, folder):
    model = joblib.load(model_file)
    assert isinstance(model, Pipeline)
    features, head = model.steps[0][1], model.steps[-1][1]
    assert isinstance(features, IntermediateFeatureTransformer)
    assert features.target_size == 256
    assert isinstance(head, GroupLassoClassifier)
    assert head.classes_.tolist() == sorted(CLASSES)
    assert head.get_support().sum() == int(0.2 * 2760)
    # All 16 images (fewer than the default 1000); alpha relative to alpha_max.
    bunch = load_image_folder(folder)
    X = features.transform(list(bunch.filenames))
    alpha_max = head.alpha_max(X, bunch.target_names[bunch.target])
    assert head.alpha_fraction == 0.1
    assert head.alpha_ == pytest.approx(0.1 * alpha_max)


def test_predict_files_and_a_folder(model_file, folder, capsys):
    files = [str(folder / "cat" / "1.png"), str(folder / "sky" / "2.png")]
    assert main(["predict", "--model", str(model_file), *files, "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == files
    assert [line.split("\t")[1] for line in lines] == ["cat", "sky"]
    assert main(["predict", "--model", str(model_file), "--folder", str(folder), "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 16
    right = [line.split("\t")[1] in line.split("\t")[0] for line in lines]
    assert np.mean(right) >= 0.9


def test_predict_missing_model(capsys, tmp_path):
    assert main(["predict", "--model", str(tmp_path / "nope.joblib"), "x.png"]) == 2
    assert "--model: file not found" in error_line(capsys)


def test_predict_not_a_model(capsys, tmp_path):
    path = tmp_path / "numbers.joblib"
    joblib.dump([1, 2, 3], path)
    assert main(["predict", "--model", str(path), "x.png"]) == 2
    assert "holds a list, not a skh2t model" in error_line(capsys)
    path.write_text("not a pickle")
    assert main(["predict", "--model", str(path), "x.png"]) == 2
    assert "is not a skh2t model" in error_line(capsys)


def test_predict_missing_image(model_file, capsys, tmp_path):
    argv = ["predict", "--model", str(model_file), str(tmp_path / "gone.png")]
    assert main(argv) == 2
    assert "image file not found" in error_line(capsys)


def test_a_directory_given_as_an_image_points_to_the_folder_options(model_file, folder, capsys):
    for argv in (
        ["extract", *TINY, str(folder / "cat"), "-o", "unused.npz"],
        ["predict", "--model", str(model_file), str(folder / "cat")],
    ):
        assert main(argv) == 2
        line = error_line(capsys)
        assert f"{str(folder / 'cat')!r} is a directory, not an image file" in line
        assert "--dataset DIR (extract) or --folder DIR (predict)" in line


def test_predict_empty_folder(model_file, capsys, tmp_path):
    assert main(["predict", "--model", str(model_file), "--folder", str(tmp_path)]) == 2
    assert "no image files in" in error_line(capsys)


def test_extract_needs_files_or_a_dataset(capsys, tmp_path):
    assert main(["extract", *TINY, "-o", str(tmp_path / "f.npz")]) == 2
    assert "no image files" in error_line(capsys)


def test_extract_output_folder_must_exist(capsys, tmp_path, folder):
    argv = ["extract", "--dataset", str(folder), "-o", str(tmp_path / "no" / "f.npz")]
    assert main(argv) == 2
    assert "does not exist" in error_line(capsys)


def test_fit_n_train_larger_than_the_folder(capsys, folder, tmp_path):
    argv = ["fit", "--dataset", str(folder), "--n-train", "100", *TINY]
    assert main([*argv, "-o", str(tmp_path / "m.joblib")]) == 2
    assert "--n-train 100 is larger than the data" in error_line(capsys)


def test_extract_with_a_cache_gives_the_same_features_and_reuses_them(folder, tmp_path):
    cache = tmp_path / "cache"
    argv = ["extract", "--dataset", str(folder), *TINY, "--target-size", "256", "-q"]
    assert main([*argv, "-o", str(tmp_path / "plain.npz")]) == 0
    for name in ("cold.npz", "warm.npz"):
        assert main([*argv, "--cache", str(cache), "-o", str(tmp_path / name)]) == 0
    entries = sorted(cache.rglob("*.f32"))
    assert len(entries) == 16
    with np.load(tmp_path / "plain.npz") as plain, np.load(tmp_path / "warm.npz") as warm:
        assert np.array_equal(plain["X"], warm["X"])
    assert sorted(cache.rglob("*.f32")) == entries


def test_cache_that_is_a_file(capsys, folder, tmp_path):
    (tmp_path / "cache").write_text("")
    argv = ["extract", "--dataset", str(folder), *TINY, "--cache", str(tmp_path / "cache")]
    assert main([*argv, "-o", str(tmp_path / "x.npz")]) == 2
    assert "--cache: cache=" in error_line(capsys)


def test_fit_without_n_train_uses_all_the_images_of_an_imbalanced_folder(tmp_path):
    rng = np.random.default_rng(2)
    for name, count in (("few", 3), ("many", 7)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.png")
    path = tmp_path / "m.joblib"
    argv = ["fit", "--dataset", str(tmp_path / "data"), *TINY, "--target-size", "64"]
    assert main([*argv, "--keep-fraction", "0.5", "-o", str(path), "--quiet"]) == 0
    head = joblib.load(path).steps[-1][1]
    assert head.classes_.tolist() == ["few", "many"]
    assert head.get_support().sum() > 0


@pytest.mark.slow
def test_export_writes_a_file_that_predicts_as_the_model(model_file, folder, tmp_path, capsys):
    from skh2t.export import compact_module, load_exported

    out = tmp_path / "model.pt"
    assert main(["export", str(model_file), "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"wrote {out} (TorchScript, ")
    assert "input (N, 3, 32, 32) in [0, 1], output (N, 2) logits" in lines[0]
    assert lines[1] == 'classes (in the file\'s metadata too): ["cat", "sky"]'
    model = joblib.load(model_file)
    files = sorted(str(p) for p in folder.rglob("*.png"))
    logits = load_exported(out)(compact_module(model).prepare(files).numpy())
    np.testing.assert_array_equal(model.classes_[logits.argmax(axis=1)], model.predict(files))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.joblib", "-o", "m.onnx"], "MODEL: file not found"),
        ([".", "-o", "m.onnx"], "is a directory, not a model file"),
        (["{model}", "-o", "m.joblib"], "-o: Cannot tell the export format"),
        (["{model}", "-o", "no/such/dir/m.pt"], "-o: The folder 'no/such/dir' does not exist"),
        (["{text}", "-o", "m.pt"], "is not a skh2t model"),
    ],
)
def test_export_errors_are_one_line(argv, message, model_file, tmp_path, capsys, monkeypatch):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    monkeypatch.chdir(tmp_path)
    argv = [a.format(model=model_file, text=text) for a in argv]
    assert main(["export", *argv]) == 2
    assert message in error_line(capsys)
    assert not any(tmp_path.glob("m.*"))


def test_export_refuses_a_model_it_cannot_export(tmp_path, capsys):
    path = tmp_path / "other.joblib"
    joblib.dump(Pipeline([("c", GroupLassoClassifier())]), path)
    assert main(["export", str(path), "-o", str(tmp_path / "m.pt")]) == 2
    assert "MODEL: " in (line := error_line(capsys))
    assert "holds a Pipeline, not a skh2t model" in line
    unfitted = [("f", IntermediateFeatureTransformer()), ("c", GroupLassoClassifier())]
    joblib.dump(Pipeline(unfitted), path)
    assert main(["export", str(path), "-o", str(tmp_path / "m.pt")]) == 2
    assert "MODEL: This IntermediateFeatureTransformer instance is not fitted" in error_line(capsys)


def test_predict_model_that_is_a_directory(tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path)]) == 2
    assert "--model: " in error_line(capsys)


@pytest.fixture
def broken_folder(folder, tmp_path):
    """The two-class folder with one file that is not an image."""
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(folder, root)
    (root / "sky" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def _one_class_folder(folder, tmp_path):
    import shutil

    root = tmp_path / "one"
    shutil.copytree(folder / "cat", root / "cat")
    return root


@pytest.mark.parametrize("command", ["fit", "run"])
def test_a_single_class_folder_fails_before_any_extraction(command, folder, tmp_path, capsys):
    root = _one_class_folder(folder, tmp_path)
    argv = [command, "--dataset", str(root), *TINY, "-q"]
    argv += ["-o", str(tmp_path / "m.joblib")] if command == "fit" else ["--folds", "2"]
    assert main(argv) == 2
    assert "--dataset: " in (line := error_line(capsys))
    assert "1 class ('cat'); a classifier needs at least 2" in line


@pytest.mark.parametrize("command", ["fit", "extract", "predict"])
def test_a_broken_image_in_a_folder_is_one_line(
    command, broken_folder, model_file, tmp_path, capsys
):
    if command == "predict":
        argv = ["predict", "--model", str(model_file), "--folder", str(broken_folder), "-q"]
    else:
        argv = [command, "--dataset", str(broken_folder), *TINY, "-q"]
        argv += ["-o", str(tmp_path / ("m.joblib" if command == "fit" else "x.npz"))]
    assert main(argv) == 2
    assert "Could not read the image file" in (line := error_line(capsys))
    assert "zz_broken.png" in line


def _checkpoints(tmp_path):
    import pickle

    import timm
    import torch

    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    wrong = tmp_path / "vit.pth"
    torch.save(timm.create_model("test_vit").state_dict(), wrong)
    malicious = tmp_path / "evil.pth"

    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    malicious.write_bytes(pickle.dumps(Evil()))
    broken = tmp_path / "bad.safetensors"
    broken.write_bytes(b"x" * 16)
    return {"text": text, "wrong": wrong, "malicious": malicious, "safetensors": broken}


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text", "as a PyTorch state dict"),
        ("wrong", "does not fit ResNet"),
        ("malicious", "as a PyTorch state dict"),
        ("safetensors", "as safetensors"),
    ],
)
def test_bad_weights_files_fail_before_the_data_is_read(kind, message, folder, tmp_path, capsys):
    path = _checkpoints(tmp_path)[kind]
    argv = ["fit", "--dataset", str(folder), "--backbone", "test_resnet", "--weights", str(path)]
    assert main([*argv, "-o", str(tmp_path / "m.joblib"), "-q"]) == 2
    captured = capsys.readouterr()
    assert "this ran" not in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("skh2t: error: --weights: ")
    assert message in lines[0]


def test_fit_output_that_is_a_directory(folder, tmp_path, capsys):
    assert main(["fit", "--dataset", str(folder), *TINY, "-o", str(tmp_path), "-q"]) == 2
    assert "--output: " in (line := error_line(capsys))
    assert "is a directory" in line


def test_predict_bogus_device_before_loading(tmp_path, capsys, folder):
    image = next(folder.rglob("*.png"))
    argv = ["predict", "--model", str(tmp_path / "absent.joblib"), "--device", "bogus", str(image)]
    assert main(argv) == 2
    assert "--device: " in error_line(capsys)


def test_run_output_that_cannot_be_written_fails_first(folder, tmp_path, capsys):
    (tmp_path / "out" / "results.json").mkdir(parents=True)  # where a file must go
    argv = ["run", "--dataset", str(folder), *TINY, "--output-dir", str(tmp_path / "out"), "-q"]
    assert main(argv) == 2
    assert "--output-dir: " in (line := error_line(capsys))
    assert "results.json' is a directory" in line


def test_extract_in_bfloat16_is_float32_and_close_to_float32(folder, tmp_path):
    files = sorted(str(p) for p in (folder / "cat").glob("*.png"))[:4]
    matrices = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / f"{precision}.npz"
        argv = ["extract", *files, *TINY, "--target-size", "64", "-o", str(out), "-q"]
        assert main([*argv, "--precision", precision]) == 0
        with np.load(out) as data:
            matrices[precision] = data["X"]
    exact, reduced = matrices["float32"], matrices["bfloat16"]
    assert reduced.dtype == np.float32
    assert not np.array_equal(reduced, exact)
    assert np.linalg.norm(reduced - exact) / np.linalg.norm(exact) < 0.03


@pytest.mark.parametrize("command", ["run", "extract", "fit"])
def test_float16_on_the_cpu_is_one_line_before_any_work(command, folder, tmp_path, capsys):
    argv = [command, "--dataset", str(folder), *TINY, "--precision", "float16", "-q"]
    argv += ["--output-dir", str(tmp_path)] if command == "run" else ["-o", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "--precision: precision='float16' runs on CUDA devices only" in error_line(capsys)


def test_predict_with_a_precision_override(model_file, folder, tmp_path, capsys):
    files = [str(folder / "cat" / "1.png"), str(folder / "sky" / "2.png")]
    argv = ["predict", "--model", str(model_file), *files, "-q"]
    assert main([*argv, "--precision", "bfloat16"]) == 0
    assert [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()] == ["cat", "sky"]
    # Refused in one line before any image is read (this one does not exist).
    missing = str(tmp_path / "gone.png")
    argv = ["predict", "--model", str(model_file), missing, "--precision", "float16"]
    assert main(argv) == 2
    assert "--precision: " in error_line(capsys)


def test_predict_applies_the_runtime_options_to_the_transformer(model_file):
    model = joblib.load(model_file)
    argv = ["predict", "--model", str(model_file), "--precision", "bfloat16", "--batch-size", "3"]
    predict._configure(model, build_parser().parse_args(argv))
    transformer = model.steps[0][1]
    assert transformer.precision == "bfloat16"
    assert transformer.batch_size == 3
    assert transformer.device == "cpu"  # not given: the model's


@pytest.mark.parametrize("device", ["mps", "meta"])
@pytest.mark.parametrize("command", ["run", "extract", "predict"])
def test_a_device_this_machine_cannot_run_is_one_line(
    command, device, folder, model_file, tmp_path, capsys, monkeypatch
):
    import torch

    monkeypatch.setattr(torch.mps, "is_available", lambda: False)
    if command == "predict":
        argv = ["predict", "--model", str(model_file), "--folder", str(folder)]
    else:
        argv = [command, "--dataset", str(folder), *TINY]
        argv += ["--output-dir", str(tmp_path)] if command == "run" else ["-o", str(tmp_path / "o")]
    assert main([*argv, "--device", device, "-q"]) == 2
    line = error_line(capsys)
    assert line.startswith(f"skh2t: error: --device: device='{device}' ")
    assert line.endswith("; use 'cpu' or 'auto'.") or "'cuda'" in line
    assert list(tmp_path.iterdir()) == []


def test_a_model_saved_with_a_meta_device_is_one_line(model_file, folder, tmp_path, capsys):
    model = joblib.load(model_file)
    model.steps[0][1].set_params(device="meta")
    path = tmp_path / "meta.joblib"
    joblib.dump(model, path)
    assert main(["predict", "--model", str(path), "--folder", str(folder), "-q"]) == 2
    assert "--device: device='meta' cannot run a backbone" in error_line(capsys)


def _foreign_pickles(tmp_path):
    """Files a user might mistake for a model: code as text, a class gone, another estimator."""
    import pickle
    import sys
    import types

    from sklearn.linear_model import LogisticRegression

    text = tmp_path / "script.py"  # read as a protocol-0 pickle: "No module named 'mport os…'"
    text.write_text("import os, sys\nprint(os.getcwd())\n")
    module = types.ModuleType("skh2t_gone_module")
    exec("class Thing:\n    pass\n", module.__dict__)
    module.Thing.__module__ = module.__name__
    sys.modules[module.__name__] = module
    try:
        gone = tmp_path / "gone.joblib"
        gone.write_bytes(pickle.dumps(module.Thing()))
    finally:
        del sys.modules[module.__name__]
    other = tmp_path / "logistic.joblib"
    rng = np.random.default_rng(0)
    joblib.dump(LogisticRegression().fit(rng.random((10, 3)), np.arange(10) % 2), other)
    return {"text": text, "gone": gone, "other": other}


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text", "could not be loaded (ModuleNotFoundError: No module named 'mport os, sys'"),
        ("gone", "could not be loaded (ModuleNotFoundError: No module named 'skh2t_gone_module'"),
        ("other", "holds a LogisticRegression, not a skh2t model"),
    ],
)
@pytest.mark.parametrize("command", ["predict", "export"])
def test_a_file_that_is_not_a_skh2t_model_is_one_line(
    command, kind, message, folder, tmp_path, capsys
):
    path = _foreign_pickles(tmp_path)[kind]
    if command == "predict":
        argv, name = ["predict", "--model", str(path), "--folder", str(folder), "-q"], "--model"
    else:
        argv, name = ["export", str(path), "-o", str(tmp_path / "m.pt"), "-q"], "MODEL"
    assert main(argv) == 2
    line = error_line(capsys)
    assert line.startswith(f"skh2t: error: {name}: {str(path)!r} ")
    assert "not a skh2t model (a file saved by skh2t fit or skh2t run)" in line
    assert message in line
    assert not (tmp_path / "m.pt").exists()


def test_predict_with_an_unfitted_model_is_one_line(folder, tmp_path, capsys):
    path = tmp_path / "unfitted.joblib"
    joblib.dump(
        Pipeline([("f", IntermediateFeatureTransformer()), ("c", GroupLassoClassifier())]), path
    )
    assert main(["predict", "--model", str(path), "--folder", str(folder), "-q"]) == 2
    assert "--model: This IntermediateFeatureTransformer instance is not fitted" in error_line(
        capsys
    )


@pytest.mark.parametrize("kind", ["malicious", "malicious_torch_save"])
def test_a_malicious_checkpoint_is_not_advised_to_load_unsafely(kind, folder, tmp_path, capsys):
    import torch

    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    paths = _checkpoints(tmp_path)
    paths["malicious_torch_save"] = tmp_path / "evil_state.pth"
    torch.save({"weight": torch.ones(1), "hook": Evil()}, paths["malicious_torch_save"])
    argv = ["fit", "--dataset", str(folder), "--backbone", "test_resnet"]
    argv += ["--weights", str(paths[kind]), "-o", str(tmp_path / "m.joblib"), "-q"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "this ran" not in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith("skh2t: error: --weights: Could not read ")
    assert "skh2t never loads a checkpoint with weights_only=False" in line
    assert "torch.save(model.state_dict(), path)" in line
    assert "set to `False`" not in line
    assert "add_safe_globals" not in line


def test_a_model_whose_weights_file_changed_is_one_line(folder, tmp_path, capsys):
    import timm
    import torch

    checkpoint = tmp_path / "resnet.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("test_resnet").state_dict(), checkpoint)
    model = tmp_path / "m.joblib"
    argv = ["fit", "--dataset", str(folder), "--backbone", "test_resnet", "--weights"]
    argv += [str(checkpoint), "--image-size", "32", "--target-size", "64", "-o", str(model), "-q"]
    assert main(argv) == 0
    capsys.readouterr()
    torch.manual_seed(1)
    torch.save(timm.create_model("test_resnet").state_dict(), checkpoint)
    for argv in (
        ["predict", "--model", str(model), "--folder", str(folder), "-q"],
        ["export", str(model), "-o", str(tmp_path / "m.pt"), "-q"],
    ):
        assert main(argv) == 2
        line = error_line(capsys)
        assert f"from checkpoint {str(checkpoint)!r} differ from the ones" in line
        assert "refit the estimator" in line
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("opset", ["-3", "0", "7", "99"])
def test_export_an_opset_the_exporter_does_not_write_is_one_line(opset, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    # Checked before the model is read: this one does not exist.
    assert (
        main(["export", str(tmp_path / "absent.joblib"), "-o", str(out), f"--opset={opset}"]) == 2
    )
    line = error_line(capsys)
    assert line.startswith(f"skh2t: error: --opset: opset_version={opset} is not an ONNX opset")
    assert "use one from 18 to " in line
    assert not out.exists()


def test_extract_writes_exactly_the_path_given(folder, tmp_path, capsys):
    out = tmp_path / "features"  # no suffix: numpy.savez would have written features.npz
    files = sorted(str(p) for p in (folder / "cat").glob("*.png"))[:2]
    assert main(["extract", *files, *TINY, "--target-size", "64", "-o", str(out), "-q"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: 2 images x ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features"]
    with np.load(out) as data:
        assert data["X"].shape[0] == 2


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", ["fit", "extract", "export", "run"])
def test_an_output_where_no_file_can_be_created_is_one_line_before_any_work(
    command, model_file, tmp_path, capsys
):
    # The data set does not exist: had the output not been checked first, that would be the error.
    data = ["--dataset", str(tmp_path / "absent"), *TINY, "-q"]
    argv = {
        "fit": ["fit", *data, "-o", "/proc/m.joblib"],
        "extract": ["extract", *data, "-o", "/proc/f.npz"],
        "export": ["export", str(model_file), "-o", "/proc/m.pt", "-q"],
        "run": ["run", *data, "--output-dir", "/proc"],
    }[command]
    assert main(argv) == 2
    line = error_line(capsys)
    option = {"export": "-o", "run": "--output-dir"}.get(command, "--output")
    assert line.startswith(f"skh2t: error: {option}: Cannot write '/proc/")


def test_export_opset_for_a_file_without_one_is_one_line(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["export", str(tmp_path / "absent.joblib"), "-o", str(out), "--opset", "7"]) == 2
    assert "--opset: only a .onnx file has an opset, not " in error_line(capsys)
    assert not out.exists()
