"""FineTuneClassifier on tiny timm models: head preparation, drift, reproducibility, pickling."""

from __future__ import annotations

import copy

import joblib
import matplotlib
import numpy as np
import pytest
import timm
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.utils.validation import check_is_fitted

from skh2t.finetune import (
    DEFAULT_LR,
    DRIFT_METRICS,
    FineTuneClassifier,
    drift_energy_figure,
    feature_drift,
    kept_feature_drift,
    plot_feature_drift,
)
from skh2t.finetune.network import head_from_probe

matplotlib.use("Agg")

N_IMAGES, SIZE, N_CLASSES = 40, 32, 4
TITLES = ["Mean Euclidean distance", "Mean cosine similarity"]
GRID_MESSAGE = r"probe_epochs_grid must be a non-empty 1-D list of distinct integers >= 0"


@pytest.fixture(scope="module")
def data():
    """40 RGB 32 px images of 4 classes that differ in brightness and colour."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(N_CLASSES), N_IMAGES // N_CLASSES)
    base = rng.normal(0.5, 0.15, (N_IMAGES, SIZE, SIZE, 3))
    base[..., 0] += 0.1 * (y[:, None, None] - 1.5)
    base[..., 1] -= 0.05 * (y[:, None, None] % 2)
    X = (np.clip(base, 0, 1) * 255).astype(np.uint8)
    return X, np.array(["a", "b", "c", "d"])[y]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fitted(data):
    """test_resnet fine-tuned for two epochs with a validation split."""
    return make(epochs=2, validation_fraction=0.25).fit(*data)


def make(**params) -> FineTuneClassifier:
    defaults = {
        "backbone": "test_resnet",
        "weights": None,
        "image_size": SIZE,
        "probe_epochs": 2,
        "epochs": 1,
        "batch_size": 10,
        "lr": 1e-3,
        "random_state": 0,
    }
    return FineTuneClassifier(**{**defaults, **params})


def test_energy_decreases_as_probe_epochs_increase(data):
    X, y = data
    energies = [
        make(probe_epochs=n, epochs=0, validation_fraction=None).fit(X, y).energy_
        for n in (0, 2, 10)
    ]
    losses = [energy["loss"] for energy in energies]
    assert losses[0] > losses[1] > losses[2]
    assert energies[2]["accuracy"] >= energies[0]["accuracy"]
    assert all(set(energy) == {"loss", "accuracy"} for energy in energies)


def test_label_smoothing_and_temperature_change_the_prepared_head(data):
    X, y = data
    plain = make(probe_epochs=10, epochs=0, validation_fraction=None).fit(X, y).energy_["loss"]
    smoothed = make(probe_epochs=10, epochs=0, validation_fraction=None, label_smoothing=0.5)
    hot = make(probe_epochs=10, epochs=0, validation_fraction=None, temperature=0.5)
    # Both keep the head's logits smaller, hence more energy for fine-tuning.
    assert smoothed.fit(X, y).energy_["loss"] > plain
    assert hot.fit(X, y).energy_["loss"] > plain


@pytest.mark.parametrize("backbone", ["test_resnet", "test_efficientnet"])
def test_drift_is_zero_before_the_first_step_and_recorded_every_epoch(data, fitted, backbone):
    X, y = data
    if backbone == "test_resnet":
        clf = fitted
    else:
        clf = make(backbone=backbone, epochs=2, validation_fraction=0.25).fit(X, y)
    history = clf.history_
    assert history["epoch"] == [0, 1, 2]
    assert clf.n_iter_ == 2
    assert history["feature_distance"][0] == 0.0
    assert history["feature_cosine"][0] == pytest.approx(1.0, abs=1e-12)
    assert history["feature_dot"][0] == pytest.approx(history["feature_norm"][0] ** 2, rel=0.5)
    assert history["feature_distance"][2] > 0.0
    assert history["feature_cosine"][2] < 1.0
    assert np.isnan(history["train_loss"][0])
    assert all(np.isfinite(history["train_loss"][1:]))
    assert all(0.0 <= a <= 1.0 for a in history["val_accuracy"])
    assert history["lr"][2] == pytest.approx(0.0, abs=1e-12)  # cosine decayed to zero


def test_frozen_batch_norm_keeps_the_running_statistics(data):
    X, y = data
    params = {"lr": 1e-9, "warmup_epochs": 0, "validation_fraction": 0.25}
    adapted = make(freeze_batch_norm=False, **params).fit(X, y).history_["feature_distance"][-1]
    frozen = make(**params).fit(X, y).history_["feature_distance"][-1]
    assert frozen < 1e-4 * adapted


def test_feature_drift_metrics():
    original = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    current = torch.tensor([[0.0, 1.0], [0.0, 4.0]])
    drift = feature_drift(original, current)
    assert drift["feature_distance"] == pytest.approx((np.sqrt(2) + 2) / 2)
    assert drift["feature_cosine"] == pytest.approx(0.5)
    assert drift["feature_dot"] == pytest.approx(4.0)
    assert drift["feature_norm"] == pytest.approx(2.5)
    with pytest.raises(ValueError, match="same shape"):
        feature_drift(original, current[:1])


def test_same_seed_same_model_and_global_rng_untouched(data):
    X, y = data
    state = torch.get_rng_state()
    first = make(epochs=2, random_state=3).fit(X, y)
    assert torch.equal(torch.get_rng_state(), state)
    second = make(epochs=2, random_state=3).fit(X, y)
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    for key, values in first.history_.items():
        np.testing.assert_array_equal(values, second.history_[key])
    other = make(epochs=2, random_state=4).fit(X, y)
    assert not np.array_equal(first.predict_proba(X), other.predict_proba(X))


def test_predictions_and_api(data, fitted):
    X, _ = data
    clf = fitted
    np.testing.assert_array_equal(clf.classes_, ["a", "b", "c", "d"])
    proba = clf.predict_proba(X)
    assert proba.shape == (N_IMAGES, N_CLASSES)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    scores = clf.decision_function(X)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[scores.argmax(axis=1)])
    assert clf.penultimate_features(X[:3]).shape == (3, clf.n_features_)
    assert clf.probe_epochs_ == 2
    assert clf.n_validation_ == int(np.ceil(0.25 * N_IMAGES))  # validation_fraction=0.25
    assert not hasattr(clf, "probe_search_")
    assert clone(clf).get_params() == clf.get_params()
    tags = clf.__sklearn_tags__()
    assert not tags.input_tags.two_d_array


def test_binary_decision_function_is_one_dimensional(data):
    X, y = data
    binary = np.where(np.isin(y, ["a", "b"]), "low", "high")
    clf = make(validation_fraction=None).fit(X, binary)
    scores = clf.decision_function(X)
    assert scores.shape == (N_IMAGES,)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(scores > 0).astype(int)])


def test_unfitted_estimator_raises(data):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        make().predict(data[0])


def test_pickle_round_trip_stores_fine_tuned_weights(data, fitted, tmp_path):
    X, _ = data
    clf = fitted
    expected = clf.predict_proba(X)
    net = clf.__getstate__()["_net"].__getstate__()  # what the network's handle pickles
    assert net["module"] is None  # a named architecture: rebuilt from its name
    assert all(t.device.type == "cpu" for t in net["state"].values())
    assert clf._net.is_built  # pickling does not touch the live estimator
    path = tmp_path / "clf.joblib"
    joblib.dump(clf, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    np.testing.assert_array_equal(loaded.predict(X), joblib.load(path).predict(X))


def test_a_pickle_of_the_older_layout_still_loads(data, fitted):
    X, _ = data
    state = dict(fitted.__getstate__())
    handle = state.pop("_net")
    # Before the network's handle: the recipe's reference and the weights, side by side.
    state["_backbone_reference"] = handle.recipe.reference
    state["_net"] = None
    state["_net_state"] = {k: v.clone() for k, v in fitted._live_net().state_dict().items()}
    del state["precision"]  # and before the precision parameter
    loaded = FineTuneClassifier.__new__(FineTuneClassifier)
    loaded.__setstate__(state)
    assert not loaded._net.is_built
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))


def test_module_backbone_is_copied_and_pickled_whole(data, tmp_path):
    X, y = data
    module = timm.create_model("test_resnet", pretrained=False)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    clf = make(backbone=module, weights="auto").fit(X, y)
    assert module.num_classes == 1000  # the user's module kept its classifier and weights
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    path = tmp_path / "clf.joblib"
    joblib.dump(clf, path)
    np.testing.assert_array_equal(joblib.load(path).predict_proba(X), clf.predict_proba(X))


@pytest.fixture(scope="module")
def searched(data):
    """probe_epochs="auto" over an unsorted grid of three candidates."""
    clf = make(probe_epochs="auto", probe_epochs_grid=(10, 0, 3), validation_fraction=0.3)
    return clf.fit(*data)


def probe_search(clf: FineTuneClassifier) -> dict:
    with pytest.warns(FutureWarning, match="probe_search_ is deprecated .* use cv_results_"):
        return clf.probe_search_


def test_auto_picks_probe_epochs_from_the_grid_by_validation_accuracy(searched):
    clf = searched
    search = probe_search(clf)
    assert sorted(search) == [0, 3, 10]
    accuracies = {k: v["val_accuracy"] for k, v in search.items()}
    best = max(accuracies.values())
    assert clf.probe_epochs_ == min(k for k, a in accuracies.items() if a == best)
    assert clf.history_ is search[clf.probe_epochs_]["history"]
    assert clf.energy_ == search[clf.probe_epochs_]["energy"]
    assert clf.history_["val_accuracy"][-1] == best
    energies = [search[k]["energy"]["loss"] for k in (0, 3, 10)]
    assert energies == sorted(energies, reverse=True)


def test_auto_cv_results_have_the_grid_search_schema(searched):
    results = searched.cv_results_
    expected = {
        "mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time",
        "param_probe_epochs", "params", "split0_test_score",
        "mean_test_score", "std_test_score", "rank_test_score",
    }  # fmt: skip
    assert set(results) == expected
    assert all(len(results[key]) == 3 for key in expected)
    assert results["params"] == [{"probe_epochs": n} for n in (0, 3, 10)]
    assert results["param_probe_epochs"].tolist() == [0, 3, 10]
    assert np.all(results["mean_fit_time"] > 0)
    np.testing.assert_array_equal(results["std_fit_time"], 0.0)  # one split
    np.testing.assert_array_equal(results["mean_score_time"], 0.0)  # inside the fine-tuning


def test_auto_cv_results_scores_are_the_validation_accuracies(searched):
    results = searched.cv_results_
    search = probe_search(searched)
    accuracies = [search[n]["val_accuracy"] for n in (0, 3, 10)]
    # Exact: copies of the same floats, and the mean and spread of one split.
    np.testing.assert_array_equal(results["split0_test_score"], accuracies)
    np.testing.assert_array_equal(results["mean_test_score"], accuracies)
    np.testing.assert_array_equal(results["std_test_score"], 0.0)


def test_auto_cv_results_rank_the_kept_candidate_first(searched):
    results = searched.cv_results_
    chosen = results["params"].index({"probe_epochs": searched.probe_epochs_})
    assert results["rank_test_score"][chosen] == 1
    assert results["mean_test_score"][chosen] == results["mean_test_score"].max()


@pytest.mark.parametrize(
    ("scores", "expected"), [((0.5, 0.5, 0.5), 0), ((0.25, 0.75, 0.75), 2), ((0.5, 0.5, 1.0), 5)]
)
def test_auto_ties_go_to_the_fewest_probe_epochs(data, monkeypatch, scores, expected):
    import skh2t.finetune.classifier as classifier

    given = iter(scores)

    def scored_fine_tune(*args, **kwargs):
        run = fine_tune(*args, **kwargs)
        run.score = next(given)
        return run

    fine_tune = classifier.fine_tune
    monkeypatch.setattr(classifier, "fine_tune", scored_fine_tune)
    clf = make(probe_epochs="auto", probe_epochs_grid=[5, 2, 0], epochs=0, validation_fraction=0.3)
    clf.fit(*data)
    assert clf.probe_epochs_ == expected
    ranks = clf.cv_results_["rank_test_score"]
    assert ranks[clf.cv_results_["params"].index({"probe_epochs": expected})] == 1


def test_a_pickled_auto_search_exposes_cv_results_and_the_deprecated_probe_search(
    data, searched, tmp_path
):
    path = tmp_path / "clf.joblib"
    joblib.dump(searched, path)
    loaded = joblib.load(path)
    check_is_fitted(loaded)
    # Exact: pickling keeps the floats, and the same network predicts the same batch here.
    for key, value in searched.cv_results_.items():
        np.testing.assert_array_equal(loaded.cv_results_[key], value)
    assert probe_search(loaded).keys() == probe_search(searched).keys()
    assert probe_search(loaded)[0]["val_accuracy"] == probe_search(searched)[0]["val_accuracy"]
    np.testing.assert_array_equal(loaded.predict(data[0]), searched.predict(data[0]))


def test_a_pickle_with_probe_search_in_its_dict_still_loads(searched):
    state = dict(searched.__getstate__())
    state["probe_search_"] = state.pop("_probe_search")  # before cv_results_
    del state["cv_results_"]
    loaded = FineTuneClassifier.__new__(FineTuneClassifier)
    loaded.__setstate__(state)
    assert probe_search(loaded) is state["_probe_search"]
    np.testing.assert_array_equal(
        loaded.cv_results_["mean_test_score"], searched.cv_results_["mean_test_score"]
    )
    np.testing.assert_array_equal(loaded.cv_results_["mean_fit_time"], 0.0)  # not recorded


def test_a_fixed_probe_epochs_refit_drops_the_search(data, searched):
    clf = clone(searched).set_params(probe_epochs=0, epochs=0)
    clf.__dict__.update(_probe_search={}, cv_results_={})  # as if fitted with "auto" before
    clf.fit(*data)
    assert not hasattr(clf, "cv_results_")
    assert not hasattr(clf, "probe_search_")


def test_early_stopping_keeps_the_best_epoch(data):
    X, y = data
    clf = make(epochs=3, early_stopping=True, n_iter_no_change=1, validation_fraction=0.3)
    clf.fit(X, y)
    history = clf.history_
    assert len(history["epoch"]) == clf.n_iter_ + 1
    assert clf.best_epoch_ <= clf.n_iter_ <= 3
    assert history["val_accuracy"][clf.best_epoch_] == max(history["val_accuracy"])


def test_head_from_a_probe_on_the_penultimate_features(data):
    X, y = data
    frozen = make(probe_epochs=0, epochs=0, validation_fraction=None).fit(X, y)
    features = frozen.penultimate_features(X)
    probe = LogisticRegression(max_iter=200).fit(features, y)
    clf = make(head=FrozenEstimator(probe), probe_epochs=0, epochs=0, validation_fraction=None)
    clf.fit(X, y)
    assert clf.energy_["loss"] == pytest.approx(log_loss(y, probe.predict_proba(features)), 1e-4)
    np.testing.assert_array_equal(clf.predict(X), probe.predict(features))
    assert clone(clf).head.estimator is probe  # FrozenEstimator survives clone

    wrong = LogisticRegression().fit(features[:, :5], y)
    with pytest.raises(ValueError, match="penultimate layer has 96"):
        make(head=wrong).fit(X, y)
    other_classes = LogisticRegression().fit(features, np.roll(y, 1) + "x")
    with pytest.raises(ValueError, match="classes"):
        make(head=other_classes).fit(X, y)
    with pytest.raises(ValueError, match="fitted"):
        make(head=LogisticRegression()).fit(X, y)


def test_binary_probe_head():
    probe = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    head = head_from_probe(probe, np.array([0, 1]), 1)
    logits = head(torch.tensor([[0.0], [3.0]], dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(
        logits[:, 1] - logits[:, 0], probe.decision_function([[0], [3]]), 1e-5
    )


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"epochs": -1}, "'epochs' parameter"),
        ({"lr": 0.0}, "'lr' parameter"),
        ({"lr": -1e-3}, "'lr' parameter"),
        ({"probe_lr": "fast"}, "'probe_lr' parameter"),
        ({"head": "head2toe"}, "'head' parameter"),
        ({"probe_epochs": -2}, "'probe_epochs' parameter"),
        ({"probe_epochs": "many"}, "'probe_epochs' parameter"),
        ({"temperature": 0}, "'temperature' parameter"),
        ({"label_smoothing": 1.0}, "'label_smoothing' parameter"),
        ({"optimizer": "lbfgs"}, "'optimizer' parameter"),
        ({"validation_fraction": 1.0}, "'validation_fraction' parameter"),
        ({"probe_epochs": "auto", "probe_epochs_grid": ()}, "probe_epochs_grid"),
        ({"probe_epochs": "auto", "probe_epochs_grid": (1, -1)}, "probe_epochs_grid"),
        ({"probe_epochs": "auto", "probe_epochs_grid": (3, 0, 3)}, GRID_MESSAGE + r".*\(3, 0, 3\)"),
        ({"probe_epochs": "auto", "probe_epochs_grid": [True, 2]}, GRID_MESSAGE + r".*\[True, 2\]"),
        ({"probe_epochs": "auto", "probe_epochs_grid": [False]}, GRID_MESSAGE),
        ({"probe_epochs": "auto", "probe_epochs_grid": [1.0, 2]}, GRID_MESSAGE),
        ({"probe_epochs": "auto", "probe_epochs_grid": ["1"]}, GRID_MESSAGE),
        ({"probe_epochs": "auto", "validation_fraction": 0}, "needs validation_fraction"),
        ({"early_stopping": True, "validation_fraction": None}, "needs validation_fraction"),
        ({"validation_fraction": 0.99}, "too few images"),
        ({"backbone": "resnet5O"}, "Unknown timm model"),
        ({"lr": "fast"}, "'lr' parameter"),
        ({"probe_target_accuracy": 0.0}, "'probe_target_accuracy' parameter"),
        ({"probe_target_accuracy": 1.5}, "'probe_target_accuracy' parameter"),
        ({"probe_target_loss": 0.0}, "'probe_target_loss' parameter"),
        ({"probe_epochs": "auto", "probe_target_loss": 0.5}, "two ways to choose"),
    ],
)
def test_bad_parameters_fail_clearly(data, params, match):
    X, y = data
    with pytest.raises(ValueError, match=match):
        make(**params).fit(X, y)


def test_bad_inputs_fail_clearly(data):
    X, y = data
    with pytest.raises(ValueError, match="batch of images"):
        make().fit(X.reshape(N_IMAGES, -1), y)
    with pytest.raises(ValueError, match="40 images but y has 39"):
        make().fit(X, y[:-1])
    with pytest.raises(ValueError, match="at least two classes"):
        make().fit(X, np.zeros(N_IMAGES))
    clf = make(validation_fraction=None).fit(X, y)
    with pytest.raises(ValueError, match="channel"):
        clf.predict(np.zeros((2, 32, 32, 5), dtype=np.uint8))


def test_plot_feature_drift_makes_a_figure(fitted):
    import matplotlib.pyplot as plt

    clf = fitted
    axes = plot_feature_drift(clf, label="prepared")
    assert len(axes) == 4
    assert axes[0].figure is axes[3].figure
    line = axes[0].get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2])
    again = plot_feature_drift(clf.history_, ax=axes, label="again")
    assert len(again[0].get_lines()) == 2
    with pytest.raises(TypeError, match="history_"):
        plot_feature_drift(42)
    with pytest.raises(ValueError, match="4 Axes"):
        plot_feature_drift(clf, ax=axes[:2])
    plt.close("all")


def test_kept_feature_drift_is_the_history_at_the_kept_epoch(fitted):
    history = fitted.history_
    assert fitted.best_epoch_ == 2
    assert kept_feature_drift(fitted) == {key: history[key][2] for key in DRIFT_METRICS}
    stopped = copy.copy(fitted)
    stopped.best_epoch_ = 1  # as early stopping keeps an earlier epoch
    drift = kept_feature_drift(stopped)
    assert drift == {key: history[key][1] for key in DRIFT_METRICS}
    assert drift != kept_feature_drift(fitted)
    with pytest.raises(NotFittedError):
        kept_feature_drift(make())


def test_drift_energy_figure_titles_the_drift_with_the_energy(fitted, tmp_path):
    import matplotlib.pyplot as plt

    open_figures = plt.get_fignums()
    figure = drift_energy_figure(fitted, title="a run")
    assert plt.get_fignums() == open_figures  # no pyplot figure left behind
    first, images, energy_line = figure.get_suptitle().splitlines()
    assert first == "a run"
    assert "held-out images" in images
    energy = fitted.energy_
    assert f"loss {energy['loss']:.4f}, accuracy {energy['accuracy']:.4f}" in energy_line
    assert f"after {fitted.probe_epochs_} probing epochs" in energy_line
    assert [axis.get_title() for axis in figure.axes[:2]] == TITLES
    cosine = figure.axes[1].get_lines()[0].get_ydata()
    np.testing.assert_array_equal(cosine, fitted.history_["feature_cosine"])
    figure.savefig(tmp_path / "drift.png")
    assert (tmp_path / "drift.png").stat().st_size > 0
    with pytest.raises(NotFittedError):
        drift_energy_figure(make())


def test_verbose_shows_progress(data, capsys):
    X, y = data
    make(probe_epochs="auto", probe_epochs_grid=(0, 1), verbose=1).fit(X, y)
    assert "Fine-tuning" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("target", "met"),
    [
        ({"probe_target_accuracy": 0.75}, lambda e: e["accuracy"] >= 0.75),
        ({"probe_target_loss": 0.9}, lambda e: e["loss"] <= 0.9),
    ],
)
def test_probing_stops_at_the_target_energy(data, target, met):
    X, y = data
    clf = make(probe_epochs=200, epochs=0, validation_fraction=None, **target).fit(X, y)
    assert met(clf.energy_)
    assert clf.probe_target_reached_ is True
    steps_per_epoch = N_IMAGES // 10
    assert 0 < clf.probe_steps_ < 200 * steps_per_epoch
    assert clf.probe_epochs_ == -(-clf.probe_steps_ // steps_per_epoch)


def test_an_unreachable_target_warns_and_probes_probe_epochs(data):
    X, y = data
    clf = make(probe_epochs=2, epochs=0, validation_fraction=None, probe_target_loss=1e-9)
    with pytest.warns(ConvergenceWarning, match=r"short of its target \(training loss <= 1e-09\)"):
        clf.fit(X, y)
    assert clf.probe_epochs_ == 2
    assert clf.probe_steps_ == 2 * (N_IMAGES // 10)
    assert clf.probe_target_reached_ is False
    fixed = make(probe_epochs=2, epochs=0, validation_fraction=None).fit(X, y)
    assert clf.energy_ == fixed.energy_  # the same probe, run to its end
    assert fixed.probe_target_reached_ is None  # no target


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_lr_auto_is_the_optimisers_default(data, optimizer):
    X, y = data
    clf = make(lr="auto", optimizer=optimizer, probe_epochs=0, validation_fraction=None)
    assert clf.fit(X, y).lr_ == DEFAULT_LR[optimizer]
    assert make(lr=2e-3, optimizer=optimizer, validation_fraction=None).fit(X, y).lr_ == 2e-3
