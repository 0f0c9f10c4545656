"""Moonwalk against backprop, √L checkpointing and RevBackprop: memory versus depth, the deepest network under a
memory budget, time per step, and the float32 error of the inverse-forward sweep with and without anchors.

    python -m tinymoon.bench moonwalk            # full run (~10 min on 2 cores)
    python -m tinymoon.bench moonwalk --quick    # small widths and depths (~1 min)

Networks (MNIST-sized input, batch 128, float32):
  mlp-leaky   Linear(784, W) + depth x [LeakyReLU(0.1), Linear(W, W)] + LeakyReLU + Linear(W, 10)
  mlp-relu    the same with ReLU (Moonwalk records fragments: the cotangent on inactive units)
  revnet      Linear(784, W) + depth x RevBlock(F, G) + Linear(W, 10); F, G = Linear(W/2, W/2), LeakyReLU(0.1),
              Linear(W/2, W/2)
All weights orthogonal (RevNet branches: gain 0.5).
Memory: "saved" = peak of the engine's counter during one gradient step (tinymoon.memory: residuals kept by
rules, plus fragments, anchors and checkpoints kept by the algorithms); "host" = peak traced host memory
(tracemalloc) during the step above the level at entry, which also holds the parameter gradients and transient
work arrays. Budget: the deepest network whose saved bytes stay within --budget MiB (default 256), solved from
the measured linear growth in depth (per-layer slope between the two deepest measured points).
Time: best of --repeat interleaved rounds, each method relative to backprop on the same network in the same run.
Set OPENBLAS_NUM_THREADS=1 on a shared machine: an oversubscribed BLAS makes small LAPACK calls erratic.
"""
from __future__ import annotations

import argparse
import math
import os

import numpy as np

from .common import best_time, markdown, table, write_json

NAME = "moonwalk"


def _orthogonal(seq, g, gain=1.0):
    """Orthogonal weights (times gain) for the Linear entries of seq: well-conditioned layers, so the float32
    sweep stays accurate at every depth measured (default init at depth 32 overflows the unanchored sweep)."""
    from tinymoon import nn
    for m in seq:
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=gain, generator=g)
    return seq


def _models(width, slope=0.1, dtype="float32"):
    import tinymoon as tm
    from tinymoon import nn

    def mlp(depth, act, seed=0):
        g = tm.generator(seed)
        layers = [nn.Linear(784, width, generator=g, dtype=dtype)]
        for _ in range(depth):
            layers += [act(), nn.Linear(width, width, generator=g, dtype=dtype)]
        layers += [act(), nn.Linear(width, 10, generator=g, dtype=dtype)]
        return _orthogonal(nn.Sequential(*layers), g)

    def revnet(depth, seed=0):
        g = tm.generator(seed)
        h = width // 2

        def branch():
            return nn.Sequential(nn.Linear(h, h, generator=g, dtype=dtype), nn.LeakyReLU(slope),
                                 nn.Linear(h, h, generator=g, dtype=dtype))
        blocks = [nn.RevBlock(_orthogonal(branch(), g, 0.5), _orthogonal(branch(), g, 0.5)) for _ in range(depth)]
        return _orthogonal(nn.Sequential(nn.Linear(784, width, generator=g, dtype=dtype), nn.Sequential(*blocks),
                                         nn.Linear(width, 10, generator=g, dtype=dtype)), g)

    return {"mlp-leaky": lambda d: mlp(d, lambda: nn.LeakyReLU(slope)),
            "mlp-relu": lambda d: mlp(d, nn.ReLU),
            "revnet": revnet}


def _methods():
    from tinymoon import moonwalk as mw
    return {"backprop": mw.backprop, "checkpoint-sqrtL": mw.checkpointed_backward, "revbackprop": mw.revbackprop,
            "moonwalk": mw.backward}


# which methods run on which network (RevBackprop only where every hidden unit is reversible)
PAIRS = [("mlp-leaky", "backprop"), ("mlp-leaky", "checkpoint-sqrtL"), ("mlp-leaky", "moonwalk"),
         ("mlp-relu", "backprop"), ("mlp-relu", "moonwalk"),
         ("revnet", "backprop"), ("revnet", "checkpoint-sqrtL"), ("revnet", "revbackprop"), ("revnet", "moonwalk")]


def _data(batch, seed=0, dtype=np.float32):
    r = np.random.default_rng(seed)
    return r.standard_normal((batch, 784)).astype(dtype), r.integers(0, 10, batch)


def _measure(net, meth, depth, width, batch):
    """(peak saved MiB, peak host MiB, parameter MiB) of one gradient step."""
    import tinymoon as tm
    from tinymoon import nn
    loss_fn = nn.CrossEntropyLoss()
    model = _models(width)[net](depth)
    x, y = _data(batch)
    fn = _methods()[meth]
    model.zero_grad()
    fn(model, loss_fn, x, y)                                 # warm-up (first-call allocations)
    model.zero_grad()
    with tm.memory.measure() as m:
        fn(model, loss_fn, x, y)
    return (m.peak_saved_bytes / 2**20, m.peak_host_bytes / 2**20,
            sum(p.data.nbytes for p in model.parameters()) / 2**20)


def memory_vs_depth(width, depths, batch):
    rows = []
    for depth in depths:
        for net, meth in PAIRS:
            saved, host, params = _measure(net, meth, depth, width, batch)
            rows.append({"network": net, "method": meth, "depth": depth, "saved_MiB": saved, "host_MiB": host,
                         "params_MiB": params})
            print(f"  depth {depth:4d} {net:10s} {meth:17s} saved {saved:9.3f} MiB   host {host:9.3f} MiB", flush=True)
    return rows


def deepest_fit(rows, budget_mib, key="saved_MiB", extend=None, max_depth=1024):
    """Per (network, method): the depth at which `key` reaches the budget, from the per-layer growth
    between the two deepest points (memory is linear in depth once the per-layer part dominates).

    A method whose memory is still flat at the deepest measured depth (a one-layer working set dominates:
    Moonwalk's masks are 1 bit per activation) is measured at doubled depths via `extend(net, meth, depth)`
    until one doubling grows it by half or max_depth is reached; then "deepest" is a lower bound if still flat.
    """
    out = []
    for net, meth in PAIRS:
        pts = dict((r["depth"], r[key]) for r in rows if r["network"] == net and r["method"] == meth)
        if len(pts) < 2:
            continue
        d1 = max(pts)
        d0 = max(d for d in pts if d < d1)
        while extend is not None and pts[d1] < 1.5 * pts[d0] and 2 * d1 <= max_depth:
            d0, d1 = d1, 2 * d1
            if d1 not in pts:
                pts[d1] = extend(net, meth, d1)
                print(f"  depth {d1:4d} {net:10s} {meth:17s} {key} {pts[d1]:9.3f} MiB (for the fit)", flush=True)
        slope = (pts[d1] - pts[d0]) / (d1 - d0)
        flat = slope <= 1e-3 * pts[d1] / d1                    # no visible growth: at least the depth measured
        depth = math.inf if flat else int(d1 + (budget_mib - pts[d1]) / slope)
        out.append({"network": net, "method": meth, "fit_depths": f"{d0}-{d1}", "MiB_per_layer": slope,
                    "deepest": depth})
    for r in out:
        base = next(b for b in out if b["network"] == r["network"] and b["method"] == "backprop")
        r["x_backprop"] = (r["deepest"] / base["deepest"]) if base["deepest"] not in (0, math.inf) else None
    return out


def time_per_step(width, depth, batch, repeat):
    from tinymoon import nn
    loss_fn = nn.CrossEntropyLoss()
    models, methods = _models(width), _methods()
    x, y = _data(batch)
    rows = []
    for net in ("mlp-leaky", "mlp-relu", "revnet"):
        model = models[net](depth)
        ms = [m for n, m in PAIRS if n == net]
        best = {m: math.inf for m in ms}
        for _ in range(repeat):                                  # interleaved: load changes hit every method
            for m in ms:
                def step(m=m):
                    model.zero_grad()
                    methods[m](model, loss_fn, x, y)
                best[m] = min(best[m], best_time(step, repeat=1, min_time=0.2))
        for m in ms:
            rows.append({"network": net, "method": m, "depth": depth, "ms_per_step": best[m] * 1e3,
                         "x_backprop": best[m] / best["backprop"]})
        print("  " + "   ".join(f"{net}/{m}: {best[m] * 1e3:.1f} ms ({best[m] / best['backprop']:.2f}x)" for m in ms),
              flush=True)
    return rows


def float32_error(depths, slopes, anchor_list, width, batch):
    """Relative gradient error of float32 Moonwalk against float64 backprop on the same (orthogonal) weights."""
    import tinymoon as tm
    from tinymoon import moonwalk as mw
    from tinymoon import nn
    loss_fn = nn.CrossEntropyLoss()
    r = np.random.default_rng(1)
    x64 = r.standard_normal((batch, width))
    y = r.integers(0, 10, batch)
    rows = []
    for slope in slopes:
        for depth in depths:
            def build(dtype):
                g = tm.generator(7)
                layers = [nn.Linear(width, width, generator=g, dtype=dtype)]
                for _ in range(depth):
                    layers += [nn.LeakyReLU(slope), nn.Linear(width, width, generator=g, dtype=dtype)]
                layers += [nn.LeakyReLU(slope), nn.Linear(width, 10, generator=g, dtype=dtype)]
                model = nn.Sequential(*layers)
                for m in model:
                    if isinstance(m, nn.Linear):
                        nn.init.orthogonal_(m.weight, generator=g)
                return model
            m64, m32 = build("float64"), build("float32")
            mw.backprop(m64, loss_fn, x64, y)
            ref = [p.grad.numpy() for p in m64.parameters()]
            scale = max(float(np.abs(g).max()) for g in ref)

            def err(grads):
                e = max(float(np.abs(a.astype(np.float64) - b).max()) for a, b in zip(grads, ref)) / scale
                return e if np.isfinite(e) else float("inf")
            m32.zero_grad()
            mw.backprop(m32, loss_fn, x64.astype(np.float32), y)
            bp = err([p.grad.numpy() for p in m32.parameters()])
            for a in anchor_list:
                m32.zero_grad()
                rec = mw.input_cotangent(m32, loss_fn, x64.astype(np.float32), y, anchors=a)
                n_anchor, rec_bytes = len(rec.anchors), rec.nbytes
                mw.sweep(m32, loss_fn, x64.astype(np.float32), y, rec)
                rows.append({"slope": slope, "depth": depth, "anchors": str(a), "n_anchors": n_anchor,
                             "anchor_KiB": rec_bytes / 1024, "rel_error": err([p.grad.numpy() for p in m32.parameters()]),
                             "backprop_f32_error": bp})
            print("  slope %-5g depth %3d  " % (slope, depth) + "  ".join(
                f"{r['anchors']}: {r['rel_error']:.1e} ({r['n_anchors']} anchors)" for r in rows[-len(anchor_list):])
                + f"   float32 backprop {bp:.1e}", flush=True)
    return rows


def forward_modes(depths, width=8, n_in=16, batch=8):
    """Seconds per gradient of the forward-only methods on a tiny leaky-ReLU MLP: naive forward (one jvp per
    parameter: quadratic in depth), pure-forward Moonwalk (one jvp per input coordinate, then the sweep:
    linear in depth), mixed Moonwalk and backprop."""
    import tinymoon as tm
    from tinymoon import moonwalk as mw
    from tinymoon import nn
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
        model = _orthogonal(nn.Sequential(*layers), g)
        row = {"depth": depth, "parameters": model.num_parameters()}
        for name, fn in [("naive_forward", mw.naive_forward),
                         ("pure_forward", lambda *a: mw.backward(*a, mode="forward")),
                         ("mixed", mw.backward), ("backprop", mw.backprop)]:
            def step(fn=fn):
                model.zero_grad()
                fn(model, loss_fn, x, y)
            row[name + "_s"] = best_time(step, repeat=1 if name == "naive_forward" else 3, min_time=0.05)
        row["naive_over_pure"] = row["naive_forward_s"] / row["pure_forward_s"]
        rows.append(row)
        print(f"  depth {depth:3d}: naive forward {row['naive_forward_s']:.3f} s, pure-forward Moonwalk "
              f"{row['pure_forward_s']:.4f} s ({row['naive_over_pure']:.0f}x faster), mixed {row['mixed_s']:.4f} s, "
              f"backprop {row['backprop_s']:.4f} s", flush=True)
    return rows


def plot(mem_rows, err_rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    for net, meth in PAIRS:
        pts = sorted((r["depth"], r["saved_MiB"]) for r in mem_rows if r["network"] == net and r["method"] == meth)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"{net} / {meth}",
                    linestyle="-" if meth == "moonwalk" else "--")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("depth (hidden layers or RevBlocks)")
    ax.set_ylabel("peak saved MiB (residuals + fragments + checkpoints)")
    ax.set_title("memory versus depth, batch 128, 784 inputs")
    ax.legend(fontsize=7)
    ax = axes[1]
    for slope in sorted({r["slope"] for r in err_rows}):
        for a in sorted({r["anchors"] for r in err_rows}):
            pts = sorted((r["depth"], max(r["rel_error"], 1e-9)) for r in err_rows
                         if r["slope"] == slope and r["anchors"] == a)
            ax.plot(*zip(*pts), marker="o", label=f"slope {slope}, anchors={a}")
    ax.set_yscale("log")
    ax.set_xlabel("depth")
    ax.set_ylabel("relative gradient error (float32 vs float64 backprop)")
    ax.set_title("float32 error of the inverse-forward sweep")
    ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")
    return path


def run(argv=None):
    p = argparse.ArgumentParser(prog="python -m tinymoon.bench moonwalk", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small widths and depths (about a minute)")
    p.add_argument("--width", type=int, default=None, help="hidden width (default 256; --quick 64)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--budget", type=float, default=256.0, help="memory budget in MiB for the deepest fit")
    p.add_argument("--repeat", type=int, default=None, help="interleaved timing rounds (default 5; --quick 2)")
    p.add_argument("--out", default="bench_results")
    a = p.parse_args(argv)
    width = a.width or (64 if a.quick else 256)
    depths = [4, 16, 32] if a.quick else [4, 8, 16, 32, 64]
    repeat = a.repeat or (2 if a.quick else 5)
    time_depth = 8 if a.quick else 16
    err_depths = [4, 8, 16] if a.quick else [4, 8, 16, 32]
    err_width = 32 if a.quick else 64

    print(f"(1) memory versus depth: width {width}, batch {a.batch}")
    mem = memory_vs_depth(width, depths, a.batch)
    fit = deepest_fit(mem, a.budget, extend=lambda n, m, d: _measure(n, m, d, width, a.batch)[0],
                      max_depth=256 if a.quick else 1024)
    fit_host = deepest_fit(mem, a.budget, key="host_MiB")
    print(table(mem, ["network", "method", "depth", "saved_MiB", "host_MiB", "params_MiB"]))
    print()
    print(table(fit, ["network", "method", "fit_depths", "MiB_per_layer", "deepest", "x_backprop"],
                title=f"(2) deepest network within {a.budget:g} MiB of saved bytes"))
    print()
    print(table(fit_host, ["network", "method", "fit_depths", "MiB_per_layer", "deepest", "x_backprop"],
                title=f"    ... and within {a.budget:g} MiB of peak host memory (includes parameter gradients)"))
    print(f"\n(3) time per step, depth {time_depth}, width {width}, batch {a.batch}")
    times = time_per_step(width, time_depth, a.batch, repeat)
    print(table(times, ["network", "method", "depth", "ms_per_step", "x_backprop"]))
    print(f"\n(4) float32 error of the sweep against float64 backprop (width {err_width}, batch 32, orthogonal W)")
    errs = float32_error(err_depths, [0.1, 0.01], [None, 4, 2, "auto"], err_width, 32)
    print(table(errs, ["slope", "depth", "anchors", "n_anchors", "anchor_KiB", "rel_error", "backprop_f32_error"]))
    print("\n(5) forward-only gradients on a tiny MLP (16 inputs, width 8, batch 8, float64)")
    fwd = forward_modes([2, 4] if a.quick else [2, 4, 8, 16])
    print(table(fwd, ["depth", "parameters", "naive_forward_s", "pure_forward_s", "mixed_s", "backprop_s",
                      "naive_over_pure"]))
    png = plot(mem, errs, os.path.join(a.out, f"{NAME}.png"))
    payload = {"config": {"width": width, "batch": a.batch, "depths": depths, "budget_MiB": a.budget,
                          "time_depth": time_depth, "repeat": repeat, "quick": a.quick,
                          "err_width": err_width, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")},
               "memory": mem, "deepest_fit_saved": fit, "deepest_fit_host": fit_host, "time": times,
               "float32_error": errs, "forward_modes": fwd, "plot": png,
               "markdown": {"memory": markdown(mem, ["network", "method", "depth", "saved_MiB", "host_MiB"]),
                            "deepest_fit_saved": markdown(fit, ["network", "method", "fit_depths", "MiB_per_layer", "deepest",
                                                                "x_backprop"]),
                            "deepest_fit_host": markdown(fit_host, ["network", "method", "fit_depths", "MiB_per_layer", "deepest",
                                                                    "x_backprop"]),
                            "time": markdown(times, ["network", "method", "depth", "ms_per_step", "x_backprop"]),
                            "float32_error": markdown(errs, ["slope", "depth", "anchors", "n_anchors", "anchor_KiB",
                                                             "rel_error", "backprop_f32_error"]),
                            "forward_modes": markdown(fwd, ["depth", "parameters", "naive_forward_s", "pure_forward_s",
                                                            "mixed_s", "backprop_s", "naive_over_pure"])}}
    write_json(NAME, payload, out_dir=a.out)
    return payload


if __name__ == "__main__":
    run()
