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

from ..backend import get_array_module
from ..ops import conv as _conv


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


class PolicyConv2d(_conv.Conv2d):
    """conv2d taking `residual=` (a sketched policy) for its weight cotangent; every other rule is Conv2d's.

    Interim: it stands in until tinymoon/ops/conv.py's Conv2d takes the policy itself, the way ops.linalg.Linear
    does (its forward: keep `residual.keep(x, "conv2d")` instead of x; its vjp: w̄ from the residual)."""
    name = "conv2d"

    @staticmethod
    def forward(ctx, x, w, b=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
                vijp_tol=None, vijp_maxiter=None, residual=None):
        stride, pad, dilation, groups, out_hw = _conv.conv_config(
            x.shape, w.shape, None if b is None else b.shape, stride, padding, dilation, groups, padding_mode)
        ctx.cfg = dict(stride=stride, pad=pad, dilation=dilation, groups=groups, out_hw=out_hw)
        ctx.x_shape, ctx.w_shape = tuple(x.shape), tuple(w.shape)
        ctx.save_for(0, w=w)                              # x̄ = conv_transpose(ȳ, w)
        if ctx.needs[1]:
            ctx.save(x_kept=residual.keep(x, "conv2d"))   # w̄ ≈ from the sketch of x
            if residual.keep_input:
                ctx.save(x=x)                             # only for the exact forward-mode term conv(x, ẇ)
        y = _conv._lin(ctx, x, w)
        if b is not None:
            y = y + b.reshape(1, -1, 1, 1)
        return y

    @classmethod
    def vjp(cls, ctx, y_bar):
        y_bar = get_array_module(y_bar).ascontiguousarray(y_bar)
        x_bar = _conv._lin_t(ctx, y_bar, ctx.w, ctx.x_shape) if ctx.needs[0] else None       # exact
        w_bar = ctx.x_kept.conv_weight_cotangent(y_bar, ctx) if ctx.needs[1] else None      # estimated
        out = (x_bar, w_bar)
        if len(ctx.needs) == 3:
            out += (y_bar.sum(axis=(0, 2, 3)) if ctx.needs[2] else None,)                    # b̄ = Σ ȳ (exact)
        return out
