"""Parallel or serial: a Numba kernel that runs on the thread pool only when the work pays for the launch.

A parallel Numba launch wakes the pool and waits for it: measured 6–8 µs with the OpenMP layer and 40–50 µs
with workqueue on the busy 2-core machine (`python -m tinymoon.bench kernels --sections launch`; on another
day the same VM paid 38–62 µs under OpenMP), against 0.15–0.2 µs for a serial compiled call.  On 2 cores
the pool at best halves the work, so it pays once
  work · t / 2 + launch < work · t,   i.e.  work > 2 · launch / t
— with t ≈ 0.5–1 ns per element of a memory-bound kernel, about 2^15 elements under OpenMP and 2^17 under
workqueue.  `Kernel` compiles both versions of one function (the serial one is the same code with prange
read as range) and picks per call by the size of its largest array argument (or an explicit `work=`).

That fixed threshold suits kernels doing ~1 ns of work per element.  A cheap elementwise pass (an activation,
a bit mask: 0.1–0.7 ns per element, memory-bound, so two threads do not halve it) declares instead what the pool
saves per element over one thread, measured on large arrays (`Kernel(saves_ns=s)`), and gets its break-even
from the launch this process actually pays, measured once (`launch_us()`: the best of a few launches of an
empty kernel): the pool runs once work · s > launch.  On the 2-core machine under OpenMP with
OMP_WAIT_POLICY=PASSIVE a launch costs ~40–60 µs, and that rule puts the pool where one thread stops beating
two: GELU's pass from ~2^17.5 elements, the relu mask kernels from ~2^20 (at 2^15, where the fixed threshold
put them, the pool made masked_grad 9× slower).  These kernels give the same bits on any number of threads,
so a threshold that follows the machine changes their speed only.

Below the pool's break-even the serial twin runs.  It vectorises the activation bodies as well as the
parallel compilation does (bitwise the same) once the loop reads no array it cannot prove is not written: a
kernel's constants come in as an array but are read into a tuple before the loop (pointwise.constant_tuple).
Read from the array inside the loop, LLVM reloaded them each iteration and left the serial loop scalar (GELU at
4096 float32 elements 41 µs, against 2.8 µs from the tuple), which an earlier version worked around by running
the parallel compilation on one thread — a pool launch of its own under workqueue (100 µs).

The serial twin is a copy of the function under another qualified name, so Numba's on-disk cache keeps the
two compilations apart (the cache is keyed by file and qualified name, not by the `parallel` flag).
"""
import math
import time
import types

import numba
import numpy as np
from numba import njit, prange

# work (elements) from which the pool pays, per threading layer: see the module docstring
PARALLEL_MIN_WORK = {"omp": 1 << 15, "tbb": 1 << 15, "workqueue": 1 << 17}


_SERIAL_BELOW = min(PARALLEL_MIN_WORK.values())


def parallel_min_work():
    """The threshold for the layer this process runs (or will run) Numba's pool on."""
    layer = numba.config.THREADING_LAYER
    if layer not in PARALLEL_MIN_WORK:           # "default", "safe", "threadsafe", "forksafe": OpenMP or TBB
        layer = "omp"
    return PARALLEL_MIN_WORK[layer]


_launch_us = {}


@njit(parallel=True, cache=True)
def _empty_launch(a):
    for i in prange(a.size):
        a[i] += 1.0


def _on_threads(p, run):
    """run() with Numba's thread count (per calling thread) at p, restored afterwards, also when it raises."""
    now = numba.get_num_threads()
    if now == p:
        return run()
    numba.set_num_threads(p)
    try:
        return run()
    finally:
        numba.set_num_threads(now)


def _best_empty_launch(a):
    _empty_launch(a)                   # warm-up
    best = math.inf
    for _ in range(7):
        t0 = time.perf_counter()
        _empty_launch(a)
        best = min(best, time.perf_counter() - t0)
    return best


def launch_us(threads=None):
    """What one launch of a parallel compilation costs this process on `threads` threads (default: the
    current count), in µs: the best of seven launches of an empty kernel after a warm-up, measured once per
    thread count."""
    _first_launch()
    p = numba.get_num_threads() if threads is None else threads
    if p not in _launch_us:
        _launch_us[p] = _on_threads(p, lambda: _best_empty_launch(np.zeros(p))) * 1e6
    return _launch_us[p]


def _largest(args):
    n = 0
    for a in args:
        if type(a) is np.ndarray and a.size > n:
            n = a.size
    return n


class Kernel:
    """`@Kernel` on a function written with prange: `k(*arrays)` runs the parallel compilation when the
    largest array has at least parallel_min_work() elements (or `k(..., work=n)`: n units of the caller's
    choosing) and more than one thread is available; below that the serial compilation.
    saves_ns=s: the pool from the measured break-even launch_us() / s instead (never below parallel_min_work())."""

    def __init__(self, fn, cache=True, saves_ns=None, **options):
        if saves_ns is not None and not saves_ns > 0:
            raise ValueError(f"Kernel {fn.__name__}: saves_ns must be > 0, got {saves_ns!r}")
        self.saves_ns = saves_ns
        self.py_func = fn
        self.__name__, self.__qualname__, self.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        self.__module__ = fn.__module__
        self.parallel = njit(parallel=True, cache=cache, **options)(fn)
        twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                                  fn.__closure__)
        twin.__qualname__, twin.__module__ = fn.__qualname__ + "_serial", fn.__module__
        self.serial = njit(cache=cache, **options)(twin)

    def chooses_parallel(self, work):
        if work < parallel_min_work():
            return False
        _first_launch()             # numba.get_num_threads() starts the pool: its threading layer is chosen first
        p = numba.get_num_threads()
        if p < 2:
            return False
        return self.saves_ns is None or work >= self.break_even(p)

    def break_even(self, threads=None):
        """The work from which the pool (on `threads` threads, default the current count) beats one thread:
        work · saves_ns > launch."""
        return launch_us(threads) * 1e3 / self.saves_ns

    def pick(self, work):
        """(the compiled function to run for this much work, the threads it will use)."""
        if self.chooses_parallel(work):
            return self.parallel, numba.get_num_threads()
        return self.serial, 1

    def __call__(self, *args, work=None):
        n = _largest(args) if work is None else work
        if n < _SERIAL_BELOW:
            return self.serial(*args)    # below every layer's threshold: serial, without asking Numba (~0.6 µs)
        return self.pick(n)[0](*args)


def kernel(fn=None, **options):
    """Decorator: `@kernel` or `@kernel(boundscheck=False, fastmath=...)` (njit options besides parallel)."""
    if fn is None:
        return lambda f: Kernel(f, **options)
    return Kernel(fn, **options)


_launched = False


def _first_launch():
    """The threading layer is fixed by Numba's first parallel launch: choose it first (dispatch.py)."""
    global _launched
    if not _launched:
        from .dispatch import _choose_threading_layer
        _choose_threading_layer()
        _launched = True
