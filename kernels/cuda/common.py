"""Shared helpers for the Numba CUDA kernels: the array module of an array, launch sizes, per-dtype kernels."""
import functools

import numba
import numpy as np

THREADS = 128  # threads per block for 1-D kernels (a multiple of the 32-thread warp)


def xp_of(a):
    """numpy under the simulator (host arrays), cupy for device arrays."""
    if isinstance(a, np.ndarray):
        return np
    import cupy
    return cupy


def blocks(n, threads=THREADS):
    return max(1, (n + threads - 1) // threads)


def per_dtype(factory):
    """Memoise a kernel factory on the NumPy dtype: shared arrays and accumulators need a compile-time type."""
    @functools.lru_cache(maxsize=None)
    def build(dtype):
        return factory(numba.from_dtype(np.dtype(dtype)))
    return lambda dtype: build(np.dtype(dtype))


def arg(a):
    """A kernel input.  The simulator copies every NumPy argument back after the launch, which fails on
    read-only views (np.broadcast_to): give it a writable copy.  Device arrays pass through untouched."""
    if isinstance(a, np.ndarray) and not a.flags.writeable:
        return a.copy()
    return a
