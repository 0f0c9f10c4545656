"""2-D pooling over NCHW: max_pool2d and avg_pool2d (PyTorch semantics, floor mode).

The arithmetic is tinymoon.kernels (kernels/pool.py: the NumPy reference, one-pass Numba kernels, CUDA): max
pooling keeps the argmax of each window as a tap index (uint8 for windows up to 16x16) — the residual of its
vjp, jvp and vijp — and average pooling keeps nothing but shapes.

vijp (both): exists iff the windows do not overlap (stride >= kernel on both axes), when every input pixel
feeds at most one output and J has one distinct nonzero per output row:
  avg: y_bar = kh*kw * x_bar at one in-bounds element of each window;
  max: y_bar = x_bar at each window's argmax.
Overlapping windows (stride < kernel) raise NotInvertibleError.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..backend import get_array_module
from ..errors import NotInvertibleError, ShapeError
from .base import Primitive
from .conv import _int_pair


def pool_config(name, x_shape, kernel_size, stride, padding):
    """(kernel, stride, padding, (Ho, Wo)) validated like PyTorch: padding <= kernel // 2."""
    if len(x_shape) != 4:
        raise ShapeError(f"{name}: x must be (N, C, H, W), got shape {tuple(x_shape)}")
    k = _int_pair(kernel_size, "kernel_size", name)
    s = k if stride is None else _int_pair(stride, "stride", name)
    p = _int_pair(padding, "padding", name)
    if min(k) < 1 or min(s) < 1 or min(p) < 0:
        raise ShapeError(f"{name}: need kernel_size >= 1, stride >= 1, padding >= 0; got {k}, {s}, {p}")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ShapeError(f"{name}: padding {p} must be at most half the kernel size {k}")
    h, w = x_shape[2] + 2 * p[0], x_shape[3] + 2 * p[1]
    if k[0] > h or k[1] > w:
        raise ShapeError(f"{name}: kernel {k} is larger than the padded input {h}x{w} (x {tuple(x_shape)})")
    return k, s, p, ((h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1)


def _overlap_error(name, ctx):
    k, s = ctx.cfg[0], ctx.cfg[1]
    return NotInvertibleError(
        f"{name}: no vijp for overlapping windows (kernel {k}, stride {s}): an input pixel feeds several outputs, "
        "so the input cotangent mixes them. The vijp exists only for stride >= kernel_size (e.g. the default "
        "stride); use reverse mode here")


class MaxPool2d(Primitive):
    """Max over each window (padding counts as -inf). Ties: the FIRST maximum in row-major window order gets
    the gradient (as PyTorch's CPU kernel); a NaN in the window is the maximum. Residual: the argmax as a
    window offset in the smallest unsigned int type that fits (uint8 for kh*kw <= 256)."""
    name = "max_pool2d"

    @staticmethod
    def forward(ctx, x, kernel_size=2, stride=None, padding=0):
        k, s, p, _ = ctx.cfg = pool_config("max_pool2d", x.shape, kernel_size, stride, padding)
        ctx.x_shape = tuple(x.shape)
        y, idx = kernels.max_pool2d_forward(x, k, s, p)
        ctx.save_for(0, idx=idx)
        return y

    @classmethod
    def _gather(cls, ctx, a):
        """a (input-shaped) at each window's argmax: the linear map y_dot = J a."""
        k, s, p, _ = ctx.cfg
        return kernels.max_pool2d_gather(ctx.idx, a, k, s, p)

    @classmethod
    def jvp(cls, ctx, x_dot):
        return cls._gather(ctx, x_dot)             # y_dot = x_dot at the argmax

    @classmethod
    def vjp(cls, ctx, y_bar):
        # x_bar = y_bar scattered to each window's argmax (summed where windows overlap)
        k, s, p, _ = ctx.cfg
        y_bar = get_array_module(y_bar).ascontiguousarray(y_bar)
        return (kernels.max_pool2d_backward(ctx.idx, y_bar, ctx.x_shape, k, s, p),)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # Condition: stride >= kernel (no overlap). y_bar = x_bar at the argmax (one distinct pixel per window).
        k, s = ctx.cfg[0], ctx.cfg[1]
        if s[0] < k[0] or s[1] < k[1]:
            raise _overlap_error(cls.name, ctx)
        return cls._gather(ctx, x_bar)


class AvgPool2d(Primitive):
    """Mean over each window; padding counts as zeros and the divisor is always kh*kw
    (count_include_pad=True, PyTorch's default). Linear: no residual but the shapes."""
    name = "avg_pool2d"

    @staticmethod
    def forward(ctx, x, kernel_size=2, stride=None, padding=0):
        ctx.cfg = pool_config("avg_pool2d", x.shape, kernel_size, stride, padding)
        ctx.x_shape = tuple(x.shape)
        return AvgPool2d._apply(ctx, x)

    @staticmethod
    def _apply(ctx, a):
        k, s, p, _ = ctx.cfg
        return kernels.avg_pool2d_forward(a, k, s, p)

    @classmethod
    def jvp(cls, ctx, x_dot):
        return cls._apply(ctx, x_dot)              # linear: y_dot = avg_pool(x_dot)

    @classmethod
    def vjp(cls, ctx, y_bar):
        # x_bar[pixel] = sum over the windows containing it of y_bar / (kh*kw)
        k, s, p, _ = ctx.cfg
        y_bar = get_array_module(y_bar).ascontiguousarray(y_bar)
        return (kernels.avg_pool2d_backward(y_bar, ctx.x_shape, k, s, p),)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # Condition: stride >= kernel (no overlap). y_bar = kh*kw * x_bar at one in-bounds pixel per window
        # (the window's first in-bounds row and column: max(p*s - pad, 0), inside the window since pad <= k/2).
        xp = get_array_module(x_bar)
        k, s, p, out_hw = ctx.cfg
        if s[0] < k[0] or s[1] < k[1]:
            raise _overlap_error(cls.name, ctx)
        rows = xp.asarray(np.maximum(np.arange(out_hw[0]) * s[0] - p[0], 0))
        cols = xp.asarray(np.maximum(np.arange(out_hw[1]) * s[1] - p[1], 0))
        return (k[0] * k[1]) * x_bar[:, :, rows][:, :, :, cols]
