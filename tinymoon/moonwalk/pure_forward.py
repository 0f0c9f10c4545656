"""Pure-forward Moonwalk and the naive forward-mode baseline.

Pure-forward Moonwalk gets h_0 = ∂ℓ/∂x_0 without a reverse pass through the network: one jvp per input
coordinate j (n_0 of them), the batch sharing the tangent e_j, gives J_b e_j for every sample b at once;
then h_0[b, j] = ⟨h_L[b], J_b e_j⟩ with h_L = ∂ℓ/∂x_L from a local vjp of the loss alone. `chunk` coordinates
share one pass by stacking `chunk` copies of the batch. Then the phase-2 sweep, without fragments or anchors:
every unit but the last must be submersive (a ReLU raises NotInvertibleError), and its error is measured at
the loss layer only (past the tolerance: AccuracyError, as with anchors=None).

Sharing e_j across the batch is only right when no unit mixes samples (a batch permutation, a train-mode
BatchNorm): `check_sample_independence` probes that with one jvp (a tangent on sample 0 must not reach any
other sample) and names the first unit that breaks it.

Naive forward (`naive_forward`): one jvp of the loss per parameter coordinate — exact, O(P · L) = O(L²) in
depth. A baseline for tiny networks only.
"""
from __future__ import annotations

import numpy as np

from ..autodiff.reverse import accumulate_grad
from ..autodiff.state import no_grad
from ..errors import NotInvertibleError
from ..memory import Stash
from ..tensor import Tensor, as_tensor
from .anchors import default_tol, plan
from .phase1 import Record, check_cotangent_dtype, loss_cotangent
from .units import flatten_units, unit_kind

__all__ = ["forward_input_cotangent", "forward_record", "naive_forward", "check_sample_independence"]


def check_sample_independence(units, x0):
    """Raise NotInvertibleError naming the first unit through which a tangent on sample 0 reaches another
    sample (one jvp of the network; nothing to check for a batch of one)."""
    if x0.shape[0] < 2:
        return
    xp = x0.xp
    t = xp.zeros(x0.shape, dtype=x0.dtype)
    t[0] = xp.asarray(np.random.default_rng(0).standard_normal(x0.shape[1:]), dtype=x0.dtype)
    x = Tensor._wrap(x0.data)
    x.tangent = t
    with no_grad():
        for i, unit in enumerate(units):
            x = unit(x)
            if x.tangent is not None and bool((x.tangent[1:] != 0).any()):
                raise NotInvertibleError(
                    f"moonwalk (mode='forward'): unit {i} ({type(unit).__name__}) mixes samples — a tangent on "
                    "sample 0 changed other samples' outputs — so the batch cannot share the tangents e_j and "
                    "h_0 would be wrong. Use mode='mixed' (the default), or put the unit in eval mode.")


def forward_input_cotangent(model, loss_fn, x, y, chunk=None):
    """(loss, h_0) by forward mode: ceil(n_0 / chunk) jvps of the network, each on `chunk` stacked copies
    of the batch (default: as many as keep the stacked batch near 1024 rows)."""
    x0 = as_tensor(x).detach()
    xp = x0.xp
    B = x0.shape[0]
    n0 = int(np.prod(x0.shape[1:]))
    check_sample_independence(flatten_units(model), x0)
    with no_grad():
        x_last = model(x0).data
    loss, h_last = loss_cotangent(loss_fn, x_last, y)
    k = max(1, min(n0, chunk if chunk is not None else max(1, 1024 // max(B, 1))))
    flat = x0.data.reshape(B, n0)
    stacked = xp.concatenate([flat] * k, axis=0)             # copy t of the batch carries tangent e_{j0+t}
    h0 = xp.empty((B, n0), dtype=x0.dtype)
    rows = xp.arange(k * B)
    for j0 in range(0, n0, k):
        kk = min(k, n0 - j0)
        xin = Tensor._wrap(stacked[:kk * B].reshape((kk * B,) + x0.shape[1:]))
        t = xp.zeros((kk * B, n0), dtype=x0.dtype)
        t[rows[:kk * B], j0 + rows[:kk * B] // B] = 1                # row t*B + b: tangent e_{j0 + t}
        xin.tangent = t.reshape(xin.shape)
        with no_grad():
            out = model(xin)
        od = out.tangent.reshape((kk, B) + x_last.shape[1:])       # J_b e_j for every copy and sample
        h0[:, j0:j0 + kk] = (od * h_last[None]).reshape(kk, B, -1).sum(-1).T   # ⟨h_L[b], J_b e_j⟩
    return loss, h0.reshape(x0.shape)


def forward_record(model, loss_fn, x, y, chunk=None, tol=None, cotangent_dtype=None):
    """A Record for the sweep with h_0 from forward mode (no fragments, no anchors, no repair)."""
    from ..autodiff.units import EMPTY
    loss, h0 = forward_input_cotangent(model, loss_fn, x, y, chunk=chunk)
    units = flatten_units(model)
    tapes = [EMPTY] * len(units)
    kinds = [unit_kind(u, EMPTY) for u in units]
    cot = check_cotangent_dtype(cotangent_dtype, h0.dtype)
    tol = default_tol(h0.dtype) if tol is None else float(tol)
    the_plan = plan(units, kinds, tapes, None, cot, tol)
    return Record(units, kinds, loss, h0.astype(cot, copy=False), Stash(), set(), the_plan, h0.dtype, cot, tol,
                  repair=False)


def naive_forward(model, loss_fn, x, y):
    """Exact gradient by forward mode only: one jvp of the loss per parameter coordinate (accumulated into
    .grad like backward). Quadratic in depth: a baseline for small networks only. Returns the loss."""
    x0 = as_tensor(x).detach()
    params = [p for p in model.parameters() if p.requires_grad]
    loss = None
    with no_grad():
        for p in params:
            g = p.xp.zeros_like(p.data)
            flat_t = p.xp.zeros(p.data.size, dtype=p.dtype)
            for k in range(p.data.size):
                flat_t[k] = 1
                p.tangent = flat_t.reshape(p.shape)
                try:
                    out = loss_fn(model(x0), y)
                finally:
                    p.tangent = None
                flat_t[k] = 0
                g.reshape(-1)[k] = out.tangent.reshape(()) if out.tangent is not None else 0
                loss = out
            accumulate_grad(p, g)
        if loss is None:
            loss = loss_fn(model(x0), y)
    return loss.detach()
