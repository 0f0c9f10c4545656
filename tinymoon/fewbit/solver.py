"""DP-optimal b-bit piecewise-constant approximations of an activation's derivative.

Problem (Novikov et al., "Few-Bit Backward", arXiv:2202.00441): with k = 2^b,

    minimise  E(s, y) = ∫_L^R (f'(x) - q(x))² w(x) dx,    q = y_i on (s_i, s_{i+1}],  L = s_0 < ... < s_k = R.

* For fixed borders the best level is the w-weighted mean  y_i = ∫ f' w / ∫ w  over its interval.
* The borders are restricted to a grid x_j = L + j (R-L)/N, j = 0..N (N = `grid` cells, N+1 points), and
  chosen by an exact dynamic programme over that grid (`dp.py`); the result is the global optimum of the
  grid-restricted problem. At an optimum with w(s_i) > 0 the Lloyd–Max condition
  f'(s_i) = (y_{i-1} + y_i)/2 holds up to the grid spacing.
* Outside [L, R] the outermost levels extend to ±∞; the reported `error` is E on [L, R] only.

Discretisation ("exact per cell"): the prefix integrals W, F, F2 of w, f'w, f'²w are sums of per-cell
integrals, each computed by 3-point Gauss–Legendre quadrature on the cell (exact for polynomials of degree
<= 5; for smooth f' and w the error is O(h^6) per unit length, far below anything that matters here). A kink
of f' that lies on a grid point costs nothing; one inside a cell costs O(h) accuracy there — the default
domains put the known kinks (0, ±3) on grid points.

Weights:
    "uniform"   w(x) = 1 (what the authors' code and shipped tables used).
    "gaussian"  w(x) = standard normal pdf exp(-x²/2)/√(2π) — the expected squared error for N(0,1) inputs.
    callable    w(x) -> array of non-negative finite values, called on a float64 array.
    samples     a 1-D array of observed activation inputs: w = their histogram on the grid, normalised as a
                density (count / (n h) on each cell; cells are the grid cells, so the weight is exact per
                cell). Samples outside [L, R] are ignored; the default domain is the [0.1 %, 99.9 %] quantile
                range of the samples.
"""
from __future__ import annotations

import hashlib
import math
import time

import numpy as np

from .activations import activation
from .dp import dp_dc, dp_exact, dp_reference
from .errors import FewBitError
from .table import MAX_BITS, MIN_BITS, Table

__all__ = ["solve", "solve_reference", "discretise", "Discretisation", "weighted_error",
           "DEFAULT_DOMAIN", "DEFAULT_GRID", "DEFAULT_WEIGHT", "SAMPLE_QUANTILES", "METHODS"]

DEFAULT_DOMAIN = (-10.0, 10.0)   # the authors' DP notebook: [-10, 10] ...
DEFAULT_GRID = 4096              # ... with 2^12 cells (step 1/204.8 ≈ 0.0049)
DEFAULT_WEIGHT = "uniform"       # ... and w ≡ 1 (see reference/fewbit.md §1.2–1.3, §3.4)
SAMPLE_QUANTILES = (0.001, 0.999)
METHODS = ("auto", "exact", "dc", "reference")

# 3-point Gauss–Legendre on [-1, 1]
_GL_T = np.array([-math.sqrt(3.0 / 5.0), 0.0, math.sqrt(3.0 / 5.0)])
_GL_W = np.array([5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0])


def _gaussian(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


class Discretisation:
    """Per-cell integrals on the grid x_0..x_N and their prefix sums.

    Wc, Fc, F2c, Uc: per-cell ∫w, ∫f'w, ∫f'²w, ∫f' (the last, unweighted, gives a sensible level to an
    interval that carries no weight). W, F, F2: prefix sums with a leading 0 (length N+1).
    """

    def __init__(self, x, Wc, Fc, F2c, Uc):
        self.x, self.Wc, self.Fc, self.F2c, self.Uc = x, Wc, Fc, F2c, Uc
        zero = np.zeros(1)
        self.W = np.concatenate([zero, np.cumsum(Wc)])
        self.F = np.concatenate([zero, np.cumsum(Fc)])
        self.F2 = np.concatenate([zero, np.cumsum(F2c)])

    @property
    def N(self):
        return self.Wc.size

    def cell_means_monotone(self) -> bool:
        """True when the w-weighted cell means of f' are monotone: then the DP cost satisfies the
        quadrangle inequality and divide-and-conquer is exact."""
        m = self.Fc[self.Wc > 0] / self.Wc[self.Wc > 0]
        d = np.diff(m)
        return bool(np.all(d >= 0) or np.all(d <= 0))

    def levels_and_error(self, cuts):
        """Weighted-mean level and error of each interval [x_{cuts[t-1]}, x_{cuts[t]}].

        Summed directly over the interval's cells (not as prefix differences) for full accuracy in the
        tails. A weightless interval gets the plain mean of f' (any level is optimal there)."""
        levels, err = [], 0.0
        for a, b in zip(cuts[:-1], cuts[1:]):
            w, fw, f2w = self.Wc[a:b].sum(), self.Fc[a:b].sum(), self.F2c[a:b].sum()
            if w > 0:
                y = fw / w
                err += max(f2w - fw * y, 0.0)       # ∫f'²w - (∫f'w)²/∫w
            else:
                y = self.Uc[a:b].sum() / (self.x[b] - self.x[a])
            levels.append(y)
        return np.array(levels), err


def _resolve_f(f, params):
    """(derivative callable, name, resolved params)."""
    if isinstance(f, str):
        act = activation(f)
        if act.piecewise_linear:
            raise FewBitError(f"{f} is piecewise-linear: its derivative is exact with a "
                              f"{act.code_bits}-bit mask (activation({f!r}).code / .code_levels); no table needed")
        p = act.resolve(**params)
        return (lambda x: act.df_at(np.asarray(x, dtype=np.float64), p)), f, p
    if callable(f):
        p = dict(params)
        name = getattr(f, "__name__", type(f).__name__)
        return (lambda x: np.asarray(f(x, **p), dtype=np.float64)), name, p
    raise FewBitError(f"f must be an activation name (str) or a callable derivative f'(x); got {type(f).__name__}")


def _resolve_weight(weight, domain):
    """(kind, description, w or samples, domain)."""
    if isinstance(weight, str):
        if weight not in ("uniform", "gaussian"):
            raise FewBitError(f"weight must be 'uniform', 'gaussian', a callable w(x) or a 1-D array of "
                              f"samples; got {weight!r}")
        return weight, weight, None, domain if domain is not None else DEFAULT_DOMAIN
    if callable(weight):
        name = getattr(weight, "__name__", type(weight).__name__)
        return "callable", f"callable:{name}", weight, domain if domain is not None else DEFAULT_DOMAIN
    s = np.asarray(weight)
    if s.ndim != 1 or s.size < 2 or not np.issubdtype(s.dtype, np.number) or np.iscomplexobj(s):
        raise FewBitError(f"weight samples must be a 1-D real array with at least 2 values; got "
                          f"{s.dtype} array of shape {s.shape}")
    s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise FewBitError(f"weight samples contain {int(np.sum(~np.isfinite(s)))} non-finite values; "
                          f"drop them first")
    if domain is None:
        lo, hi = np.quantile(s, SAMPLE_QUANTILES)
        domain = (float(lo), float(hi))
    digest = hashlib.sha256(np.ascontiguousarray(s).tobytes()).hexdigest()[:16]
    return "samples", f"samples(n={s.size}, sha256={digest})", s, domain


def discretise(f, domain=None, weight=DEFAULT_WEIGHT, grid=DEFAULT_GRID, **params) -> Discretisation:
    """Grid, per-cell integrals and prefix integrals for `solve` (see the module docstring)."""
    fprime, _, _ = _resolve_f(f, params)
    kind, _, wobj, domain = _resolve_weight(weight, domain)
    return _discretise(fprime, kind, wobj, _check_domain(domain), _check_grid(grid))


def _check_domain(domain):
    try:
        L, R = (float(v) for v in domain)
    except (TypeError, ValueError):
        raise FewBitError(f"domain must be a pair (L, R) of numbers; got {domain!r}") from None
    if not (math.isfinite(L) and math.isfinite(R) and L < R):
        raise FewBitError(f"domain must be finite with L < R; got ({L!r}, {R!r})")
    return L, R


# The solver holds ~30 float64 per cell (the quadrature nodes and the prefix integrals) plus a
# (2^bits + 1) x (N + 1) int32 argmin table: at 2^16 cells and 8 bits that is ~70 MB, and the exact DP's
# worst case is O(2^bits N^2). Borders land on the grid, so beyond a few thousand cells per level a finer
# grid moves them by less than the table's own quantisation error.
MAX_GRID = 1 << 16


def _check_grid(grid):
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 1:
        raise FewBitError(f"grid must be a positive integer number of cells; got {grid!r}")
    if grid > MAX_GRID:
        raise FewBitError(f"grid={grid} cells is more than the solver allows ({MAX_GRID} = 2**16, 16x the "
                          f"default {DEFAULT_GRID}): memory grows with the grid (a (2^bits+1) x (grid+1) int32 "
                          "table) and time up to bits x grid^2; use grid <= 65536")
    return int(grid)


def _discretise(fprime, kind, wobj, domain, N):
    L, R = domain
    x = np.linspace(L, R, N + 1)
    h = np.diff(x)                                        # all ≈ (R-L)/N; exact cell lengths
    nodes = (0.5 * (x[:-1] + x[1:]))[:, None] + (0.5 * h)[:, None] * _GL_T[None, :]   # (N, 3)
    qw = (0.5 * h)[:, None] * _GL_W[None, :]                                           # quadrature weights
    d = np.asarray(fprime(nodes), dtype=np.float64)
    if d.shape != nodes.shape:
        raise FewBitError(f"the derivative returned shape {d.shape} for input shape {nodes.shape}; it must "
                          f"be elementwise")
    if not np.all(np.isfinite(d)):
        bad = nodes[~np.isfinite(d)][0]
        raise FewBitError(f"the derivative is not finite at x = {bad!r} inside the domain {domain}")
    if kind == "uniform":
        w = np.ones_like(nodes)
    elif kind == "gaussian":
        w = _gaussian(nodes)
    elif kind == "callable":
        w = np.asarray(wobj(nodes), dtype=np.float64)
        if w.shape != nodes.shape:
            w = np.broadcast_to(w, nodes.shape) if w.ndim == 0 else w
        if w.shape != nodes.shape or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise FewBitError("the weight callable must return finite, non-negative values, elementwise "
                              f"(got shape {w.shape} for input shape {nodes.shape})")
    else:  # samples: histogram density, constant on each cell
        counts, _ = np.histogram(wobj, bins=x)
        density = counts / (wobj.size * h)
        w = np.repeat(density[:, None], 3, axis=1)
    if not np.any(w > 0):
        raise FewBitError(f"the weight is zero everywhere on the domain {domain}; widen the domain or "
                          f"check the weight")
    Wc = np.sum(qw * w, axis=1)
    Fc = np.sum(qw * w * d, axis=1)
    F2c = np.sum(qw * w * d * d, axis=1)
    if kind == "samples":
        Wc = counts / wobj.size           # exact: the fraction of samples in each cell
    Uc = np.sum(qw * d, axis=1)
    return Discretisation(x, Wc, Fc, F2c, Uc)


def _check_bits(bits, N):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
        raise FewBitError(f"bits must be an integer in {MIN_BITS}..{MAX_BITS} (2 to {2 ** MAX_BITS} "
                          f"levels); got {bits!r}")
    k = 2 ** int(bits)
    if N < k:
        raise FewBitError(f"a {bits}-bit table has {k} intervals but the grid has only {N} cells; use "
                          f"grid >= {k} (the default is {DEFAULT_GRID})")
    return int(bits), k


def solve(f, bits, domain=None, weight=DEFAULT_WEIGHT, grid=DEFAULT_GRID, method="auto", **params) -> Table:
    """The optimal b-bit table for f' on the grid.

    f       activation name (see `activations.names()`) or a callable derivative f'(x, **params)
    bits    1..8 (k = 2^bits intervals)
    domain  (L, R); default DEFAULT_DOMAIN = (-10, 10), or the sample quantile range for sample weights
    weight  "uniform" | "gaussian" | callable w(x) | 1-D array of samples (module docstring)
    grid    N cells (N+1 grid points)
    method  "auto" (divide and conquer when provably exact, i.e. monotone cell means; the exact scan
            otherwise), "exact", "dc" (fast; exact only for monotone f'), "reference" (plain NumPy O(k N²))
    params  the activation's parameters (alpha=..., beta=...)
    """
    if method not in METHODS:
        raise FewBitError(f"method must be one of {METHODS}; got {method!r}")
    fprime, name, p = _resolve_f(f, params)
    kind, wdesc, wobj, domain = _resolve_weight(weight, domain)
    domain = _check_domain(domain)
    N = _check_grid(grid)
    bits, k = _check_bits(bits, N)
    disc = _discretise(fprime, kind, wobj, domain, N)
    if method == "auto":
        method = "dc" if disc.cell_means_monotone() else "exact"
    run = {"exact": dp_exact, "dc": dp_dc, "reference": dp_reference}[method]
    _, cuts = run(disc.W, disc.F, disc.F2, k)
    levels, err = disc.levels_and_error(cuts)
    return Table(disc.x[cuts[1:-1]], levels, bits=bits, name=name, params=p, domain=domain, weight=wdesc,
                 grid=N, error=err, method=method)


def solve_reference(f, bits, domain=None, weight=DEFAULT_WEIGHT, grid=DEFAULT_GRID, **params) -> Table:
    """`solve` with the plain O(k N²) NumPy recurrence (O(N) memory); slow, for checking."""
    return solve(f, bits, domain=domain, weight=weight, grid=grid, method="reference", **params)


def weighted_error(table: Table, f, domain=None, weight=DEFAULT_WEIGHT, grid=DEFAULT_GRID * 16, **params):
    """∫_L^R (f' - q)² w dx for any table, computed independently of the DP: Gauss–Legendre on a fine grid
    to which the table's borders are added (q is constant on every cell)."""
    fprime, _, _ = _resolve_f(f, params)
    kind, _, wobj, domain = _resolve_weight(weight, domain)
    L, R = _check_domain(domain)
    inner = table.borders[(table.borders > L) & (table.borders < R)]
    x = np.unique(np.concatenate([np.linspace(L, R, _check_grid(grid) + 1), inner]))
    h = np.diff(x)
    nodes = (0.5 * (x[:-1] + x[1:]))[:, None] + (0.5 * h)[:, None] * _GL_T[None, :]
    qw = (0.5 * h)[:, None] * _GL_W[None, :]
    if kind == "uniform":
        w = np.ones_like(nodes)
    elif kind == "gaussian":
        w = _gaussian(nodes)
    elif kind == "callable":
        w = np.broadcast_to(np.asarray(wobj(nodes), dtype=np.float64), nodes.shape)
    else:
        raise FewBitError("weighted_error does not take sample weights; pass a callable density instead")
    q = table.levels[np.searchsorted(table.borders, nodes, side="left")]
    return float(np.sum(qw * w * (fprime(nodes) - q) ** 2))


def time_solve(bits=4, grid=DEFAULT_GRID, repeat=3, **kw):
    """Best-of-`repeat` wall time (s) of `solve("gelu", bits, grid=grid)` after one warm-up (compile)."""
    solve("gelu", bits, grid=grid, **kw)
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        solve("gelu", bits, grid=grid, **kw)
        best = min(best, time.perf_counter() - t0)
    return best
