"""Inverse mode through matmul and linear: the Cholesky factor is built once per context, the pivoted-QR
fragment coordinates are well conditioned, and bad input says what is wrong."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon.errors import MissingRuleError, NotInvertibleError, ShapeError
from tinymoon.ops.linalg import F32_APPLY_COND, RightInverse, pivoted_qr


def _vijp_roundtrip(f, x, rng):
    out, vf = tm.vijp(f, x)
    u = rng.standard_normal(out.shape)
    frags = vf.fragments(u)
    _, vjp_fn = tm.vjp(f, x)
    x_bar = vjp_fn(u)[0].numpy()
    return u, vf, frags, x_bar


def test_linear_cholesky_once_per_context(monkeypatch):
    calls = []
    real = np.linalg.cholesky
    monkeypatch.setattr(np.linalg, "cholesky", lambda g: calls.append(g.shape) or real(g))
    rng = np.random.default_rng(0)
    w = tm.tensor(rng.standard_normal((4, 7)))          # out = 4 <= in = 7: contracting
    b = tm.tensor(rng.standard_normal(4))
    f = lambda x: tm.linear(x, w, b)                     # noqa: E731
    u, vf, frags, x_bar = _vijp_roundtrip(f, rng.standard_normal((5, 7)), rng)
    assert frags == [None]
    for _ in range(3):                                   # three inverse passes, one factorisation
        np.testing.assert_allclose(vf(x_bar).numpy(), u, rtol=1e-9, atol=1e-10)
    assert calls == [(4, 4)]
    out, vf2 = tm.vijp(f, rng.standard_normal((5, 7)))   # a new context factorises again
    vf2(np.ones((5, 7)))
    assert calls == [(4, 4), (4, 4)]


def test_linear_expanding_needs_its_fragment():
    rng = np.random.default_rng(1)
    w = tm.tensor(rng.standard_normal((9, 4)))          # out = 9 > in = 4: 5 erased coordinates per row
    f = lambda x: tm.linear(x, w)                        # noqa: E731
    u, vf, frags, x_bar = _vijp_roundtrip(f, rng.standard_normal((3, 4)), rng)
    assert frags[0].shape == (3, 5)
    np.testing.assert_allclose(vf(x_bar, frags).numpy(), u, rtol=1e-9, atol=1e-10)
    with pytest.raises(NotInvertibleError, match="linear"):
        vf(x_bar)


def _adversarial(n=3, m=8, seed=2):
    """b (n x m) whose first n columns are nearly dependent (all close to one vector)."""
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((n, m))
    v = rng.standard_normal(n)
    for j in range(n):
        b[:, j] = v + 1e-9 * rng.standard_normal(n)
    return b


def test_pivoted_qr_picks_well_conditioned_columns():
    b = _adversarial()
    n = b.shape[0]
    perm, r_diag = pivoted_qr(b, k=n)
    assert sorted(perm.tolist()) == list(range(b.shape[1]))
    assert np.all(np.diff(np.abs(r_diag)) <= 1e-12)                      # non-increasing |R_jj|
    q, r = np.linalg.qr(b[:, perm[:n]])
    np.testing.assert_allclose(np.abs(np.diag(r)), np.abs(r_diag), rtol=1e-10)
    chosen = np.linalg.cond(b[:, np.sort(perm[:n])])
    assert np.linalg.cond(b[:, :n]) > 1e8 and chosen < 50
    plan = RightInverse("matmul", b)
    assert plan.expanding and np.linalg.cond(b[:, plan.K]) == pytest.approx(chosen)
    assert len(set(plan.K.tolist()) & {0, 1, 2}) <= 1                   # at most one of the near-copies


def test_matmul_expanding_adversarial_roundtrip_is_accurate():
    b = tm.tensor(_adversarial())
    rng = np.random.default_rng(3)
    f = lambda a: a @ b                                  # noqa: E731
    u, vf, frags, x_bar = _vijp_roundtrip(f, rng.standard_normal((4, 3)), rng)
    assert frags[0].shape == (4, 5)
    np.testing.assert_allclose(vf(x_bar, frags).numpy(), u, rtol=1e-8, atol=1e-8)
    with pytest.raises(NotInvertibleError, match="matmul"):
        vf(x_bar)


def test_rank_deficient_and_batched_b_raise():
    b = np.ones((4, 2))                                  # contracting, rank 1
    out, vf = tm.vijp(lambda a: a @ tm.tensor(b), np.ones((3, 4)))
    with pytest.raises(NotInvertibleError, match="matmul.*rank"):
        vf(np.ones((3, 4)))
    out, vf = tm.vijp(lambda a: a @ tm.tensor(np.ones((2, 4, 3))), np.ones((4,)))
    with pytest.raises(NotInvertibleError, match=r"matmul.*\(2, 4, 3\)"):
        vf(np.ones((4,)))
    out, vf = tm.vijp(lambda w: tm.linear(tm.tensor(np.ones((2, 3))), w), np.eye(3))
    with pytest.raises(MissingRuleError, match="linear"):
        vf(np.ones((3, 3)))


def test_shape_errors_name_the_shapes():
    with pytest.raises(ShapeError, match=r"matmul.*\(2, 3\).*\(4, 5\)"):
        tm.matmul(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(ShapeError, match=r"matmul.*\(7, 2, 3\).*\(4, 3, 5\)"):
        tm.matmul(np.ones((7, 2, 3)), np.ones((4, 3, 5)))
    with pytest.raises(ShapeError, match=r"linear.*\(2, 3\).*\(4, 5\)"):
        tm.linear(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(ShapeError, match=r"linear.*bias.*\(3,\)"):
        tm.linear(np.ones((2, 5)), np.ones((4, 5)), np.ones(3))


def test_linear_matches_numpy_and_saves_by_purpose():
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    xt, wt, bt = (tm.tensor(a, requires_grad=True) for a in (x, w, b))
    y = tm.linear(xt, wt, bt)
    np.testing.assert_allclose(y.numpy(), x @ w.T + b, rtol=1e-12)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    np.testing.assert_allclose(xt.grad.numpy(), g @ w, rtol=1e-12)
    np.testing.assert_allclose(wt.grad.numpy(), g.reshape(-1, 4).T @ x.reshape(-1, 5), rtol=1e-12)
    np.testing.assert_allclose(bt.grad.numpy(), g.reshape(-1, 4).sum(0), rtol=1e-12)
    # only the input needs a cotangent (Moonwalk phase 1): the layer input is not kept
    ctx = tm.linear(tm.tensor(x, requires_grad=True), tm.tensor(w), tm.tensor(b))._node.ctx
    assert hasattr(ctx, "weight") and not hasattr(ctx, "x")
    ctx = tm.linear(tm.tensor(x), tm.tensor(w, requires_grad=True))._node.ctx
    assert hasattr(ctx, "x") and not hasattr(ctx, "weight")


def test_square_linear_vijp_is_exact_and_singular_raises():
    rng = np.random.default_rng(3)
    w = tm.tensor(rng.standard_normal((6, 6)))
    u, vf, frags, x_bar = _vijp_roundtrip(lambda x: tm.linear(x, w), rng.standard_normal((4, 6)), rng)
    assert frags == [None]
    np.testing.assert_allclose(vf(x_bar).numpy(), u, rtol=1e-9, atol=1e-10)
    singular = np.ones((3, 3))
    out, vf = tm.vijp(lambda a: a @ tm.tensor(singular), np.ones((2, 3)))
    with pytest.raises(NotInvertibleError, match="matmul.*singular"):
        vf(np.ones((2, 3)))


@pytest.mark.parametrize("rows", [3, 40])          # fewer rows than n: LU solve; more: one float64 inverse
def test_square_vijp_modes_agree_and_are_accurate(rows):
    rng = np.random.default_rng(5)
    n = 8
    w = rng.uniform(-1 / np.sqrt(n), 1 / np.sqrt(n), (n, n)).astype(np.float32)   # PyTorch-like, cond ~ 10-100
    y_true = rng.standard_normal((rows, n))
    x_bar = (y_true @ w.astype(np.float64)).astype(np.float32)
    plan = RightInverse("linear", w.T, np.float32, rows)
    assert plan.mode == ("solve" if rows <= n else "inverse32" if np.linalg.cond(w.astype(np.float64)) < F32_APPLY_COND
                         else "inverse")
    got = plan.solve(None, x_bar, None)
    exact = np.linalg.solve(w.astype(np.float64).T, x_bar.astype(np.float64).T).T
    assert got.dtype == np.float32
    # both are backward stable and keep the result to float32 rounding, not eps * cond
    assert np.linalg.norm(got - exact) / np.linalg.norm(exact) < 20 * np.finfo(np.float32).eps
    wide = RightInverse("linear", w.T, np.float64, rows).solve(None, x_bar.astype(np.float64), None)
    assert wide.dtype == np.float64                  # float64 cotangents through a float32 weight stay float64
    np.testing.assert_allclose(wide, exact, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 3.0])       # cond 1 and 3: the float32 inverse and GEMM
def test_well_conditioned_square_vijp_takes_float32_and_stays_accurate(scale):
    rng = np.random.default_rng(8)
    n, rows = 32, 100
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    w = (q * np.linspace(1.0, scale, n)).astype(np.float32)                     # singular values 1..scale
    y_true = rng.standard_normal((rows, n))
    x_bar = (y_true @ w.astype(np.float64)).astype(np.float32)
    plan = RightInverse("linear", w.T, np.float32, rows)
    assert plan.mode == "inverse32" and plan.P.dtype == np.float32
    got = plan.solve(None, x_bar, None)
    exact = np.linalg.solve(w.astype(np.float64).T, x_bar.astype(np.float64).T).T
    assert got.dtype == np.float32
    assert np.linalg.norm(got - exact) / np.linalg.norm(exact) < 20 * scale * np.finfo(np.float32).eps
    # an ill-conditioned one (cond 1e3) keeps the float64 inverse
    bad = (q * np.geomspace(1.0, 1e3, n)).astype(np.float32)
    assert RightInverse("linear", bad.T, np.float32, rows).mode == "inverse"
    # float64 cotangents never take it
    assert RightInverse("linear", w.T, np.float64, rows).mode == "inverse"


@pytest.mark.parametrize("rows", [2, 12])
def test_numerically_singular_square_raises_in_both_modes(rows):
    rng = np.random.default_rng(6)
    u, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    s = np.array([1, 1, 1, 1, 1, 1e-13])
    b = (u * s) @ u.T                                 # cond 1e13: singular for float64 inverse mode
    out, vf = tm.vijp(lambda a: a @ tm.tensor(b), rng.standard_normal((rows, 6)))
    with pytest.raises(NotInvertibleError, match="matmul.*singular"):
        vf(rng.standard_normal((rows, 6)))


def test_backprop_wrt_parameters_skips_the_input_cotangent(monkeypatch):
    """Asking only for the weight's cotangent: the linear rule sees needs[0] False (no x̄ = ȳ W GEMM)."""
    from tinymoon.autodiff.reverse import backprop
    from tinymoon.ops.linalg import Linear
    seen = []
    real = Linear.vjp
    monkeypatch.setattr(Linear, "vjp", staticmethod(lambda ctx, g: seen.append(list(ctx.needs)) or real(ctx, g)))
    rng = np.random.default_rng(7)
    x = tm.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    w = tm.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    out = tm.linear(x, w)
    g = rng.standard_normal((4, 2))
    (w_bar,) = backprop(out, g, wrt=[w])
    np.testing.assert_allclose(w_bar, g.T @ x.numpy(), rtol=1e-12)
    assert seen == [[False, True]]
    assert out._node.ctx.needs == [True, True]        # restored after the walk
