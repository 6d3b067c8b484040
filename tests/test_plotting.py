"""Kept features per tap of a fitted Head2Toe pipeline, and its plot."""

import matplotlib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from skh2t import GroupLassoClassifier
from skh2t.features import IntermediateFeatureTransformer
from skh2t.plotting import kept_features_per_tap, plot_kept_features

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    images = rng.random((24, 32, 32, 3), dtype=np.float32)
    labels = np.arange(24) % 3
    features = IntermediateFeatureTransformer(
        backbone="test_resnet", weights=None, target_size=32, image_size=32
    )
    return Pipeline(
        [("features", features), ("clf", GroupLassoClassifier(alpha=1e-3, keep_fraction=0.3))]
    ).fit(images, labels)


def test_counts_are_the_support_split_by_tap(model):
    rows = kept_features_per_tap(model)
    features, support = model["features"], model["clf"].get_support()
    assert [row["tap"] for row in rows] == [tap.name for tap in features.taps_]
    assert [row["n_features"] for row in rows] == [tap.n_features for tap in features.taps_]
    bounds = [tap.start for tap in features.taps_]
    assert [row["kept"] for row in rows] == np.add.reduceat(support, bounds).tolist()
    assert sum(row["kept"] for row in rows) == round(0.3 * support.size)
    assert [row["cost"] for row in rows] == features.tap_costs_.tolist()


def test_plot_draws_one_bar_per_tap(model):
    ax = plot_kept_features(model)
    heights = [patch.get_height() for patch in ax.patches]
    assert heights == [row["kept"] for row in kept_features_per_tap(model)]
    assert ax.get_title().startswith("Head2Toe kept")
    shares = ax.right_ax.lines[0].get_ydata()
    assert np.all((shares >= 0) & (shares <= 100))
    first = ax.get_xticklabels()[0].get_text()
    cost = kept_features_per_tap(model)[0]["cost"]
    assert first.endswith(f" · {100 * cost:.0f}%")  # each tap's share of the forward FLOPs


def test_plot_on_given_axes_with_title(model):
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    assert plot_kept_features(model, ax, title="mine") is ax
    assert ax.get_title() == "mine"
    plt.close("all")


def test_not_a_pipeline_is_a_clear_error():
    with pytest.raises(TypeError, match="first step is an IntermediateFeatureTransformer"):
        kept_features_per_tap(GroupLassoClassifier())


def test_classifier_without_support_is_a_clear_error(model):
    plain = Pipeline([("features", model["features"]), ("clf", LogisticRegression())])
    with pytest.raises(TypeError, match="has no get_support"):
        kept_features_per_tap(plain)


def test_classifier_fitted_on_other_columns_is_a_clear_error(model):
    rng = np.random.default_rng(1)
    other = GroupLassoClassifier(keep_fraction=0.5).fit(rng.random((20, 7)), np.arange(20) % 2)
    with pytest.raises(ValueError, match="selects among 7 features"):
        kept_features_per_tap(Pipeline([("features", model["features"]), ("clf", other)]))
