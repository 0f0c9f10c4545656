"""Pure-forward Moonwalk and the naive forward-mode baseline.

Pure-forward Moonwalk gets h_0 = ∂ℓ/∂x_0 without a reverse pass through the network: one jvp per input
coordinate j (n_0 of them), the batch sharing the tangent e_j because samples are independent, gives
J_b e_j for every sample b at once; then h_0[b, j] = ⟨h_L[b], J_b e_j⟩ with h_L = ∂ℓ/∂x_L from a local vjp of
the loss alone (no layer of the network is traversed in reverse). `chunk` coordinates share one pass by
stacking `chunk` copies of the batch. Then the same phase-2 sweep as mixed mode, without fragments: every
unit but the last must be submersive (a ReLU raises NotInvertibleError). Time O(n_0 · forward) + sweep:
linear in depth. Needs layers that treat samples independently (no train-mode BatchNorm).

Naive forward (`naive_forward`): one jvp of the loss per parameter coordinate — exact, O(P · L) = O(L²) in
depth. A baseline for tiny networks only.
"""
from __future__ import annotations

import numpy as np

from ..autodiff.state import no_grad
from ..tensor import Tensor, as_tensor
from .layers import Stash, accumulate, flatten_units
from .mixed import Phase1, _loss_cotangent

__all__ = ["forward_input_cotangent", "forward_record", "naive_forward"]


def forward_input_cotangent(model, loss_fn, x, y, chunk=None):
    """(loss, h_0) by forward mode: ceil(n_0 / chunk) jvps of the network, each on `chunk` stacked copies
    of the batch (default: as many as keep the stacked batch near 1024 rows)."""
    x0 = as_tensor(x).detach()
    xp = x0.xp
    B = x0.shape[0]
    n0 = int(np.prod(x0.shape[1:]))
    with no_grad():
        x_last = model(x0).data
    loss, h_last = _loss_cotangent(loss_fn, x_last, y)
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


def forward_record(model, loss_fn, x, y, chunk=None):
    """A phase-1 record for the sweep with h_0 from forward mode (no fragments, no anchors)."""
    from ..nn.reversible import RevBlock
    loss, h0 = forward_input_cotangent(model, loss_fn, x, y, chunk=chunk)
    units = flatten_units(model)
    kinds = ["revblock" if isinstance(u, RevBlock) else "chain" for u in units]
    return Phase1(units, kinds, loss, h0, Stash(), set(), None)


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
            accumulate(p, g)
        if loss is None:
            loss = loss_fn(model(x0), y)
    return loss.detach()
