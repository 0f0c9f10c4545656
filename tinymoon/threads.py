"""CPU threads: `tm.set_num_threads(n)` for NumPy's BLAS (through threadpoolctl) and Numba's kernels.

Usable at any time after `import tinymoon` — no environment variables to set before NumPy is imported. On a
small shared machine one thread is often fastest for tinymoon's small batches: idle pools of several runtimes
otherwise compete for the same cores (docs/kernels.md measures it). Numba's pool cannot grow after it starts,
so its share is capped at NUMBA_NUM_THREADS (the core count unless that variable says less).
"""
from __future__ import annotations

from .errors import ArgumentError

__all__ = ["set_num_threads", "get_num_threads"]


def _numba():
    from . import kernels
    kernels.dispatch._choose_threading_layer()     # the layer must be fixed before Numba's pool starts
    import numba
    return numba


def set_num_threads(n: int) -> dict:
    """Use n threads (n >= 1) in BLAS (OpenBLAS, MKL, BLIS: whatever NumPy links), in any OpenMP runtime
    threadpoolctl finds, and in Numba's parallel kernels. Returns the counts now in force, per library."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ArgumentError(f"set_num_threads: n must be an int >= 1, got {n!r}")
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=n)             # not used as a context manager: the limit stays in force
    numba = _numba()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return get_num_threads()


def get_num_threads() -> dict:
    """{"blas": threads of NumPy's BLAS (None if threadpoolctl sees none), "numba": Numba's threads}."""
    from threadpoolctl import threadpool_info
    blas = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    return {"blas": max(blas) if blas else None, "numba": _numba().get_num_threads()}
