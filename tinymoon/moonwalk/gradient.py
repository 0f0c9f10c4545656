"""The two calls users make: `backward` (phase 1, then the sweep) and `step` (the same, updating each layer's
parameters as soon as its gradient is final)."""
from __future__ import annotations

import math

from .phase1 import input_cotangent
from .pure_forward import forward_record
from .report import Loss
from .phase2 import sweep
from .units import flatten_units

__all__ = ["backward", "step"]


def _record(model, loss_fn, x, y, mode, anchors, tol, cotangent_dtype, anchor_first, chunk):
    if mode == "mixed":
        return input_cotangent(model, loss_fn, x, y, anchors=anchors, tol=tol, cotangent_dtype=cotangent_dtype,
                               anchor_first=anchor_first)
    if mode == "forward":
        if anchors not in (None, "auto"):
            raise ValueError("moonwalk: anchors need the reverse pass of mode='mixed'; pure-forward mode has "
                             "no true intermediate cotangent to record (its error is still measured at the end)")
        return forward_record(model, loss_fn, x, y, chunk=chunk, tol=tol, cotangent_dtype=cotangent_dtype)
    raise ValueError(f"moonwalk.backward: mode must be 'mixed' or 'forward', got {mode!r}")


def backward(model, loss_fn, x, y, mode="mixed", anchors="auto", tol=None, cotangent_dtype=None, on_error="raise",
             anchor_first=True, chunk=None):
    """Moonwalk gradient: sets .grad on every parameter of `model` (accumulating, like backward) as
    `loss_fn(model(x), y).backward()` would, and returns the loss — a detached scalar Tensor whose `.report`
    says which anchors were used, their bytes, and the sweep's measured error and error bound.

    mode="mixed" (default): phase 1 by reverse mode (fragments, anchors); "forward": h_0 from forward-mode
      jvps (one per input coordinate, `chunk` per pass), no fragments: every unit but the last must be
      submersive and must treat samples independently.
    anchors="auto" (default): error-controlled (anchors.py), every swept segment's error measured against an
      exact cotangent and repaired past `tol`; K: every K units (also measured and repaired); None: only
      the forced anchors, and past `tol` an AccuracyError naming the unit (on_error="warn": a warning).
    tol: tolerance on the relative error of the swept cotangents (default 1e-5 for float32 models, 1e-10 for
      float64). cotangent_dtype: carry the cotangents in a wider dtype ("float64" for a float32 model).
    anchor_first (mixed mode): record the stem's output cotangent instead of inverting the stem.
    """
    record = _record(model, loss_fn, x, y, mode, anchors, tol, cotangent_dtype, anchor_first, chunk)
    report = sweep(model, loss_fn, x, y, record, on_error=on_error)
    return Loss.of(record.loss, report)


def step(model, loss_fn, x, y, optimizer, anchors="auto", tol=None, cotangent_dtype=None, anchor_first=True):
    """One training step: Moonwalk's gradient, with optimizer.step applied to each parameter as soon as its
    gradient is final (verified, and no later unit uses the parameter), and its .grad released — so the peak
    never holds every weight gradient at once (the one place Moonwalk can beat backprop on the whole host
    peak). Segments are capped at ~√N of the N layers with parameters, since a segment's gradients wait for
    its check. Equivalent to backward(...) then optimizer.step(); the gradients are consumed (.grad is None
    after). Returns the loss with its report."""
    # A segment's gradients wait for its check: at most ~√N of the N layers' gradients are held at once.
    n = sum(1 for u in flatten_units(model) if any(p.requires_grad for p in u.parameters()))
    record = input_cotangent(model, loss_fn, x, y, anchors=anchors, tol=tol, cotangent_dtype=cotangent_dtype,
                             anchor_first=anchor_first, max_held=max(1, math.isqrt(max(n, 1))))
    report = sweep(model, loss_fn, x, y, record, optimizer=optimizer)
    return Loss.of(record.loss, report)
