"""Few-bit activations: keep a b-bit bin index of x instead of x, and a piecewise-constant derivative.

  forward:  y = f(x),  idx = searchsorted(borders, x)  (side "left": borders[idx-1] < x <= borders[idx]),
            packed = pack_bins(idx, b)                  borders: 2^b − 1 sorted interior borders
  backward: x̄ = levels[idx] · ȳ                        levels: 2^b derivative values, cast to ȳ's dtype

The fused Numba kernels do one pass each: forward computes f, binary-searches the borders and packs a
group of 8 codes into b bytes (see bitpack.py for why groups of 8); backward unpacks a group, looks up
the levels and multiplies.  NaN inputs get idx = 2^b − 1, as numpy.searchsorted sorts NaN last.
"""
import numpy as np
from numba import njit, prange

from .bitpack import check_bits, nbytes_for, pack_bins_reference, unpack_bins_reference
from .pointwise import _act, _constants, act_reference, parse_activation


def check_fewbit(borders, levels, bits, what):
    bits = check_bits(bits)
    if borders is not None:
        borders = np.asarray(borders, np.float64).ravel()
        if borders.size != 2 ** bits - 1:
            raise ValueError(f"{what}: {bits} bits need 2^{bits} - 1 = {2 ** bits - 1} borders, got {borders.size}")
        if np.any(borders[1:] < borders[:-1]):
            raise ValueError(f"{what}: borders must be sorted ascending")
    if levels is not None and np.asarray(levels).size != 2 ** bits:
        raise ValueError(f"{what}: {bits} bits need 2^{bits} = {2 ** bits} levels, got {np.asarray(levels).size}")
    return bits, borders


# ---------------------------------------------------------------------------------------------- reference
def fewbit_forward_reference(name, x, borders, bits, **params):
    y, _ = act_reference(name, x, **params)
    idx = np.searchsorted(np.asarray(borders, np.float64), x.ravel())
    return y, pack_bins_reference(idx, bits)


def fewbit_backward_reference(packed, levels, bits, y_bar):
    idx = unpack_bins_reference(packed, bits, y_bar.size).reshape(y_bar.shape)
    return np.asarray(levels).astype(y_bar.dtype)[idx] * y_bar


# ---------------------------------------------------------------------------------------------- numba CPU
@njit(inline="always")
def _bin(borders, v):
    # smallest i with v <= borders[i] (numpy.searchsorted side="left"); NaN sorts last
    if v != v:
        return borders.size
    lo, hi = 0, borders.size
    while lo < hi:
        mid = (lo + hi) // 2
        if borders[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(parallel=True, cache=True)
def _fewbit_forward_kernel(code, x, k, borders, bits, y, packed):
    n = x.size
    nbytes = packed.size
    for g in prange((n + 7) // 8):
        word = np.uint64(0)
        for t in range(min(8, n - 8 * g)):
            v = x[8 * g + t]
            y[8 * g + t] = _act(code, v, k)[0]
            word |= np.uint64(_bin(borders, v)) << np.uint64(t * bits)
        for q in range(bits):
            if g * bits + q < nbytes:
                packed[g * bits + q] = np.uint8((word >> np.uint64(8 * q)) & np.uint64(0xFF))


@njit(parallel=True, cache=True)
def _fewbit_backward_kernel(packed, levels, bits, y_bar, x_bar):
    n = y_bar.size
    nbytes = (n * bits + 7) // 8
    mask = np.uint64((1 << bits) - 1)
    for g in prange((n + 7) // 8):
        word = np.uint64(0)
        for q in range(bits):
            if g * bits + q < nbytes:
                word |= np.uint64(packed[g * bits + q]) << np.uint64(8 * q)
        for t in range(min(8, n - 8 * g)):
            x_bar[8 * g + t] = levels[(word >> np.uint64(t * bits)) & mask] * y_bar[8 * g + t]


def fewbit_forward_numba(name, x, borders, bits, **params):
    code, p = parse_activation(name, params)
    xf = np.ascontiguousarray(x).reshape(-1)
    y = np.empty_like(xf)
    packed = np.empty(nbytes_for(xf.size, bits), np.uint8)
    _fewbit_forward_kernel(code, xf, _constants(x.dtype, name, p), np.asarray(borders, np.float64), bits, y, packed)
    return y.reshape(x.shape), packed


def fewbit_backward_numba(packed, levels, bits, y_bar):
    g = np.ascontiguousarray(y_bar).reshape(-1)
    out = np.empty_like(g)
    _fewbit_backward_kernel(packed.reshape(-1), np.asarray(levels).astype(y_bar.dtype), bits, g, out)
    return out.reshape(y_bar.shape)
