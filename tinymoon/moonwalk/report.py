"""What every Moonwalk gradient comes with: the anchors it used, their bytes, and the sweep's error.

    loss = moonwalk.backward(model, loss_fn, x, y)
    print(loss.report)
    # moonwalk: 3 anchors (768.0 KiB) + fragments 0 B; cotangents float32; 4 segments, measured relative
    # error <= 2.1e-06 (tol 1e-05), error bound 2.1e-05; 0 repaired

`error_bound` bounds the relative error of the gradients against backprop in the cotangents' precision.
It comes from measurements, not from a model: each segment of swept units ends at an exact cotangent, where
the sweep's relative error E is measured, and E grows along a segment (the sweep amplifies it), so the
segment's largest error is at its end. A gradient θ̄_i = h_i ∂f_i/∂θ_i inherits the relative error of h_i up
to the cancellation in the batch sum; SAFETY covers that (tests/moonwalk measure the ratio).  The ratio of
the worst per-tensor gradient error to the measured cotangent error was at most 54 over 8912 random float64
leaky-ReLU MLPs (widths 6-40, depths 4-40, batch 8, both inits, 2026-12-03), above 10 in 8 of them: narrow
layers and small batches cancel most.  So SAFETY = 100 (it was 10, which CI's hypothesis run broke at width 6,
depth 16: 5.5e-12 against a bound of 1.3e-12).
"""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor

__all__ = ["Report", "Segment", "Loss"]

SAFETY = 100.0


class Segment:
    """Units first..last were swept; error: relative error of the cotangent at the end, measured against the
    exact one; status: "ok", "repaired" (recomputed by backprop from a checkpoint: exact) or "failed"."""
    __slots__ = ("first", "last", "error", "status")

    def __init__(self, first, last, error, status):
        self.first, self.last, self.error, self.status = first, last, error, status

    def __repr__(self):
        return f"Segment(units {self.first}..{self.last}, error {self.error:.1e}, {self.status})"


class Report:
    def __init__(self, record):
        self.anchors = sorted(record.anchors)
        self.anchor_bytes, self.fragment_bytes = record.anchor_bytes, record.fragment_bytes
        self.tol, self.cot_dtype, self.model_dtype = record.tol, record.cot_dtype, record.model_dtype
        self.segments = []

    @property
    def measured_error(self):
        """The largest relative cotangent error measured at the end of a segment that was kept."""
        errs = [s.error for s in self.segments if s.status != "repaired"]
        return max(errs) if errs else 0.0

    @property
    def error_bound(self):
        """An upper bound on the gradients' relative error against same-precision backprop."""
        return max(SAFETY * self.measured_error, float(np.finfo(self.model_dtype).eps))

    @property
    def repairs(self):
        return sum(s.status == "repaired" for s in self.segments)

    def __repr__(self):
        return (f"moonwalk: {len(self.anchors)} anchors ({_size(self.anchor_bytes)}) + fragments "
                f"{_size(self.fragment_bytes)}; cotangents {self.cot_dtype}; {len(self.segments)} segments, "
                f"measured relative error <= {self.measured_error:.1e} (tol {self.tol:.0e}), error bound "
                f"{self.error_bound:.1e}; {self.repairs} repaired")


def _size(n):
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


class Loss(Tensor):
    """The loss a Moonwalk gradient returns: a detached scalar Tensor that also carries `report`."""
    __slots__ = ("report",)

    @classmethod
    def of(cls, loss, report):
        out = cls._wrap(loss.data)
        out.report = report
        return out
