"""python -m tinymoon.bench randomized — memory, accuracy and speed of randomized weight gradients.

1. Saved bytes of one layer (the 2nd conv of the CNN below: input B x 16 x 14 x 14; the linear head: B x 1568),
   read from the engine's counter (tm.memory.saved_bytes) around the layer call: exact vs trace estimation
   (independent r/N, multichannel r/(C·N)) vs sparse (10%, 30%) vs low-rank sketches of the stored input.
2. Gradient error at initialisation: ‖ĝ − g‖ / ‖g‖ of the 2nd conv's weight gradient, mean over batches.
3. Training a CNN on MNIST (conv5x5 1->16, relu, maxpool2, conv5x5 16->32, relu, maxpool2, linear 1568->10; Adam
   lr 1e-3) with the 2nd conv sketched (the 1st conv's input is the data batch, which lives anyway, so it stays
   exact, as in XConv): test accuracy, peak saved bytes and peak host bytes of one training step
   (tm.memory.measure(), on separate steps so tracemalloc does not slow the timed ones), and the median time per
   step, all in the same run; plus the memory-matched baseline: an exact model whose batch is cut until its
   training step saves no more than the r=16 model's. The in-training step times drift with the machine's load,
   so a separate interleaved measurement (the configurations take turns, step by step) gives the time ratios.
Timing on a shared machine: set NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 to keep threads from fighting.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import tinymoon as tm
import tinymoon.randomized as R
from tinymoon import nn

from .common import markdown, table, write_json


def cnn(seed):
    g = tm.generator(seed)
    return nn.Sequential(nn.Conv2d(1, 16, 5, padding=2, generator=g), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 5, padding=2, generator=g), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(32 * 7 * 7, 10, generator=g))


def configs(probes, budgets):
    """name -> (factory(seed) -> estimator or None, description)."""
    out = {"exact": (None, "exact backprop")}
    for r in probes:
        out[f"trace-mc r={r}"] = (lambda s, r=r: R.TraceEstimator(r, "multichannel", "gaussian", generator=s),
                                  f"multichannel Gaussian, r={r}")
    if 16 in probes:
        out["trace-ind r=16"] = (lambda s: R.TraceEstimator(16, "independent", "gaussian", generator=s),
                                 "independent Gaussian, r=16")
    for b in budgets:
        out[f"sparse {int(round(b * 100))}%"] = (lambda s, b=b: R.SparseVJP(b, "optimal", generator=s),
                                                 f"sampled input, optimal p, budget {b}")
    return out


def _convert(model, factory, seed):
    if factory is not None:
        R.convert(model, factory(seed), layer_types=nn.Conv2d, exclude=("0",))
    return model


def saved_bytes_table(batch):
    x = tm.randn(batch, 16, 14, 14, seed=0, requires_grad=True)
    w = tm.randn(32, 16, 5, 5, seed=1, requires_grad=True)
    xl = tm.randn(batch, 1568, seed=2, requires_grad=True)
    wl = tm.randn(10, 1568, seed=3, requires_grad=True)
    cases = [("exact", None), ("trace independent r=16", R.TraceEstimator(16, "independent", generator=0)),
             ("trace multichannel r=4", R.TraceEstimator(4, "multichannel", generator=0)),
             ("trace multichannel r=16", R.TraceEstimator(16, "multichannel", generator=0)),
             ("trace multichannel r=64", R.TraceEstimator(64, "multichannel", generator=0)),
             ("sparse uniform 10%", R.SparseVJP(0.1, "uniform", generator=0)),
             ("sparse optimal 10%", R.SparseVJP(0.1, "optimal", generator=0)),
             ("sparse optimal 30%", R.SparseVJP(0.3, "optimal", generator=0)),
             ("low-rank r=4", R.LowRankVJP(4, generator=0))]
    rows = []
    for name, est in cases:
        row = {"estimator": name}
        for layer, (inp, fn) in {"conv2": (x, lambda h: tm.conv2d(h, w, padding=2) if est is None else
                                           est.conv2d(h, w, padding=2)),
                                 "linear": (xl, lambda h: tm.linear(h, wl) if est is None else est.linear(h, wl))
                                 }.items():
            h = inp * 1.0                              # a non-leaf input: the exact layer must keep it
            before = tm.memory.saved_bytes()
            out = fn(h)
            row[f"{layer}_bytes"] = tm.memory.saved_bytes() - before
            del out, h
        rows.append(row)
    for row in rows:
        for layer in ("conv2", "linear"):
            row[f"{layer}_ratio"] = row[f"{layer}_bytes"] / rows[0][f"{layer}_bytes"]
    return rows


def gradient_error(cfgs, xs, ys, seed):
    """Mean relative error of the 2nd conv's weight gradient at initialisation, over the given batches."""
    exact_model = cnn(seed)
    rows = []
    exact = []
    for x, y in zip(xs, ys):
        for p in exact_model.parameters():
            p.grad = None
        nn.CrossEntropyLoss()(exact_model(x), y).backward()
        exact.append(exact_model[3].weight.grad.numpy().copy())
    for name, (factory, _) in cfgs.items():
        if factory is None:
            continue
        model = _convert(cnn(seed), factory, seed + 1)
        errs = []
        for (x, y), g in zip(zip(xs, ys), exact):
            for p in model.parameters():
                p.grad = None
            nn.CrossEntropyLoss()(model(x), y).backward()
            errs.append(float(np.linalg.norm(model[3].weight.grad.numpy() - g) / np.linalg.norm(g)))
        rows.append({"config": name, "grad_rel_err": float(np.mean(errs))})
    return rows


def train(factory, data, batch, epochs, seed, lr, measure_steps=2):
    (xtr, ytr), (xte, yte) = data
    model = _convert(cnn(seed), factory, seed + 1)
    opt = tm.optim.Adam(model.parameters(), lr=lr)
    loader = tm.data.DataLoader(xtr, ytr, batch_size=batch, shuffle=True, generator=seed, drop_last=True,
                                normalize=(tm.data.MNIST_MEAN, tm.data.MNIST_STD))
    loss_fn = nn.CrossEntropyLoss()
    times, peaks, losses = [], [], []

    def step(xb, yb):
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return float(loss.numpy())

    for _ in range(epochs):
        for i, (xb, yb) in enumerate(loader):
            if len(peaks) < measure_steps and i >= 1:          # memory on separate steps (tracemalloc is slow)
                with tm.memory.measure() as m:
                    losses.append(step(xb, yb))
                peaks.append((m.peak_saved_bytes, m.peak_host_bytes))
                continue
            t0 = time.perf_counter()
            losses.append(step(xb, yb))
            times.append(time.perf_counter() - t0)
    model.eval()
    correct = 0
    test = tm.data.DataLoader(xte, yte, batch_size=1000, normalize=(tm.data.MNIST_MEAN, tm.data.MNIST_STD))
    with tm.no_grad():
        for xb, yb in test:
            correct += int((model(xb).numpy().argmax(1) == yb.numpy()).sum())
    return {"test_acc": correct / len(yte), "final_loss": float(np.mean(losses[-20:])),
            "step_ms": 1e3 * float(np.median(times[1:] if len(times) > 1 else times)),
            "peak_saved_MB": max(p[0] for p in peaks) / 2 ** 20, "peak_host_MB": max(p[1] for p in peaks) / 2 ** 20,
            "steps": len(losses)}


def interleaved_timing(cfgs, data, batch, seed, lr, rounds):
    """Median ms per training step of each configuration, the configurations taking turns step by step, so a
    change in machine load hits them all alike (a shared machine drifts over minutes)."""
    (xtr, ytr), _ = data
    loss_fn = nn.CrossEntropyLoss()
    x = tm.tensor(((xtr[:batch].astype(np.float32) / 255 - tm.data.MNIST_MEAN) / tm.data.MNIST_STD))
    y = ytr[:batch]
    runs = {}
    for name, (factory, _) in cfgs.items():
        model = _convert(cnn(seed), factory, seed + 1)
        runs[name] = (model, tm.optim.Adam(model.parameters(), lr=lr))
    times = {name: [] for name in runs}
    for i in range(rounds + 1):
        for name, (model, opt) in runs.items():
            t0 = time.perf_counter()
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            if i:                                                  # round 0 warms up
                times[name].append(time.perf_counter() - t0)
    base = float(np.median(times["exact"]))
    return [{"config": k, "step_ms": 1e3 * float(np.median(v)), "time_vs_exact": float(np.median(v)) / base}
            for k, v in times.items()]


def load(dataset, limit, test_limit):
    if dataset == "mnist":
        try:
            (xtr, ytr), (xte, yte) = tm.data.mnist("train"), tm.data.mnist("test")
        except ImportError as e:
            print(f"MNIST unavailable ({e}); using tm.data.synthetic")
            dataset = "synthetic"
    if dataset == "synthetic":
        xtr, ytr = tm.data.synthetic(n=limit or 4096, shape=(1, 28, 28), seed=0, split="train")
        xte, yte = tm.data.synthetic(n=test_limit or 1000, shape=(1, 28, 28), seed=0, split="test")
    xtr, ytr = xtr[:limit or None], ytr[:limit or None]
    xte, yte = xte[:test_limit or None], yte[:test_limit or None]
    return dataset, ((xtr[:, None], ytr), (xte[:, None], yte))


def run(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tinymoon.bench randomized", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run: --limit 2048 train, 1000 test examples")
    ap.add_argument("--limit", type=int, default=0, help="training examples (0 = all)")
    ap.add_argument("--test-limit", type=int, default=0, help="test examples (0 = all)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--probes", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.3])
    ap.add_argument("--dataset", choices=["mnist", "synthetic"], default="mnist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None, help="run only these configurations (by name)")
    ap.add_argument("--timing-rounds", type=int, default=20, help="interleaved timing: steps per configuration")
    ap.add_argument("--no-train", action="store_true", help="skip the training runs (bytes, error, timing only)")
    ap.add_argument("--out", default="bench_results")
    a = ap.parse_args(argv)
    if a.quick:
        a.limit, a.test_limit = a.limit or 2048, a.test_limit or 1000
    dataset, data = load(a.dataset, a.limit, a.test_limit)
    cfgs = configs(a.probes, a.budgets)
    if a.only:
        cfgs = {k: v for k, v in cfgs.items() if k in a.only or k == "exact"}

    mem_rows = saved_bytes_table(a.batch)
    print(table(mem_rows, ["estimator", "conv2_bytes", "conv2_ratio", "linear_bytes", "linear_ratio"],
                title=f"saved bytes of one layer call (batch {a.batch}), from tm.memory.saved_bytes"))

    norm = lambda x: (x.astype(np.float32) / 255 - tm.data.MNIST_MEAN) / tm.data.MNIST_STD
    (xtr, ytr), _ = data
    xs = [tm.tensor(norm(xtr[i * a.batch:(i + 1) * a.batch])) for i in range(4)]
    ys = [ytr[i * a.batch:(i + 1) * a.batch] for i in range(4)]
    err_rows = gradient_error(cfgs, xs, ys, a.seed)
    print(table(err_rows, ["config", "grad_rel_err"], title="relative error of the conv2 weight gradient at init"))

    timing = interleaved_timing(cfgs, data, a.batch, a.seed, a.lr, a.timing_rounds)
    print(table(timing, ["config", "step_ms", "time_vs_exact"],
                title=f"ms per training step, batch {a.batch}, configurations interleaved ({a.timing_rounds} rounds)"))
    payload = {"args": vars(a), "dataset": dataset, "saved_bytes": mem_rows, "grad_error": err_rows,
               "timing": timing}
    if a.no_train:
        print(markdown(timing, ["config", "step_ms", "time_vs_exact"]))
        write_json("randomized", payload, a.out)
        return payload
    rows = []
    for name, (factory, desc) in cfgs.items():
        t0 = time.perf_counter()
        res = train(factory, data, a.batch, a.epochs, a.seed, a.lr)
        res.update(config=name, what=desc, batch=a.batch, wall_s=time.perf_counter() - t0)
        rows.append(res)
        print(f"  {name}: acc {res['test_acc']:.4f}, {res['step_ms']:.1f} ms/step, peak saved "
              f"{res['peak_saved_MB']:.2f} MB ({res['wall_s']:.0f} s)", flush=True)
    exact = rows[0]
    ref = next((r for r in rows if r["config"] == "trace-mc r=16"), rows[-1])
    # memory-matched exact baseline: saved bytes scale with the batch, so cut it in proportion
    b_small = max(1, int(a.batch * ref["peak_saved_MB"] / exact["peak_saved_MB"]))
    res = train(None, data, b_small, a.epochs, a.seed, a.lr)
    res.update(config=f"exact, batch {b_small}", what=f"memory-matched to {ref['config']}", batch=b_small)
    rows.append(res)
    for r in rows:
        r["time_vs_exact"] = r["step_ms"] / exact["step_ms"]
        r["saved_vs_exact"] = r["peak_saved_MB"] / exact["peak_saved_MB"]
        r["acc_minus_exact"] = r["test_acc"] - exact["test_acc"]
    cols = ["config", "batch", "test_acc", "acc_minus_exact", "peak_saved_MB", "saved_vs_exact", "peak_host_MB",
            "step_ms", "time_vs_exact", "final_loss"]
    print(table(rows, cols, title=f"CNN on {dataset}: {len(data[0][1])} train / {len(data[1][1])} test, "
                                  f"{a.epochs} epoch(s)"))
    print()
    print(markdown(mem_rows, ["estimator", "conv2_bytes", "conv2_ratio", "linear_bytes", "linear_ratio"]))
    print()
    print(markdown(err_rows, ["config", "grad_rel_err"]))
    print()
    print(markdown(rows, cols))
    print()
    print(markdown(timing, ["config", "step_ms", "time_vs_exact"]))
    payload["training"] = rows
    write_json("randomized", payload, a.out)
    return payload


if __name__ == "__main__":
    run()
