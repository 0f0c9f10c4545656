"""The dynamic programme behind the tables: optimal partition of a grid into k intervals.

Input: prefix integrals at the grid points x_0 < x_1 < ... < x_N

    W[j]  = ∫_{x_0}^{x_j} w,     F[j] = ∫_{x_0}^{x_j} f' w,     F2[j] = ∫_{x_0}^{x_j} f'² w

The best constant on [x_i, x_j] is the weighted mean y = (F[j]-F[i]) / (W[j]-W[i]), and the error left is

    C(i, j) = ∫_{x_i}^{x_j} (f' - y)² w = (F2[j]-F2[i]) - (F[j]-F[i])² / (W[j]-W[i])        (i < j)

(C = 0 where W[j] = W[i]: no weight, no error, whatever the level). With D_t[j] the least error of covering
[x_0, x_j] by t non-empty intervals,

    D_0[0] = 0,   D_t[j] = min_{i<j} D_{t-1}[i] + C(i, j),   answer D_k[N],

and the cut points come back by remembering each argmin (the leftmost one on ties). Three solvers, all
giving the same optimum (up to rounding), none ever building the N×N matrix of C:

* `dp_reference` — the plain O(k N²) recurrence, in NumPy, one row of candidates at a time.
* `dp_exact`     — the same recurrence compiled with Numba, plus an exact early exit: for fixed j, C(i, j)
  only grows as i decreases (dropping mass never increases a least-squares error; needs each grid cell to be
  a non-negative measure: W ≥ 0 and (∫f'w)² ≤ ∫w ∫f'²w, true for any quadrature with positive weights), and
  D ≥ 0, so once C(i, j) exceeds the best value found the scan over i stops. Worst case O(k N²).
* `dp_dc`        — divide and conquer: if the leftmost argmin opt_t(j) is non-decreasing in j, D_t at the
  middle j splits the candidate range of the two halves, O(k N log N). That monotonicity follows from the
  quadrangle inequality C(a,c) + C(b,d) <= C(a,d) + C(b,c) (a <= b <= c <= d), which holds when the cell means
  of f' are monotone along the grid (it is then 1-D weighted k-means on sorted points). It does NOT hold in
  general: three blocks with f' = +1, -1, +1 violate it, and so do gelu', tanh', silu' ... (non-monotone
  derivatives). `dp_dc` is therefore exact only for monotone f' (softplus, logsigmoid, elu with α <= 1, celu);
  `solver.solve(method="auto")` checks the cell means and uses it only then.

Memory: O(N) for the rows D_{t-1}, D_t plus the (k+1)×(N+1) int32 argmin table (O(N) for a fixed bit
width: 8 bits on a 4097-point grid is 4 MB).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["dp_reference", "dp_exact", "dp_dc", "backtrack", "interval_cost"]


def interval_cost(W, F, F2, i, j):
    """C(i, j) for arrays of start indices i (or a scalar) and an end index j, in NumPy."""
    dw = W[j] - W[i]
    df = F[j] - F[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (F2[j] - F2[i]) - df * df / dw
    # No weight: zero error. Rounding can make a true 0 slightly negative: clip.
    return np.where(dw > 0.0, np.maximum(c, 0.0), 0.0)


def _check(W, F, F2, k):
    W, F, F2 = (np.ascontiguousarray(a, dtype=np.float64) for a in (W, F, F2))
    if not (W.ndim == F.ndim == F2.ndim == 1 and W.size == F.size == F2.size):
        raise ValueError("W, F, F2 must be 1-D arrays of the same length N+1")
    N = W.size - 1
    if not 1 <= k <= N:
        raise ValueError(f"cannot cut a grid of {N} cells into {k} non-empty intervals: need 1 <= k <= N")
    return W, F, F2, N


def backtrack(arg, N, k):
    """Cut indices p_0 = 0 < p_1 < ... < p_k = N from the argmin table arg[t, j]."""
    cuts = [N]
    for t in range(k, 0, -1):
        cuts.append(int(arg[t, cuts[-1]]))
    cuts.reverse()
    return np.array(cuts, dtype=np.int64)


def dp_reference(W, F, F2, k):
    """Plain O(k N²) recurrence in NumPy (O(N) memory + the argmin table). Returns (D_k[N], cuts)."""
    W, F, F2, N = _check(W, F, F2, k)
    prev = np.full(N + 1, np.inf)
    prev[0] = 0.0
    arg = np.zeros((k + 1, N + 1), dtype=np.int32)
    for t in range(1, k + 1):
        cur = np.full(N + 1, np.inf)
        # interval t ends at j; t-1 intervals before need i >= t-1, k-t intervals after need j <= N-(k-t)
        for j in range(t, N - (k - t) + 1):
            i = np.arange(t - 1, j)
            v = prev[i] + interval_cost(W, F, F2, i, j)
            m = int(np.argmin(v))                  # leftmost minimum
            cur[j], arg[t, j] = v[m], t - 1 + m
        prev = cur
    return float(prev[N]), backtrack(arg, N, k)


@njit(cache=True)
def _cost(W, F, F2, i, j):
    # Same formula, same operation order as interval_cost, so the floats agree.
    dw = W[j] - W[i]
    if not dw > 0.0:
        return 0.0
    df = F[j] - F[i]
    c = (F2[j] - F2[i]) - df * df / dw
    return c if c > 0.0 else 0.0


@njit(cache=True)
def _dp_exact_kernel(W, F, F2, k):
    N = W.shape[0] - 1
    prev = np.full(N + 1, np.inf)
    prev[0] = 0.0
    arg = np.zeros((k + 1, N + 1), dtype=np.int32)
    for t in range(1, k + 1):
        cur = np.full(N + 1, np.inf)
        for j in range(t, N - (k - t) + 1):
            best = np.inf
            bi = t - 1
            for i in range(j - 1, t - 2, -1):      # i = j-1, j-2, ..., t-1: C(i, j) grows as i falls
                c = _cost(W, F, F2, i, j)
                if c > best:                       # D >= 0, so no smaller i can beat `best`
                    break
                v = prev[i] + c
                if v <= best:                      # '<=' while going down = leftmost minimum, as argmin
                    best = v
                    bi = i
            cur[j] = best
            arg[t, j] = bi
        prev = cur
    return prev[N], arg


def dp_exact(W, F, F2, k):
    """Exact O(k N²)-worst-case recurrence, compiled, with the early exit. Returns (D_k[N], cuts)."""
    W, F, F2, N = _check(W, F, F2, k)
    best, arg = _dp_exact_kernel(W, F, F2, k)
    return float(best), backtrack(arg, N, k)


@njit(cache=True)
def _dp_dc_kernel(W, F, F2, k):
    N = W.shape[0] - 1
    prev = np.full(N + 1, np.inf)
    prev[0] = 0.0
    arg = np.zeros((k + 1, N + 1), dtype=np.int32)
    stack = np.empty((256, 4), dtype=np.int64)   # depth <= 2 log2(N) + 2
    for t in range(1, k + 1):
        cur = np.full(N + 1, np.inf)
        jhi = N - (k - t)
        # task (lo, hi, olo, ohi): fill D_t[lo..hi] knowing opt_t(j) is in [olo, ohi] for those j
        top = 0
        stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = t, jhi, t - 1, jhi - 1
        top = 1
        while top > 0:
            top -= 1
            lo, hi, olo, ohi = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
            if lo > hi:
                continue
            mid = (lo + hi) // 2
            best = np.inf
            bi = olo
            for i in range(olo, min(mid - 1, ohi) + 1):
                v = prev[i] + _cost(W, F, F2, i, mid)
                if v < best:                       # strict: leftmost minimum
                    best = v
                    bi = i
            cur[mid] = best
            arg[t, mid] = bi
            # opt(j) <= opt(mid) for j < mid and >= opt(mid) for j > mid (quadrangle inequality)
            stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = lo, mid - 1, olo, bi
            top += 1
            stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = mid + 1, hi, bi, ohi
            top += 1
        prev = cur
    return prev[N], arg


def dp_dc(W, F, F2, k):
    """Divide-and-conquer O(k N log N); exact when C satisfies the quadrangle inequality (see module doc)."""
    W, F, F2, N = _check(W, F, F2, k)
    best, arg = _dp_dc_kernel(W, F, F2, k)
    return float(best), backtrack(arg, N, k)
