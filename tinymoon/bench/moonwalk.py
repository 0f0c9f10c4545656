"""Moonwalk against backprop, √L checkpointing and RevBackprop — every memory and time figure measured at the
default, error-controlled settings, after warm-up calls, with the gradient error of the same run (against
float64 backprop on the same weights) printed in the same row.

    python -m tinymoon.bench moonwalk                      # every section (~15 min on 2 cores)
    python -m tinymoon.bench moonwalk --quick              # small sizes (~2 min)
    python -m tinymoon.bench moonwalk --sections proof,options

Sections:
  proof     the issue's acceptance run: 48 x [Linear(256, 256), LeakyReLU(0.5)], float32, batch 1024, MSE,
            PyTorch-default and orthogonal init: error, anchors, working memory and time against backprop
  memory    saved / host / working memory and gradient error per method, networks and inits below, by depth
  deepest   the deepest network whose working memory fits a budget, from the per-layer growth
  options   anchors and memory needed for the same tolerance: float32 vs float64 cotangents, the first call
            (planned from bounds) vs after warm-up (planned from measurements), fixed K, no anchors
  time      time per step relative to backprop, MLP and RevNet, depth x width x batch
  small     batch 64, width 256: host peak of Moonwalk (backward and step) against backprop, by depth
  forward   forward-only gradients on a tiny MLP: naive forward mode, pure-forward and mixed Moonwalk

Networks (float32, width W, MNIST-sized 784 inputs except in `proof`; MSE-free: cross-entropy on 10 classes):
  mlp-leaky-S  Linear(784, W) + depth x [LeakyReLU(S), Linear(W, W)] + LeakyReLU + Linear(W, 10)
  mlp-relu     the same with ReLU (Moonwalk records fragments: the cotangent on inactive units)
  revnet       Linear(784, W) + depth x RevBlock(F, G) + Linear(W, 10); F, G = Linear(W/2, W/2), LeakyReLU(0.5),
               Linear(W/2, W/2)
Inits: "torch" = PyTorch's default (kaiming-uniform, a = √5), "ortho" = orthogonal weights (RevNet branches:
gain 0.5). Memory: "saved" = peak of the engine's counter (residuals + fragments + anchors + checkpoints);
"host" = peak traced host memory above the level at entry; "working" = host minus the parameter gradients,
which every method holds at the end. "error" = largest per-tensor relative gradient error against float64
backprop on the same weights; "bp32 error" = float32 backprop's own. Set OPENBLAS_NUM_THREADS=1 on a shared
machine: an oversubscribed BLAS makes small LAPACK calls erratic.
"""
from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np

from .common import markdown, table, write_json

NAME = "moonwalk"
WARMUP = 2            # calls before any measurement (the anchor plan learns from the first ones)


# ---- networks ---------------------------------------------------------------------------------------------

def make(net, depth, width, init, dtype="float32", seed=0, n_in=784, n_out=10, head=True):
    import tinymoon as tm
    from tinymoon import nn
    g = tm.generator(seed)
    layers = [nn.Linear(n_in, width, generator=g, dtype=dtype)] if head else []
    if net.startswith("mlp"):
        act = nn.ReLU if net == "mlp-relu" else (lambda: nn.LeakyReLU(float(net.rsplit("-", 1)[1])))
        for _ in range(depth):
            layers += [act(), nn.Linear(width, width, generator=g, dtype=dtype)]
        if head:
            layers += [act(), nn.Linear(width, n_out, generator=g, dtype=dtype)]
    elif net == "revnet":
        h = width // 2

        def branch():
            return nn.Sequential(nn.Linear(h, h, generator=g, dtype=dtype), nn.LeakyReLU(0.5),
                                 nn.Linear(h, h, generator=g, dtype=dtype))
        layers += [nn.RevBlock(branch(), branch()) for _ in range(depth)]
        layers += [nn.Linear(width, n_out, generator=g, dtype=dtype)]
    else:
        raise ValueError(net)
    model = nn.Sequential(*layers)
    if init == "ortho":
        for m in model.modules():
            if isinstance(m, nn.Linear):
                inner = net == "revnet" and m.weight.shape[0] == m.weight.shape[1] == width // 2
                nn.init.orthogonal_(m.weight, gain=0.5 if inner else 1.0, generator=g)
    return model


def proof_mlp(depth, width, init, dtype="float32"):
    """The issue's network: depth x [Linear(width, width), LeakyReLU(0.5)], no head."""
    import tinymoon as tm
    from tinymoon import nn
    g = tm.generator(0)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width, generator=g, dtype=dtype), nn.LeakyReLU(0.5)]
    model = nn.Sequential(*layers)
    if init == "ortho":
        for m in model:
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight, generator=g)
    return model


def methods():
    from tinymoon import moonwalk as mw
    return {"backprop": mw.backprop, "checkpoint-sqrtL": mw.checkpointed_backward, "revbackprop": mw.revbackprop,
            "moonwalk": mw.backward}


def copy_weights(dst, src):
    for p, q in zip(dst.parameters(), src.parameters()):
        p.data[...] = q.data
    return dst


def rel_err(got, ref):
    worst = 0.0
    for a, b in zip(got, ref):
        s = float(np.abs(b).max())
        d = float(np.abs(a.astype(np.float64) - b).max())
        worst = max(worst, d / s if s > 0 else (0.0 if d == 0 else math.inf))
    return worst if math.isfinite(worst) else math.inf


class Case:
    """One network in float32 and its float64 twin (same weights), one batch, the float64 backprop reference."""

    def __init__(self, model32, model64, loss_fn, x, y):
        from tinymoon import moonwalk as mw
        self.m, self.loss_fn, self.x, self.y = model32, loss_fn, x, y
        model64.zero_grad()
        mw.backprop(model64, loss_fn, x.astype(np.float64), y if y.dtype.kind == "i" else y.astype(np.float64))
        self.ref = [p.grad.numpy() for p in model64.parameters()]
        self.grad_bytes = sum(p.data.nbytes for p in model32.parameters())
        self.bp32 = self.error(mw.backprop)

    def call(self, fn, **kw):
        self.m.zero_grad()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)      # anchors=None runs: the error is printed anyway
            return fn(self.m, self.loss_fn, self.x, self.y, **kw)

    def error(self, fn, **kw):
        self.call(fn, **kw)
        return rel_err([p.grad.numpy() for p in self.m.parameters()], self.ref)

    def measure(self, fn, warmup=WARMUP, **kw):
        """After `warmup` calls: (error, report or None, saved MiB, host MiB, working MiB) of one call."""
        import tinymoon as tm
        for _ in range(warmup):
            self.call(fn, **kw)
        self.m.zero_grad()
        with tm.memory.measure() as mem:
            out = fn(self.m, self.loss_fn, self.x, self.y, **kw)
        err = rel_err([p.grad.numpy() for p in self.m.parameters()], self.ref)
        host = mem.peak_host_bytes
        return (err, getattr(out, "report", None), mem.peak_saved_bytes / 2**20, host / 2**20,
                (host - self.grad_bytes) / 2**20)


def case(net, depth, width, init, batch, seed=1):
    from tinymoon import nn
    r = np.random.default_rng(seed)
    x = r.standard_normal((batch, 784)).astype(np.float32)
    y = r.integers(0, 10, batch)
    m64 = make(net, depth, width, init, dtype="float64")
    return Case(copy_weights(make(net, depth, width, init), m64), m64, nn.CrossEntropyLoss(), x, y)


def _row(base, err, rep, saved, host, working, extra=None):
    row = dict(base, error=err, saved_MiB=saved, host_MiB=host, working_MiB=working)
    if rep is not None:
        row.update(anchors=len(rep.anchors), error_bound=rep.error_bound, repairs=rep.repairs)
    row.update(extra or {})
    return row


def interleaved(fns, repeat, min_time=0.2):
    """Best seconds per call of each fn, rounds interleaved so that load changes hit every method alike."""
    best = [math.inf] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            n, t0 = 0, time.perf_counter()
            while True:
                fn()
                n += 1
                t = time.perf_counter() - t0
                if t >= min_time:
                    break
            best[k] = min(best[k], t / n)
    return best


# ---- sections ---------------------------------------------------------------------------------------------

def proof(width=256, depth=48, batch=1024, repeat=3):
    """Default arguments on the issue's net: error within max(1e-4, 10 x bp32), memory and time vs backprop."""
    from tinymoon import moonwalk as mw
    from tinymoon import nn
    rows = []
    r = np.random.default_rng(1)
    x = r.standard_normal((batch, width)).astype(np.float32)
    y = r.standard_normal((batch, width)).astype(np.float32)
    for init in ("torch", "ortho"):
        m64 = proof_mlp(depth, width, init, "float64")
        c = Case(copy_weights(proof_mlp(depth, width, init), m64), m64, nn.MSELoss(), x, y)
        for meth, kw in [("backprop", {}), ("moonwalk", {}), ("moonwalk", {"cotangent_dtype": "float64"})]:
            fn = methods()[meth]
            err, rep, saved, host, working = c.measure(fn, **kw)
            rows.append(_row({"init": init, "method": meth + ("+f64-cotangents" if kw else ""), "bp32_error": c.bp32},
                             err, rep, saved, host, working))
        t_bp, t_mw = interleaved([lambda: c.call(mw.backprop), lambda: c.call(mw.backward)], repeat)
        bp, mwr = rows[-3], rows[-2]
        for rr in rows[-3:]:
            rr["pass_error"] = rr["error"] <= max(1e-4, 10 * c.bp32)
        mwr.update(ms=t_mw * 1e3, x_backprop_time=t_mw / t_bp, working_saving=bp["working_MiB"] / mwr["working_MiB"])
        bp.update(ms=t_bp * 1e3, x_backprop_time=1.0)
        print("  " + "  |  ".join(f"{rr['init']} {rr['method']}: error {rr['error']:.1e} (bp32 {rr['bp32_error']:.1e}), "
                                  f"anchors {rr.get('anchors', '-')}, working {rr['working_MiB']:.1f} MiB"
                                  for rr in rows[-3:]), flush=True)
        print(f"    time: backprop {t_bp * 1e3:.0f} ms, moonwalk {t_mw * 1e3:.0f} ms ({t_mw / t_bp:.2f}x); working memory "
              f"{bp['working_MiB'] / mwr['working_MiB']:.1f}x below backprop's", flush=True)
    return rows


NETS = ["mlp-leaky-0.5", "mlp-leaky-0.1", "mlp-relu", "revnet"]


def _pairs(net):
    out = ["backprop", "checkpoint-sqrtL", "moonwalk"]
    return out + ["revbackprop"] if net == "revnet" else out


def memory(width, depths, batch, inits=("torch", "ortho")):
    rows = []
    for init in inits:
        for net in NETS:
            for depth in depths:
                c = case(net, depth, width, init, batch)
                for meth in _pairs(net):
                    err, rep, saved, host, working = c.measure(methods()[meth])
                    rows.append(_row({"network": net, "init": init, "depth": depth, "method": meth,
                                      "bp32_error": c.bp32}, err, rep, saved, host, working))
                    r = rows[-1]
                    print(f"  {init:5s} {net:13s} depth {depth:3d} {meth:16s} error {err:.1e}  saved {saved:7.2f}  "
                          f"host {host:7.2f}  working {working:7.2f} MiB"
                          + (f"  anchors {r['anchors']}" if "anchors" in r else ""), flush=True)
    return rows


def deepest(rows, budget):
    """Per (network, init, method): depth at which working memory reaches the budget, from the per-layer slope
    between the two deepest measured points; the error measured at those depths beside it."""
    out = []
    keys = sorted({(r["network"], r["init"], r["method"]) for r in rows})
    for net, init, meth in keys:
        pts = sorted((r["depth"], r["working_MiB"], r["error"]) for r in rows
                     if (r["network"], r["init"], r["method"]) == (net, init, meth))
        if len(pts) < 2:
            continue
        (d0, w0, e0), (d1, w1, e1) = pts[-2], pts[-1]
        slope = (w1 - w0) / (d1 - d0)
        depth = math.inf if slope <= 1e-6 else int(d1 + (budget - w1) / slope)
        out.append({"network": net, "init": init, "method": meth, "MiB_per_layer": slope, "deepest": depth,
                    "error_at_fit": max(e0, e1)})
    for r in out:
        base = next(b for b in out if (b["network"], b["init"], b["method"]) == (r["network"], r["init"], "backprop"))
        r["x_backprop"] = r["deepest"] / base["deepest"] if base["deepest"] not in (0, math.inf) else None
    return out


def options(width, depth, batch):
    """Anchors and memory for the same tolerance, per option, on mlp-leaky-0.5 (both inits)."""
    from tinymoon import moonwalk as mw
    rows = []
    for init in ("torch", "ortho"):
        c = case("mlp-leaky-0.5", depth, width, init, batch)
        for label, kw, warm in [("auto, first call (bounds)", {}, 0), ("auto, after warm-up (measured)", {}, WARMUP),
                                ("auto + float64 cotangents, first call", {"cotangent_dtype": "float64"}, 0),
                                ("auto + float64 cotangents, after warm-up", {"cotangent_dtype": "float64"}, WARMUP),
                                ("every 8 units", {"anchors": 8}, WARMUP), ("every 2 units", {"anchors": 2}, WARMUP),
                                ("no anchors (anchors=None)", {"anchors": None, "on_error": "warn"}, 0)]:
            mw.forget(c.m)
            err, rep, saved, host, working = c.measure(mw.backward, warmup=warm, **kw)
            rows.append(_row({"init": init, "option": label, "bp32_error": c.bp32}, err, rep, saved, host, working))
            r = rows[-1]
            print(f"  {init:5s} {label:42s} anchors {r['anchors']:3d}  saved {saved:7.2f} MiB  working {working:7.2f} MiB"
                  f"  error {err:.1e} (bound {r['error_bound']:.1e}, bp32 {c.bp32:.1e}, repairs {r['repairs']})",
                  flush=True)
        mw.forget(c.m)
    return rows


def timing(configs, repeat):
    from tinymoon import moonwalk as mw
    rows = []
    for net, depth, width, batch, init in configs:
        c = case(net, depth, width, init, batch)
        names = [m for m in _pairs(net)]
        for m in names:                                          # warm-up (and the anchor plan's measurements)
            for _ in range(WARMUP):
                c.call(methods()[m])
        best = interleaved([lambda m=m: c.call(methods()[m]) for m in names], repeat)
        err = c.error(mw.backward)
        for m, t in zip(names, best):
            rows.append({"network": net, "init": init, "depth": depth, "width": width, "batch": batch, "method": m,
                         "ms": t * 1e3, "x_backprop": t / best[0], "moonwalk_error": err})
        print(f"  {init:5s} {net:13s} depth {depth:3d} width {width:4d} batch {batch:5d}: " + "  ".join(
            f"{m} {t * 1e3:.0f} ms ({t / best[0]:.2f}x)" for m, t in zip(names, best)) + f"   moonwalk error {err:.1e}",
            flush=True)
    return rows


def small_batch(depths, width=256, batch=64):
    """Host peaks at a small batch, where the weight gradients dominate every method's peak."""
    import tinymoon as tm
    from tinymoon import moonwalk as mw
    rows = []
    for init in ("torch", "ortho"):
        for depth in depths:
            c = case("mlp-leaky-0.5", depth, width, init, batch)
            row = {"init": init, "depth": depth, "bp32_error": c.bp32}
            for meth in ("backprop", "moonwalk"):
                err, rep, saved, host, working = c.measure(methods()[meth])
                row[f"{meth}_host_MiB"], row[f"{meth}_error"] = host, err
            opt = tm.optim.SGD(c.m.parameters(), lr=0.0)                # lr 0: the weights stay as measured
            step = lambda: mw.step(c.m, c.loss_fn, c.x, c.y, opt)       # noqa: E731
            for _ in range(WARMUP):
                step()
            with tm.memory.measure() as mem:
                step()
            row["step_host_MiB"] = mem.peak_host_bytes / 2**20
            row["backward_below_backprop"] = row["moonwalk_host_MiB"] < row["backprop_host_MiB"]
            rows.append(row)
            print(f"  {init:5s} depth {depth:3d}: host backprop {row['backprop_host_MiB']:.2f} MiB, moonwalk.backward "
                  f"{row['moonwalk_host_MiB']:.2f} MiB (error {row['moonwalk_error']:.1e}), moonwalk.step "
                  f"{row['step_host_MiB']:.2f} MiB", flush=True)
    return rows


def forward_modes(depths, width=8, n_in=16, batch=8):
    """Seconds per gradient of the forward-only methods on a tiny leaky-ReLU MLP (float64): naive forward mode
    (one jvp per parameter: quadratic in depth), pure-forward Moonwalk (one jvp per input coordinate, then the
    sweep: linear in depth), mixed Moonwalk and backprop."""
    import tinymoon as tm
    from tinymoon import moonwalk as mw
    from tinymoon import nn
    from .common import best_time
    loss_fn = nn.CrossEntropyLoss()
    r = np.random.default_rng(2)
    x = r.standard_normal((batch, n_in))
    y = r.integers(0, 4, batch)
    rows = []
    for depth in depths:
        g = tm.generator(3)
        layers = [nn.Linear(n_in, width, generator=g, dtype="float64")]
        for _ in range(depth):
            layers += [nn.LeakyReLU(0.5), nn.Linear(width, width, generator=g, dtype="float64")]
        layers += [nn.LeakyReLU(0.5), nn.Linear(width, 4, generator=g, dtype="float64")]
        model = nn.Sequential(*layers)
        for m in model:
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight, generator=g)
        row = {"depth": depth, "parameters": model.num_parameters()}
        model.zero_grad()
        mw.backprop(model, loss_fn, x, y)
        ref = [p.grad.numpy().copy() for p in model.parameters()]
        for name, fn in [("naive_forward", mw.naive_forward),
                         ("pure_forward", lambda *a: mw.backward(*a, mode="forward")),
                         ("mixed", mw.backward), ("backprop", mw.backprop)]:
            def step(fn=fn):
                model.zero_grad()
                fn(model, loss_fn, x, y)
            row[name + "_s"] = best_time(step, repeat=1 if name == "naive_forward" else 3, min_time=0.05)
            row[name + "_error"] = rel_err([p.grad.numpy() for p in model.parameters()], ref)
        row["naive_over_pure"] = row["naive_forward_s"] / row["pure_forward_s"]
        rows.append(row)
        print(f"  depth {depth:3d}: naive forward {row['naive_forward_s']:.3f} s, pure-forward Moonwalk "
              f"{row['pure_forward_s']:.4f} s ({row['naive_over_pure']:.0f}x faster, error {row['pure_forward_error']:.0e}), "
              f"mixed {row['mixed_s']:.4f} s, backprop {row['backprop_s']:.4f} s", flush=True)
    return rows


COLUMNS = {
    "proof": ["init", "method", "error", "bp32_error", "pass_error", "anchors", "error_bound", "saved_MiB", "host_MiB",
              "working_MiB", "working_saving", "ms", "x_backprop_time"],
    "memory": ["network", "init", "depth", "method", "error", "bp32_error", "anchors", "saved_MiB", "host_MiB",
               "working_MiB"],
    "deepest": ["network", "init", "method", "MiB_per_layer", "deepest", "x_backprop", "error_at_fit"],
    "options": ["init", "option", "anchors", "saved_MiB", "working_MiB", "error", "error_bound", "bp32_error",
                "repairs"],
    "time": ["network", "init", "depth", "width", "batch", "method", "ms", "x_backprop", "moonwalk_error"],
    "small": ["init", "depth", "backprop_host_MiB", "moonwalk_host_MiB", "step_host_MiB", "moonwalk_error",
              "backward_below_backprop"],
    "forward": ["depth", "parameters", "naive_forward_s", "pure_forward_s", "mixed_s", "backprop_s", "naive_over_pure",
                "pure_forward_error"],
}


def run(argv=None):
    p = argparse.ArgumentParser(prog="python -m tinymoon.bench moonwalk", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small widths and depths (a couple of minutes)")
    p.add_argument("--sections", default="proof,memory,deepest,options,time,small,forward")
    p.add_argument("--width", type=int, default=None, help="hidden width (default 256; --quick 64)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--budget", type=float, default=256.0, help="working-memory budget in MiB for `deepest`")
    p.add_argument("--repeat", type=int, default=None, help="interleaved timing rounds (default 3; --quick 2)")
    p.add_argument("--out", default="bench_results")
    a = p.parse_args(argv)
    sections = a.sections.split(",")
    unknown = set(sections) - set(COLUMNS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(COLUMNS)}")
    width = a.width or (64 if a.quick else 256)
    repeat = a.repeat or (2 if a.quick else 3)
    out = {}
    if "proof" in sections:
        print("(proof) 48 x [Linear(256, 256), LeakyReLU(0.5)], float32, batch 1024, MSE, default arguments"
              if not a.quick else "(proof, quick) 12 x [Linear(64, 64), LeakyReLU(0.5)], batch 256")
        out["proof"] = proof(*((64, 12, 256) if a.quick else (256, 48, 1024)), repeat=repeat)
    if "memory" in sections or "deepest" in sections:
        depths = [4, 16] if a.quick else [4, 16, 48]
        print(f"(memory) width {width}, batch {a.batch}, depths {depths}, after {WARMUP} warm-up calls")
        out["memory"] = memory(width, depths, a.batch)
        out["deepest"] = deepest(out["memory"], a.budget)
    if "options" in sections:
        d = 12 if a.quick else 48
        print(f"(options) mlp-leaky-0.5, depth {d}, width {width}, batch {a.batch}")
        out["options"] = options(width, d, a.batch)
    if "time" in sections:
        configs = ([("mlp-leaky-0.5", 8, 64, 128, "ortho"), ("revnet", 8, 64, 128, "ortho")] if a.quick else
                   [(net, d, w, b, "ortho") for net in ("mlp-leaky-0.5", "revnet") for d, w, b in
                    [(16, 256, 128), (48, 256, 128), (16, 512, 128), (16, 256, 1024), (48, 256, 1024), (16, 512, 1024)]])
        print(f"(time) per step, relative to backprop; best of {repeat} interleaved rounds")
        out["time"] = timing(configs, repeat)
    if "small" in sections:
        depths = [4, 16] if a.quick else [8, 16, 32, 64]
        print(f"(small) batch 64, width {256 if not a.quick else 64}: host peaks")
        out["small"] = small_batch(depths, width=64 if a.quick else 256)
    if "forward" in sections:
        print("(forward) forward-only gradients on a tiny MLP (16 inputs, width 8, batch 8, float64)")
        out["forward"] = forward_modes([2, 4] if a.quick else [2, 4, 8, 16])
    for name, rows in out.items():
        print()
        print(table(rows, COLUMNS[name], title=f"== {name}"))
    payload = {"config": {"width": width, "batch": a.batch, "budget_MiB": a.budget, "repeat": repeat, "quick": a.quick,
                          "warmup_calls": WARMUP, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")},
               **out, "markdown": {k: markdown(v, COLUMNS[k]) for k, v in out.items()}}
    write_json(NAME, payload, out_dir=a.out)
    return payload


if __name__ == "__main__":
    run()
