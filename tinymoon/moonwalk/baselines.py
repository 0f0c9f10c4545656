"""Baselines in the same engine, with the same signature and the same .grad semantics as moonwalk.backward:

- `backprop`: loss_fn(model(x), y).backward() — keeps every residual the rules save (layer inputs too).
- `checkpointed_backward`: checkpointing every ⌈√L⌉ units — the forward pass keeps only each segment's input;
  the backward pass recomputes one segment at a time with a tape and backpropagates through it.
- `revbackprop`: RevBackprop for reversible networks — the forward pass stores nothing for units that have
  `inverse` (RevBlocks): the backward pass reconstructs each input from its output and backpropagates
  through the unit (a RevBlock's `inverse_vjp` does both in one pass; another invertible unit is inverted,
  then recomputed with a tape). Units without `inverse` (a stem, a head) keep their input.
Checkpoints and stored inputs are counted in tinymoon.memory (a Stash), like residuals.
"""
from __future__ import annotations

import math

from ..autodiff.reverse import vjp_into
from ..autodiff.state import enable_grad, no_grad
from ..memory import Stash
from ..tensor import Tensor, as_tensor
from .phase1 import loss_cotangent
from .units import flatten_units, unit_params

__all__ = ["backprop", "checkpointed_backward", "revbackprop"]


def backprop(model, loss_fn, x, y):
    """Plain reverse mode. Returns the loss (detached)."""
    with enable_grad():
        loss = loss_fn(model(as_tensor(x)), y)
    loss.backward()
    return loss.detach()


def _backprop_units(units, x_in, h_out, loss_fn=None, y=None, need_input=True):
    """Recompute units[...] from x_in with a tape and backpropagate h_out (or the loss, when loss_fn is
    given); accumulate θ̄ into .grad and return the input cotangent (None if not needed)."""
    leaf = Tensor._wrap(x_in, requires_grad=need_input)
    with enable_grad():
        out = leaf
        for u in units:
            out = u(out)
        if loss_fn is not None:
            out = loss_fn(out, y)
            h_out = out.xp.ones_like(out.data)
    params = []
    seen = set()
    for u in units:
        for p in unit_params(u):
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    if not out.requires_grad:
        return None
    got = vjp_into(out, h_out, [leaf] if need_input else [], params)
    return got[0] if need_input else None


def checkpointed_backward(model, loss_fn, x, y, every=None):
    """Checkpointing every `every` units (default ⌈√L⌉). Returns the loss."""
    units = flatten_units(model)
    L = len(units)
    k = every or max(1, math.ceil(math.sqrt(L)))
    starts = list(range(0, L, k))
    stash = Stash()
    xv = as_tensor(x).data
    with no_grad():
        cur = Tensor._wrap(xv)
        for s in starts:
            if s > 0:
                stash.put(s, cur.data)                  # the segment input (x_0 is the caller's)
            for u in units[s:s + k]:
                cur = u(cur)
        loss, _ = loss_cotangent(loss_fn, cur.data, y)
        del cur
    h = None
    for s in reversed(starts):
        seg_in = xv if s == 0 else stash.pop(s)
        last = s == starts[-1]
        h = _backprop_units(units[s:s + k], seg_in, h, loss_fn if last else None, y, need_input=s > 0)
    return loss


def revbackprop(model, loss_fn, x, y):
    """RevBackprop: reconstruct each reversible unit's input from its output (unit.inverse) in the backward
    pass; store nothing for it. Returns the loss."""
    units = flatten_units(model)
    L = len(units)
    stash = Stash()
    xv = as_tensor(x).data
    with no_grad():
        cur = Tensor._wrap(xv)
        for i, u in enumerate(units):
            if i > 0 and not callable(getattr(u, "inverse", None)):
                stash.put(i, cur.data)                  # not reversible: keep its input
            cur = u(cur)
    x_out = cur.data
    del cur
    h = None
    loss = None
    for i in range(L - 1, -1, -1):
        u = units[i]
        fused = getattr(u, "inverse_vjp", None)
        if 0 < i < L - 1 and i not in stash and fused is not None:
            x_out, h = fused(x_out, h)              # the block's own reconstruction + vjp (nn.RevBlock)
            continue
        if i == 0:
            x_in = xv
        elif i in stash:
            x_in = stash.pop(i)
        else:
            with no_grad():
                x_in = u.inverse(Tensor._wrap(x_out)).data   # reconstruct: x = f⁻¹(y), nothing stored
        if i == L - 1:
            leaf_out = Tensor._wrap(x_out)
            loss, _ = loss_cotangent(loss_fn, leaf_out.data, y)
            h = _backprop_units([u], x_in, None, loss_fn, y, need_input=i > 0)
        else:
            h = _backprop_units([u], x_in, h, need_input=i > 0)
        x_out = x_in
    if L == 0:
        loss, _ = loss_cotangent(loss_fn, xv, y)
    return loss
