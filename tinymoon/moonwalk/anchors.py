"""Cotangent anchors: where phase 1 records the true h_i so that phase 2 can restart from it.

The sweep computes h_i = vijp_i(h_{i-1}), which inverts the vjp h_i ↦ h_i J_i. A relative error δ in
h_{i-1} becomes at most cond(J_i)·δ in h_i (cond = σ_max/σ_min over the directions the vijp solves for), so
after k layers rounding error can grow like eps · Π cond(J_i): geometrically with depth. An anchor at
boundary i (the output of unit i) stores the true h_i from the reverse pass — one activation-sized array — and
phase 2 takes it instead of the vijp, so the product restarts at 1.

anchors=None    no anchors (only the forced ones: units without a vijp, see layers.py "fork");
anchors=K       every K units (outputs of units K, 2K, ... counted from 1);
anchors="auto"  greedily, where the running product of per-unit condition estimates since the last anchor
                would exceed tol / eps(dtype) (tol = anchor_tol, default 1e-4): the estimated relative error
                of every h_i then stays below tol. The estimate of one unit is the product of its
                primitives' bounds:
                  - diagonal maps (leaky ReLU, tanh, ...): max|σ'| / min|σ'| over the coordinates the vijp
                    divides by (leaky ReLU with a negative unit: 1/slope; ReLU: 1, its erased units are
                    restored exactly from the fragment);
                  - linear: σ_max(W) / σ_min(W) (eigenvalues of the smaller Gram matrix of W, only in "auto" mode,
                    refreshed every REFRESH = 16 steps per weight array);
                  - a primitive may define `condition(ctx) -> (norm, inverse_norm)`; any other primitive
                    counts as 1 (reshape, pooling, conv: unknown — anchor by K if in doubt);
                  - a RevBlock: (1 + N)² with N the product of its primitives' norms (a bound on
                    ‖J_F‖, ‖J_G‖), since the inverse of [[I, J_F],[0, I]]-type blocks costs 1 + ‖J‖ each.
Bounds, not measurements: "auto" tends to anchor more often than the measured error needs (see
docs/moonwalk.md for the measured error against memory).
"""
from __future__ import annotations

import weakref

import numpy as np

from ..backend import get_array_module
from ..ops.activations import LeakyReLU, ReLU
from ..ops.elementwise import Diagonal

__all__ = ["node_bounds", "unit_condition", "plan_anchors"]


def _host_float(v):
    return float(v.get()) if hasattr(v, "get") else float(v)


# The condition number of a weight changes slowly while training (optimisers update it in place), so "auto"
# recomputes it every REFRESH calls per weight array; the cache holds a weak reference to the array.
REFRESH = 16
_cache = {}


def _linear_bounds(w):
    """(σ_max(W), 1/σ_min(W)) from the eigenvalues of the smaller Gram matrix of W."""
    hit = _cache.get(id(w))
    if hit is not None and hit[0]() is w and hit[1] < REFRESH:
        hit[1] += 1
        return hit[2]
    a = np.asarray(w.get() if hasattr(w, "get") else w, dtype=np.float64)
    gram = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
    lam = np.linalg.eigvalsh(gram)                                    # σ² ascending
    smax, smin = float(np.sqrt(max(lam[-1], 0.0))), float(np.sqrt(max(lam[0], 0.0)))
    bounds = (smax, np.inf if smin == 0 else 1.0 / smin)
    try:
        _cache[id(w)] = [weakref.ref(w), 1, bounds]
    except TypeError:                                                # not weak-referenceable: no cache
        pass
    if len(_cache) > 4096:
        for k in [k for k, v in _cache.items() if v[0]() is None]:
            del _cache[k]
    return bounds


def node_bounds(node):
    """(‖J‖, ‖J⁺‖) estimates for one tape node along its data path (ctx.wrt)."""
    prim, ctx = node.prim, node.ctx
    hook = getattr(prim, "condition", None)
    if hook is not None:
        return hook(ctx)
    if prim is ReLU or (isinstance(prim, type) and issubclass(prim, ReLU)):
        return 1.0, 1.0                      # kept units: slope 1; erased units: restored from the fragment
    if isinstance(prim, type) and issubclass(prim, LeakyReLU):
        s = abs(ctx.params["slope"])
        m = ctx.mask.unpack()
        has_neg = not bool(m.all())
        has_pos = bool(m.any())
        norm = max(1.0 if has_pos else 0.0, s if has_neg else 0.0)
        inv = max(1.0 if has_pos else 0.0, 1.0 / s if (has_neg and s > 0) else 0.0)
        return norm, inv
    if isinstance(prim, type) and issubclass(prim, Diagonal):
        d = prim.derivative(ctx, ctx.wrt)
        xp = get_array_module(d)
        a = xp.abs(d)
        kept = a[~prim._erased(ctx, d)]
        if kept.size == 0:
            return _host_float(a.max()) if a.size else 1.0, 1.0
        return _host_float(kept.max()), 1.0 / _host_float(kept.min())
    if prim.name == "linear" and getattr(ctx, "weight", None) is not None:
        return _linear_bounds(ctx.weight)
    return 1.0, 1.0


def unit_condition(tape):
    """The condition estimate of one phase-1 unit (see the module doc)."""
    if not tape.nodes:
        return 1.0
    if tape.kind == "revblock":
        n = 1.0
        for node in tape.nodes:
            n *= node_bounds(node)[0]
        return (1.0 + n) ** 2
    k = 1.0
    for node in tape.nodes:
        a, b = node_bounds(node)
        k *= a * b
    return k


def plan_anchors(anchors, tapes, dtype, anchor_tol=1e-4):
    """The set of unit indices i (0-based, i < L-1) whose output cotangent phase 1 records, and the list
    of per-unit condition estimates (None unless anchors == "auto")."""
    L = len(tapes)
    forced = {i for i, t in enumerate(tapes[:-1]) if t.kind == "fork"}
    if anchors is None:
        return forced, None
    if isinstance(anchors, str):
        if anchors != "auto":
            raise ValueError(f"moonwalk: anchors must be None, a positive int K or 'auto', got {anchors!r}")
        eps = float(np.finfo(dtype).eps)
        limit = anchor_tol / eps
        kappas = [unit_condition(t) for t in tapes]
        chosen, prod = set(forced), 1.0
        for i in range(L - 1):
            prod *= kappas[i]
            if i in forced or prod > limit:
                chosen.add(i)
                prod = 1.0
        return chosen, kappas
    if isinstance(anchors, bool) or not isinstance(anchors, (int, np.integer)) or anchors < 1:
        raise ValueError(f"moonwalk: anchors must be None, a positive int K or 'auto', got {anchors!r}")
    k = int(anchors)
    return forced | {i for i in range(L - 1) if (i + 1) % k == 0}, None
