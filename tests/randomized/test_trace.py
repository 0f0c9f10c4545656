"""Trace-estimated conv2d / linear weight gradients: exactness, unbiasedness, variance, memory, reproducibility."""
import numpy as np
import pytest

import tinymoon as tm
import tinymoon.randomized as R
from tinymoon.ops.base import Context
from tinymoon.ops.linalg import Linear
from tinymoon.ops.conv import Conv2d
from tinymoon.randomized import PixelSketch, RowSketch
from tinymoon.testing import check_grads

SEEDS = 2000


def conv_grads(x, w, y_bar, probes=16, mode="independent", dist="gaussian", seed=0, path="auto", **conv):
    """(x̄, ŵ) of conv2d's own rules with the sketched policy, on arrays (no tape: fast enough for 2000 seeds)."""
    params = dict(dict(stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"), **conv,
                  residual=PixelSketch(probes, mode, dist, seed, path))
    ctx = Context([True, True], params)
    Conv2d.forward(ctx, x, w, **params)
    return Conv2d.vjp(ctx, y_bar)


def exact_conv(x, w, y_bar, **conv):
    _, vjp_fn = tm.vjp(lambda x, w: tm.conv2d(x, w, **conv), tm.tensor(x), tm.tensor(w))
    return [g.numpy() for g in vjp_fn(y_bar)]


def problem(rng, n=2, c=2, h=5, wd=4, co=3, k=3, groups=1, **conv):
    x = rng.standard_normal((n, c, h, wd))
    w = rng.standard_normal((co, c // groups, k, k))
    y = tm.conv2d(tm.tensor(x), tm.tensor(w), groups=groups, **conv)
    return x, w, rng.standard_normal(y.shape)


CONFIGS = [dict(stride=1, padding=0), dict(stride=2, padding=1), dict(stride=(2, 1), padding=((1, 2), (0, 1))),
           dict(stride=1, padding=2, dilation=2), dict(stride=1, padding=1, groups=2),
           dict(stride=1, padding=1, padding_mode="circular")]


@pytest.mark.parametrize("conv", CONFIGS)
@pytest.mark.parametrize("mode,dist,path", [("independent", "orthogonal", "trace"),
                                            ("independent", "orthogonal", "reconstruct"),
                                            ("multichannel", "orthogonal", "trace"),
                                            ("multichannel", "block_orthogonal", "trace"),
                                            ("multichannel", "orthogonal", "reconstruct")])
def test_orthogonal_full_rank_probes_are_exact(conv, mode, dist, path):
    # r = N (or C·N) orthogonal probes: Z Zᵀ = I, so the estimate is the exact gradient — borders included
    rng = np.random.default_rng(0)
    x, w, y_bar = problem(rng, c=4, co=4, **conv)
    n = 5 * 4 * (4 if mode == "multichannel" else 1)
    x_bar, w_hat = conv_grads(x, w, y_bar, probes=n, mode=mode, dist=dist, seed=7, path=path, **conv)
    x_ex, w_ex = exact_conv(x, w, y_bar, **conv)
    np.testing.assert_allclose(x_bar, x_ex, rtol=1e-12, atol=1e-12)      # the input cotangent is always exact
    np.testing.assert_allclose(w_hat, w_ex, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode,dist", [("independent", "gaussian"), ("multichannel", "rademacher")])
def test_trace_and_reconstruct_paths_agree(mode, dist):
    rng = np.random.default_rng(1)
    conv = dict(stride=2, padding=1, groups=2)
    x, w, y_bar = problem(rng, c=4, co=4, **conv)
    a = conv_grads(x, w, y_bar, probes=3, mode=mode, dist=dist, seed=11, path="trace", **conv)[1]
    b = conv_grads(x, w, y_bar, probes=3, mode=mode, dist=dist, seed=11, path="reconstruct", **conv)[1]
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def _samples(x, w, y_bar, conv, seeds=SEEDS, **params):
    return np.stack([conv_grads(x, w, y_bar, seed=s, **params, **conv)[1] for s in range(seeds)])


@pytest.mark.parametrize("mode,dist,probes", [("independent", "gaussian", 4), ("independent", "rademacher", 3),
                                              ("independent", "orthogonal", 5), ("multichannel", "gaussian", 6),
                                              ("multichannel", "block_orthogonal", 4)])
def test_unbiased_with_zero_padded_borders(mode, dist, probes):
    # stride 2 and padding 1: the border taps read zeros. A circular roll would bias exactly those entries;
    # the mean over 2000 seeds must sit within 4 standard errors of the exact gradient, entry by entry.
    rng = np.random.default_rng(2)
    conv = dict(stride=2, padding=1)
    x, w, y_bar = problem(rng, c=2, co=2, **conv)
    est = _samples(x, w, y_bar, conv, probes=probes, mode=mode, dist=dist, path="auto")
    exact = exact_conv(x, w, y_bar, **conv)[1]
    se = est.std(0, ddof=1) / np.sqrt(len(est))
    z = np.abs(est.mean(0) - exact) / se
    assert z.max() < 4, f"max z-score {z.max():.2f} (entry {np.unravel_index(z.argmax(), z.shape)})"


@pytest.mark.parametrize("mode,dist", [("independent", "gaussian"), ("independent", "rademacher"),
                                       ("multichannel", "gaussian"), ("multichannel", "rademacher")])
def test_variance_matches_the_closed_form(mode, dist):
    rng = np.random.default_rng(3)
    conv = dict(stride=2, padding=1)
    x, w, y_bar = problem(rng, n=2, c=2, h=4, wd=4, co=2, **conv)
    r = 8
    est = _samples(x, w, y_bar, conv, seeds=4000, probes=r, mode=mode, dist=dist, path="auto")
    emp = est.var(0, ddof=1)
    ana = R.trace_variance(x, y_bar, w.shape, probes=r, mode=mode, dist=dist, **conv)
    assert abs(emp.sum() / ana.sum() - 1) < 0.10                # total variance within 10 %
    assert np.max(np.abs(emp / ana - 1)) < 0.10                 # and every entry (measured: at most ~6 %)


def test_rademacher_variance_is_smaller_by_the_diagonal_term():
    rng = np.random.default_rng(4)
    x, w, y_bar = problem(rng, stride=1, padding=1)
    g = R.trace_variance(x, y_bar, w.shape, padding=1, probes=4, dist="gaussian")
    rd = R.trace_variance(x, y_bar, w.shape, padding=1, probes=4, dist="rademacher")
    assert np.all(rd <= g + 1e-12) and np.any(rd < g)


# ------------------------------------------------------------------------------------------------- linear
def linear_grads(x, w, y_bar, probes=16, dist="gaussian", seed=0):
    """(x̄, Ŵ) of the ordinary Linear primitive's rules with the sketched policy, on arrays."""
    params = dict(residual=RowSketch(probes, dist, seed))
    ctx = Context([True, True], params)
    Linear.forward(ctx, x, w, **params)
    return Linear.vjp(ctx, y_bar)


def test_linear_orthogonal_full_rank_is_exact_and_input_cotangent_exact():
    rng = np.random.default_rng(5)
    x, w, y_bar = rng.standard_normal((3, 4, 5)), rng.standard_normal((6, 5)), rng.standard_normal((3, 4, 6))
    x_bar, w_hat = linear_grads(x, w, y_bar, probes=12, dist="orthogonal", seed=3)
    np.testing.assert_allclose(w_hat, y_bar.reshape(-1, 6).T @ x.reshape(-1, 5), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(x_bar, y_bar @ w, rtol=1e-12)


@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_linear_unbiased_and_variance(dist):
    rng = np.random.default_rng(6)
    x, w, y_bar = rng.standard_normal((10, 3)), rng.standard_normal((2, 3)), rng.standard_normal((10, 2))
    est = np.stack([linear_grads(x, w, y_bar, probes=4, dist=dist, seed=s)[1] for s in range(4000)])
    exact = y_bar.T @ x
    se = est.std(0, ddof=1) / np.sqrt(len(est))
    assert (np.abs(est.mean(0) - exact) / se).max() < 4
    ana = R.linear_trace_variance(x, y_bar, probes=4, dist=dist)
    emp = est.var(0, ddof=1)
    assert abs(emp.sum() / ana.sum() - 1) < 0.10
    assert np.max(np.abs(emp / ana - 1)) < 0.10


# -------------------------------------------------------------------------------------- rules and engine
def test_check_grads_exact_probes_all_modes():
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 3, 3))
    # 'same' zero padding, C_out <= C_in: conv2d has a vijp along x, and the sketched conv delegates to it
    f = lambda x, w: R.sketched_conv2d(x, w, padding=1, probes=48, mode="multichannel", dist="orthogonal", seed=1)
    check_grads(f, (x, w), rtol=1e-5, atol=1e-6)
    g = lambda x, w, b: R.sketched_linear(x, w, b, probes=5, dist="orthogonal", seed=2)
    check_grads(g, (rng.standard_normal((5, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)))


def test_check_grads_with_few_probes():
    # jvp is exact for any r; the x cotangent is exact, so the adjoint identity holds along x
    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    f = lambda x, w, b: R.sketched_conv2d(x, w, b, stride=2, padding=1, probes=3, seed=5)
    check_grads(f, (x, w, b), modes=("jvp",))
    check_grads(f, (x, w, b), modes=("vjp",), wrt=[0, 2])


def _saved_by(layer_fn, x):
    """Residual bytes kept by one layer call, read from the engine's counter (x is a non-leaf input)."""
    h = x * 1.0
    before = tm.memory.saved_bytes()
    out = layer_fn(h)
    kept = tm.memory.saved_bytes() - before
    return kept, out


@pytest.mark.parametrize("mode", ["independent", "multichannel"])
def test_saved_bytes_ratio(mode):
    x = tm.randn(4, 3, 8, 8, seed=0, requires_grad=True)
    w = tm.randn(5, 3, 3, 3, seed=1, requires_grad=True)
    exact, _ = _saved_by(lambda h: tm.conv2d(h, w, padding=1), x)
    r = 16
    sk, out = _saved_by(lambda h: R.sketched_conv2d(h, w, padding=1, probes=r, mode=mode, seed=0), x)
    n = 64 if mode == "independent" else 3 * 64
    assert exact == x.data.nbytes
    assert sk * n == exact * r                                   # r/N or r/(C·N), exactly
    out.sum().backward()
    assert w.grad is not None and x.grad is not None
    xl = tm.randn(32, 10, seed=2, requires_grad=True)
    wl = tm.randn(6, 10, seed=3, requires_grad=True)
    exact_l, _ = _saved_by(lambda h: tm.linear(h, wl), xl)
    sk_l, _ = _saved_by(lambda h: R.sketched_linear(h, wl, probes=8, seed=0), xl)
    assert sk_l * 32 == exact_l * 8                              # r/M


def test_same_seed_same_gradient_and_estimator_stream():
    x = tm.randn(3, 2, 6, 6, seed=0)
    w = tm.randn(4, 2, 3, 3, seed=1, requires_grad=True)

    def grad(est):
        w.grad = None
        est.conv2d(x, w, padding=1).sum().backward()
        g1 = w.grad.numpy().copy()
        w.grad = None
        est.conv2d(x, w, padding=1).sum().backward()
        return g1, w.grad.numpy().copy()

    a = grad(R.TraceEstimator(probes=4, generator=42))
    b = grad(R.TraceEstimator(probes=4, generator=42))
    c = grad(R.TraceEstimator(probes=4, generator=43))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[0], c[0])


def test_float32_and_estimator_falls_back_when_sketch_is_larger():
    x = tm.randn(2, 3, 4, 4, seed=0)
    w = tm.randn(2, 3, 3, 3, seed=1, requires_grad=True)
    y = R.TraceEstimator(probes=8, generator=0).conv2d(x, w, padding=1)
    assert y.dtype == np.float32 and isinstance(y._node.ctx.params["residual"], R.PixelSketch)   # sketched
    y.sum().backward()
    assert w.grad.dtype == np.float32
    y2 = R.TraceEstimator(probes=17, generator=0).conv2d(x, w, padding=1)    # r > N = 16: exact conv
    assert y2._node.prim.name == "conv2d" and y2._node.ctx.params.get("residual") is None


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="multichannel"):
        R.TraceEstimator(mode="independent", dist="block_orthogonal")
    with pytest.raises(ValueError, match="r <= n"):
        R.sketched_conv2d(tm.randn(1, 1, 3, 3, seed=0), tm.randn(1, 1, 2, 2, seed=1, requires_grad=True), probes=10,
                          dist="orthogonal")
    with pytest.raises(ValueError, match="mode"):
        R.TraceEstimator(mode="bogus")
