"""Tap costs (shares of the forward FLOPs) and a compute budget that reads only a prefix."""

import joblib
import numpy as np
import pytest
import torch
from torch import nn

from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.costs import forward_flops, tap_flop_shares
from skh2t.features.taps import TapRef

IMAGES = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
TINY = {"backbone": "test_resnet", "weights": None, "image_size": 32, "target_size": 64}


@pytest.fixture(scope="module")
def full():
    return IntermediateFeatureTransformer(**TINY).fit(IMAGES)


def test_shares_count_the_products_before_each_tap():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    taps = [TapRef("0", "input"), TapRef("1"), TapRef("3", "input"), TapRef("3")]
    shares, total = tap_flop_shares(model, taps, torch.zeros(1, 3, 8, 8))
    conv = 2 * (4 * 6 * 6) * (3 * 3 * 3)  # multiply-adds of every output value
    linear = 2 * (4 * 6 * 6) * 5
    assert total == conv + linear == forward_flops(model, torch.zeros(1, 3, 8, 8))
    np.testing.assert_allclose(shares, [0, conv / total, conv / total, 1.0])


def test_every_tap_has_a_cost_growing_with_depth(full):
    costs = full.tap_costs_
    assert costs.shape == (len(full.taps_),)
    assert np.all(np.diff(costs) >= 0)  # a resnet computes its layers in order
    assert costs[-1] == 1.0  # the logits need the whole pass
    assert 0 < costs[0] < 1
    model = full.extraction_.module
    assert full.forward_flops_ == forward_flops(model, torch.zeros(1, 3, 32, 32))


def test_a_budget_keeps_the_taps_within_it_and_their_features(full):
    budget = 0.8
    within = IntermediateFeatureTransformer(**TINY, compute_budget=budget).fit(IMAGES)
    costs = zip(full.taps_, full.tap_costs_, strict=True)
    expected = [tap.name for tap, cost in costs if cost <= budget]
    assert [tap.name for tap in within.taps_] == expected
    assert 0 < len(expected) < len(full.taps_)
    assert np.all(within.tap_costs_ <= budget)
    X, X_within = full.transform(IMAGES), within.transform(IMAGES)
    # The same taps in the same order come first: the same columns, computed by the same
    # kernels on the same batches (the pass stops after the last of them).
    np.testing.assert_allclose(X_within, X[:, : X_within.shape[1]], rtol=1e-6, atol=1e-7)


def test_extraction_stops_after_the_deepest_tap(full):
    within = IntermediateFeatureTransformer(**TINY, compute_budget=0.6).fit(IMAGES)
    calls = {"fc": 0, "layer4": 0}
    for name in calls:
        module = within.extraction_.module.get_submodule(name)
        module.register_forward_hook(
            lambda m, a, o, name=name: calls.__setitem__(name, 1 + calls[name])
        )
    within.transform(IMAGES)
    assert calls == {"fc": 0, "layer4": 0}  # the rest of the network never ran
    full_calls = []
    full.extraction_.module.fc.register_forward_hook(lambda m, a, o: full_calls.append(1))
    full.transform(IMAGES[:2])
    assert full_calls == [1]


def test_a_budget_below_every_tap_is_a_clear_error():
    with pytest.raises(ValueError, match=r"compute_budget=0.01 keeps no tap: the cheapest"):
        IntermediateFeatureTransformer(**TINY, compute_budget=0.01).fit(IMAGES)
    with pytest.raises(ValueError, match="compute_budget"):
        IntermediateFeatureTransformer(**TINY, compute_budget=1.5).fit(IMAGES)


def test_costs_survive_a_pickle_and_a_repool(full, tmp_path):
    joblib.dump(full, tmp_path / "t.joblib")
    loaded = joblib.load(tmp_path / "t.joblib")
    np.testing.assert_array_equal(loaded.tap_costs_, full.tap_costs_)  # stored, not recounted
    assert loaded.forward_flops_ == full.forward_flops_
    repooled = full.repool(target_size=256)  # shares the counted costs: the same taps
    np.testing.assert_array_equal(repooled.tap_costs_, full.tap_costs_)
