"""Inverted dropout: y = x * keep / (1 - p), keep ~ Bernoulli(1 - p) drawn from an explicit numpy Generator.

The Jacobian is diagonal, d = keep / (1 - p): the only residual is the keep mask, bit-packed (1 bit per
element). The vijp divides by d on the kept units and takes y_bar on the dropped units from the fragment.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..errors import ShapeError
from .elementwise import Diagonal
from .masks import BitMask, where_mask


class Dropout(Diagonal):
    name = "dropout"
    orders = None          # the keep mask is a constant: the map is linear

    @staticmethod
    def forward(ctx, x, p=0.5, generator=None):
        xp = get_array_module(x)
        if not 0.0 <= p <= 1.0:
            raise ShapeError(f"dropout: p must lie in [0, 1], got {p}")
        if not isinstance(generator, np.random.Generator):
            raise TypeError("dropout: pass an explicit numpy Generator (tm.generator(seed)) or an int seed; "
                            "tinymoon never draws from global random state")
        keep = xp.asarray(generator.random(x.shape) >= p)        # host draw: the same mask on every device
        ctx.scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)         # p = 1 drops everything: y = 0
        ctx.dtype = x.dtype
        ctx.save(mask=BitMask.pack(keep))
        return where_mask(ctx.mask, x * x.dtype.type(ctx.scale), 0.0)

    @classmethod
    def derivative(cls, ctx, i=0):
        xp = get_array_module(ctx.mask.packed)
        return xp.where(ctx.mask.unpack(), ctx.scale, 0).astype(ctx.dtype)     # d = keep / (1 - p)

    @classmethod
    def jvp(cls, ctx, x_dot):
        return where_mask(ctx.mask, x_dot * ctx.dtype.type(ctx.scale), 0.0)

    @classmethod
    def vjp(cls, ctx, y_bar):
        return (where_mask(ctx.mask, y_bar * ctx.dtype.type(ctx.scale), 0.0),)

    @classmethod
    def _erased(cls, ctx, d):
        # vijp (Diagonal): always exists with a fragment: y_bar = x_bar (1 - p) on the kept units, and the
        # fragment (y_bar on the dropped units, a compact 1-D array) restores the rest.
        return d == 0
