"""Shared helpers for the benchmarks: timing, tables, JSON with the machine it ran on."""
from __future__ import annotations

import datetime
import json
import os
import platform
import time

import numpy as np


def best_time(fn, repeat=5, number=None, min_time=0.05):
    """Best seconds per call of fn() over `repeat` rounds (each round loops enough calls to last min_time)."""
    fn()                                    # warm-up (compilation, caches)
    if number is None:
        number, t = 1, 0.0
        while True:
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            t = time.perf_counter() - t0
            if t >= min_time or number >= 1 << 20:
                break
            number *= 2
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def interleaved_best(fns, rounds=7, min_time=0.02, warm=True):
    """Best seconds per call for each of several functions, timed in alternating rounds so that load from
    other processes on a shared machine hits every contender alike (best_time runs them one after
    another).  Each round calls a function enough times to last min_time, after one untimed call (`warm`)
    so that no contender pays for the caches and pages the previous one left behind.  The claim is the
    ratio of two bests from the same rounds: on the busy 2-core machine it moves by a few percent from run
    to run where one-after-another timings moved by 2x."""
    counts = {}
    for name, fn in fns.items():
        fn()  # warm-up: compilation, caches, page faults
        t0, k = time.perf_counter(), 0
        while time.perf_counter() - t0 < min_time or k == 0:
            fn()
            k += 1
        counts[name] = k
    best = {name: float("inf") for name in fns}
    for _ in range(max(1, int(rounds))):
        for name, fn in fns.items():
            if warm:
                fn()
            t0 = time.perf_counter()
            for _ in range(counts[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / counts[name])
    return best


def steady_allocator():
    """Keep freed memory in the process's heap (glibc): no mmap per large array, no trimming back to the OS.

    With glibc's defaults every array above the (dynamic) mmap threshold is fresh memory and its first touch
    page-faults — ~1-2 µs per 4 KiB page in this VM, 3-6 ms for a 12.8 MB activation.  Interleaved timing
    makes that worse for whoever runs *after* a contender that freed a lot (glibc trims the heap): PyTorch's
    conv step measured 26-29 ms after tinymoon's step, 16 ms with this setting; tinymoon's own times barely
    moved (docs/kernels.md).  A long-running training process reaches this steady state anyway.  Set
    TINYMOON_BENCH_MALLOC=default to measure with glibc's defaults.  Returns whether it applied."""
    if os.environ.get("TINYMOON_BENCH_MALLOC") == "default" or not platform.system() == "Linux":
        return False
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3           # glibc's mallopt parameter numbers
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def add_repeat_option(parser, default=7):
    parser.add_argument("--repeat", type=int, default=default,
                        help=f"interleaved rounds per comparison; each ratio is best-of-N over the same rounds "
                             f"(default {default}; raise it on a busy machine)")


STEADY_ALLOCATOR = False       # set by __main__ when steady_allocator() applied


def machine():
    info = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "steady_allocator": STEADY_ALLOCATOR,
            "numpy": np.__version__, "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count()}
    try:
        import numba
        info["numba"] = numba.__version__
    except ImportError:
        pass
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    from .. import backend
    info["gpu"] = None
    if backend.cuda_available():
        cp = backend.cupy_module()
        info["gpu"] = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return info


def table(rows, columns, title=None):
    """A plain-text table from a list of dicts."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.4g}"
        return "" if v is None else str(v)
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def markdown(rows, columns):
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return "" if v is None else str(v)
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(out)


def write_json(name, payload, out_dir="bench_results"):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    payload = {"benchmark": name, "machine": machine(), **payload}
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=2, default=float)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")
    return path
