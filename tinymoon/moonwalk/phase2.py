"""Phase 2: the inverse-forward sweep, with its error measured and controlled.

From (x_0, h_0) — or from the stem's anchor — for i = 1 .. L-1:
    recompute x_i with a local tape;
    swept unit:    h_i = vijp_i(h_{i-1}, fragment_i);  θ̄_i = h_i ∂f_i/∂θ_i (a local vjp, into .grad)
    anchored unit: h_i = the anchor; θ̄_i from it, and the exact h_{i-1} = h_i J_i from the same local vjp
    drop x_{i-1}.
The loss layer is recomputed and backpropagated locally, which gives θ̄_L and the exact h_{L-1}.

A run of consecutive swept units is a *segment*. It starts from an exact cotangent and ends where an exact
one is known again (the next anchored unit, or the loss layer), so its error is measured there, on every
call, at the price of one input-cotangent product per anchor. Past the tolerance, the segment is repaired:
its parameter gradients are put back as they were and recomputed by backprop from a checkpoint of the
segment's input (held while the segment runs, one activation) seeded with the exact cotangent — exact, at
the segment's backprop memory, and the error plan learns from it (anchors.py). With anchors=None there is
no repair: past the tolerance the sweep raises AccuracyError (or warns, on_error="warn"), naming the unit
where its error estimate crossed the tolerance; every .grad is then left as it was before the call.

With an optimizer (moonwalk.step), each parameter is updated as soon as its gradient is final — verified,
and no later unit uses the parameter — and its .grad released, so the peak never holds every gradient.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..autodiff.inverse import VijpFunction, trace_chain
from ..autodiff.reverse import accumulate_grad, vjp_into
from ..autodiff.state import enable_grad, no_grad
from ..backend import get_array_module
from ..errors import AccuracyError, GradientError, NotInvertibleError
from ..tensor import Tensor, as_tensor
from .anchors import learn, shares
from .phase1 import loss_cotangent
from .report import Report, Segment
from .units import unit_params

__all__ = ["sweep", "relative_error"]


def relative_error(got, exact):
    """max(‖Δ‖_max / ‖h‖_max, ‖Δ‖_F / ‖h‖_F): the larger of the two usual relative errors (inf if not finite)."""
    xp = get_array_module(exact)
    d = got - exact
    dmax, emax = float(xp.abs(d).max()) if d.size else 0.0, float(xp.abs(exact).max()) if d.size else 0.0
    if not (math.isfinite(dmax) and math.isfinite(emax)):
        return math.inf
    if emax == 0:
        return 0.0 if dmax == 0 else math.inf
    return max(dmax / emax, float(xp.sqrt((d * d).sum()) / xp.sqrt((exact * exact).sum())))


def _all_finite(a):
    return bool(get_array_module(a).isfinite(a).all())


class _Open:
    """A segment being swept: its first unit, the swept unit indices, the checkpoint of its input (for a
    repair) and the .grad each touched parameter had before (restored by a repair)."""

    def __init__(self, first, checkpoint):
        self.first, self.checkpoint = first, checkpoint
        self.units, self.before, self.broken = [], {}, None

    def remember(self, params):
        for p in params:
            self.before.setdefault(id(p), (p, p.grad))


class _Stepper:
    """Applies optimizer.step to each parameter once every contribution to its gradient is final."""

    def __init__(self, units, optimizer, cache):
        self.optimizer, self.done = optimizer, set()
        self.params = [unit_params(u, cache) for u in units]
        self.last = {}
        for i, ps in enumerate(self.params):
            for p in ps:
                self.last[id(p)] = i

    def release(self, upto):
        ready = []
        for ps in self.params[:upto + 1]:
            for p in ps:
                if id(p) not in self.done and self.last[id(p)] <= upto:
                    self.done.add(id(p))
                    ready.append(p)
        if ready:
            self.optimizer.step(params=ready)
            for p in ready:
                p.grad = None


def _swept(unit, kind, x_in, h_in, fragments, cache, model_dtype, cot):
    """One swept unit: (x_out, h_out), its θ̄ added to .grad."""
    if kind == "block":
        x_out, h_out = unit.vijp(x_in, h_in)
        return x_out, h_out.astype(cot, copy=False)
    if kind == "fork":
        raise NotInvertibleError(f"moonwalk: {type(unit).__name__} forks its data path and has no vijp rule; "
                                 "phase 1 should have anchored its output cotangent")
    out, links = trace_chain(unit, Tensor._wrap(x_in))
    h_out = VijpFunction(out, links)(h_in, fragments).data.astype(cot, copy=False)
    params = unit_params(unit, cache)
    if params:
        # θ̄ in the model's dtype (as backprop's); the pruned walk skips the input cotangent nobody needs
        vjp_into(out, h_out.astype(model_dtype, copy=False), [], params)
    return out.data, h_out


def _known(unit, x_in, h_out, need_input, cache, model_dtype):
    """A unit whose output cotangent is known: (x_out, exact h_in or None, [(param, θ̄)]) — θ̄ not yet added,
    so that a repair of the segment before it cannot drop them."""
    params = unit_params(unit, cache)
    if not params and not need_input:
        with no_grad():
            return unit(Tensor._wrap(x_in)).data, None, []
    leaf = Tensor._wrap(x_in, requires_grad=need_input)
    with enable_grad():
        out = unit(leaf)
    seed = h_out if need_input else h_out.astype(model_dtype, copy=False)
    gs = vjp_into(out, seed, [leaf] if need_input else [], params, accumulate=False)
    h_in = gs[0] if need_input else None
    return out.data, h_in, list(zip(params, gs[1:] if need_input else gs))


def _last(unit, loss_fn, x_in, y, need_input, cache, cot):
    """The loss layer: recompute x_L and ℓ, h_L = ∂ℓ/∂x_L (as phase 1), then the local vjp through the unit:
    (exact h_{L-1} or None, [(param, θ̄)])."""
    params = unit_params(unit, cache)
    if not params and not need_input:
        return None, []
    leaf = Tensor._wrap(x_in, requires_grad=need_input)
    with enable_grad():
        out = unit(leaf)
    _, h_last = loss_cotangent(loss_fn, out.data, y)
    gs = vjp_into(out, h_last.astype(cot, copy=False), [leaf] if need_input else [], params, accumulate=False)
    return (gs[0] if need_input else None), list(zip(params, gs[1:] if need_input else gs))


def _add(pairs):
    for p, g in pairs:
        if g is not None:
            accumulate_grad(p, g)


def _repair(units, seg, h_exact, cache):
    """Backprop through the segment's units from its checkpoint, seeded with the exact cotangent at its end."""
    for p, g in seg.before.values():
        p.grad = g
    params, seen = [], set()
    for i in seg.units:
        for p in unit_params(units[i], cache):
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    with enable_grad():
        out = Tensor._wrap(seg.checkpoint)
        for i in seg.units:
            out = units[i](out)
    vjp_into(out, h_exact, [], params)


def _estimate_crossing(plan, seg, error):
    """The unit where the calibrated error estimate u·exp(G·(cumulative share)) first reaches tol."""
    if not math.isfinite(error) or seg.broken is not None:
        return seg.broken if seg.broken is not None else seg.units[-1]
    grew = math.log(max(error, plan.u) / plan.u)
    cum = 0.0
    for i, s in zip(seg.units, shares(seg.units, plan.bounds)):
        cum += s
        if plan.u * math.exp(grew * cum) >= plan.tol:
            return i
    return seg.units[-1]


def sweep(model, loss_fn, x, y, record, on_step=None, optimizer=None, on_error="raise"):
    """Phase 2: the inverse-forward sweep from (x_0, record.h0), accumulating every parameter's .grad (or, with
    `optimizer`, applying it parameter by parameter). Consumes the record's fragments and anchors and returns
    a Report. on_step(i, x_i, h_i), if given, sees each unit's output and its cotangent (i < L-1)."""
    if on_error not in ("raise", "warn"):
        raise ValueError(f"moonwalk: on_error must be 'raise' or 'warn', got {on_error!r}")
    for p, v in record.versions:
        if p.version != v:
            raise GradientError(
                f"moonwalk.sweep: a parameter of shape {p.shape} was changed in place (version {v} -> {p.version}) "
                "after phase 1 recorded its fragments and anchors, so the sweep would recompute a different forward "
                "pass. Step the optimiser after the sweep (or use moonwalk.step), or run input_cotangent again.")
    units, stash, plan, report = record.units, record.stash, record.plan, Report(record)
    model_dtype, cot, L = record.model_dtype, record.cot_dtype, len(units)
    cache = {}
    before_call = {id(p): (p, p.grad) for p in model.parameters()}
    stepper = _Stepper(units, optimizer, cache) if optimizer is not None else None
    xv = as_tensor(x).data
    h = record.h0
    seg = None

    def close(h_swept, h_exact):
        err = relative_error(h_swept, h_exact) if seg.broken is None else math.inf
        status = "ok"
        if err > record.tol:
            if record.repair:
                _repair(units, seg, h_exact, cache)
                status = "repaired"
            else:
                at = _estimate_crossing(plan, seg, err)
                msg = (f"moonwalk: the inverse-forward sweep lost accuracy: relative cotangent error {err:.1e} > tol "
                       f"{record.tol:.0e} at the end of units {seg.first}..{seg.units[-1]}; its error estimate "
                       f"crosses tol at unit {at} ({type(units[at]).__name__}). Use anchors='auto' (the default: "
                       "it records true cotangents where the error would grow past tol), cotangent_dtype='float64', "
                       "or backprop.")
                if on_error == "raise":
                    for p, g in before_call.values():
                        p.grad = g
                    raise AccuracyError(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
                status = "failed"
        learn(units, seg.units, plan.bounds, err, plan.u, plan.budget)
        report.segments.append(Segment(seg.first, seg.units[-1], err, status))
        stash.pop(("checkpoint",))

    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # the measured check decides
            for i, unit in enumerate(units):
                if i == L - 1:
                    h_exact, grads = _last(unit, loss_fn, xv, y, seg is not None, cache, cot)
                    if seg is not None:
                        close(h, h_exact)
                    _add(grads)
                    break
                anchor = stash.pop(("anchor", i))
                if anchor is None and h is None:             # a parameter-free unit before the stem's anchor
                    with no_grad():
                        xv = unit(Tensor._wrap(xv)).data
                elif anchor is not None:
                    xv, h_exact, grads = _known(unit, xv, anchor, seg is not None, cache, model_dtype)
                    if seg is not None:
                        close(h, h_exact)
                        seg = None
                    _add(grads)
                    h = anchor
                    if stepper is not None:
                        stepper.release(i)
                else:
                    if seg is None:
                        seg = _Open(i, xv if record.repair else None)
                        if record.repair:
                            stash.put(("checkpoint",), xv)
                    frags = stash.pop(("frag", i))
                    seg.units.append(i)
                    if seg.broken is not None and record.repair:   # past inf/nan: only the forward, until the repair
                        with no_grad():
                            xv = unit(Tensor._wrap(xv)).data
                    else:
                        seg.remember(unit_params(unit, cache))
                        xv, h = _swept(unit, record.kinds[i], xv, h, frags, cache, model_dtype, cot)
                        if not _all_finite(h):
                            seg.broken = i                   # repaired (or reported) at the segment's end
                            if not record.repair and on_error == "raise":
                                close(h, h)                  # raises now, naming unit i
                if on_step is not None:
                    on_step(i, xv, h)
            if stepper is not None:
                stepper.release(L - 1)
    finally:
        stash.clear()
    return report
