"""Mixed-mode Moonwalk: a reverse pass for the input cotangent alone, then an inverse-forward sweep.

    phase 1  forward with parameters frozen (rules keep only input-cotangent residuals: bit-packed masks,
             a reference to the weight), the loss, then h_{i-1} = h_i J_i unit by unit down to h_0,
             recording the fragment of every non-submersive primitive (the only time h_i exists) and the
             anchors (true h_i) that were asked for. Memory: a few bits per activation + fragments + anchors.
    phase 2  from (x_0, h_0): for i = 1..L-1, recompute x_i with a local tape, h_i = vijp_i(h_{i-1},
             fragment_i) (or the anchor), θ̄_i = h_i ∂f_i/∂θ_i into .grad, drop x_{i-1}. Memory: one unit.

The loss layer: phase 2 does not invert the last unit. With x_{L-1} in hand it recomputes x_L and the loss
and backpropagates through that one unit locally, so h_L = ∂ℓ/∂x_L is exact (nothing is recorded for it,
and the last unit may be non-submersive or fork, at no cost).
"""
from __future__ import annotations

from ..autodiff.reverse import backprop
from ..autodiff.state import enable_grad, no_grad
from ..errors import GradientError
from ..tensor import Tensor, as_tensor
from .anchors import plan_anchors
from .layers import (Stash, UnitTape, flatten_units, frozen, local_backprop, record_forward, reverse_unit, sweep_known,
                     sweep_unit, unit_params)

__all__ = ["backward", "input_cotangent", "sweep", "Phase1"]


class Phase1:
    """What phase 1 hands to phase 2: the loss, h_0, and a Stash of fragments (key ("frag", i): the list
    of unit i's per-primitive fragments) and anchors (key ("anchor", i): the true output cotangent of
    unit i). `kappas`: per-unit condition estimates (anchors="auto" only)."""

    def __init__(self, units, kinds, loss, h0, stash, anchors, kappas):
        self.units, self.kinds, self.loss, self.h0, self.stash = units, kinds, loss, h0, stash
        self.anchors, self.kappas = anchors, kappas

    @property
    def nbytes(self):
        """Bytes recorded for phase 2: fragments + anchors (h_0 is one input-sized array on top)."""
        return self.stash.nbytes


def _loss_cotangent(loss_fn, x_last, y):
    """(loss, h_L): the loss at x_L and ∂ℓ/∂x_L by a local vjp of the loss alone."""
    leaf = Tensor._wrap(x_last, requires_grad=True)
    with enable_grad():
        loss = loss_fn(leaf, y)
    if not isinstance(loss, Tensor) or loss.data.size != 1:
        raise GradientError(f"moonwalk: loss_fn must return a scalar Tensor, got "
                            f"{getattr(loss, 'shape', type(loss).__name__)}")
    if not loss.requires_grad:
        return loss.detach(), leaf.xp.zeros_like(x_last)
    (h,) = backprop(loss, loss.xp.ones_like(loss.data), wrt=[leaf])
    return loss.detach(), (leaf.xp.zeros_like(x_last) if h is None else h)


def input_cotangent(model, loss_fn, x, y, anchors=None, anchor_tol=1e-4, fragments=True, anchor_first=True):
    """Phase 1: (loss, h_0 = ∂ℓ/∂x_0, fragments, anchors) as a Phase1 record. No parameter gradient.

    anchor_first=True (default): the stem (the units up to the first one with parameters, e.g. Flatten and
    the first Linear) is treated like the loss layer at the other end — phase 1 runs it without a tape and
    records its output cotangent (an anchor: one activation, whatever the depth), so neither the input
    cotangent h_0 nor the stem's vijp is ever computed. The stem is usually the
    widest layer (784 -> W) and often expanding, so this saves the most expensive solve (and its fragment).
    record.h0 is then None. anchor_first=False inverts the stem too and returns h_0.
    fragments=False records none (phase 2 then raises NotInvertibleError at the first layer that erased
    something — the check that fragments are really needed)."""
    units = flatten_units(model)
    L = len(units)
    start = 0
    if anchor_first and L >= 2:
        # the stem: up to the first unit with parameters (a leading Flatten is part of it)
        start = next((i for i, u in enumerate(units[:-1]) if unit_params(u)), 0) + 1
    x0 = as_tensor(x).detach()
    with frozen(model.parameters()):
        if start:
            with no_grad():
                for u in units[:start]:
                    x0 = u(x0)
                x0 = x0.detach()
        x0.requires_grad = True
        x_last, tapes = record_forward(units[start:], x0)
        tapes = [UnitTape([], None, None, "chain")] * start + tapes
        loss, h = _loss_cotangent(loss_fn, x_last.data, y)
        del x_last, x0
        chosen, kappas = plan_anchors(anchors, tapes, h.dtype, anchor_tol)
        if start:
            chosen.add(start - 1)
        kinds = [t.kind for t in tapes]
        stash = Stash()
        for i in range(L - 1, start - 1, -1):
            if i < L - 1 and i in chosen:
                stash.put(("anchor", i), h)
            need = fragments and i < L - 1 and i not in chosen
            h, frags = reverse_unit(tapes[i], h, record_fragments=need)
            tapes[i] = None
            if frags is not None and any(f is not None for f in frags):
                stash.put(("frag", i), frags)
        if start:
            stash.put(("anchor", start - 1), h)         # the stem's output cotangent
            h = None
    return Phase1(units, kinds, loss, h, stash, chosen, kappas)


def sweep(model, loss_fn, x, y, record, on_step=None):
    """Phase 2: the inverse-forward sweep from (x_0, record.h0), accumulating every parameter's .grad.
    Consumes the record's fragments and anchors. on_step(i, x_i, h_i), if given, sees each unit's output
    and its restored cotangent (i < L-1; for tests and error measurements)."""
    units, stash = record.units, record.stash
    xv = as_tensor(x).data
    h = record.h0
    L = len(units)
    cache = {}
    for i, unit in enumerate(units):
        if i == L - 1:
            _last_unit(unit, loss_fn, xv, y)
            break
        anchor = stash.pop(("anchor", i))
        if anchor is None and h is None:                # a parameter-free unit before the stem's anchor
            with no_grad():
                xv = unit(Tensor._wrap(xv)).data
        elif anchor is not None:
            xv, h = sweep_known(unit, xv, anchor, cache), anchor
        else:
            xv, h = sweep_unit(unit, record.kinds[i], xv, h, stash.pop(("frag", i)), cache)
        if on_step is not None:
            on_step(i, xv, h)
    stash.clear()


def _last_unit(unit, loss_fn, x_in, y):
    """The loss layer: recompute x_L and ℓ from x_{L-1}, and backpropagate through this unit alone."""
    params = unit_params(unit)
    with enable_grad():
        out = unit(Tensor._wrap(x_in))
        loss = loss_fn(out, y)
    if params and loss.requires_grad:
        local_backprop(loss, loss.xp.ones_like(loss.data), params)


def backward(model, loss_fn, x, y, mode="mixed", anchors=None, anchor_tol=1e-4, anchor_first=True, chunk=None):
    """Moonwalk gradient: sets .grad on every parameter of `model` (accumulating, like backward) exactly as
    `loss_fn(model(x), y).backward()` would, and returns the loss (a detached scalar Tensor).

    mode="mixed": phase 1 by reverse mode (fragments recorded, anchors possible); "forward": h_0 from
    forward-mode jvps (one per input coordinate, `chunk` coordinates per pass), no fragments, so every
    unit but the last must be submersive. anchors: None, K (every K units) or "auto" (see anchors.py).
    anchor_first (mixed mode): record the stem's output cotangent instead of inverting the stem (see
    input_cotangent).
    """
    if mode == "mixed":
        record = input_cotangent(model, loss_fn, x, y, anchors=anchors, anchor_tol=anchor_tol,
                                 anchor_first=anchor_first)
    elif mode == "forward":
        if anchors is not None:
            raise ValueError("moonwalk: anchors need the reverse pass of mode='mixed'; pure-forward mode has "
                             "no true intermediate cotangent to record")
        from .pure_forward import forward_record
        record = forward_record(model, loss_fn, x, y, chunk=chunk)
    else:
        raise ValueError(f"moonwalk.backward: mode must be 'mixed' or 'forward', got {mode!r}")
    sweep(model, loss_fn, x, y, record)
    return record.loss
