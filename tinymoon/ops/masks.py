"""Bit-packed boolean masks: the 1-bit-per-element residual of ReLU-like layers.

A BitMask holds ceil(n/8) bytes, LSB-first (numpy.packbits(..., bitorder="little") layout), plus the
shape. It reports `nbytes`, so the engine's memory accounting counts the packed size, not a byte per
element.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..backend import get_array_module
from .base import on_tensors


class BitMask:
    __slots__ = ("packed", "shape", "size")

    def __init__(self, packed, shape):
        self.packed, self.shape = packed, tuple(shape)
        self.size = 1
        for s in self.shape:
            self.size *= s

    @classmethod
    def pack(cls, mask):
        return cls(kernels.pack_bits(mask), mask.shape)

    def unpack(self):
        return kernels.unpack_bits(self.packed, self.size).reshape(self.shape)

    def any(self):
        """Whether some bit is set, read off the packed bytes (an eighth of the elements)."""
        return bool(self.packed.any())

    def all(self):
        """Whether every bit is set: full bytes are 0xFF, and the last byte's used bits (LSB first) are set."""
        full, tail = divmod(self.size, 8)
        p = self.packed
        if full and not bool((p[:full] == 0xFF).all()):
            return False
        return not tail or int(p[full]) & ((1 << tail) - 1) == (1 << tail) - 1

    @property
    def nbytes(self):
        return self.packed.nbytes


def where_mask(mask: BitMask, on, off_scale):
    """on where the mask bit is set, off_scale * on elsewhere (the (leaky) ReLU vjp/jvp), in on's dtype: one
    kernel pass over the packed bits; on tensors (a differentiable backward) the same as xp.where."""
    if type(on) is not np.ndarray:
        xp = get_array_module(on)
        if on_tensors(xp):
            return xp.where(mask.unpack(), on, on * off_scale if off_scale else 0)
    return kernels.masked_grad(mask.packed, on, off_scale)
