"""conv2d and linear primitives whose *weight* cotangent is estimated — the frame shared by the trace
sketches (trace.py) and the sparse / low-rank samples (sparse.py).

Everything but the weight cotangent is exact: the input cotangent needs only the weight (x̄ = ȳ W, or the
transposed convolution), the bias cotangent only ȳ, forward mode keeps x (`keep_input`, set by the
functional forms when a tangent is present; forward mode has no tape, so it is released at once), and the
vijp along x is the exact layer's (it too needs only the weight). A subclass says what it stores instead of
x for the weight cotangent (`keep`, residuals declared with ctx.save_for(1, ...)) and how it forms the
estimate from them (`weight_cotangent`).
"""
from __future__ import annotations

from ..backend import get_array_module
from ..errors import ShapeError
from ..ops import conv as _conv
from ..ops import linalg as _linalg
from ..ops.base import Primitive, add_terms


class _EstimatedWeight(Primitive):
    """The three hooks of an estimator (see the module docstring)."""
    submersive = False

    @classmethod
    def validate(cls, x, **options):
        """Check the estimator's options (runs whether or not the weight needs a cotangent)."""

    @classmethod
    def keep(cls, ctx, x, **options):
        """Store, with ctx.save_for(1, ...), what the weight cotangent will be estimated from."""
        raise NotImplementedError

    @classmethod
    def weight_cotangent(cls, ctx, y_bar):
        """The estimate of the weight cotangent (for linear, y_bar comes row-stacked: M x out)."""
        raise NotImplementedError


class EstimatedConv2d(_EstimatedWeight):
    """conv2d (inputs (x, w) or (x, w, b)) with an estimated weight cotangent."""

    @classmethod
    def forward(cls, ctx, x, w, b=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
                keep_input=False, vijp_tol=None, vijp_maxiter=None, **options):
        stride, pad, dilation, groups, out_hw = _conv.conv_config(
            x.shape, w.shape, None if b is None else b.shape, stride, padding, dilation, groups, padding_mode)
        cls.validate(x, **options)
        ctx.cfg = dict(stride=stride, pad=pad, dilation=dilation, groups=groups, out_hw=out_hw)
        ctx.x_shape, ctx.w_shape, ctx.dtype = tuple(x.shape), tuple(w.shape), x.dtype
        ctx.save_for(0, w=w)                          # x̄ = conv_transpose(ȳ, w)
        if ctx.needs[1]:
            cls.keep(ctx, x, **options)
            if keep_input:
                ctx.save_for(1, x=x)                  # only for the exact forward-mode term conv(x, w_dot)
        y = _conv._lin(ctx, x, w)
        if b is not None:
            y = y + b.reshape(1, -1, 1, 1)
        return y

    @classmethod
    def jvp(cls, ctx, x_dot, w_dot, b_dot=None):
        # ẏ = conv(ẋ, w) + conv(x, ẇ) + ḃ  (exact)
        return add_terms(None if x_dot is None else _conv._lin(ctx, x_dot, ctx.w),
                         None if w_dot is None else _conv._lin(ctx, ctx.x, w_dot),
                         None if b_dot is None else b_dot.reshape(1, -1, 1, 1))

    @classmethod
    def vjp(cls, ctx, y_bar):
        y_bar = get_array_module(y_bar).ascontiguousarray(y_bar)
        x_bar = _conv._lin_t(ctx, y_bar, ctx.w, ctx.x_shape) if ctx.needs[0] else None   # exact
        w_bar = cls.weight_cotangent(ctx, y_bar) if ctx.needs[1] else None              # estimated
        out = (x_bar, w_bar)
        if len(ctx.needs) == 3:
            out += (y_bar.sum(axis=(0, 2, 3)) if ctx.needs[2] else None,)                # b̄ = Σ ȳ (exact)
        return out

    @classmethod
    def fragment(cls, ctx, y_bar):
        return _conv.Conv2d.fragment(ctx, y_bar)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        return _conv.Conv2d.vijp(ctx, x_bar, fragment)


class EstimatedLinear(_EstimatedWeight):
    """y = x Wᵀ + b (W (out_features, in_features), x (..., in_features)) with an estimated weight cotangent."""

    @classmethod
    def forward(cls, ctx, x, weight, bias=None, keep_input=False, **options):
        if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
            raise ShapeError(f"{cls.name}: input of shape {x.shape} does not fit weight of shape {weight.shape} "
                             "(weight must be (out_features, in_features) and x (..., in_features))")
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ShapeError(f"{cls.name}: bias of shape {bias.shape} does not fit weight {weight.shape}")
        cls.validate(x, **options)
        ctx.save_for(0, weight=weight)                    # x̄ = ȳ W
        ctx.x_shape, ctx.dtype = x.shape, x.dtype
        if ctx.needs[1]:
            cls.keep(ctx, x, **options)
            if keep_input:
                ctx.save_for(1, x=x)
        y = _linalg._matmul(x.reshape(-1, x.shape[-1]), weight.T)
        if bias is not None:
            y += bias
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    @staticmethod
    def jvp(ctx, x_dot, w_dot, b_dot=None):
        return _linalg.Linear.jvp(ctx, x_dot, w_dot, b_dot)

    @classmethod
    def vjp(cls, ctx, y_bar):
        g = y_bar.reshape(-1, y_bar.shape[-1])
        x_bar = w_bar = b_bar = None
        if ctx.needs[0]:
            x_bar = _linalg._matmul(g, ctx.weight).reshape(ctx.x_shape)         # x̄ = ȳ W (exact)
        if ctx.needs[1]:
            w_bar = cls.weight_cotangent(ctx, g)                                # estimated
        if len(ctx.needs) > 2 and ctx.needs[2]:
            b_bar = g.sum(0)                                                    # exact
        return (x_bar, w_bar) if len(ctx.needs) == 2 else (x_bar, w_bar, b_bar)

    @classmethod
    def fragment(cls, ctx, y_bar):
        return _linalg.Linear.fragment(ctx, y_bar)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        return _linalg.Linear.vijp(ctx, x_bar, fragment)
