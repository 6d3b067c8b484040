"""The pooling rule a(.) of docs/user_guide/method.rst, checked against hand computations."""

import numpy as np
import pytest
import torch

from skh2t.features.pooling import (
    PoolingPlan,
    conv_map_pool_size,
    l2_normalize,
    plan_pooling,
    pool_activation,
    split_shape,
    token_map_pool_size,
)


def numpy_avg_pool2d(x, kernel):
    """Average over non-overlapping kernel x kernel windows; leftover rows/columns dropped."""
    batch, channels, height, width = x.shape
    kh, kw = kernel
    rows, cols = height // kh, width // kw
    x = x[:, :, : rows * kh, : cols * kw].reshape(batch, channels, rows, kh, cols, kw)
    return x.mean(axis=(3, 5))


# --- the target-size rule, numbers worked out by hand --------------------------------------


@pytest.mark.parametrize(
    ("channels", "width", "target", "expected"),
    [
        (64, 56, 8192, 5),  # T // C = 128, n = floor(sqrt(128)) = 11, p = floor(56 / 11) = 5
        (256, 56, 8192, 11),  # T // C = 32, n = 5, p = 11
        (512, 28, 8192, 7),  # T // C = 16, n = 4, p = 7
        (1024, 14, 8192, 7),  # T // C = 8, n = 2, p = 7
        (64, 56, 512, 28),  # T // C = 8, n = 2, p = 28
        (2048, 7, 8192, 3),  # T // C = 4, n = 2, p = 3
        (100, 10, 8192, 1),  # T // C = 81, n = 9, p = 1
        (32, 3, 8192, 1),  # T // C = 256, n = 16 > width: p = 0, raised to 1
    ],
)
def test_conv_map_pool_size_by_hand(channels, width, target, expected):
    assert conv_map_pool_size(channels, width, target) == expected


@pytest.mark.parametrize(("channels", "target"), [(2048, 2048), (2048, 1024), (512, 512)])
def test_conv_map_global_pooling_when_channels_reach_target(channels, target):
    assert conv_map_pool_size(channels, 7, target) is None
    plan = plan_pooling("nchw", (channels, 7, 7), target_size=target)
    assert plan.kernel is None
    assert plan.pooled_shape == (channels,)


@pytest.mark.parametrize(
    ("channels", "tokens", "target", "expected"),
    [
        (768, 197, 8192, 18),  # T/C = 10.67, p = int(197 / 10.67) = 18
        (768, 197, 1024, 147),  # T/C = 1.33, p = int(147.75) = 147
        (3072, 197, 8192, 73),  # T/C = 2.67, p = int(73.875) = 73
        (64, 5, 8192, 1),  # T/C = 128 > N: p = 0 -> at least 1
    ],
)
def test_token_map_pool_size_by_hand(channels, tokens, target, expected):
    assert token_map_pool_size(channels, tokens, target) == expected


def test_token_map_global_mean_when_channels_reach_target():
    assert token_map_pool_size(768, 197, 768) is None
    plan = plan_pooling("nlc", (197, 768), target_size=512)
    assert plan == PoolingPlan("nlc", None, (768,))


# --- pooling values against hand / NumPy computations ---------------------------------------


def test_conv_map_pooling_values_by_hand():
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    # C = 1, T = 4: n = 2, p = 3 -> two 3x3 windows per axis.
    plan = plan_pooling("nchw", (1, 6, 6), target_size=4)
    assert plan.kernel == (3, 3)
    expected = [
        np.mean([0, 1, 2, 6, 7, 8, 12, 13, 14]),
        np.mean([3, 4, 5, 9, 10, 11, 15, 16, 17]),
        np.mean([18, 19, 20, 24, 25, 26, 30, 31, 32]),
        np.mean([21, 22, 23, 27, 28, 29, 33, 34, 35]),
    ]
    np.testing.assert_allclose(pool_activation(x, plan).numpy(), [expected])


def test_conv_map_pooling_drops_partial_windows_like_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 7, 9)).astype(np.float32)
    plan = plan_pooling("nchw", (3, 7, 9), pool_stride=2)
    assert plan.pooled_shape == (3, 3, 4)
    expected = numpy_avg_pool2d(x, (2, 2)).reshape(2, -1)  # channel-major flattening
    np.testing.assert_allclose(
        pool_activation(torch.from_numpy(x), plan).numpy(), expected, atol=1e-6
    )


def test_target_rule_kernel_uses_width_and_is_clipped_to_height():
    # C = 2, T = 8: n = 2, p = floor(W / n) = 5 from W = 10; H = 3 < 5 is clipped to 3.
    plan = plan_pooling("nchw", (2, 3, 10), target_size=8)
    assert plan.kernel == (3, 5)
    assert plan.pooled_shape == (2, 1, 2)


def test_nhwc_maps_pool_like_their_nchw_transpose():
    rng = np.random.default_rng(1)
    nchw = torch.from_numpy(rng.normal(size=(2, 5, 8, 8)).astype(np.float32))
    nhwc = nchw.permute(0, 2, 3, 1).contiguous()
    for kwargs in ({"target_size": 20}, {"pool_stride": 3}, {"target_size": 5}):
        a = pool_activation(nchw, plan_pooling("nchw", (5, 8, 8), **kwargs))
        b = pool_activation(nhwc, plan_pooling("nhwc", (8, 8, 5), **kwargs))
        torch.testing.assert_close(a, b)


def test_token_map_pooling_values_by_hand():
    # One example, N = 5 tokens, C = 2 channels; T = 4: p = int(5 / 2) = 2 -> windows {0,1},{2,3}.
    x = torch.tensor([[[0.0, 10.0], [2.0, 12.0], [4.0, 14.0], [6.0, 16.0], [8.0, 18.0]]])
    plan = plan_pooling("nlc", (5, 2), target_size=4)
    assert plan.kernel == (2,)
    assert plan.pooled_shape == (2, 2)
    # channel-major: channel 0 windows, then channel 1 windows
    np.testing.assert_allclose(pool_activation(x, plan).numpy(), [[1.0, 5.0, 11.0, 15.0]])


def test_token_map_global_mean_by_hand():
    x = torch.tensor([[[1.0, 2.0], [3.0, 6.0]]])
    plan = plan_pooling("nlc", (2, 2), target_size=2)
    np.testing.assert_allclose(pool_activation(x, plan).numpy(), [[2.0, 4.0]])


def test_ncl_maps_pool_like_their_nlc_transpose():
    x = torch.randn(3, 11, 4)
    for kwargs in ({"target_size": 8}, {"pool_stride": 4}, {"target_size": 4}):
        a = pool_activation(x, plan_pooling("nlc", (11, 4), **kwargs))
        b = pool_activation(x.transpose(1, 2), plan_pooling("ncl", (4, 11), **kwargs))
        torch.testing.assert_close(a, b)


def test_explicit_stride_on_tokens_and_clipping():
    plan = plan_pooling("nlc", (10, 3), pool_stride=4)
    assert plan.kernel == (4,)
    assert plan.pooled_shape == (3, 2)
    assert plan_pooling("nlc", (10, 3), pool_stride=50).kernel == (10,)
    assert plan_pooling("nchw", (3, 5, 5), pool_stride=50).pooled_shape == (3, 1, 1)


def test_explicit_stride_overrides_target_size():
    plan = plan_pooling("nchw", (64, 56, 56), target_size=8192, pool_stride=8)
    assert plan.kernel == (8, 8)
    assert plan.pooled_shape == (64, 7, 7)


def test_vectors_are_unchanged():
    x = torch.randn(4, 10)
    for kwargs in ({"target_size": 2}, {"pool_stride": 3}):
        plan = plan_pooling("nc", (10,), **kwargs)
        assert plan == PoolingPlan("nc", (), (10,))
        assert pool_activation(x, plan) is x


def test_pooling_never_mixes_channels():
    x = torch.zeros(1, 4, 6, 6)
    x[0, 2] = 1.0
    pooled = pool_activation(x, plan_pooling("nchw", (4, 6, 6), pool_stride=3)).reshape(4, -1)
    assert torch.equal(pooled[2], torch.ones(4))
    assert pooled[[0, 1, 3]].abs().sum() == 0


def test_plan_n_features_and_split_shape():
    plan = plan_pooling("nchw", (64, 56, 56), target_size=8192)
    assert plan.pooled_shape == (64, 11, 11)
    assert plan.n_features == 64 * 121
    assert split_shape("nchw", (64, 56, 56)) == (64, (56, 56))
    assert split_shape("ncl", (8, 20)) == (8, (20,))


def test_plan_errors():
    with pytest.raises(ValueError, match="target_size or a pool_stride"):
        plan_pooling("nchw", (3, 4, 4))
    with pytest.raises(ValueError, match="Unknown layout"):
        plan_pooling("nwhc", (3, 4, 4), target_size=4)
    with pytest.raises(ValueError, match="4-D batches; got a 3-D"):
        pool_activation(torch.zeros(1, 2, 3), PoolingPlan("nchw", None, (2,)))


# --- normalisation ------------------------------------------------------------------------


def test_l2_normalize_rows_and_zero_rows():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-6, 0.0]])
    result = l2_normalize(x)
    np.testing.assert_allclose(result.numpy(), [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], rtol=1e-6)


def test_l2_normalize_writes_into_a_strided_view():
    out = torch.full((2, 5), -1.0)
    l2_normalize(torch.tensor([[0.0, 2.0], [0.0, 0.0]]), out=out[:, 1:3])
    np.testing.assert_allclose(out.numpy(), [[-1, 0, 1, -1, -1], [-1, 0, 0, -1, -1]])


def test_l2_normalize_half_precision_input_gives_float32():
    out = torch.empty(1, 2)
    l2_normalize(torch.tensor([[3.0, 4.0]], dtype=torch.float16), out=out)
    np.testing.assert_allclose(out.numpy(), [[0.6, 0.8]], rtol=1e-3)
