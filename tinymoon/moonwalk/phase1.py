"""Phase 1: the input cotangent alone, by a reverse pass that keeps a few bits per activation.

    forward   parameters frozen, so every rule keeps only what the *input* cotangent needs (a bit-packed
              sign mask, a reference to a weight — never a layer input); the loss and h_L = ∂ℓ/∂x_L
    plan      where to anchor (anchors.py), from the units' growth estimates
    reverse   h_{i-1} = h_i J_i unit by unit, no weight-gradient GEMM; at a non-submersive primitive the
              coordinates of h_i its vjp erases (the fragment: the only moment they exist) and, at an
              anchored unit, h_i itself. Each unit's residuals are released as soon as it is done.

The stem (anchor_first=True, the default): the units up to the first one with parameters (a Flatten and the
first Linear, say) run without a tape and their output cotangent is recorded as an anchor — one activation,
whatever the depth — so neither h_0 nor the stem's vijp (usually the widest and most expensive solve) is
ever computed. The loss layer is never inverted: phase 2 recomputes it and backpropagates through it.
"""
from __future__ import annotations

import numpy as np

from ..autodiff.reverse import backprop
from ..autodiff.state import enable_grad, no_grad
from ..autodiff.units import EMPTY, record_units, reverse_unit
from ..errors import GradientError
from ..memory import Stash
from ..tensor import Tensor, as_tensor
from .anchors import default_tol, plan
from .units import flatten_units, frozen, unit_kind, unit_params

__all__ = ["Record", "input_cotangent", "loss_cotangent"]


class Record:
    """What phase 1 hands to phase 2.

    units, kinds   the model's units and their kinds (units.py)
    loss           the loss, a detached scalar Tensor
    h0             ∂ℓ/∂x_0, or None when the stem's output cotangent is anchored instead
    stash          the fragments (key ("frag", i): unit i's list, one per primitive) and anchors (key
                   ("anchor", i): the true output cotangent of unit i), counted in tinymoon.memory
    anchors        the anchored unit indices; plan: the error plan (anchors.Plan)
    model_dtype    the model's (and the gradients') dtype; cot_dtype: the dtype the cotangents are carried in
    tol            the tolerance on the sweep's relative cotangent error
    repair         whether a segment whose measured error exceeds tol is recomputed (else: an error)
    versions       (parameter, version) at phase 1; phase 2 refuses to run if one has changed since
    """

    def __init__(self, units, kinds, loss, h0, stash, anchors, plan, model_dtype, cot_dtype, tol, repair=True):
        self.units, self.kinds, self.loss, self.h0, self.stash = units, kinds, loss, h0, stash
        # the parameters' versions: phase 2 recomputes the forward pass, so an in-place change in between
        # (an optimiser step) would pair new activations with old fragments and anchors
        self.versions = [(p, p.watch_version()) for u in units for p in u.parameters()]
        self.anchors, self.plan, self.tol, self.repair = anchors, plan, tol, repair
        self.model_dtype, self.cot_dtype = np.dtype(model_dtype), np.dtype(cot_dtype)
        self.anchor_bytes = sum(Stash._size(v) for k, v in stash.items.items() if k[0] == "anchor")
        self.fragment_bytes = stash.nbytes - self.anchor_bytes

    @property
    def nbytes(self):
        """Bytes recorded for phase 2: fragments + anchors (h_0, when kept, is one input-sized array more)."""
        return self.stash.nbytes


def loss_cotangent(loss_fn, x_last, y):
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


def check_cotangent_dtype(cotangent_dtype, model_dtype):
    if cotangent_dtype is None:
        return np.dtype(model_dtype)
    cot = np.dtype(cotangent_dtype)
    if cot.kind != "f" or cot.itemsize < np.dtype(model_dtype).itemsize:
        raise TypeError(f"moonwalk: cotangent_dtype must be a float dtype at least as wide as the model's "
                        f"({model_dtype}), got {cot}")
    return cot


def input_cotangent(model, loss_fn, x, y, anchors="auto", tol=None, cotangent_dtype=None, fragments=True,
                    anchor_first=True, max_held=None):
    """Phase 1: a Record with the loss, h_0 (or the stem's anchor), the fragments and the anchors.

    anchors: "auto" (error-controlled, the default), K (every K units) or None (only the forced ones).
    tol: the tolerance on the sweep's relative cotangent error (default: by the model's dtype).
    cotangent_dtype: carry the cotangents in a wider dtype than the model's (e.g. "float64" for a float32
    model: far fewer anchors for the same error, at twice the bytes each).
    fragments=False records none (phase 2 then raises NotInvertibleError at the first layer that erased
    something — the check that fragments are really needed). max_held: see anchors.plan (moonwalk.step).
    No parameter gradient is touched."""
    units = flatten_units(model)
    L = len(units)
    start = 0
    if anchor_first and L >= 2:
        start = next((i for i, u in enumerate(units[:-1]) if unit_params(u)), 0) + 1
    trainable = [bool(unit_params(u)) for u in units]
    x0 = as_tensor(x).detach()
    with frozen(model.parameters()):
        if start:
            with no_grad():
                for u in units[:start]:
                    x0 = u(x0)
                x0 = x0.detach()
        x0.requires_grad = True
        x_last, tapes = record_units(units[start:], x0)
        tapes = [EMPTY] * start + tapes
        loss, h = loss_cotangent(loss_fn, x_last.data, y)
        del x_last, x0
        model_dtype = h.dtype
        cot = check_cotangent_dtype(cotangent_dtype, model_dtype)
        tol = default_tol(model_dtype) if tol is None else float(tol)
        h = h.astype(cot, copy=False)
        kinds = [unit_kind(u, t) for u, t in zip(units, tapes)]
        the_plan = plan(units, kinds, tapes, anchors, cot, tol, start, max_held, trainable)
        chosen = the_plan.anchored
        stash = Stash()
        for i in range(L - 1, start - 1, -1):
            if i < L - 1 and i in chosen:
                stash.put(("anchor", i), h)
            need = fragments and i < L - 1 and i not in chosen and kinds[i] == "chain"
            h, frags = reverse_unit(tapes[i], h, record_fragments=need)
            tapes[i] = None
            if frags is not None and any(f is not None for f in frags):
                stash.put(("frag", i), frags)
        if start:
            stash.put(("anchor", start - 1), h)         # the stem's output cotangent
            h = None
    return Record(units, kinds, loss, h, stash, chosen, the_plan, model_dtype, cot, tol, repair=anchors is not None)
