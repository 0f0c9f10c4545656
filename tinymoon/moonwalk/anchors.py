"""Error control for the inverse-forward sweep: where phase 1 records true cotangents (anchors), what the
sweep expects its error to be, and what it learns from the error it measures.

Why it is needed. The sweep computes h_i = vijp_i(h_{i-1}): it inverts the vjp h ↦ h J_i, a contraction. A
relative error δ in h_{i-1} becomes up to κ_i·δ in h_i (κ_i = ‖J_i‖·‖J_i⁺‖), so rounding error grows
geometrically along the sweep (../docs/moonwalk.md measures 30-80x per layer for a leaky-ReLU MLP with
PyTorch's default initialisation). An anchor — the true h_i from phase 1, one activation — restarts it.

The plan. Each unit gets a growth estimate g_i (the log of its amplification):
  - measured, when this unit was swept before: the growth its segment showed (`learn`, below);
  - otherwise the bound log κ_i from its primitives' `condition` rules (a primitive without one counts as
    UNKNOWN), capped at the budget, so that an unmeasured unit is swept — and measured — on its own rather
    than anchored forever on a pessimistic bound.
A segment of swept units starts from an exact cotangent (error ~u, the unit roundoff of the cotangents'
dtype) and may grow it to tol / MARGIN: Σ g_i <= budget = log(tol / (MARGIN·u)). Greedily, units are swept
while the sum fits, and the unit that would overflow it is anchored.

The check (phase2.py). Every segment ends where an exact cotangent is known anyway — at an anchored unit
(whose local vjp of the anchor gives its exact input cotangent) or at the loss layer — so the sweep
*measures* its relative error E there, on every call. E <= tol: accepted. Otherwise the segment is recomputed
by backprop from a checkpoint of its input (exact; reported as a repair) — or, with anchors=None, an error.

Learning. A measured E tells how much the segment grew the error: G = log(E/u). It is shared among the
segment's units in proportion to their bounds, and never below budget/2 (so the next plan lengthens a
segment at most about twofold: a segment measured at the rounding floor says little about a longer one).
The measurements live with the unit objects (a weak dictionary): `forget(model)` drops them.
"""
from __future__ import annotations

import math
import weakref

import numpy as np

from ..autodiff.units import tape_norm, unit_condition

__all__ = ["default_tol", "unit_bound", "Plan", "plan", "learn", "forget", "MARGIN", "UNKNOWN"]

# Default tolerance on the relative error of the swept cotangents, by the model's dtype: float64 matches
# float64 backprop to ~1e-10 (gradients to ~1e-9); float32 stays within a small multiple of float32
# backprop's own error against float64 (1e-6 to 1e-4 for deep nets).
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
MARGIN = 2.0          # plan for tol / MARGIN, so that the measured check rarely has to repair
UNKNOWN = 2.0         # the growth assumed for a primitive without a condition rule, until it is measured


def default_tol(dtype):
    dtype = np.dtype(dtype)
    if dtype not in TOLERANCE:
        raise TypeError(f"moonwalk: no default tolerance for dtype {dtype}; use float32 or float64")
    return TOLERANCE[dtype]


def unit_bound(unit, kind, tape):
    """log κ for one unit from its phase-1 tape (0 for a unit with no tape)."""
    if not tape.nodes:
        return 0.0
    if kind == "block":
        grow = getattr(unit, "vijp_growth", None)
        k = grow(tape_norm(tape)) if grow is not None else unit_condition(tape, UNKNOWN)
    else:
        k = unit_condition(tape, UNKNOWN)
    return math.log(k) if k > 1 else 0.0


_measured = weakref.WeakKeyDictionary()          # unit -> log growth measured in its last swept segment


class Plan:
    """anchored: the units whose output cotangent phase 1 records (their vijp never runs); bounds[i]: log κ_i;
    predicted[i]: the growth the plan assumed; budget: log(tol / (MARGIN u)); u: the cotangents' roundoff."""

    def __init__(self, anchored, bounds, predicted, budget, u, tol):
        self.anchored, self.bounds, self.predicted = anchored, bounds, predicted
        self.budget, self.u, self.tol = budget, u, tol


def plan(units, kinds, tapes, anchors, cot_dtype, tol, start=0, max_held=None, trainable=None):
    """The Plan for one call. anchors: "auto", None (only the forced ones: fork units and the stem) or K
    (every K-th unit). Units before `start` (the stem, run without a tape) are not planned. max_held (auto
    only): at most this many units with parameters per segment — a segment's gradients are held until its
    check passes, so moonwalk.step caps them to keep the peak below all the gradients; trainable[i] says
    whether unit i has parameters that require grad)."""
    if not (anchors is None or anchors == "auto" or
            (isinstance(anchors, (int, np.integer)) and not isinstance(anchors, bool) and anchors >= 1)):
        raise ValueError(f"moonwalk: anchors must be 'auto', None or a positive int K, got {anchors!r}")
    L = len(units)
    u = float(np.finfo(cot_dtype).eps)
    budget = math.log(tol / (MARGIN * u))
    bounds = [unit_bound(units[i], kinds[i], tapes[i]) if i >= start else 0.0 for i in range(L)]
    predicted = []
    for i, unit in enumerate(units):
        m = _measured.get(unit) if anchors == "auto" else None
        predicted.append(m if m is not None else min(bounds[i], budget))
    forced = {i for i in range(start, L - 1) if kinds[i] == "fork"}
    if start:
        forced.add(start - 1)                                      # the stem's output cotangent
    if anchors is None:
        chosen = forced
    elif anchors == "auto":
        # Greedy: sweep while the segment's growth fits the budget, anchor the unit that would overflow it.
        # An unmeasured unit whose bound alone fills the budget is swept on its own instead (its neighbour is
        # anchored), so that it gets measured: the bound may be far from what it really does.
        alone = {i for i in range(start, L - 1)
                 if _measured.get(units[i]) is None and bounds[i] >= budget and i not in forced}
        chosen, acc, last, held = set(forced), 0.0, None, 0
        has_params = trainable or [False] * L
        for i in range(start, L - 1):
            if i in forced:
                acc, last, held = 0.0, None, 0
            elif max_held is not None and has_params[i] and held >= max_held:
                chosen.add(i)                                      # the segment holds enough gradients
                acc, last, held = 0.0, None, 0
            elif acc + predicted[i] > budget and acc > 0:
                if i in alone and last is not None and last not in alone:
                    chosen.add(last)                               # anchor its predecessor; sweep it alone
                    acc, last, held = predicted[i], i, int(has_params[i])
                else:
                    chosen.add(i)                                  # sweeping unit i would overflow the budget
                    acc, last, held = 0.0, None, 0
            else:
                acc, last, held = acc + predicted[i], i, held + int(has_params[i])
    else:
        k = int(anchors)
        chosen = forced | {i for i in range(start, L - 1) if (i + 1) % k == 0}
    return Plan(chosen, bounds, predicted, budget, u, tol)


def shares(indices, bounds):
    """How a segment's measured growth divides among its units: in proportion to their bounds (uniformly
    when none has one)."""
    w = [bounds[i] for i in indices]
    total = sum(w)
    return [x / total for x in w] if total > 0 else [1.0 / len(indices)] * len(indices)


def learn(units, indices, bounds, error, u, budget):
    """Record what a swept segment (unit indices `indices`) measured: relative error `error` at its end."""
    if not indices:
        return
    grew = math.log(max(error, u) / u) if np.isfinite(error) else 4 * budget
    grew = max(grew, budget / 2)
    for i, s in zip(indices, shares(indices, bounds)):
        try:
            _measured[units[i]] = grew * s
        except TypeError:                                          # not weak-referenceable: nothing learned
            pass


def forget(model=None):
    """Drop the measured growth of every unit of `model` (of every model when None)."""
    if model is None:
        _measured.clear()
        return
    for m in model.modules():
        _measured.pop(m, None)
