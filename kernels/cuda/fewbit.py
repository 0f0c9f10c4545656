"""Fused few-bit activation kernels on the GPU: one thread per group of 8 elements.
forward: y = f(x), idx = searchsorted(borders, x) (side left, NaN last), 8 codes packed into `bits` bytes;
backward: unpack the group, x̄ = levels[idx] · ȳ.

The bins are the host kernels' (../fewbit.py): compared against the thresholds t in x's dtype (x <= s_j
<=> x <= t_j exactly, no promotion to float64), idx = K − #{j : x <= t_j} for K <= 15 borders (a NaN
compares False: K, the last bin), a binary search for wider tables."""
import numpy as np
from numba import cuda

from ..bitpack import nbytes_for
from ..fewbit import thresholds
from ..pointwise import _constants, parse_activation
from .bitpack import load_group
from .common import THREADS, arg, blocks, xp_of
from .pointwise import act_dev


@cuda.jit(device=True)
def bin_dev(borders, v):
    if borders.size <= 15:                   # branch-free count: every thread of a warp does the same work
        c = borders.size
        for j in range(borders.size):
            c -= 1 if v <= borders[j] else 0
        return c
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


@cuda.jit
def _forward_kernel(code, x, k, borders, bits, y, packed):
    g = cuda.grid(1)
    n = x.size
    if g < (n + 7) // 8:
        word = np.uint64(0)
        for t in range(min(8, n - 8 * g)):
            v = x[8 * g + t]
            y[8 * g + t] = act_dev(code, v, k)[0]
            word |= np.uint64(bin_dev(borders, v)) << np.uint64(t * bits)
        for q in range(bits):
            if g * bits + q < packed.size:
                packed[g * bits + q] = np.uint8((word >> np.uint64(8 * q)) & np.uint64(0xFF))


@cuda.jit
def _backward_kernel(packed, levels, bits, y_bar, x_bar):
    g = cuda.grid(1)
    n = y_bar.size
    if g < (n + 7) // 8:
        word = load_group(packed, g, bits, n)
        mask = np.uint64((1 << bits) - 1)
        for t in range(min(8, n - 8 * g)):
            x_bar[8 * g + t] = levels[(word >> np.uint64(t * bits)) & mask] * y_bar[8 * g + t]


def fewbit_forward_cuda(name, x, borders, bits, **params):
    code, p = parse_activation(name, params)
    xp = xp_of(x)
    xf = xp.ascontiguousarray(x).reshape(-1)
    y = xp.empty_like(xf)
    packed = xp.empty(nbytes_for(xf.size, bits), xp.uint8)
    b = xp.asarray(thresholds(borders, x.dtype))
    k = xp.asarray(_constants(x.dtype, name, p))
    _forward_kernel[blocks((xf.size + 7) // 8), THREADS](code, arg(xf), k, b, bits, y, packed)
    return y.reshape(x.shape), packed


def fewbit_backward_cuda(packed, levels, bits, y_bar):
    xp = xp_of(y_bar)
    g = xp.ascontiguousarray(y_bar).reshape(-1)
    out = xp.empty_like(g)
    lv = xp.asarray(levels).astype(y_bar.dtype)
    _backward_kernel[blocks((g.size + 7) // 8), THREADS](arg(packed.reshape(-1)), lv, bits, arg(g), out)
    return out.reshape(y_bar.shape)
