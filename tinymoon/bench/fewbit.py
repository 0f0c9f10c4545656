"""Few-bit activations: memory saved, speed against the exact activation, DP solve time, approximation error,
and MNIST training with few-bit GELU against exact GELU.

    python -m tinymoon.bench fewbit --quick        # small sizes, 6000 training images, 1 epoch (~2 min)
    python -m tinymoon.bench fewbit                # full: 2^20-element timings, 60000 images, 2 epochs
    python -m tinymoon.bench fewbit --sections memory,time --n 1048576

Sections (all in one run, so every ratio compares numbers measured side by side):
  memory    saved bytes of one activation (tinymoon.memory) for b = 1..8 versus exact GELU's float32 input
  time      forward+backward (tm.vjp, then the vjp) of the few-bit activation / the exact tinymoon activation,
            for each of --time-bits (relu, leaky_relu: their exact 1-bit mask), interleaved rounds, best of
            each: the default path (one fused kernel pass each way) and the NumPy path (FUSED_FORWARD =
            FUSED_BACKWARD = False: array expressions, k - 1 comparisons, NumPy packing and table lookup);
            and the few-bit extras in ns per element, timed on the kernels alone: bin+pack (the fused
            forward without the value), unpack+lookup (the fused backward minus the multiply x̄ = f'·ȳ that
            the exact backward does too); beside them, from the same inputs, whether the timed path's x̄
            equals the NumPy path's bit for bit (`x̄ = numpy path`) and its relative error against the exact
            activation's x̄ in float64 (`x̄ rel err vs f64 exact`: the few-bit approximation itself)
  solve     DP solve time of a b-bit GELU table on a 4097-point grid (4096 cells)
  error     ∫(f' - q)² on [-10, 10] (w = 1, what the tables minimise) and E[(f' - q)²] for x ~ N(0, 1)
  train     MLP 784-H-H-10 with GELU on MNIST (Adam, batch 128, same initial weights and batches for every
            run): exact and b = 1..4; final test accuracy; of one training step: the residual bytes held
            after the forward (what backward needs), the peak saved bytes and the peak host bytes (tracemalloc)
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

import tinymoon as tm
import tinymoon.fewbit as fb
from tinymoon import nn
from tinymoon.fewbit import quantized

from .common import best_time, markdown, table, write_json

SECTIONS = ("memory", "time", "solve", "error", "train")
TIMED = ["gelu", "silu", "tanh", "sigmoid", "elu", "softplus", "relu", "leaky_relu"]   # have exact tm ops


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m tinymoon.bench fewbit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, --limit 6000, 1 epoch")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--n", type=int, default=None, help="elements per timed activation (default 2^20; quick 2^16)")
    p.add_argument("--time-bits", default="1,2,3,4", help="comma-separated bit widths of the timed few-bit "
                                                             "activations (default 1,2,3,4)")
    p.add_argument("--repeat", type=int, default=7, help="interleaved timing rounds (default 7)")
    p.add_argument("--numba-threads", type=int, default=None, help="numba.set_num_threads (default: numba's)")
    p.add_argument("--hidden", type=int, default=None, help="MLP width (default 256)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 2; quick 1)")
    p.add_argument("--limit", type=int, default=None, help="use only the first LIMIT training images")
    p.add_argument("--train-bits", default="1,2,3,4", help="bit widths trained besides exact (default 1,2,3,4)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--synthetic", action="store_true", help="synthetic data instead of MNIST")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_results", help="folder for fewbit.json (default bench_results)")
    a = p.parse_args(argv)
    a.n = a.n or (1 << 16 if a.quick else 1 << 20)
    a.hidden = a.hidden or 256
    a.epochs = a.epochs or (1 if a.quick else 2)
    if a.limit is None and a.quick:
        a.limit = 6000
    a.sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    try:
        a.time_bits = sorted({int(b) for b in a.time_bits.split(",") if b.strip()})
    except ValueError:
        p.error(f"--time-bits takes comma-separated integers in 1..8, got {a.time_bits!r}")
    if not a.time_bits or not set(a.time_bits) <= set(range(1, 9)):
        p.error(f"--time-bits takes comma-separated integers in 1..8, got {a.time_bits}")
    bad = sorted(set(a.sections) - set(SECTIONS))
    if bad:
        p.error(f"unknown sections {bad}; choose from {SECTIONS}")
    return a


# ---- memory ----------------------------------------------------------------------------------------------

def memory_section(n):
    x = tm.tensor(np.random.default_rng(0).normal(size=n).astype(np.float32), requires_grad=True)
    h = x * 2.0                                     # a non-leaf input, as inside a network
    b0 = tm.memory.saved_bytes()
    y = tm.gelu(h)
    exact = tm.memory.saved_bytes() - b0
    del y
    rows = []
    for bits in range(1, 9):
        table_ = None if bits <= 4 else fb.solve("gelu", bits, grid=1024)
        b0 = tm.memory.saved_bytes()
        y = fb.gelu(h, bits=bits, table=table_)
        saved = tm.memory.saved_bytes() - b0
        del y
        rows.append({"bits": bits, "elements": n, "saved bytes": saved, "ceil(n*b/8)": math.ceil(n * bits / 8),
                     "exact gelu bytes": exact, "smaller by": exact / saved})
    return rows


# ---- time ------------------------------------------------------------------------------------------------

def _fwd_bwd(fn, x, g):
    def step():
        _, vjp_fn = tm.vjp(fn, x)
        vjp_fn(g)
    return step


def _numpy_path(step):
    """step, run with the NumPy path (quantized.FUSED_FORWARD = FUSED_BACKWARD = False)."""
    def run():
        quantized.FUSED_FORWARD = quantized.FUSED_BACKWARD = False
        try:
            step()
        finally:
            quantized.FUSED_FORWARD = quantized.FUSED_BACKWARD = True
    return run


def _extras(name, bits, x, g):
    """The kernels' few-bit extras: {candidate: callable} for bin+pack (the fused forward kernel without its
    value, as for tanh, whose value comes from np.tanh) and the fused backward, and the multiply they replace."""
    from tinymoon.kernels import fewbit as F, pointwise as P
    table = fb.get_table(name, bits)
    tt, width = F._table_arg("t", table.borders, x.dtype), (0,) * bits    # the arguments the kernels get
    k = P._constants(x.dtype, "tanh", {})
    packed, y = np.empty(-(-x.size * bits // 8), np.uint8), np.empty_like(x)
    lvt, out = F._table_arg("l", table.levels, g.dtype), np.empty_like(g)
    d = np.ones_like(g)
    return {"bin+pack": lambda: F._fewbit_forward_kernel(F.TANH, x, k, tt, width, y, packed),
            "unpack+lookup+mul": lambda: F._fewbit_backward_kernel(packed, lvt, width, g, out),
            "mul": lambda: np.multiply(d, g, out=out)}


def _grad(fn, x, g):
    _, vjp_fn = tm.vjp(fn, x)
    return vjp_fn(g)[0].numpy()


def _checks(exact, few, x, g):
    """Beside the times, from the same inputs: whether the timed path's x̄ equals the NumPy path's bit for bit,
    and its relative error against the exact activation's x̄ in float64 (the few-bit approximation itself)."""
    got = _grad(few, x, g)
    quantized.FUSED_FORWARD = quantized.FUSED_BACKWARD = False
    try:
        ref = _grad(few, x, g)
    finally:
        quantized.FUSED_FORWARD = quantized.FUSED_BACKWARD = True
    x64 = tm.tensor(x.numpy().astype(np.float64), requires_grad=True)
    want = _grad(exact, x64, tm.tensor(g.numpy().astype(np.float64)))
    return {"x̄ = numpy path": bool(np.array_equal(got, ref, equal_nan=True)),
            "x̄ rel err vs f64 exact": float(np.linalg.norm(got - want) / np.linalg.norm(want))}


def time_section(n, bit_widths, repeat):
    rng = np.random.default_rng(0)
    x = tm.tensor(rng.normal(0, 2, n).astype(np.float32), requires_grad=True)
    g = tm.tensor(rng.normal(size=n).astype(np.float32))
    exact = {"gelu": tm.gelu, "silu": tm.silu, "tanh": tm.tanh, "sigmoid": tm.sigmoid, "elu": tm.elu,
             "softplus": tm.softplus, "relu": tm.relu, "leaky_relu": tm.leaky_relu}
    rows = []
    for name in TIMED:
        pw = fb.activation(name).piecewise_linear
        for bits in ([1] if pw else bit_widths):
            few = (lambda t, name=name: fb.activate(name, t)) if pw else \
                  (lambda t, name=name, bits=bits: fb.activate(name, t, bits=bits))
            cands = {"exact": _fwd_bwd(exact[name], x, g), "few-bit": _fwd_bwd(few, x, g)}
            cands["numpy path"] = _numpy_path(cands["few-bit"])
            if not pw:
                cands.update(_extras(name, bits, x.numpy(), g.numpy()))
            best = {k: math.inf for k in cands}
            for _ in range(repeat):                     # interleaved, so a load spike hits every candidate
                for k, f in cands.items():
                    best[k] = min(best[k], best_time(f, repeat=1, min_time=0.02))
            row = {"activation": name, "bits": bits, "elements": n, "exact ms": 1e3 * best["exact"],
                   "few-bit ms": 1e3 * best["few-bit"], "ratio": best["few-bit"] / best["exact"],
                   "numpy path ms": 1e3 * best["numpy path"], "numpy ratio": best["numpy path"] / best["exact"]}
            if not pw:
                row["bin+pack ns/el"] = 1e9 * best["bin+pack"] / n
                row["unpack+lookup ns/el"] = 1e9 * (best["unpack+lookup+mul"] - best["mul"]) / n
            row.update(_checks(exact[name], few, x, g))
            rows.append(row)
            print(table([row], list(row)), flush=True)
    return rows


# ---- solve and error ---------------------------------------------------------------------------------------

def solve_section():
    rows = []
    for bits in (1, 2, 3, 4):
        fb.solve("gelu", bits, grid=4096)               # warm-up (compilation)
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            t = fb.solve("gelu", bits, grid=4096)
            best = min(best, time.perf_counter() - t0)
        rows.append({"activation": "gelu", "bits": bits, "grid points": 4097, "method": t.method,
                     "seconds": best, "error": t.error})
    return rows


def error_section():
    rows = []
    for name in fb.continuous_names():
        row = {"activation": name}
        for bits in (1, 2, 3, 4):
            t = fb.get_table(name, bits)
            row[f"b={bits} uniform"] = t.error
            row[f"b={bits} N(0,1)"] = fb.weighted_error(t, name, domain=(-10.0, 10.0), weight="gaussian")
        rows.append(row)
    return rows


# ---- training -----------------------------------------------------------------------------------------------

def _data(args):
    if args.synthetic:
        tr = tm.data.synthetic(n=60000 if args.limit is None else args.limit, seed=0, split="train")
        te = tm.data.synthetic(n=10000, seed=0, split="test")
        name = "synthetic"
    else:
        tr, te = tm.data.mnist("train"), tm.data.mnist("test")
        name = "mnist"
    tr = (tr[0][:args.limit], tr[1][:args.limit])
    return name, tr, te


def _normalise(images):
    x = images.reshape(len(images), -1).astype(np.float32)
    if images.dtype == np.uint8:
        x = (x / np.float32(255) - np.float32(tm.data.MNIST_MEAN)) / np.float32(tm.data.MNIST_STD)
    return x


def _model(hidden, seed):
    g = tm.generator(seed)
    return nn.Sequential(nn.Linear(784, hidden, generator=g), nn.GELU(), nn.Linear(hidden, hidden, generator=g),
                         nn.GELU(), nn.Linear(hidden, 10, generator=g))


def _accuracy(model, images, labels):
    correct = 0
    with tm.no_grad():
        for i in range(0, len(labels), 2000):
            out = model(tm.tensor(_normalise(images[i:i + 2000])))
            correct += int((out.numpy().argmax(1) == labels[i:i + 2000]).sum())
    return correct / len(labels)


def train_one(bits, train, test, args):
    model = _model(args.hidden, args.seed)
    if bits is not None:
        fb.convert(model, bits=bits)
    opt = tm.optim.Adam(list(model.parameters()), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    images, labels = train
    n = len(labels)
    peak = None
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = np.random.default_rng([args.seed, epoch]).permutation(n)   # the same batches for every run
        for i in range(0, n, args.batch_size):
            idx = order[i:i + args.batch_size]
            x, y = tm.tensor(_normalise(images[idx])), tm.tensor(labels[idx].astype(np.int64))
            if peak is None and i > 0 and len(idx) == args.batch_size:     # step 2: after warm-up
                with tm.memory.measure() as m:
                    base = tm.memory.saved_bytes()
                    opt.zero_grad()
                    loss = loss_fn(model(x), y)
                    held = tm.memory.saved_bytes() - base      # the residuals backward will use
                    loss.backward()
                    opt.step()
                peak = m
                continue
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t0
    acc = _accuracy(model, *test)
    row = {"gelu": "exact" if bits is None else f"{bits}-bit", "test acc %": 100 * acc,
           "final loss": float(loss.item()), "residual bytes": held, "peak saved bytes": peak.peak_saved_bytes,
           "peak host bytes": peak.peak_host_bytes, "train s": seconds}
    print(table([row], list(row)), flush=True)
    return row


def train_section(args):
    dataset, train, test = _data(args)
    rows = [train_one(None, train, test, args)]
    for b in [int(s) for s in args.train_bits.split(",") if s.strip()]:
        rows.append(train_one(b, train, test, args))
    for r in rows:
        r["Δacc vs exact (points)"] = r["test acc %"] - rows[0]["test acc %"]
        r["residuals vs exact"] = r["residual bytes"] / rows[0]["residual bytes"]
    return dataset, rows


# ---- main -----------------------------------------------------------------------------------------------------

def run(argv=None):
    args = parse(argv or [])
    if args.numba_threads:
        import numba
        numba.set_num_threads(args.numba_threads)
    import numba
    info = {"args": vars(args), "numba_threads": numba.get_num_threads(),
            "load_average_at_start": os.getloadavg()}
    print(f"fewbit benchmark: {args.sections}; numba threads {info['numba_threads']}, load average "
          f"{info['load_average_at_start']}", flush=True)
    out, md = {}, []
    if "memory" in args.sections:
        out["memory"] = rows = memory_section(args.n)
        cols = list(rows[0])
        print(table(rows, cols, title="saved bytes of one GELU activation"), flush=True)
        md.append(markdown(rows, cols))
    if "time" in args.sections:
        out["time"] = rows = time_section(args.n, args.time_bits, args.repeat)
        cols = []
        for r in rows:
            cols += [c for c in r if c not in cols]
        print(table(rows, cols, title="forward + backward, float32 (best of interleaved rounds)"), flush=True)
        md.append(markdown(rows, cols))
    if "solve" in args.sections:
        out["solve"] = rows = solve_section()
        print(table(rows, list(rows[0]), title="DP solve time"), flush=True)
        md.append(markdown(rows, list(rows[0])))
    if "error" in args.sections:
        out["error"] = rows = error_section()
        print(table(rows, list(rows[0]), title="approximation error of the default tables"), flush=True)
        md.append(markdown(rows, list(rows[0])))
    if "train" in args.sections:
        dataset, rows = train_section(args)
        out["train"] = rows
        out["train_dataset"] = dataset
        cols = list(rows[0])
        print(table(rows, cols, title=f"MLP 784-{args.hidden}-{args.hidden}-10, GELU, {dataset}"
                                      f"{'' if args.limit is None else f' (first {args.limit} images)'}, "
                                      f"{args.epochs} epoch(s), Adam lr {args.lr}, batch {args.batch_size}"),
              flush=True)
        md.append(markdown(rows, cols))
    info["load_average_at_end"] = os.getloadavg()
    payload = {**info, **out, "markdown": md}
    write_json("fewbit", payload, out_dir=args.out)
    return payload


if __name__ == "__main__":
    run(__import__("sys").argv[1:])
