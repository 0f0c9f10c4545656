"""Reductions: sum, mean, max, min, logsumexp, var (axis None | int | tuple, keepdims).

Each output y_i reduces one *group* of inputs (the elements sharing the kept coordinates). The
Jacobian has one row per group, J_i = dy_i/dx_group, and rows of different groups do not overlap. The
vjp is x_bar_group = y_bar_i J_i; it erases nothing of y_bar as long as every row is nonzero, so these
primitives are submersive and the vijp needs no fragment: y_bar_i = x_bar_j / J_ij at one coordinate j
of the group with J_ij != 0 — we pick the j with the largest |J_ij|, the best conditioned. Where a whole
row is zero (var of a constant group) the vijp raises NotInvertibleError.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_array_module
from ..errors import NotInvertibleError, ShapeError
from .base import Primitive
from .masks import BitMask


def normalize_axes(op, axis, ndim):
    """axis None | int | tuple -> a sorted tuple of distinct axes in [0, ndim)."""
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < max(ndim, 1) or (ndim == 0 and a not in (0, -1)):
            raise ShapeError(f"{op}: axis {a} is out of range for a tensor with {ndim} dimension(s)")
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out)) if ndim else ()


class Reduction(Primitive):
    """Shared bookkeeping: the reduced axes, the group size n, and the shapes with and without keepdims."""
    name = "reduction"

    @classmethod
    def setup(cls, ctx, x, axis, keepdims):
        axes = normalize_axes(cls.name, axis, x.ndim)
        shape = x.shape
        ctx.axes, ctx.in_shape = axes, shape
        ctx.keep_shape = tuple(1 if i in axes else n for i, n in enumerate(shape))
        ctx.out_shape = ctx.keep_shape if keepdims else tuple(n for i, n in enumerate(shape) if i not in axes)
        ctx.n = math.prod(shape[a] for a in axes)        # (np.prod costs ~1.5 µs per call on a small list)
        return axes

    @staticmethod
    def keep(ctx, y):
        """An output-shaped array with the reduced axes kept (size 1): it broadcasts against x."""
        return y.reshape(ctx.keep_shape)

    @staticmethod
    def groups(ctx, a):
        """An input-shaped array as (kept coordinates..., n): the last axis runs over one group."""
        xp = get_array_module(a)
        k = len(ctx.axes)
        kept = tuple(n for i, n in enumerate(ctx.in_shape) if i not in ctx.axes)
        return xp.moveaxis(a, ctx.axes, tuple(range(a.ndim - k, a.ndim))).reshape(kept + (ctx.n,))

    @classmethod
    def pick(cls, ctx, a, j):
        """a at coordinate j (an int array of group positions, shape of the kept coordinates) of every group,
        shaped like the output."""
        xp = get_array_module(a)
        return xp.take_along_axis(cls.groups(ctx, a), j[..., None], axis=-1).reshape(ctx.out_shape)

    @classmethod
    def first(cls, ctx, a):
        """a at the first element of every group, shaped like the output."""
        return a[tuple(slice(0, 1) if i in ctx.axes else slice(None) for i in range(a.ndim))].reshape(ctx.out_shape)

    @classmethod
    def check_nonempty(cls, ctx):
        if ctx.n == 0:
            raise NotInvertibleError(f"{cls.name}: the reduced groups are empty (shape {ctx.in_shape}, axes "
                                     f"{ctx.axes}), so the output cotangent cannot be recovered")


class Sum(Reduction):
    """y = sum over the group. J row = (1, ..., 1). vijp: y_bar = x_bar at any element (we take the first);
    exists whenever the groups are nonempty."""
    name = "sum"
    orders = None

    @classmethod
    def forward(cls, ctx, x, axis=None, keepdims=False):
        axes = cls.setup(ctx, x, axis, keepdims)
        return x.sum(axis=axes, keepdims=keepdims)       # the method: xp.sum's Python wrapper costs ~1 µs

    @classmethod
    def jvp(cls, ctx, x_dot):
        return x_dot.sum(axis=ctx.axes).reshape(ctx.out_shape)

    @classmethod
    def vjp(cls, ctx, y_bar):
        return (get_array_module(y_bar).broadcast_to(cls.keep(ctx, y_bar), ctx.in_shape),)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        cls.check_nonempty(ctx)
        return cls.first(ctx, x_bar)       # x_bar_j = y_bar for every j of the group


class Mean(Reduction):
    """y = sum / n. J row = (1/n, ..., 1/n). vijp: y_bar = n x_bar at any element (the first); exists
    whenever the groups are nonempty."""
    name = "mean"
    orders = None

    @classmethod
    def forward(cls, ctx, x, axis=None, keepdims=False):
        axes = cls.setup(ctx, x, axis, keepdims)
        return get_array_module(x).mean(x, axis=axes, keepdims=keepdims)

    @classmethod
    def jvp(cls, ctx, x_dot):
        return x_dot.mean(axis=ctx.axes).reshape(ctx.out_shape)

    @classmethod
    def vjp(cls, ctx, y_bar):
        return (get_array_module(y_bar).broadcast_to(cls.keep(ctx, y_bar) / ctx.n, ctx.in_shape),)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        cls.check_nonempty(ctx)
        return cls.first(ctx, x_bar) * ctx.n


class Max(Reduction):
    """y = max over the group.

    Ties: the derivative is split EQUALLY among the tied maxima (like PyTorch's amax and JAX's max):
    with k elements equal to the max, J row = mask / k, so jvp = mean of x_dot over the tied elements and
    vjp gives y_bar / k to each of them. Residual: the tie mask, bit-packed (1 bit per input element).
    vijp: y_bar = k x_bar_j at a maximal element j (the first); always exists (every row has k >= 1
    nonzero entries 1/k).
    Higher order: the mask is piecewise constant, so the vjp is linear in y_bar with a constant map.
    """
    name = "max"
    reduce = "max"
    orders = None

    @classmethod
    def forward(cls, ctx, x, axis=None, keepdims=False):
        xp = get_array_module(x)
        axes = cls.setup(ctx, x, axis, keepdims)
        cls.check_nonempty(ctx)
        y = getattr(xp, cls.reduce)(x, axis=axes, keepdims=True)
        ctx.save(mask=BitMask.pack(x == y))
        return y if keepdims else y.reshape(ctx.out_shape)

    @staticmethod
    def _mask_and_count(ctx, dtype):
        m = ctx.mask.unpack()
        return m, m.sum(axis=ctx.axes, keepdims=True).astype(dtype)

    @classmethod
    def jvp(cls, ctx, x_dot):
        xp = get_array_module(x_dot)
        m, k = cls._mask_and_count(ctx, x_dot.dtype)
        return (xp.where(m, x_dot, 0).sum(axis=ctx.axes, keepdims=True) / k).reshape(ctx.out_shape)

    @classmethod
    def vjp(cls, ctx, y_bar):
        xp = get_array_module(y_bar)
        m, k = cls._mask_and_count(ctx, y_bar.dtype)
        return (xp.where(m, cls.keep(ctx, y_bar) / k, 0).astype(y_bar.dtype, copy=False),)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # y_bar = k * x_bar_j at the first maximal element j of each group
        xp = get_array_module(x_bar)
        m, k = cls._mask_and_count(ctx, x_bar.dtype)
        j = xp.argmax(cls.groups(ctx, m), axis=-1)
        return cls.pick(ctx, x_bar, j) * k.reshape(ctx.out_shape)


class Min(Max):
    """y = min over the group. Ties split equally, as for max; vijp likewise always exists."""
    name = "min"
    reduce = "min"


class LogSumExp(Reduction):
    """y = log sum exp(x), computed stably as m + log sum exp(x - m), m the group max.

    J row = p = softmax(x) over the group (residual: p, input-sized). vijp: y_bar = x_bar_j / p_j at the
    largest p_j (>= 1/n, so always well conditioned); always exists for nonempty groups.
    """
    name = "logsumexp"
    orders = None

    @classmethod
    def residuals(cls, ctx, y, x):
        # p = exp(x - y) over the group (y = -inf for an all -inf group: p = 0 there)
        xp = get_array_module(x)
        yk = cls.keep(ctx, y)
        return dict(p=xp.exp(x - xp.where(xp.isfinite(yk), yk, 0)))

    @classmethod
    def forward(cls, ctx, x, axis=None, keepdims=False):
        xp = get_array_module(x)
        axes = cls.setup(ctx, x, axis, keepdims)
        cls.check_nonempty(ctx)
        m = xp.max(x, axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0).astype(x.dtype, copy=False)   # all -inf (or inf) groups
        e = xp.exp(x - m)
        s = e.sum(axis=axes, keepdims=True)
        empty = s == 0                      # every element -inf: y = -inf, p = 0
        y = m + xp.where(empty, -xp.inf, xp.log(xp.where(empty, 1, s))).astype(x.dtype, copy=False)
        e /= xp.where(empty, 1, s)          # p = softmax over the group
        ctx.save(p=e)
        return y if keepdims else y.reshape(ctx.out_shape)

    @classmethod
    def jvp(cls, ctx, x_dot):
        return (ctx.p * x_dot).sum(axis=ctx.axes).reshape(ctx.out_shape)

    @classmethod
    def vjp(cls, ctx, y_bar):
        return (ctx.p * cls.keep(ctx, y_bar),)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # y_bar = x_bar_j / p_j at j = argmax p (p_j >= 1/n)
        xp = get_array_module(x_bar)
        j = xp.argmax(cls.groups(ctx, ctx.p), axis=-1)
        return cls.pick(ctx, x_bar, j) / cls.pick(ctx, ctx.p, j)


class Var(Reduction):
    """y = sum (x - mean)^2 / (n - ddof). J_j = 2 (x_j - mean) / (n - ddof) (the mean's own derivative
    cancels because sum_j (x_j - mean) = 0). Residual: d = x - mean (input-sized).

    vijp: y_bar = x_bar_j / J_j at the j with the largest |J_j|. Exists when the group is not constant;
    a group whose spread max|x_j - mean| is at rounding level (<= 16 eps |mean|: numerically constant)
    has a zero Jacobian row and raises NotInvertibleError.
    """
    name = "var"
    orders = None

    @classmethod
    def residuals(cls, ctx, y, x):
        return dict(d=x - x.mean(axis=ctx.axes, keepdims=True))      # d = x - mean

    @classmethod
    def forward(cls, ctx, x, axis=None, keepdims=False, ddof=0):
        xp = get_array_module(x)
        axes = cls.setup(ctx, x, axis, keepdims)
        mu = x.mean(axis=axes, keepdims=True)
        d = x - mu
        ctx.save(d=d)
        ctx.save(mu_abs=xp.abs(mu))         # output-sized: tells a constant group from a tiny spread
        dof = ctx.n - ddof
        ctx.scale = 2.0 / dof if dof > 0 else float("inf")
        if dof <= 0:
            return xp.full(ctx.out_shape, xp.nan, dtype=x.dtype)
        return (d * d).sum(axis=axes, keepdims=keepdims) / x.dtype.type(dof)

    @classmethod
    def _scale(cls, ctx, dtype):
        return np.dtype(dtype).type(ctx.scale)

    @classmethod
    def jvp(cls, ctx, x_dot):
        return ((ctx.d * x_dot).sum(axis=ctx.axes) * cls._scale(ctx, x_dot.dtype)).reshape(ctx.out_shape)

    @classmethod
    def vjp(cls, ctx, y_bar):
        return (ctx.d * (cls.keep(ctx, y_bar) * cls._scale(ctx, y_bar.dtype)),)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # y_bar = x_bar_j / J_j at j = argmax |x_j - mean|
        xp = get_array_module(x_bar)
        cls.check_nonempty(ctx)
        g = cls.groups(ctx, xp.abs(ctx.d))
        j = xp.argmax(g, axis=-1)
        spread = xp.take_along_axis(g, j[..., None], axis=-1)[..., 0]
        # a constant group's computed spread is rounding noise of the mean: <= 16 eps |mean|
        noise = 16 * np.finfo(ctx.d.dtype).eps * ctx.mu_abs.reshape(spread.shape)
        constant = spread <= noise
        if not np.isfinite(ctx.scale) or bool(constant.any()):
            why = (f"n - ddof = {ctx.n} - {ctx.params.get('ddof', 0)} <= 0" if not np.isfinite(ctx.scale)
                   else f"{int(constant.sum())} group(s) are constant")
            raise NotInvertibleError(
                f"var: {why} (input shape {ctx.in_shape}, axes {ctx.axes}), so the Jacobian row of those outputs "
                "is zero and their cotangent cannot be recovered from the input cotangent; use reverse mode")
        return cls.pick(ctx, x_bar, j) / (cls.pick(ctx, ctx.d, j) * cls._scale(ctx, x_bar.dtype))
