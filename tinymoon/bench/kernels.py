"""python -m tinymoon.bench kernels [--quick] [--out DIR]: the kernels' speed claims, each a ratio against a
baseline measured in the same run (best of several repeats).

CPU:  matmul (Numba blocked kernel vs numpy.matmul/BLAS); fused activation forward+backward vs the unfused
      NumPy expressions; relu mask / few-bit forward+backward; pack/unpack throughput; conv2d forward +
      both VJPs (reference and Numba) vs PyTorch CPU when torch is importable; an MLP step under Numba's
      OpenMP and workqueue threading layers, alone and after PyTorch.
GPU (only with CuPy and a GPU): tiled Numba CUDA matmul vs cuBLAS at 4096², conv vs cuDNN (via torch),
      pointwise and packing as a fraction of the memory bandwidth.
"""
import argparse
import platform

import numpy as np

from tinymoon import kernels as K
from tinymoon.kernels import bitpack as B, conv as C, dispatch, fewbit as F, gemm as G, pointwise as P

from .common import machine, markdown, table, write_json


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


def interleaved_best(fns, rounds=7, min_time=0.02):
    """Best seconds per call for each of several functions, timed in alternating rounds so that load from
    other processes on a shared machine hits every contender alike (plain best_time runs them one after
    another).  Each round calls a function enough times to last min_time."""
    import time
    counts = {}
    for name, fn in fns.items():
        fn()  # warm-up: compilation, caches, page faults
        t0, k = time.perf_counter(), 0
        while time.perf_counter() - t0 < min_time or k == 0:
            fn()
            k += 1
        counts[name] = k
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(counts[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / counts[name])
    return best


# ------------------------------------------------------------------------------------------------ CPU
def bench_matmul(quick):
    rows = []
    rng = np.random.default_rng(0)
    cases = [(256, 256, 256), (512, 512, 512)] + ([] if quick else [(1024, 1024, 1024)])
    for m, k, n in cases:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        t = interleaved_best({"np": lambda: np.matmul(a, b), "nb": lambda: G.matmul_numba(a, b)}, rounds=5)
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
    for name in K.ACTIVATIONS:
        p = params.get(name, {})

        def unfused():  # forward (y, saved y') + backward x̄ = ȳ y'
            y, d = P.act_reference(name, x, **p)
            return y, y_bar * d

        def fused():
            y, d = P.act_numba(name, x, **p)
            return y, y_bar * d
        t = interleaved_best({"u": unfused, "f": fused})
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
    t = interleaved_best({"u": relu_np, "f": relu_nb})
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
        t = interleaved_best({"u": fb_ref, "f": fb_nb})
        t_u, t_f = t["u"], t["f"]
        rows.append({"op": f"fewbit gelu {bits}-bit", "n": n, "numpy_unfused_ms": _ms(t_u),
                     "numba_fused_ms": _ms(t_f), "speedup": t_u / t_f})
    print(table(rows, list(rows[0]), "activation forward + backward, float32 (CPU)"))
    return rows


def bench_packing(n):
    rng = np.random.default_rng(2)
    rows = []
    mask = rng.random(n) < 0.5
    packed = np.packbits(mask, bitorder="little")
    for what, ref, nb in [("pack_bits", lambda: B.pack_bits_reference(mask), lambda: B.pack_bits_numba(mask)),
                          ("unpack_bits", lambda: B.unpack_bits_reference(packed, n),
                           lambda: B.unpack_bits_numba(packed, n))]:
        t = interleaved_best({"r": ref, "n": nb})
        t_r, t_n = t["r"], t["n"]
        rows.append({"op": what, "bits": 1, "n": n, "reference_GB/s": n / t_r / 1e9, "numba_GB/s": n / t_n / 1e9,
                     "numba/ref speedup": t_r / t_n})
    for bits in range(1, 9):
        idx = rng.integers(0, 2**bits, n).astype(np.uint8)
        pk = B.pack_bins_numba(idx, bits)
        t = interleaved_best({"r": lambda: B.pack_bins_reference(idx, bits), "n": lambda: B.pack_bins_numba(idx, bits)})
        t_r, t_n = t["r"], t["n"]
        rows.append({"op": "pack_bins", "bits": bits, "n": n, "reference_GB/s": n / t_r / 1e9,
                     "numba_GB/s": n / t_n / 1e9, "numba/ref speedup": t_r / t_n})
        t = interleaved_best({"r": lambda: B.unpack_bins_reference(pk, bits, n),
                              "n": lambda: B.unpack_bins_numba(pk, bits, n)})
        t_r, t_n = t["r"], t["n"]
        rows.append({"op": "unpack_bins", "bits": bits, "n": n, "reference_GB/s": n / t_r / 1e9,
                     "numba_GB/s": n / t_n / 1e9, "numba/ref speedup": t_r / t_n})
    print(table(rows, list(rows[0]), "bit packing throughput (GB/s of unpacked uint8/bool elements)"))
    return rows


def bench_conv(quick):
    rng = np.random.default_rng(3)
    rows = []
    cases = [(64, 32, 64, 28, np.float32, ((1, 1), ((1, 1), (1, 1)), (1, 1), 1))]
    if not quick:
        cases += [(64, 32, 64, 28, np.float64, ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)),
                  (32, 64, 64, 14, np.float32, ((2, 2), ((1, 1), (1, 1)), (1, 1), 1)),
                  (32, 64, 64, 28, np.float32, ((1, 1), ((1, 1), (1, 1)), (1, 1), 8))]
    try:
        import torch
    except ImportError:
        torch = None
    for n, c_in, c_out, hw, dt, args in cases:
        groups = args[3]
        x = rng.standard_normal((n, c_in, hw, hw)).astype(dt)
        w = rng.standard_normal((c_out, c_in // groups, 3, 3)).astype(dt)
        y = C.conv2d_forward_reference(x, w, *args)
        y_bar = rng.standard_normal(y.shape).astype(dt)
        row = {"case": f"N{n} {c_in}->{c_out} {hw}x{hw} 3x3 s{args[0][0]} g{groups} {np.dtype(dt).name}"}
        fns = {}
        for impl in ("reference", "numba"):
            fw = getattr(C, f"conv2d_forward_{impl}")
            gi = getattr(C, f"conv2d_grad_input_{impl}")
            gw = getattr(C, f"conv2d_grad_weight_{impl}")
            fns[f"{impl}_fwd_ms"] = lambda fw=fw: fw(x, w, *args)
            fns[f"{impl}_gin_ms"] = lambda gi=gi: gi(y_bar, w, x.shape, *args)
            fns[f"{impl}_gw_ms"] = lambda gw=gw: gw(x, y_bar, w.shape, *args)
            fns[f"{impl}_total_ms"] = lambda fw=fw, gi=gi, gw=gw: (fw(x, w, *args), gi(y_bar, w, x.shape, *args),
                                                                  gw(x, y_bar, w.shape, *args))
        # the public API with the dispatch defaults (CPU_CHOICE): what the ops layer gets
        fns["default_total_ms"] = lambda: (K.conv2d_forward(x, w, *args), K.conv2d_grad_input(y_bar, w, x.shape, *args),
                                           K.conv2d_grad_weight(x, y_bar, w.shape, *args))
        if torch is not None:
            tx = torch.tensor(x, requires_grad=True)
            tw = torch.tensor(w, requires_grad=True)
            ty_bar = torch.tensor(y_bar)
            pad = args[1][0][0]

            def torch_fb():
                yt = torch.nn.functional.conv2d(tx, tw, stride=args[0], padding=pad, groups=groups)
                return torch.autograd.grad(yt, (tx, tw), ty_bar)
            fns["torch_total_ms"] = torch_fb
        row.update({k: _ms(v) for k, v in interleaved_best(fns, rounds=7, min_time=0.0).items()})
        if torch is not None:
            for impl in ("reference", "numba", "default"):
                row[f"{impl}/torch"] = row[f"{impl}_total_ms"] / row["torch_total_ms"]
        rows.append(row)
    cols = ["case"] + [f"{i}_{s}_ms" for i in ("reference", "numba") for s in ("fwd", "gin", "gw", "total")]
    cols += ["default_total_ms"]
    cols += ["torch_total_ms", "reference/torch", "numba/torch", "default/torch"] if torch is not None else []
    print(table(rows, cols, "conv2d forward + grad_input + grad_weight (CPU)"))
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
    for name in K.ACTIVATIONS:
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
# question is what a PyTorch loaded *before* it does to the pool.
_THREADING_CHILD = r"""
import json, os, sys, time
if sys.argv[1] == "torch-first":
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
    OpenMP and workqueue threading layers, alone and with PyTorch imported and run first."""
    import importlib.util
    import json
    import os
    import subprocess
    import sys
    orders = ["alone"] + (["torch-first"] if importlib.util.find_spec("torch") else [])
    rows = []
    for order in orders:
        row = {"process": order}
        for layer in ("omp", "workqueue", None):       # None: tinymoon's own choice
            env = dict(os.environ)
            env.pop("NUMBA_THREADING_LAYER", None)
            if layer:
                env["NUMBA_THREADING_LAYER"] = layer
            if dispatch.OMP_POLICY_SET_HERE:     # the child must start as the user's process would
                env.pop("OMP_WAIT_POLICY")
            out = subprocess.run([sys.executable, "-c", _THREADING_CHILD, order], env=env, capture_output=True,
                                 text=True, check=True).stdout
            got = json.loads(out.strip().splitlines()[-1])
            if layer:
                row[f"{layer}_ms"] = round(got["ms"], 2)
            else:
                row["default_layer"], row["default_ms"] = got["layer"], round(got["ms"], 2)
        row["omp/workqueue"] = row["omp_ms"] / row["workqueue_ms"]
        rows.append(row)
    print(table(rows, list(rows[0]), "threading layer: MLP training step (ms, best of 20)"))
    return rows


def run(args):
    parser = argparse.ArgumentParser(prog="python -m tinymoon.bench kernels")
    parser.add_argument("--quick", action="store_true", help="fewer and smaller cases")
    parser.add_argument("--out", default="bench_results", help="folder for kernels.json")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    parser.add_argument("--sections", default="matmul,pointwise,packing,conv2d,threading",
                        help="comma-separated subset of CPU sections to run")
    opts = parser.parse_args(args)
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
                "packing": lambda: bench_packing(n), "conv2d": lambda: bench_conv(opts.quick),
                "threading": bench_threading}
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
