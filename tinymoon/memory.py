"""Memory accounting: the bytes of every residual the engine holds, and peak measurements.

Every `Context.save` adds the bytes of the arrays it keeps to one counter; releasing a context (its node
is done, or it is garbage collected) subtracts them. So "how much does this algorithm store?" is a number
read from the engine, not a belief. `measure()` also tracks peak host memory with tracemalloc (NumPy
reports its allocations there) and, on GPU, CuPy's memory pool.
"""
from __future__ import annotations

import tracemalloc
from contextlib import contextmanager

_saved = 0        # bytes held in residuals right now
_peak = 0         # high-water mark since the last reset_peak()


def _add(n: int) -> None:
    global _saved, _peak
    _saved += n
    if _saved > _peak:
        _peak = _saved


def _sub(n: int) -> None:
    global _saved
    _saved -= n


def saved_bytes() -> int:
    """Bytes of residuals held by the engine right now (all live tapes)."""
    return _saved


def peak_saved_bytes() -> int:
    return _peak


def reset_peak() -> None:
    global _peak
    _peak = _saved


class Measurement:
    """Filled in by `measure()`: peaks above the level at entry, in bytes."""
    peak_saved_bytes: int = 0
    peak_host_bytes: int = 0
    peak_gpu_bytes: int = 0

    def __repr__(self):
        return (f"Measurement(peak_saved_bytes={self.peak_saved_bytes}, peak_host_bytes={self.peak_host_bytes}, "
                f"peak_gpu_bytes={self.peak_gpu_bytes})")


@contextmanager
def measure(host: bool = True):
    """Measure the peak saved bytes (residuals), peak host memory (tracemalloc) and GPU pool bytes
    of the enclosed block, each relative to the level at entry.

        with tm.memory.measure() as m:
            loss = model(x).sum(); loss.backward()
        print(m.peak_saved_bytes, m.peak_host_bytes)
    """
    global _peak
    m = Measurement()
    base_saved, old_peak = _saved, _peak
    _peak = _saved
    started = False
    if host:
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        tracemalloc.reset_peak()
        base_host = tracemalloc.get_traced_memory()[0]
    pool, base_gpu = None, 0
    from . import backend
    if backend._cupy:
        pool = backend._cupy.get_default_memory_pool()
        base_gpu = pool.used_bytes()
        gpu_peak = [base_gpu]
    try:
        yield m
    finally:
        m.peak_saved_bytes = _peak - base_saved
        if host:
            m.peak_host_bytes = max(0, tracemalloc.get_traced_memory()[1] - base_host)
            if started:
                tracemalloc.stop()
        if pool is not None:
            m.peak_gpu_bytes = max(0, max(gpu_peak[0], pool.total_bytes()) - base_gpu)
        _peak = max(old_peak, _peak)


class Stash:
    """Arrays an algorithm keeps between its passes (Moonwalk's fragments and anchors, checkpoints), counted
    in the same counter as residuals, so every memory claim reads one number."""

    def __init__(self):
        self.items, self.nbytes = {}, 0

    @staticmethod
    def _size(v):
        if v is None:
            return 0
        if isinstance(v, (list, tuple)):
            return sum(Stash._size(a) for a in v)
        return int(getattr(v, "nbytes", 0))

    def put(self, key, value):
        self.pop(key)
        n = self._size(value)
        self.items[key] = value
        self.nbytes += n
        _add(n)

    def get(self, key, default=None):
        return self.items.get(key, default)

    def __contains__(self, key):
        return key in self.items

    def pop(self, key, default=None):
        if key not in self.items:
            return default
        v = self.items.pop(key)
        n = self._size(v)
        self.nbytes -= n
        _sub(n)
        return v

    def clear(self):
        for k in list(self.items):
            self.pop(k)

    def __del__(self):
        if self.nbytes:
            _sub(self.nbytes)
