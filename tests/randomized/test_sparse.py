"""Unbiased sparse and low-rank VJP sketches: water-filling, exactness at full budget, unbiasedness, variance."""
import numpy as np
import pytest

import tinymoon as tm
import tinymoon.randomized as R
from tinymoon.ops.base import Context
from tinymoon.ops.conv import Conv2d
from tinymoon.randomized import SampledInput
from tinymoon.randomized.sparse import SparseCotangent, systematic_sample
from tinymoon.testing import check_grads


@pytest.mark.parametrize("budget", [0.5, 3.0, 7.5, 20.0, 40.0])
def test_waterfill_spends_the_budget(budget):
    rng = np.random.default_rng(0)
    v = np.abs(rng.standard_cauchy((5, 40)))          # heavy tails: several entries get capped at p = 1
    p = R.waterfill(v, budget)
    np.testing.assert_allclose(p.sum(-1), budget, rtol=1e-12)
    assert np.all((p >= 0) & (p <= 1))
    # p_i = v_i / τ on the entries below the cap, one τ per row, and the capped ones are the largest
    for row_v, row_p in zip(v, p):
        free = row_p < 1
        if not free.any():                              # budget = n: everything kept
            continue
        tau = row_v[free] / row_p[free]
        np.testing.assert_allclose(tau, tau[0], rtol=1e-10)
        assert np.all(row_v[~free] >= tau[0] * (1 - 1e-12))


def test_waterfill_with_fewer_nonzeros_than_budget_and_bad_budget():
    p = R.waterfill(np.array([[3.0, 0.0, 1.0, 0.0]]), 3)
    np.testing.assert_array_equal(p, [[1, 0, 1, 0]])
    with pytest.raises(ValueError):
        R.waterfill(np.ones(4), 5)


def test_optimal_rule_minimises_the_variance():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((1, 200)) * rng.exponential(size=(1, 200))
    var = {rule: R.sketch_variance(v, R.probabilities(v, 0.1, rule)) for rule in R.sparse.RULES}
    assert var["optimal"] < var["uniform"]
    n, k = 200, 20
    np.testing.assert_allclose(var["uniform"], (n / k - 1) * (v ** 2).sum())     # (n/κ − 1)‖v‖²


def sparse_vjp(v, seed, **params):
    params = dict(dict(per_sample=True), **params, seed=seed)
    ctx = Context([True], params)
    SparseCotangent.forward(ctx, v, **params)
    return SparseCotangent.vjp(ctx, v)[0]


@pytest.mark.parametrize("rule", ["uniform", "optimal"])
def test_sparse_cotangent_unbiased_and_variance(rule):
    rng = np.random.default_rng(2)
    v = rng.standard_normal((3, 12)) * rng.exponential(size=(3, 12))
    est = np.stack([sparse_vjp(v, s, budget=0.25, rule=rule) for s in range(4000)])
    se = est.std(0, ddof=1) / np.sqrt(len(est))
    free = se > 0                                        # p = 1 entries are exact (zero spread)
    assert np.all(np.abs(est.mean(0) - v)[free] / se[free] < 4)
    np.testing.assert_array_equal(est[:, ~free], np.broadcast_to(v[~free], (len(est), (~free).sum())))
    emp = ((est - v) ** 2).sum((1, 2)).mean()
    ana = R.sketch_variance(v, R.probabilities(v, 0.25, rule))
    assert abs(emp / ana - 1) < 0.10
    kept = (est != 0).sum((1, 2)).mean()
    assert abs(kept / (0.25 * v.size) - 1) < 0.05     # Σ p = budget: that many entries kept on average


def test_full_budget_gives_the_exact_vjp():
    rng = np.random.default_rng(3)
    v = rng.standard_normal((4, 6))
    for rule in ("uniform", "optimal"):
        np.testing.assert_array_equal(sparse_vjp(v, 0, budget=1.0, rule=rule), v)
    x, w, b = tm.randn(4, 2, 5, 5, seed=0), tm.randn(3, 2, 3, 3, seed=1), tm.randn(3, seed=2)
    _, f_exact = tm.vjp(lambda x, w, b: tm.conv2d(x, w, b, stride=2, padding=1), x, w, b)
    u = rng.standard_normal((4, 3, 3, 3))
    ge = [g.numpy() for g in f_exact(u)]
    for est in (R.SparseVJP(budget=1.0, rule="uniform", generator=0), R.SparseVJP(1.0, "optimal", generator=0),
                R.LowRankVJP(rank=25, rule="optimal", generator=0)):
        _, f = tm.vjp(lambda x, w, b: est.conv2d(x, w, b, stride=2, padding=1), x, w, b)
        for a, e in zip(f(u), ge):
            np.testing.assert_allclose(a.numpy(), e, rtol=1e-4, atol=1e-5)
    xl, wl = tm.randn(6, 4, seed=3), tm.randn(5, 4, seed=4)
    ul = rng.standard_normal((6, 5))
    _, fe = tm.vjp(lambda x, w: tm.linear(x, w), xl, wl)
    for est in (R.SparseVJP(1.0, "optimal", generator=0), R.LowRankVJP(rank=4, generator=0)):
        _, f = tm.vjp(lambda x, w: est.linear(x, w), xl, wl)
        for a, e in zip(f(ul), fe(ul)):
            np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=1e-4, atol=1e-5)
    _, f = tm.vjp(lambda h: R.lowrank_cotangent(h, rank=5), xl)
    np.testing.assert_allclose(f(xl.numpy())[0].numpy(), xl.numpy(), rtol=1e-5, atol=1e-6)


def test_systematic_sampling_keeps_exactly_rank_items_with_the_right_marginals():
    p = np.array([1.0, 0.7, 0.5, 0.5, 0.2, 0.1])         # Σ = 3
    rng = np.random.default_rng(4)
    counts = np.zeros(len(p))
    for _ in range(4000):
        keep = systematic_sample(p, rng.random())
        assert len(keep) == 3
        counts[keep] += 1
    se = np.sqrt(p * (1 - p) / 4000) + 1e-12
    assert np.all(np.abs(counts / 4000 - p) < 4 * se + 1e-9)


@pytest.mark.parametrize("rule", ["uniform", "optimal"])
def test_lowrank_unbiased_and_variance(rule):
    rng = np.random.default_rng(5)
    m = rng.standard_normal((6, 2)) @ np.diag([3.0, 1.0]) @ rng.standard_normal((2, 5))
    m = m + 0.3 * rng.standard_normal((6, 5))
    est = []
    for s in range(3000):
        a, b, (sig, p) = R.lowrank_factors(m, 2, rule, np.random.default_rng(s))
        assert a.shape[1] <= 2
        est.append(a @ b)
    est = np.stack(est)
    se = est.std(0, ddof=1) / np.sqrt(len(est))
    assert np.all(np.abs(est.mean(0) - m) / np.maximum(se, 1e-12) < 4)
    emp = ((est - m) ** 2).sum((1, 2)).mean()
    assert abs(emp / R.lowrank_variance(sig, p) - 1) < 0.10


def sampled_conv_grad(x, w, y_bar, seed, kind="sparse", budget=0.1, rule="uniform"):
    params = dict(stride=1, padding=1, dilation=1, groups=1, padding_mode="zeros",
                  residual=SampledInput(kind, budget, rule, seed, per_sample=True))
    ctx = Context([True, True], params)
    Conv2d.forward(ctx, x, w, **params)
    return Conv2d.vjp(ctx, y_bar)[1]


@pytest.mark.parametrize("kind,budget,rule", [("sparse", 0.3, "uniform"), ("sparse", 0.3, "optimal"),
                                              ("lowrank", 2, "optimal")])
def test_sampled_conv_weight_gradient_unbiased(kind, budget, rule):
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((2, 2, 3, 3))
    y_bar = rng.standard_normal((2, 2, 4, 4))
    est = np.stack([sampled_conv_grad(x, w, y_bar, s, kind=kind, budget=budget, rule=rule) for s in range(2000)])
    _, f = tm.vjp(lambda x, w: tm.conv2d(x, w, padding=1), tm.tensor(x), tm.tensor(w))
    exact = f(y_bar)[1].numpy()
    se = est.std(0, ddof=1) / np.sqrt(len(est))
    assert (np.abs(est.mean(0) - exact) / se).max() < 4


def test_saved_bytes_of_sampled_layers():
    x = tm.randn(8, 4, 8, 8, seed=0, requires_grad=True)
    w = tm.randn(4, 4, 3, 3, seed=1, requires_grad=True)

    def kept(fn):
        h = x * 1.0
        before = tm.memory.saved_bytes()
        out = fn(h)
        return tm.memory.saved_bytes() - before, out

    exact, _ = kept(lambda h: tm.conv2d(h, w, padding=1))
    uni, out = kept(lambda h: R.sampled_conv2d(h, w, padding=1, budget=0.1, rule="uniform", seed=0))
    opt, _ = kept(lambda h: R.sampled_conv2d(h, w, padding=1, budget=0.1, rule="optimal", seed=0))
    low, _ = kept(lambda h: R.sampled_conv2d(h, w, padding=1, kind="lowrank", budget=2, seed=0))
    assert 0.08 < uni / exact < 0.12                     # ≈ budget: values only, the mask comes from the seed
    assert 0.08 + 1 / 32 < opt / exact < 0.12 + 1 / 32   # + a 1-bit mask per float32 entry
    assert low == 2 * (32 + 64) * 4                      # rank·(B·C + H·W) float32 numbers
    out.sum().backward()
    assert w.grad.shape == w.shape


def test_check_grads_of_sparse_primitives():
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((2, 2, 1, 1))
    # full budget: exact, all modes (a 1x1 conv with C_out <= C_in has a vijp along x)
    check_grads(lambda x, w: R.sampled_conv2d(x, w, budget=1.0, rule="optimal", seed=1), (x, w))
    # any budget: jvp exact, x cotangent exact
    check_grads(lambda x, w: R.sampled_conv2d(x, w, budget=0.2, seed=1), (x, w), modes=("jvp",))
    check_grads(lambda x, w: R.sampled_conv2d(x, w, budget=0.2, seed=1), (x, w), modes=("vjp",), wrt=[0])
    check_grads(lambda x: R.sparse_cotangent(x, budget=1.0), (x,), modes=("jvp", "vjp"))
    with pytest.raises(tm.errors.MissingRuleError):
        check_grads(lambda x: R.sparse_cotangent(x, budget=0.5), (x,), modes=("vijp",))


def test_sparse_estimators_are_reproducible():
    x = tm.randn(4, 6, seed=0, requires_grad=True)

    def grad(est):
        x.grad = None
        (est.cotangent(x) * tm.randn(4, 6, seed=1)).sum().backward()
        return x.grad.numpy().copy()

    for make in (lambda s: R.SparseVJP(0.3, "optimal", generator=s), lambda s: R.LowRankVJP(2, generator=s)):
        np.testing.assert_array_equal(grad(make(5)), grad(make(5)))
        assert not np.array_equal(grad(make(5)), grad(make(6)))
