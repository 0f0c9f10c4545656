"""OpenBLAS's thread count per call: small matrix products on one thread.

After a multi-threaded GEMM, OpenBLAS's worker threads keep spinning for a while, waiting for the next one.
On 2 cores that spinner takes the core a Numba kernel's worker needs, and the kernel waits for it: in the
CNN training step (three 64 x 1568 x 10 products in its linear layer, every other op a Numba kernel) the
step took 14.7-15.7 ms with OpenBLAS's two threads and 8.7 ms with one thread for the small products
(`python -m tinymoon.bench ops`, docs/kernels.md).  A product that small gains nothing from a second
thread anyway.  So products of at most SMALL_GEMM_MACS multiply-adds run with OpenBLAS set to one thread,
and the count is put back after (it is a global of OpenBLAS's: a lock keeps two such calls from
interleaving; a large product running at the same time in another thread may run on one thread —
slower, never wrong).  Where OpenBLAS's control function cannot be found (another BLAS, another platform) nothing
changes.
"""
import ctypes
import threading

import numpy as np

SMALL_GEMM_MACS = 1 << 22          # 4M multiply-adds: ~20 µs on one core
# OpenBLAS runs a GEMM of at most 65536 x GEMM_MULTITHREAD_THRESHOLD (4 by default) multiply-adds on one
# thread by itself (interface/gemm.c): below that, setting the count is pure overhead (two ctypes calls
# and a lock, ~3 µs — a third of a small op's whole cost in the engine).
OWN_SINGLE_THREAD_MACS = 65536 * 4
_names = ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_",
          "openblas_set_num_threads64_", "openblas_get_num_threads64_",
          "openblas_set_num_threads", "openblas_get_num_threads")
_funcs = None
_lock = threading.Lock()


def _controls():
    """(set, get) of the OpenBLAS that NumPy loaded, or None."""
    global _funcs
    if _funcs is None:
        _funcs = False
        try:
            with open("/proc/self/maps") as f:       # the mapped files: where NumPy's OpenBLAS lives
                libs = {line.split()[-1] for line in f if "openblas" in line.split()[-1].lower()}
        except OSError:
            libs = set()
        for path in sorted(libs):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for set_name, get_name in zip(_names[::2], _names[1::2]):
                if hasattr(lib, set_name) and hasattr(lib, get_name):
                    _funcs = (getattr(lib, set_name), getattr(lib, get_name))
                    _funcs[0].argtypes = [ctypes.c_int]
                    break
            if _funcs:
                break
    return _funcs or None


def macs(a, b):
    """Multiply-adds of np.matmul(a, b) (batch included)."""
    if a.ndim == 0 or b.ndim == 0:
        return 0
    m = a.shape[-2] if a.ndim > 1 else 1
    k = a.shape[-1]
    n = b.shape[-1] if b.ndim > 1 else 1
    batch = int(np.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))) if a.ndim > 2 or b.ndim > 2 else 1
    return batch * m * k * n


def matmul(a, b):
    """np.matmul(a, b), on one OpenBLAS thread when it is small."""
    n_macs = a.shape[0] * a.shape[1] * b.shape[1] if a.ndim == 2 and b.ndim == 2 else macs(a, b)
    if n_macs > SMALL_GEMM_MACS or n_macs <= OWN_SINGLE_THREAD_MACS:
        return np.matmul(a, b)
    controls = _controls()
    if controls is None:
        return np.matmul(a, b)
    set_threads, get_threads = controls
    with _lock:
        n = get_threads()
        if n <= 1:
            return np.matmul(a, b)
        set_threads(1)
        try:
            return np.matmul(a, b)
        finally:
            set_threads(n)
