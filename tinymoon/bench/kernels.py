"""python -m tinymoon.bench kernels [--quick] [--repeat N] [--sections ...] [--out DIR]: the kernels' speed
claims, each a ratio against a baseline measured in the same run: the contenders of a row are timed in N
alternating rounds and each keeps its best (raise --repeat on a busy machine).

CPU:  matmul (Numba blocked kernel vs numpy.matmul/BLAS); fused activation forward+backward vs the unfused
      NumPy expressions; exact activations forward+backward vs PyTorch (1 thread each, 2^20 elements); relu mask / few-bit forward+backward; pack/unpack throughput; conv2d forward +
      both VJPs (reference and Numba) vs PyTorch CPU when torch is importable; an MLP step under Numba's
      OpenMP and workqueue threading layers, alone and after PyTorch.
GPU (only with CuPy and a GPU): tiled Numba CUDA matmul vs cuBLAS at 4096², conv vs cuDNN (via torch),
      pointwise and packing as a fraction of the memory bandwidth.
"""
import argparse
import platform

import numpy as np

from tinymoon import kernels as K
from tinymoon.kernels import (bitpack as B, conv as C, dispatch, fewbit as F, gemm as G, pointwise as P,
                              pool as PL, threads)

from .common import add_repeat_option, interleaved_best, machine, markdown, table, write_json


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ms(t):
    return round(t * 1e3, 3)


ROUNDS = 7      # interleaved rounds per comparison (--repeat)


def _best(fns, **kw):
    return interleaved_best(fns, rounds=kw.pop("rounds", ROUNDS), **kw)


# ------------------------------------------------------------------------------------------------ CPU
def bench_matmul(quick):
    rows = []
    rng = np.random.default_rng(0)
    cases = [(256, 256, 256), (512, 512, 512)] + ([] if quick else [(1024, 1024, 1024)])
    for m, k, n in cases:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        t = _best({"np": lambda: np.matmul(a, b), "nb": lambda: G.matmul_numba(a, b)})
        t_np, t_nb = t["np"], t["nb"]
        flops = 2 * m * k * n
        rows.append({"case": f"{m}x{k} @ {k}x{n} f32", "numpy_ms": _ms(t_np), "numba_ms": _ms(t_nb),
                     "numpy_GFLOPs": flops / t_np / 1e9, "numba_GFLOPs": flops / t_nb / 1e9,
                     "numba/numpy": t_nb / t_np})
    print(table(rows, list(rows[0]), "matmul (CPU): BLAS vs the readable Numba blocked kernel"))
    return rows


def bench_pointwise(n):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    y_bar = rng.standard_normal(n).astype(np.float32)
    rows = []
    params = {"leaky_relu": {"slope": 0.01}, "elu": {"alpha": 1.0}, "softplus": {"beta": 1.0}}
    for name in K.COMPILED:
        p = params.get(name, {})

        def unfused():  # forward (y, saved y') + backward x̄ = ȳ y'
            y, d = P.act_reference(name, x, **p)
            return y, y_bar * d

        def fused():
            y, d = P.act_numba(name, x, **p)
            return y, y_bar * d
        t = _best({"u": unfused, "f": fused})
        t_u, t_f = t["u"], t["f"]
        rows.append({"op": name, "n": n, "numpy_unfused_ms": _ms(t_u), "numba_fused_ms": _ms(t_f),
                     "speedup": t_u / t_f})

    def relu_np():
        packed = np.packbits(x > 0, bitorder="little")
        y = np.maximum(x, 0)
        bit = np.unpackbits(packed, count=n, bitorder="little").view(bool)
        return y, np.where(bit, y_bar, 0)

    def relu_nb():
        y, packed = P.relu_mask_forward_numba(x)
        return y, P.masked_grad_numba(packed, y_bar)
    t = _best({"u": relu_np, "f": relu_nb})
    t_u, t_f = t["u"], t["f"]
    rows.append({"op": "relu + 1-bit mask", "n": n, "numpy_unfused_ms": _ms(t_u), "numba_fused_ms": _ms(t_f),
                 "speedup": t_u / t_f})
    for bits in (2, 4):
        borders = np.sort(rng.standard_normal(2**bits - 1))
        levels = rng.standard_normal(2**bits)

        def fb_ref():
            y, packed = F.fewbit_forward_reference("gelu", x, borders, bits)
            return y, F.fewbit_backward_reference(packed, levels, bits, y_bar)

        def fb_nb():
            y, packed = F.fewbit_forward_numba("gelu", x, borders, bits)
            return y, F.fewbit_backward_numba(packed, levels, bits, y_bar)
        t = _best({"u": fb_ref, "f": fb_nb})
        t_u, t_f = t["u"], t["f"]
        rows.append({"op": f"fewbit gelu {bits}-bit", "n": n, "numpy_unfused_ms": _ms(t_u),
                     "numba_fused_ms": _ms(t_f), "speedup": t_u / t_f})
    print(table(rows, list(rows[0]), "activation forward + backward, float32 (CPU)"))
    return rows


EXACT_VS_TORCH = ("gelu", "silu", "sigmoid", "tanh", "elu", "softplus")


def bench_act_torch(n):
    """Exact activations forward + backward, float32, one thread each, against PyTorch CPU in this process.

    kernel: `act_forward` (y and y' in one pass; y' is what the engine saves) then x̄ = ȳ·y'; engine: the
    same through tinymoon's primitive (tm.vjp of tm.gelu, ...: dispatch, residual, Tensor wrapping).  PyTorch:
    the functional op with autograd, then torch.autograd.grad — what each engine does for one activation
    of a training step.  Both sides single-threaded (torch.set_num_threads(1), Numba's threads 1)."""
    torch = _torch()
    if torch is None:
        print("act_torch: torch not importable, skipped")
        return []
    import numba
    import tinymoon as tm
    threads_before, numba_before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        rng = np.random.default_rng(2)
        x = (rng.standard_normal(n) * 3).astype(np.float32)
        y_bar = rng.standard_normal(n).astype(np.float32)
        tx, tg = torch.tensor(x, requires_grad=True), torch.tensor(y_bar)
        ex, eg = tm.tensor(x, requires_grad=True), tm.tensor(y_bar)
        tf = torch.nn.functional
        ops = {"gelu": tf.gelu, "silu": tf.silu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
               "elu": tf.elu, "softplus": tf.softplus}
        rows = []
        for name in EXACT_VS_TORCH:
            def tinymoon_fb(name=name):
                y, d = K.act_forward(name, x)
                return y, y_bar * d

            def engine_fb(fn=getattr(tm, name)):
                y, vjp_fn = tm.vjp(fn, ex)
                return y, vjp_fn(eg)

            def torch_fb(op=ops[name]):
                yt = op(tx)
                return yt, torch.autograd.grad(yt, tx, tg)
            t = _best({"tm": tinymoon_fb, "engine": engine_fb, "torch": torch_fb})
            rows.append({"activation": name, "n": n, "kernel_ms": _ms(t["tm"]), "engine_ms": _ms(t["engine"]),
                         "torch_ms": _ms(t["torch"]), "kernel/torch": t["tm"] / t["torch"],
                         "engine/torch": t["engine"] / t["torch"]})
    finally:
        torch.set_num_threads(threads_before)
        numba.set_num_threads(numba_before)
    print(table(rows, list(rows[0]), "exact activations forward + backward vs PyTorch, float32, 1 thread"))
    return rows


def bench_packing(n):
    rng = np.random.default_rng(2)
    rows = []
    mask = rng.random(n) < 0.5
    packed = np.packbits(mask, bitorder="little")
    for what, ref, nb in [("pack_bits", lambda: B.pack_bits_reference(mask), lambda: B.pack_bits_numba(mask)),
                          ("unpack_bits", lambda: B.unpack_bits_reference(packed, n),
                           lambda: B.unpack_bits_numba(packed, n))]:
        t = _best({"r": ref, "n": nb})
        t_r, t_n = t["r"], t["n"]
        rows.append({"op": what, "bits": 1, "n": n, "reference_GB/s": n / t_r / 1e9, "numba_GB/s": n / t_n / 1e9,
                     "numba/ref speedup": t_r / t_n})
    for bits in range(1, 9):
        idx = rng.integers(0, 2**bits, n).astype(np.uint8)
        pk = B.pack_bins_numba(idx, bits)
        t = _best({"r": lambda: B.pack_bins_reference(idx, bits), "n": lambda: B.pack_bins_numba(idx, bits)})
        t_r, t_n = t["r"], t["n"]
        rows.append({"op": "pack_bins", "bits": bits, "n": n, "reference_GB/s": n / t_r / 1e9,
                     "numba_GB/s": n / t_n / 1e9, "numba/ref speedup": t_r / t_n})
        t = _best({"r": lambda: B.unpack_bins_reference(pk, bits, n),
                              "n": lambda: B.unpack_bins_numba(pk, bits, n)})
        t_r, t_n = t["r"], t["n"]
        rows.append({"op": "unpack_bins", "bits": bits, "n": n, "reference_GB/s": n / t_r / 1e9,
                     "numba_GB/s": n / t_n / 1e9, "numba/ref speedup": t_r / t_n})
    print(table(rows, list(rows[0]), "bit packing throughput (GB/s of unpacked uint8/bool elements)"))
    return rows


CONV_CASES = [  # (name, N, C_in, C_out, HW, k, stride, pad, groups, dtype): issue 18's layers, then the CNN's
    ("main", 64, 32, 64, 28, 3, 1, 1, 1, np.float32),
    ("main f64", 64, 32, 64, 28, 3, 1, 1, 1, np.float64),
    ("stride 2", 32, 64, 64, 14, 3, 2, 1, 1, np.float32),
    ("groups 8", 32, 64, 64, 28, 3, 1, 1, 8, np.float32),
    ("CNN conv1", 64, 1, 16, 28, 5, 1, 2, 1, np.float32),
    ("CNN conv2", 64, 16, 32, 14, 5, 1, 2, 1, np.float32),
    ("wide 256", 16, 256, 256, 14, 3, 1, 1, 1, np.float32),
]


def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def bench_conv(quick):
    """Forward + both VJPs per implementation, all contenders of a row interleaved: the NumPy reference
    (strided im2col + batched GEMMs), the two Numba algorithms (direct, im2col + BLAS), the default the ops
    layer gets (dispatch: Numba, which picks direct or im2col per layer), and PyTorch (conv2d + autograd.grad
    for both inputs; oneDNN on this CPU)."""
    rng = np.random.default_rng(3)
    torch = _torch()
    rows = []
    cases = CONV_CASES[:1] if quick else CONV_CASES
    for name, n, c_in, c_out, hw, k, s, p, groups, dt in cases:
        args = ((s, s), ((p, p), (p, p)), (1, 1), groups)
        x = rng.standard_normal((n, c_in, hw, hw)).astype(dt)
        w = rng.standard_normal((c_out, c_in // groups, k, k)).astype(dt)
        y = C.conv2d_forward_reference(x, w, *args)
        y_bar = rng.standard_normal(y.shape).astype(dt)
        row = {"case": f"{name}: N{n} {c_in}->{c_out} {hw}x{hw} {k}x{k} s{s} g{groups} {np.dtype(dt).name}"}
        impls = {"default": (K.conv2d_forward, K.conv2d_grad_input, K.conv2d_grad_weight),
                 "direct": (C.conv2d_forward_direct, C.conv2d_grad_input_direct, C.conv2d_grad_weight_direct),
                 "im2col": (C.conv2d_forward_im2col, C.conv2d_grad_input_im2col, C.conv2d_grad_weight_im2col),
                 "reference": (C.conv2d_forward_reference, C.conv2d_grad_input_reference,
                               C.conv2d_grad_weight_reference)}
        total = {impl: (lambda fw=fw, gi=gi, gw=gw: (fw(x, w, *args), gi(y_bar, w, x.shape, *args),
                                                     gw(x, y_bar, w.shape, *args)))
                 for impl, (fw, gi, gw) in impls.items()}
        # 1. the claim: the default against PyTorch, the two alone in their rounds (a contender that
        #    allocates a 58 MB column matrix would otherwise leave page faults to whoever runs next)
        head = {"default": total["default"]}
        if torch is not None:
            tx, tw, ty_bar = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True), torch.tensor(y_bar)

            def torch_fb():
                yt = torch.nn.functional.conv2d(tx, tw, stride=s, padding=p, groups=groups)
                return torch.autograd.grad(yt, (tx, tw), ty_bar)
            head["torch"] = torch_fb
        t = _best(head, min_time=0.0)
        row.update({f"{k}_ms": _ms(v) for k, v in t.items()})
        row["picks"] = "direct" if C.direct_wins(w.shape, groups) else "im2col"
        if torch is not None:
            row["default/torch"] = t["default"] / t["torch"]
        # 2. where the time goes: the algorithms against each other (relative to the default, same rounds)
        fw, gi, gw = impls["direct"]
        parts = {"default": total["default"], "direct_fwd": lambda: fw(x, w, *args),
                 "direct_gin": lambda: gi(y_bar, w, x.shape, *args), "direct_gw": lambda: gw(x, y_bar, w.shape, *args),
                 "im2col": total["im2col"], "reference": total["reference"]}
        t = _best(parts, min_time=0.0)
        for k in ("direct_fwd", "direct_gin", "direct_gw"):
            row[f"{k}_ms"] = _ms(t[k])
        for k in ("im2col", "reference"):
            row[f"{k}/default"] = t[k] / t["default"]
        rows.append(row)
    cols = ["case", "default_ms"] + (["torch_ms", "default/torch"] if torch is not None else [])
    cols += ["picks", "direct_fwd_ms", "direct_gin_ms", "direct_gw_ms", "im2col/default", "reference/default"]
    print(table(rows, cols, "conv2d forward + grad_input + grad_weight (CPU, ms; best of interleaved rounds)"))
    return rows


def bench_pool(quick):
    """Max/avg pooling forward + backward: the NumPy reference (a strided pass per window tap), the one-pass
    Numba kernels, PyTorch; the CNN's two pooling layers and an overlapping 3x3 stride-2 window."""
    rng = np.random.default_rng(5)
    torch = _torch()
    rows = []
    cases = [((64, 16, 28, 28), (2, 2), (2, 2), (0, 0)), ((64, 32, 14, 14), (2, 2), (2, 2), (0, 0))]
    cases += [] if quick else [((32, 64, 28, 28), (3, 3), (2, 2), (1, 1))]
    for shape, k, s, p in cases:
        x = rng.standard_normal(shape).astype(np.float32)
        y, idx = PL.max_pool2d_forward_reference(x, k, s, p)
        y_bar = rng.standard_normal(y.shape).astype(np.float32)
        for kind in ("max", "avg"):
            row = {"case": f"{kind} {k[0]}x{k[1]} s{s[0]} p{p[0]} on {'x'.join(map(str, shape))}"}
            if kind == "max":
                fns = {impl: (lambda f=getattr(PL, f"max_pool2d_forward_{impl}"),
                              b=getattr(PL, f"max_pool2d_backward_{impl}"): (f(x, k, s, p), b(idx, y_bar, shape, k, s, p)))
                       for impl in ("reference", "numba")}
            else:
                fns = {impl: (lambda f=getattr(PL, f"avg_pool2d_forward_{impl}"),
                              b=getattr(PL, f"avg_pool2d_backward_{impl}"): (f(x, k, s, p), b(y_bar, shape, k, s, p)))
                       for impl in ("reference", "numba")}
            if torch is not None:
                tx, tg = torch.tensor(x, requires_grad=True), torch.tensor(y_bar)
                op = getattr(torch.nn.functional, f"{kind}_pool2d")
                fns["torch"] = lambda op=op: torch.autograd.grad(op(tx, k, s, p), tx, tg)
            t = _best(fns, min_time=0.0)
            row.update({f"{k_}_ms": _ms(v) for k_, v in t.items()})
            row["numba/reference"] = t["numba"] / t["reference"]
            if torch is not None:
                row["numba/torch"] = t["numba"] / t["torch"]
            rows.append(row)
    print(table(rows, list(rows[0]), "pooling forward + backward (CPU, ms)"))
    return rows


# One process per threading layer: the layer is fixed at Numba's first parallel launch.  PyTorch is imported
# and run first (the case issue 18 measured), then a tiny kernel is launched many times.
_LAUNCH_CHILD = r"""
import json, sys, time
import torch
m, xt = torch.nn.Linear(64, 64), torch.randn(32, 64)
for _ in range(10):
    m(xt).sum().backward()
import numpy as np, numba
from tinymoon.kernels import threads
from numba import prange

def body(a, b):
    for i in prange(a.size):
        b[i] = a[i] * 2
k = threads.Kernel(body, cache=False)
a = np.ones(64, np.float32); b = np.empty_like(a)
def per_call(f, n=4000):
    f(a, b)
    best = 1e9
    for _ in range(int(sys.argv[1])):
        t0 = time.perf_counter()
        for _ in range(n):
            f(a, b)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6
out = {"parallel_us": per_call(k.parallel), "serial_us": per_call(k.serial), "kernel_us": per_call(k),
       "numpy_us": per_call(lambda a, b: np.multiply(a, 2, out=b))}
out["layer"] = numba.threading_layer()
print(json.dumps(out))
"""


def bench_launch():
    """What a Numba kernel launch costs once PyTorch is imported: the parallel compilation (the thread pool
    wakes and joins) under each layer, the serial one, and threads.Kernel on a 64-element array (which runs
    the serial one below its threshold), against the same work as one NumPy call."""
    import json
    import os
    import subprocess
    import sys
    if _torch() is None:
        print("launch: skipped (needs PyTorch)")
        return []
    rows = []
    for layer in ("omp", "workqueue"):
        env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
        out = subprocess.run([sys.executable, "-c", _LAUNCH_CHILD, str(ROUNDS)], env=env, capture_output=True,
                             text=True, check=True).stdout
        got = json.loads(out.strip().splitlines()[-1])
        rows.append({"layer": got["layer"], **{k: round(v, 2) for k, v in got.items() if k.endswith("_us")},
                     "parallel_from": threads.PARALLEL_MIN_WORK[layer]})
    print(table(rows, list(rows[0]), "Numba launch with PyTorch imported first (us per call, 64 elements)"))
    return rows


def bench_compilations():
    """Below the pool's threshold threads.Kernel runs the serial compilation: the fused activation kernel
    (y and y', float32) serial against its parallel compilation on one thread, which vectorised the bodies
    alone before the constants were read into a tuple (pointwise.constant_tuple), with whether the two give
    the same bits (NaN as NaN) beside each time."""
    from tinymoon.kernels import threads
    rows = []
    for name in ("gelu", "silu", "sigmoid", "elu", "softplus", "relu"):
        code, p = P.parse_activation(name, {})
        for n in (256, 4096, 1 << 16):
            x = np.random.default_rng(n).normal(0, 3, n).astype(np.float32)
            k = P._constants(x.dtype, name, p)
            out = {how: (np.empty_like(x), np.empty_like(x)) for how in ("serial", "one_thread")}
            fns = {"serial": lambda: P._act_kernel.serial(code, x, k, *out["serial"]),
                   "one_thread": lambda: threads._on_threads(1, lambda: P._act_kernel.parallel(
                       code, x, k, *out["one_thread"]))}
            best = _best(fns)
            same = all(np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b))
                       for a, b in zip(out["serial"], out["one_thread"]))
            rows.append({"activation": name, "elements": n, "serial_us": round(best["serial"] * 1e6, 2),
                         "parallel_on_1_thread_us": round(best["one_thread"] * 1e6, 2),
                         "serial/parallel": best["serial"] / best["one_thread"], "same bits": same})
    print(table(rows, list(rows[0]), "activation kernel (y, y'), float32: serial vs parallel compilation on one "
                                     "thread (us)"))
    return rows


# ------------------------------------------------------------------------------------------------ GPU
def bench_gpu():
    import cupy as cp
    from tinymoon.kernels.cuda import gemm as CG, pointwise as CP

    def gpu_time(fn, repeat=10):
        fn()
        cp.cuda.Device().synchronize()
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        best = float("inf")
        for _ in range(repeat):
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            best = min(best, cp.cuda.get_elapsed_time(start, stop) / 1e3)
        return best
    props = cp.cuda.runtime.getDeviceProperties(0)
    peak = 2 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8  # bytes/s (DDR)
    out = {"gpu": props["name"].decode(), "peak_GB/s": peak / 1e9}
    rng = np.random.default_rng(4)
    a = cp.asarray(rng.standard_normal((4096, 4096)).astype(np.float32))
    b = cp.asarray(rng.standard_normal((4096, 4096)).astype(np.float32))
    t_tiled, t_cublas = gpu_time(lambda: CG.matmul_cuda(a, b), 3), gpu_time(lambda: cp.matmul(a, b))
    out["matmul_4096"] = {"tiled_ms": _ms(t_tiled), "cublas_ms": _ms(t_cublas), "tiled/cublas": t_tiled / t_cublas,
                          "tiled_TFLOPs": 2 * 4096**3 / t_tiled / 1e12, "cublas_TFLOPs": 2 * 4096**3 / t_cublas / 1e12}
    n = 1 << 26
    x = cp.asarray(rng.standard_normal(n).astype(np.float32))
    rows = []
    for name in K.COMPILED:
        for impl, fn in (("cuda", lambda: CP.act_cuda(name, x)), ("cupy", lambda: dispatch.resolve("act_forward", "cupy")(name, x))):
            t = gpu_time(fn)
            rows.append({"op": name, "impl": impl, "ms": _ms(t), "fraction_of_peak_bw": 3 * 4 * n / t / peak})
    for bits in (1, 4, 8):
        idx = cp.asarray(rng.integers(0, 2**bits, n).astype(np.uint8))
        for impl in ("cuda", "cupy"):
            fn = dispatch.resolve("pack_bins", impl)
            t = gpu_time(lambda: fn(idx, bits))
            rows.append({"op": f"pack_bins {bits}b", "impl": impl, "ms": _ms(t),
                         "fraction_of_peak_bw": (n + n * bits / 8) / t / peak})
    out["pointwise_packing"] = rows
    print(table(rows, list(rows[0]), f"GPU pointwise / packing, {out['gpu']}"))
    try:
        import torch
        xs = rng.standard_normal((64, 32, 28, 28)).astype(np.float32)
        ws = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
        args = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
        xd, wd = cp.asarray(xs), cp.asarray(ws)
        yb = cp.asarray(rng.standard_normal((64, 64, 28, 28)).astype(np.float32))
        conv = {}
        for impl in ("cupy", "cuda"):
            with K.use(impl):
                conv[f"{impl}_ms"] = _ms(gpu_time(lambda: (K.conv2d_forward(xd, wd, *args),
                                                          K.conv2d_grad_input(yb, wd, xs.shape, *args),
                                                          K.conv2d_grad_weight(xd, yb, ws.shape, *args)), 3))
        tx = torch.tensor(xs, device="cuda", requires_grad=True)
        tw = torch.tensor(ws, device="cuda", requires_grad=True)
        tyb = torch.as_tensor(yb, device="cuda")

        def cudnn():
            yt = torch.nn.functional.conv2d(tx, tw, padding=1)
            return torch.autograd.grad(yt, (tx, tw), tyb)
        conv["cudnn_ms"] = _ms(gpu_time(cudnn))
        out["conv_fwd_bwd"] = conv
        print("GPU conv fwd+bwd (N64 32->64 28x28 3x3):", conv)
    except ImportError:
        pass
    print("GPU matmul 4096^2:", out["matmul_4096"])
    return out


# One process per configuration: the threading layer is fixed at Numba's first parallel launch, and the
# question is what a PyTorch loaded *before* it (or after tinymoon, with the wait policy already set) does.
_THREADING_CHILD = r"""
import json, os, sys, time
order = sys.argv[1]
if order == "tinymoon-first":
    import tinymoon                      # sets OMP_WAIT_POLICY before PyTorch's OpenMP runtime loads
if order in ("torch-first", "tinymoon-first"):
    import torch
    m, xt = torch.nn.Linear(784, 1024), torch.randn(256, 784)
    for _ in range(10):
        m(xt).sum().backward()
import numpy as np
import numba
import tinymoon as tm
from tinymoon import nn
g = tm.generator(0)
model = nn.Sequential(nn.Linear(784, 1024, generator=g), nn.ReLU(), nn.Linear(1024, 1024, generator=g), nn.ReLU(),
                      nn.Linear(1024, 10, generator=g))
r = np.random.default_rng(0)
x, y = tm.tensor(r.standard_normal((256, 784)).astype(np.float32)), tm.tensor(r.integers(0, 10, 256))
loss_fn, best = nn.CrossEntropyLoss(), float("inf")
for _ in range(20):
    t = time.perf_counter()
    model.zero_grad()
    loss_fn(model(x), y).backward()
    best = min(best, time.perf_counter() - t)
print(json.dumps({"layer": numba.threading_layer(), "ms": best * 1e3}))
"""


def bench_threading():
    """MLP 784-1024-1024-10 training step (batch 256; its ReLUs run the fused Numba kernels) under Numba's
    OpenMP and workqueue threading layers and tinymoon's own choice: alone, with PyTorch imported and run
    first, and with tinymoon imported before PyTorch.  Each cell is the best of ROUNDS processes, the cells
    run in alternation (round r runs every cell once), so load from other processes hits them alike."""
    import importlib.util
    import json
    import os
    import subprocess
    import sys
    orders = ["alone"] + (["torch-first", "tinymoon-first"] if importlib.util.find_spec("torch") else [])
    layers = ("omp", "workqueue", None)       # None: tinymoon's own choice
    best = {}
    for _ in range(max(1, min(ROUNDS, 5))):
        for order in orders:
            for layer in layers:
                env = dict(os.environ)
                env.pop("NUMBA_THREADING_LAYER", None)
                if layer:
                    env["NUMBA_THREADING_LAYER"] = layer
                if dispatch.OMP_POLICY_SET_HERE:     # the child must start as the user's process would
                    env.pop("OMP_WAIT_POLICY", None)
                out = subprocess.run([sys.executable, "-c", _THREADING_CHILD, order], env=env, capture_output=True,
                                     text=True, check=True).stdout
                got = json.loads(out.strip().splitlines()[-1])
                key = (order, layer)
                if key not in best or got["ms"] < best[key]["ms"]:
                    best[key] = got
    rows = []
    for order in orders:
        row = {"process": order}
        for layer in layers:
            got = best[(order, layer)]
            if layer:
                row[f"{layer}_ms"] = round(got["ms"], 2)
            else:
                row["default_layer"], row["default_ms"] = got["layer"], round(got["ms"], 2)
        row["omp/workqueue"] = row["omp_ms"] / row["workqueue_ms"]
        rows.append(row)
    print(table(rows, list(rows[0]), "threading layer: MLP training step (ms, best of 20 steps x rounds)"))
    return rows


_TORCH_POLICY_CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
tp = [torch.randn(o, i, requires_grad=True) for i, o in ((784, 1024), (1024, 1024), (1024, 10))]
px, py = torch.randn(256, 784), torch.randint(0, 10, (256,))
x, w = torch.randn(64, 32, 28, 28, requires_grad=True), torch.randn(64, 32, 3, 3, requires_grad=True)
def mlp():
    h = px
    for k, p in enumerate(tp):
        h = torch.nn.functional.linear(h, p)
        h = h.relu() if k < 2 else h
    torch.nn.functional.cross_entropy(h, py).backward()
def conv():
    torch.autograd.grad(torch.nn.functional.conv2d(x, w, padding=1).sum(), (x, w))
out = {}
for name, f in (("mlp", mlp), ("conv", conv)):
    f(); f()
    best = 1e9
    for _ in range(10):
        t0 = time.perf_counter(); f(); best = min(best, time.perf_counter() - t0)
    out[name] = best * 1e3
print(json.dumps(out))
"""


def bench_torch_policy():
    """What OMP_WAIT_POLICY=PASSIVE (set by tinymoon at import, so it holds for a PyTorch imported later)
    costs PyTorch itself: its MLP step and conv forward+backward in processes of their own, with its default
    policy and with PASSIVE, alternating, best of ROUNDS processes."""
    import json
    import os
    import subprocess
    import sys
    if _torch() is None:
        return []
    best = {}
    for _ in range(max(1, min(ROUNDS, 5))):
        for policy in ("default", "PASSIVE"):
            env = dict(os.environ)
            env.pop("OMP_WAIT_POLICY", None)
            if policy == "PASSIVE":
                env["OMP_WAIT_POLICY"] = "PASSIVE"
            got = json.loads(subprocess.run([sys.executable, "-c", _TORCH_POLICY_CHILD, str(os.cpu_count() or 1)],
                                            env=env, capture_output=True, text=True, check=True).stdout.split("\n")[-2])
            for k, v in got.items():
                best[(policy, k)] = min(best.get((policy, k), float("inf")), v)
    rows = [{"torch step": k, "default_policy_ms": round(best[("default", k)], 2),
             "passive_ms": round(best[("PASSIVE", k)], 2),
             "passive/default": best[("PASSIVE", k)] / best[("default", k)]} for k in ("mlp", "conv")]
    print(table(rows, list(rows[0]), "PyTorch alone: its default OpenMP wait policy vs PASSIVE (ms)"))
    return rows


def run(args):
    parser = argparse.ArgumentParser(prog="python -m tinymoon.bench kernels")
    parser.add_argument("--quick", action="store_true", help="fewer and smaller cases")
    parser.add_argument("--out", default="bench_results", help="folder for kernels.json")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    parser.add_argument("--sections", default="matmul,pointwise,act_torch,packing,conv2d,pool,launch,threading,"
                                                 "torch_policy,compilations",
                        help="comma-separated subset of CPU sections to run")
    add_repeat_option(parser)
    opts = parser.parse_args(args)
    global ROUNDS
    ROUNDS = opts.repeat
    n = 1 << 20 if opts.quick else 1 << 24
    # the sections call the Numba kernels directly, not through dispatch: fix the threading layer first, as
    # dispatch would for an ordinary process (PyTorch, the conv baseline, is imported only afterwards)
    dispatch._choose_threading_layer()
    info = machine()
    gpu = dispatch.cupy_available() and not dispatch.cuda_simulator()
    device = f"CPU {_cpu_name()}, {info['cores']} cores" + ("" if gpu else "; no GPU")
    print(f"kernels benchmark: {device}; numpy {np.__version__}, numba {info.get('numba')}, "
          f"torch {info.get('torch')}, date {info['date']}")
    import numba
    result = {"device": device, "numpy": np.__version__, "numba": info.get("numba"), "date": info["date"],
              "threading_layer": numba.config.THREADING_LAYER,
              "quick": opts.quick, "cpu_choice": {k: list(v) for k, v in dispatch.CPU_CHOICE.items()}}
    sections = {"matmul": lambda: bench_matmul(opts.quick), "pointwise": lambda: bench_pointwise(n),
                "act_torch": lambda: bench_act_torch(1 << 20),
                "packing": lambda: bench_packing(n), "conv2d": lambda: bench_conv(opts.quick),
                "pool": lambda: bench_pool(opts.quick), "launch": bench_launch, "threading": bench_threading,
                "torch_policy": bench_torch_policy, "compilations": bench_compilations}
    chosen = [s.strip() for s in opts.sections.split(",") if s.strip()]
    for name in chosen:
        if name not in sections:
            parser.error(f"unknown section {name!r}; choose from {', '.join(sections)}")
        result[name] = sections[name]()
    result["gpu"] = bench_gpu() if gpu else "not measured: no CuPy/GPU in this run"
    write_json("kernels", result, opts.out)
    if opts.markdown:
        for name in chosen:
            columns = list(dict.fromkeys(c for row in result[name] for c in row))
            print(f"\n{name}\n" + markdown(result[name], columns))
    return result


if __name__ == "__main__":
    import sys
    run(sys.argv[1:])
