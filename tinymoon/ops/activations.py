"""Activations: tanh, sigmoid, relu, leaky_relu, elu, gelu (exact, erf), silu, softplus.

All are Diagonal primitives (see elementwise.py): jvp, vjp and vijp follow from the derivative alone.
ReLU and leaky ReLU keep only a bit-packed sign mask (1 bit per element) — the input-only residual that
Moonwalk's phase 1 relies on. The others keep one float array (the input or the output, whichever gives
the derivative more cheaply).
"""
from __future__ import annotations

from .. import kernels
from ..backend import get_array_module
from .elementwise import Diagonal
from .masks import BitMask, where_mask



class Fused(Diagonal):
    """An activation whose value and derivative come from one pass of `kernels.act_forward` (Numba on the
    CPU, one CuPy elementwise kernel on a GPU, NumPy for small arrays): the residual is f'(x) itself, as
    many bytes as x, so the vjp is a single multiply and the vijp a single division.  The formulas live in
    kernels/pointwise.py (`act_reference` is the readable one)."""

    @classmethod
    def forward(cls, ctx, x, **params):
        y, d = kernels.act_forward(cls.name, x, **params)
        ctx.save(d=d)
        return y

    @classmethod
    def derivative(cls, ctx, i=0):
        return ctx.d


class Tanh(Fused):
    """tanh; f' = 1 - tanh^2 (never 0 in float64 for |x| < 19, a fragment beyond)."""
    name = "tanh"


class Sigmoid(Fused):
    """1/(1 + e^-x), computed without overflow; f' = s (1 - s)."""
    name = "sigmoid"


class ReLU(Diagonal):
    """max(x, 0). Subgradient 0 at x = 0. The units with x <= 0 erase their cotangent: the fragment is
    y_bar on the inactive units, as a compact 1-D array."""
    name = "relu"

    @staticmethod
    def forward(ctx, x):
        y, packed = kernels.relu_mask_forward(x)        # one pass: y and the bit per element of x > 0
        ctx.save(mask=BitMask(packed, x.shape))
        return y

    @classmethod
    def derivative(cls, ctx, i=0):
        return ctx.mask.unpack()

    @classmethod
    def vjp(cls, ctx, y_bar):
        return (where_mask(ctx.mask, y_bar, 0.0),)

    @classmethod
    def jvp(cls, ctx, x_dot):
        return where_mask(ctx.mask, x_dot, 0.0)

    @classmethod
    def _erased(cls, ctx, d):
        return ~d

    @classmethod
    def condition(cls, ctx):
        return 1.0, 1.0           # kept units: slope 1; erased units come back exactly from the fragment


class LeakyReLU(Diagonal):
    """x for x > 0, slope * x otherwise. With slope > 0 the Jacobian is invertible (no fragment)."""
    name = "leaky_relu"

    @staticmethod
    def forward(ctx, x, slope=0.01):
        y, packed = kernels.relu_mask_forward(x, slope)
        ctx.save(mask=BitMask(packed, x.shape))
        return y

    @classmethod
    def derivative(cls, ctx, i=0):
        xp = get_array_module(ctx.mask.packed)
        return xp.where(ctx.mask.unpack(), 1.0, ctx.params["slope"])

    @classmethod
    def vjp(cls, ctx, y_bar):
        return (where_mask(ctx.mask, y_bar, ctx.params["slope"]),)

    @classmethod
    def jvp(cls, ctx, x_dot):
        return where_mask(ctx.mask, x_dot, ctx.params["slope"])

    @classmethod
    def _erased(cls, ctx, d):
        return get_array_module(d).abs(d) == 0     # only for slope 0; a small slope is still exact

    @classmethod
    def fragment(cls, ctx, y_bar):
        if ctx.params["slope"] != 0:
            return None                            # f' is 1 or the slope: nothing erased (no pass over the mask)
        return super().fragment(ctx, y_bar)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        slope = ctx.params["slope"]
        if slope == 0:
            return super().vijp(ctx, x_bar, fragment)
        return where_mask(ctx.mask, x_bar, 1.0 / slope)    # y_bar = x_bar / f'(x)

    @classmethod
    def condition(cls, ctx):
        # f' is 1 on the positive units and the slope on the others: only the slopes that occur count
        s = abs(ctx.params["slope"])
        if s == 0:
            return 1.0, 1.0                                  # ReLU: erased units come from the fragment
        pos, neg = ctx.mask.any(), not ctx.mask.all()
        return max(1.0 if pos else 0.0, s if neg else 0.0), max(1.0 if pos else 0.0, 1.0 / s if neg else 0.0)


class ELU(Fused):
    """x for x > 0, alpha (e^x - 1) otherwise; f' = 1 or alpha e^x."""
    name = "elu"

    @classmethod
    def forward(cls, ctx, x, alpha=1.0):
        return super().forward(ctx, x, alpha=alpha)


class GELU(Fused):
    """Exact GELU: x Phi(x), Phi the standard normal CDF. f' = Phi(x) + x phi(x), which vanishes near
    x = -0.7518: those coordinates become fragments in the vijp."""
    name = "gelu"


class SiLU(Fused):
    """x sigmoid(x); f' = s (1 + x (1 - s)), zero near x = -1.2785 (fragment there)."""
    name = "silu"


class Softplus(Diagonal):
    """log(1 + e^(beta x)) / beta, linear above `threshold` (as PyTorch); f' = sigmoid(beta x)."""
    name = "softplus"

    @staticmethod
    def forward(ctx, x, beta=1.0, threshold=20.0):
        xp = get_array_module(x)
        bx = beta * x
        ctx.save(x=x)
        soft = (xp.maximum(bx, 0) + xp.log1p(xp.exp(-xp.abs(bx)))) / beta
        return xp.where(bx > threshold, x, soft).astype(x.dtype)

    @classmethod
    def derivative(cls, ctx, i=0):
        xp = get_array_module(ctx.x)
        bx = ctx.params["beta"] * ctx.x
        return xp.where(bx > ctx.params["threshold"], 1, _sigmoid(bx)).astype(ctx.x.dtype)


def _sigmoid(x):
    """1/(1+e^-x) for x >= 0 and e^x/(1+e^x) for x < 0: never overflows."""
    xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
