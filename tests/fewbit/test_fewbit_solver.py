"""The DP: brute force, the three solvers against each other, optimality conditions, bad input."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinymoon.fewbit import FewBitError, activation, discretise, solve, solve_reference, weighted_error
from tinymoon.fewbit.dp import dp_dc, dp_exact, dp_reference

SETTINGS = settings(max_examples=60, deadline=None)


# ---- random cell data: each grid cell is a small non-negative measure (a few weighted values) ---------

@st.composite
def cells(draw, max_cells=12, monotone=False):
    n = draw(st.integers(2, max_cells))
    m = 2                                                   # values per cell
    w = np.array(draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 3.0]), min_size=n * m,
                               max_size=n * m))).reshape(n, m)
    if not w.any():
        w[0, 0] = 1.0
    v = np.array(draw(st.lists(st.floats(-3, 3, allow_nan=False), min_size=n * m, max_size=n * m)))
    if monotone:                                            # sorted values: the quadrangle inequality holds
        v = np.sort(v)[:: draw(st.sampled_from([1, -1]))]
    v = v.reshape(n, m)
    Wc, Fc, F2c = w.sum(1), (w * v).sum(1), (w * v * v).sum(1)
    zero = np.zeros(1)
    return (Wc, Fc, F2c), tuple(np.concatenate([zero, np.cumsum(a)]) for a in (Wc, Fc, F2c))


def direct_cost(Wc, Fc, F2c, cuts):
    """Σ over intervals of Σ w (v - mean)², summed straight from the cells (no prefix sums)."""
    total = 0.0
    for a, b in zip(cuts[:-1], cuts[1:]):
        w, f, f2 = Wc[a:b].sum(), Fc[a:b].sum(), F2c[a:b].sum()
        total += f2 - f * f / w if w > 0 else 0.0
    return total


@SETTINGS
@given(data=cells(), k=st.integers(1, 4))
def test_dp_equals_brute_force(data, k):
    (Wc, Fc, F2c), (W, F, F2) = data
    N = Wc.size
    if k > N:
        k = N
    brute = min(direct_cost(Wc, Fc, F2c, (0,) + c + (N,))
                for c in itertools.combinations(range(1, N), k - 1))
    for solver in (dp_reference, dp_exact):
        value, cuts = solver(W, F, F2, k)
        assert len(cuts) == k + 1 and cuts[0] == 0 and cuts[-1] == N and np.all(np.diff(cuts) > 0)
        assert math.isclose(value, brute, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(direct_cost(Wc, Fc, F2c, cuts), brute, rel_tol=1e-9, abs_tol=1e-12)


@SETTINGS
@given(data=cells(max_cells=60), k=st.integers(1, 16))
def test_exact_equals_reference_on_any_data(data, k):
    _, (W, F, F2) = data
    k = min(k, W.size - 1)
    ref, _ = dp_reference(W, F, F2, k)
    ex, _ = dp_exact(W, F, F2, k)
    assert math.isclose(ex, ref, rel_tol=1e-12, abs_tol=1e-14)


@SETTINGS
@given(data=cells(max_cells=60, monotone=True), k=st.integers(1, 16))
def test_divide_and_conquer_equals_reference_on_monotone_data(data, k):
    # the quadrangle inequality holds when the cell values are sorted: D&C is exact (up to rounding)
    _, (W, F, F2) = data
    k = min(k, W.size - 1)
    ref, _ = dp_reference(W, F, F2, k)
    dc, _ = dp_dc(W, F, F2, k)
    assert math.isclose(dc, ref, rel_tol=1e-12, abs_tol=1e-14)


def test_divide_and_conquer_is_not_exact_for_non_monotone_derivatives():
    # gelu' is not monotone, so C(i, j) violates the quadrangle inequality and D&C can miss the optimum.
    # This is why solve(method="auto") uses D&C only for monotone cell means.
    d = discretise("gelu", (-10, 10), "uniform", 1024)
    ref, _ = dp_reference(d.W, d.F, d.F2, 8)
    dc, _ = dp_dc(d.W, d.F, d.F2, 8)
    ex, _ = dp_exact(d.W, d.F, d.F2, 8)
    assert ex == ref
    assert dc > ref * (1 + 1e-4)
    # the smallest counterexample to the quadrangle inequality: f' = +1, -1, +1 on three cells
    W = np.array([0.0, 1.0, 2.0, 3.0]); F = np.array([0.0, 1.0, 0.0, 1.0]); F2 = np.array([0.0, 1.0, 2.0, 3.0])
    from tinymoon.fewbit.dp import interval_cost as C
    assert C(W, F, F2, 0, 2) + C(W, F, F2, 1, 3) > C(W, F, F2, 0, 3) + C(W, F, F2, 1, 2)


def test_auto_method_choice():
    assert solve("gelu", 2, grid=256).method == "exact"
    assert solve("softplus", 2, grid=256).method == "dc"       # σ is monotone
    assert solve("elu", 2, grid=256, alpha=0.5).method == "dc"


@pytest.mark.parametrize("name", ["gelu", "tanh", "selu", "hardswish", "softplus", "mish", "tanhshrink"])
@pytest.mark.parametrize("weight", ["uniform", "gaussian"])
def test_solve_equals_reference(name, weight):
    for bits in (1, 2, 3):
        a = solve(name, bits, grid=256, weight=weight)
        b = solve_reference(name, bits, grid=256, weight=weight)
        assert math.isclose(a.error, b.error, rel_tol=1e-12, abs_tol=1e-15)


# ---- properties of the optimum ----------------------------------------------------------------------

def max_abs_second_derivative(act, a, b, params):
    x = np.linspace(a, b, 41)
    d = 1e-5
    return np.max(np.abs(act.derivative(x + d, **params) - act.derivative(x - d, **params))) / (2 * d)


@pytest.mark.parametrize("name", ["gelu", "silu", "tanh", "sigmoid", "mish", "softsign", "selu", "hardswish"])
@pytest.mark.parametrize("weight", ["uniform", "gaussian"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_lloyd_max_conditions(name, weight, bits):
    """At a grid-optimal border s (w > 0 around it, f' continuous on [s-h, s+h], both neighbours at least
    two cells wide) moving s by ±h cannot lower E, even with the levels kept. The exact change of moving
    right is ∫_s^{s+h} w (y_r - y_l)(2f' - y_l - y_r), and of moving left the same over [s-h, s] with the
    opposite sign, so g = 2f' - y_l - y_r has a root in [s-h, s+h], whence
        |f'(s) - (y_l + y_r)/2| = |g(s)|/2 <= h · max |f''| on [s-h, s+h]."""
    act = activation(name)
    L, R, N = -8.0, 8.0, 2048
    h = (R - L) / N
    t = solve(name, bits, domain=(L, R), weight=weight, grid=N)
    edges = np.concatenate([[L], t.borders, [R]])
    checked = 0
    for i, s in enumerate(t.borders):
        yl, yr = t.levels[i], t.levels[i + 1]
        if any(abs(s - j) <= h * 1.01 for j in act.jumps()):
            continue                                        # f' jumps here: the border sits on the jump
        if edges[i + 1] - edges[i] < 1.5 * h or edges[i + 2] - edges[i + 1] < 1.5 * h:
            continue
        if abs(yr - yl) < 1e-12:
            continue
        tol = 1.05 * h * max_abs_second_derivative(act, s - h, s + h, {}) + 1e-9
        assert abs(act.derivative(s) - 0.5 * (yl + yr)) <= tol, (i, s)
        checked += 1
    assert checked >= len(t.borders) // 2


@pytest.mark.parametrize("name,weight", [("gelu", "uniform"), ("tanh", "gaussian"), ("selu", "uniform"),
                                         ("hardswish", "gaussian")])
def test_levels_are_weighted_means_and_error_is_independent(name, weight):
    act = activation(name)
    L, R = -6.0, 6.0
    t = solve(name, 3, domain=(L, R), weight=weight, grid=600)
    edges = np.concatenate([[L], t.borders, [R]])
    wf = (lambda x: np.ones_like(x)) if weight == "uniform" else \
        (lambda x: np.exp(-x * x / 2) / math.sqrt(2 * math.pi))
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        # fine composite midpoint rule, independent of the DP, split at the jumps of f'
        cuts = np.unique(np.clip(np.concatenate([[a, b], act.jumps()]), a, b))
        x = np.concatenate([p + (np.arange(20000) + 0.5) * (q - p) / 20000 for p, q in zip(cuts[:-1], cuts[1:])])
        dx = np.concatenate([np.full(20000, (q - p) / 20000) for p, q in zip(cuts[:-1], cuts[1:])])
        w = wf(x) * dx
        mean = np.sum(act.derivative(x) * w) / np.sum(w)
        assert abs(t.levels[i] - mean) < 1e-6
    assert math.isclose(weighted_error(t, name, (L, R), weight), t.error, rel_tol=1e-9)


def test_reproduces_known_tables():
    # reference/fewbit.md §3.2: the authors' 3-bit GELU table = the w ≡ 1 optimum on [-10, 10]
    t = solve("gelu", 3)
    old = [-2.39798704, -0.711248159, -0.326290283, -1.55338428e-04, 0.326182064, 0.710855860, 2.39811567]
    assert np.max(np.abs(t.borders - old)) < 2 * 20 / 4096
    # §3.5: Gaussian-weighted optimum on [-12, 12], weighted errors per bit width
    for bits, err in [(1, 0.038443), (2, 0.0080011), (3, 0.0019075), (4, 0.00058876)]:
        t = solve("gelu", bits, domain=(-12, 12), weight="gaussian")
        assert math.isclose(t.error, err, rel_tol=2e-3), (bits, t.error)


def test_error_decreases_with_bits_and_table_is_symmetric():
    errs = [solve("gelu", b, grid=1024).error for b in (1, 2, 3, 4)]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    t = solve("gelu", 4, grid=1024)                        # gelu'(-x) = 1 - gelu'(x)
    np.testing.assert_allclose(t.borders, -t.borders[::-1], atol=1e-12)
    np.testing.assert_allclose(t.levels, 1 - t.levels[::-1], atol=1e-9)


def test_callable_derivative_and_weight():
    t1 = solve(activation("tanh").derivative, 2, domain=(-4, 4), weight=lambda x: np.exp(-x * x), grid=256)
    t2 = solve(lambda x: 1 - np.tanh(x) ** 2, 2, domain=(-4, 4), weight=lambda x: np.exp(-x * x), grid=256)
    np.testing.assert_array_equal(t1.borders, t2.borders)
    assert t1.weight.startswith("callable:")
    # params go to the callable
    t3 = solve(lambda x, a: a * np.ones_like(x), 1, domain=(0, 1), grid=8, a=2.0)
    np.testing.assert_allclose(t3.levels, 2.0)
    assert t3.error < 1e-20


def test_sample_weight_is_a_histogram():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200_000)
    t = solve("gelu", 2, weight=x, grid=512)
    lo, hi = np.quantile(x, [0.001, 0.999])
    assert t.domain == (lo, hi) and t.weight.startswith("samples(n=200000")
    d = discretise("gelu", None, x, 512)
    assert math.isclose(d.Wc.sum(), np.mean((x >= lo) & (x <= hi)), rel_tol=1e-12)
    g = solve("gelu", 2, domain=(lo, hi), weight="gaussian", grid=512)
    np.testing.assert_allclose(t.borders, g.borders, atol=0.05)        # empirical ≈ the true density
    # empty cells: zero weight, zero cost — still a valid table
    t = solve("tanh", 3, weight=np.array([-2.0, -1.0, 1.0, 2.0] * 5), grid=64)
    assert t.error >= 0 and len(t.levels) == 8


@pytest.mark.parametrize("kwargs,match", [
    (dict(bits=0), "bits must be an integer in 1..8"),
    (dict(bits=9), "bits must be an integer in 1..8"),
    (dict(bits=2.0), "bits must be an integer in 1..8"),
    (dict(bits=True), "bits must be an integer in 1..8"),
    (dict(bits=4, grid=8), "grid >= 16"),
    (dict(bits=2, grid=0), "grid must be a positive integer"),
    (dict(bits=2, domain=(1, 1)), "L < R"),
    (dict(bits=2, domain=(0, np.inf)), "finite"),
    (dict(bits=2, domain=3), "pair"),
    (dict(bits=2, weight="normal"), "'uniform', 'gaussian'"),
    (dict(bits=2, weight=lambda x: -np.ones_like(x)), "non-negative"),
    (dict(bits=2, weight=lambda x: np.zeros_like(x)), "zero everywhere"),
    (dict(bits=2, weight=np.array([0.0, np.nan, 1.0])), "non-finite"),
    (dict(bits=2, weight=np.zeros((3, 3))), "1-D"),
    (dict(bits=2, method="fast"), "method must be one of"),
    (dict(bits=2, alpha=1.0), "unknown parameter"),
])
def test_bad_input(kwargs, match):
    bits = kwargs.pop("bits")
    with pytest.raises(FewBitError, match=match):
        solve("gelu", bits, **kwargs)


def test_bad_function():
    with pytest.raises(FewBitError, match="unknown activation 'gleu'; known: celu, elu, gelu"):
        solve("gleu", 2)
    with pytest.raises(FewBitError, match="piecewise-linear"):
        solve("relu", 1)
    with pytest.raises(FewBitError, match="callable derivative"):
        solve(3.0, 2)
    with pytest.raises(FewBitError, match="not finite"):
        solve(lambda x: np.where(x > 0.5, np.nan, 1.0), 2, domain=(-1, 1), grid=8)
    with pytest.raises(FewBitError, match="elementwise"):
        solve(lambda x: np.ones(3), 2, grid=8)
