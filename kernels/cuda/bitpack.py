"""Bit packing on the GPU: one thread per group of 8 codes (= `bits` whole bytes, see ../bitpack.py)."""
import numpy as np
from numba import cuda

from ..bitpack import nbytes_for
from .common import THREADS, arg, blocks, xp_of


@cuda.jit(device=True)
def pack_group(codes, g, bits, packed):
    # OR the group's 8 codes into one 64-bit word, then store its low `bits` bytes
    n = codes.size
    word = np.uint64(0)
    for t in range(min(8, n - 8 * g)):
        word |= np.uint64(codes[8 * g + t]) << np.uint64(t * bits)
    for q in range(bits):
        if g * bits + q < packed.size:
            packed[g * bits + q] = np.uint8((word >> np.uint64(8 * q)) & np.uint64(0xFF))


@cuda.jit(device=True)
def load_group(packed, g, bits, n):
    nbytes = (n * bits + 7) // 8
    word = np.uint64(0)
    for q in range(bits):
        if g * bits + q < nbytes:
            word |= np.uint64(packed[g * bits + q]) << np.uint64(8 * q)
    return word


@cuda.jit
def _pack_kernel(codes, bits, packed):
    g = cuda.grid(1)
    if g < (codes.size + 7) // 8:
        pack_group(codes, g, bits, packed)


@cuda.jit
def _unpack_kernel(packed, bits, n, out):
    g = cuda.grid(1)
    if g < (n + 7) // 8:
        word = load_group(packed, g, bits, n)
        mask = np.uint64((1 << bits) - 1)
        for t in range(min(8, n - 8 * g)):
            out[8 * g + t] = np.uint8((word >> np.uint64(t * bits)) & mask)


def pack_bins_cuda(idx, bits):
    xp = xp_of(idx)
    codes = xp.ascontiguousarray(idx).reshape(-1)
    out = xp.empty(nbytes_for(codes.size, bits), xp.uint8)
    _pack_kernel[blocks((codes.size + 7) // 8), THREADS](arg(codes), bits, out)
    return out


def unpack_bins_cuda(packed, bits, n):
    xp = xp_of(packed)
    out = xp.empty(n, xp.uint8)
    _unpack_kernel[blocks((n + 7) // 8), THREADS](arg(packed.reshape(-1)), bits, n, out)
    return out


def pack_bits_cuda(mask):
    return pack_bins_cuda((mask.reshape(-1) != 0).view(np.uint8), 1)


def unpack_bits_cuda(packed, n):
    return unpack_bins_cuda(packed, 1, n).view(np.bool_)
