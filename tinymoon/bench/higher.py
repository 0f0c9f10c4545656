"""python -m tinymoon.bench higher — what a Hessian-vector product costs against one gradient.

For a loss f(θ) of a flat parameter vector θ (an MLP and a small CNN, float32, cross-entropy), each timed in
interleaved rounds (best of --repeat) and measured for peak host memory (tracemalloc, separate runs):
  grad      tm.grad(f)(θ): one forward and one backward pass
  fwd-rev   tm.hvp(f, θ, v) = tm.jvp(tm.grad(f), ...): forward-over-reverse — the backward pass runs once, on
            tensors whose values carry tangents, and records nothing
  rev-rev   tm.grad(lambda t: <tm.grad(f)(t), v>)(θ): reverse-over-reverse — the backward pass is recorded on
            the tape, then walked back
Each row also gives the two HVPs' relative difference (both are exact: rounding only), and, when PyTorch is
installed, PyTorch's own ratio for the same HVP (torch.func.jvp of torch.func.grad) against its gradient.
"""
from __future__ import annotations

import argparse

import numpy as np

import tinymoon as tm

from .common import add_repeat_option, interleaved_best, markdown, table, write_json


def _split(theta, shapes):
    out, k = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(theta[k:k + n].reshape(s))
        k += n
    return out


def mlp_problem(lib, batch=128, sizes=(256, 256, 256, 10), seed=0):
    """(f, θ0) for an MLP with tanh; lib is tinymoon or torch (the same math)."""
    rng = np.random.default_rng(seed)
    shapes = [s for i, o in zip(sizes[:-1], sizes[1:]) for s in ((o, i), (o,))]
    theta = np.concatenate([rng.standard_normal(int(np.prod(s))) / np.sqrt(s[-1]) for s in shapes]).astype(np.float32)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    if lib is tm:
        xt, yt = tm.tensor(x), tm.tensor(y)

        def f(t):
            ps, h = _split(t, shapes), xt
            for k in range(0, len(ps), 2):
                h = tm.linear(h, ps[k], ps[k + 1])
                if k + 2 < len(ps):
                    h = tm.tanh(h)
            return tm.cross_entropy(h, yt)
        return f, theta
    F = lib.nn.functional
    xt, yt = lib.tensor(x), lib.tensor(y)

    def g(t):
        ps, h = _split(t, shapes), xt
        for k in range(0, len(ps), 2):
            h = F.linear(h, ps[k], ps[k + 1])
            if k + 2 < len(ps):
                h = lib.tanh(h)
        return F.cross_entropy(h, yt)
    return g, theta


def cnn_problem(lib, batch=32, seed=0):
    """conv 3x3 1->8 (padding 1), tanh, avg-pool 2, conv 3x3 8->16, tanh, avg-pool 2, linear 16*7*7 -> 10."""
    rng = np.random.default_rng(seed)
    shapes = [(8, 1, 3, 3), (8,), (16, 8, 3, 3), (16,), (10, 16 * 7 * 7), (10,)]
    theta = np.concatenate([rng.standard_normal(int(np.prod(s))) / np.sqrt(np.prod(s[1:]) if len(s) > 1 else 1)
                            for s in shapes]).astype(np.float32)
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    if lib is tm:
        xt, yt = tm.tensor(x), tm.tensor(y)

        def f(t):
            w1, b1, w2, b2, w3, b3 = _split(t, shapes)
            h = tm.avg_pool2d(tm.tanh(tm.conv2d(xt, w1, b1, padding=1)), 2)
            h = tm.avg_pool2d(tm.tanh(tm.conv2d(h, w2, b2, padding=1)), 2)
            return tm.cross_entropy(tm.linear(h.reshape(batch, -1), w3, b3), yt)
        return f, theta
    F = lib.nn.functional
    xt, yt = lib.tensor(x), lib.tensor(y)

    def g(t):
        w1, b1, w2, b2, w3, b3 = _split(t, shapes)
        h = F.avg_pool2d(lib.tanh(F.conv2d(xt, w1, b1, padding=1)), 2)
        h = F.avg_pool2d(lib.tanh(F.conv2d(h, w2, b2, padding=1)), 2)
        return F.cross_entropy(F.linear(h.reshape(batch, -1), w3, b3), yt)
    return g, theta


def _peak(fn):
    with tm.memory.measure() as m:
        fn()
    return m.peak_host_bytes


def compare(name, build, torch, repeat):
    f, theta0 = build(tm)
    theta = tm.tensor(theta0)
    v = tm.tensor(np.random.default_rng(1).standard_normal(theta0.shape).astype(np.float32))

    def grad():
        return tm.grad(f)(theta)

    def fwd_rev():
        return tm.hvp(f, theta, v)

    def rev_rev():
        return tm.grad(lambda t: (tm.grad(f)(t) * v).sum())(theta)

    a, b = fwd_rev().numpy(), rev_rev().numpy()
    t = interleaved_best({"grad": grad, "fwd-rev": fwd_rev, "rev-rev": rev_rev}, rounds=repeat)
    mem = {k: _peak(fn) for k, fn in (("grad", grad), ("fwd-rev", fwd_rev), ("rev-rev", rev_rev))}
    row = {"problem": name, "params": int(theta0.size), "grad_ms": t["grad"] * 1e3,
           "fwd-rev_x": t["fwd-rev"] / t["grad"], "rev-rev_x": t["rev-rev"] / t["grad"],
           "grad_MB": mem["grad"] / 2**20, "fwd-rev_mem_x": mem["fwd-rev"] / mem["grad"],
           "rev-rev_mem_x": mem["rev-rev"] / mem["grad"],
           "rel_diff": float(np.abs(a - b).max() / np.abs(a).max())}
    if torch is not None:
        g, th0 = build(torch)
        pt, pv = torch.tensor(th0), torch.tensor(v.numpy())
        tt = interleaved_best({"grad": lambda: torch.func.grad(g)(pt),
                               "hvp": lambda: torch.func.jvp(torch.func.grad(g), (pt,), (pv,))[1]}, rounds=repeat)
        row["torch_fwd-rev_x"] = tt["hvp"] / tt["grad"]
    return row


def run(argv=()):
    ap = argparse.ArgumentParser(prog="python -m tinymoon.bench higher", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_repeat_option(ap)
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch's ratio")
    args = ap.parse_args(list(argv))
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("note: PyTorch is not installed: no torch column")
    rows = [compare("MLP 256-256-256-10 tanh, batch 128", mlp_problem, torch, args.repeat),
            compare("CNN conv8-conv16-linear tanh, 32x1x28x28", cnn_problem, torch, args.repeat)]
    cols = ["problem", "params", "grad_ms", "fwd-rev_x", "rev-rev_x", "torch_fwd-rev_x", "grad_MB", "fwd-rev_mem_x",
            "rev-rev_mem_x", "rel_diff"]
    print(table(rows, cols, "A Hessian-vector product against one gradient (time and peak host memory as multiples "
                            "of the gradient's)"))
    write_json("higher", {"rows": rows, "markdown": markdown(rows, cols)})
    return {"rows": rows}
