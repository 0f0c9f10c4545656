"""The sketched residual policy (docs/design.md §2): a layer keeps a random sketch of its input instead of the
input, and estimates its weight cotangent from it, unbiasedly. Everything else stays exact: the input
cotangent needs only the weight (x̄ = ȳ W, or the transposed convolution), the bias cotangent only ȳ.

A policy is configured by its parameters (probe count, distribution, seed...) and passed to the ordinary
layer primitive as `residual=`: `apply(ops.linalg.Linear, x, W, b, residual=RowSketch(probes=16, seed=3))`.
The layer's forward calls `keep(x, layer)`, which returns the residual: the same type, holding the arrays it
keeps (and counting their bytes); the layer's vjp calls its `linear_weight_cotangent(ȳ)` or
`conv_weight_cotangent(ȳ, ctx)`. The types: trace.RowSketch (Linear), trace.PixelSketch (Conv2d),
sparse.SampledInput (both).
"""
from __future__ import annotations

import copy



class SketchPolicy:
    """Base of the sketched policies. keep_input: forward mode (a tangent on the weight) also needs x itself for
    ẏ ∋ x Ẇᵀ; forward mode has no tape, so it is released at once."""
    arrays = {}

    def __init__(self, keep_input=False):
        self.keep_input = bool(keep_input)

    def _holding(self, x, **arrays):
        """The residual of input x: this policy's configuration, x's shape and dtype, and the arrays kept."""
        kept = copy.copy(self)
        kept.arrays, kept.x_shape, kept.dtype = arrays, tuple(x.shape), x.dtype
        return kept

    @property
    def nbytes(self):
        return sum(int(getattr(a, "nbytes", 0)) for a in self.arrays.values())
