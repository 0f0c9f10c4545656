"""python -m tinymoon.bench ops [--repeat N] — the engine's overhead and its speed against PyTorch CPU.

1. Per-op forward+backward on small tensors: tinymoon vs the same math written in plain NumPy (the
   difference is the engine's overhead per op: tape, context, dispatch) and vs PyTorch CPU.
2. An MLP training step (784-1024-1024-10, batch 256, ReLU, cross-entropy, SGD) vs PyTorch CPU.
3. conv2d forward+backward through the engine (tm.conv2d + backward) vs PyTorch CPU: issue 18's three layers
   (batch 64, 32 -> 64, 28x28, 3x3; stride 2, 32 x 64 x 14 x 14; groups 8, 32 x 64 x 28 x 28).
4. A CNN training step (conv5x5 1->16, relu, maxpool 2, conv5x5 16->32, relu, maxpool 2, linear 1568->10,
   cross-entropy; batch 64) vs the same model in PyTorch.
Every row times its contenders in N alternating rounds (best of each): the ratio is the claim.  In this
process PyTorch runs under tinymoon's OMP_WAIT_POLICY=PASSIVE; for 2-4 the `torch_own_*` columns time PyTorch
in a process of its own with its default policy (a cross-process ratio: noisier, but PyTorch as users run it).
"""
from __future__ import annotations

import argparse

import numpy as np

import tinymoon as tm

from .common import add_repeat_option, interleaved_best, markdown, table, write_json

ROUNDS = 7


def best_of(fns):
    return interleaved_best(fns, rounds=ROUNDS)


def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def _numpy_softmax_xent_grad(z, labels):
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    loss = -np.log(p[np.arange(len(labels)), labels]).mean()
    p[np.arange(len(labels)), labels] -= 1
    return loss, p / len(labels)


def op_overhead(n, torch):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    g = np.ones((n, n), np.float32)
    ta = tm.tensor(a, requires_grad=True)
    tb = tm.tensor(b, requires_grad=True)

    cases = {
        "add": (lambda x, y: x + y, lambda: (a + b, g, g)),
        "mul": (lambda x, y: x * y, lambda: (a * b, g * b, g * a)),
        "tanh": (lambda x, y: x.tanh(), lambda: (lambda y: (y, g * (1 - y * y)))(np.tanh(a))),
        "relu": (lambda x, y: x.relu(), lambda: (np.maximum(a, 0), np.where(a > 0, g, 0))),
        "exp": (lambda x, y: x.exp(), lambda: (lambda y: (y, g * y))(np.exp(a))),
        "matmul": (lambda x, y: x @ y, lambda: (a @ b, g @ b.T, a.T @ g)),
        "sum": (lambda x, y: x.sum(axis=1), lambda: (a.sum(1), np.broadcast_to(g[:, :1], a.shape).copy())),
    }
    rows = []
    for name, (fn, ref) in cases.items():
        seed = np.ones(n, np.float32) if name == "sum" else g

        def run(fn=fn, seed=seed):
            ta.grad = tb.grad = None
            fn(ta, tb).backward(seed)
        fns = {"tm": run, "np": ref}
        if torch is not None:
            pa = torch.tensor(a, requires_grad=True)
            pb = torch.tensor(b, requires_grad=True)
            pg = torch.tensor(seed)
            tfn = {"add": lambda: pa + pb, "mul": lambda: pa * pb, "tanh": lambda: pa.tanh(),
                   "relu": lambda: pa.relu(), "exp": lambda: pa.exp(), "matmul": lambda: pa @ pb,
                   "sum": lambda: pa.sum(1)}[name]

            def trun(pa=pa, pb=pb, pg=pg, tfn=tfn):
                pa.grad = pb.grad = None
                tfn().backward(pg)
            fns["torch"] = trun
        t = best_of(fns)
        row = {"op": name, "size": f"{n}x{n}", "tinymoon_us": t["tm"] * 1e6, "numpy_us": t["np"] * 1e6,
               "overhead_us": (t["tm"] - t["np"]) * 1e6}
        if torch is not None:
            row["torch_us"] = t["torch"] * 1e6
            row["vs_torch"] = t["tm"] / t["torch"]
        rows.append(row)
    rows.append(chain_overhead(n, torch))
    return rows


def chain_overhead(n, torch, length=16):
    """Per-op overhead inside a graph: a chain of `length` multiplications and one backward, minus the same
    math in NumPy, divided by `length` (a lone op + backward also pays backward()'s fixed cost)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n)).astype(np.float32)
    g = np.ones((n, n), np.float32)
    ta, tb = tm.tensor(a, requires_grad=True), tm.tensor(a, requires_grad=True)

    def engine():
        ta.grad = tb.grad = None
        h = ta
        for _ in range(length):
            h = h * tb
        h.backward(g)

    def numpy_chain():
        hs, h = [], a
        for _ in range(length):
            hs.append(h)
            h = h * a
        gh, gb = g, 0
        for prev in reversed(hs):
            gb = gb + gh * prev
            gh = gh * a

    fns = {"tm": engine, "np": numpy_chain}
    if torch is not None:
        pa, pb, pg = torch.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True), torch.tensor(g)

        def trun():
            pa.grad = pb.grad = None
            h = pa
            for _ in range(length):
                h = h * pb
            h.backward(pg)
        fns["torch"] = trun
    t = best_of(fns)
    t_e, t_n = t["tm"], t["np"]
    row = {"op": f"chain of {length} mul", "size": f"{n}x{n}", "tinymoon_us": t_e / length * 1e6,
           "numpy_us": t_n / length * 1e6, "overhead_us": (t_e - t_n) / length * 1e6}
    if torch is not None:
        row["torch_us"] = t["torch"] / length * 1e6
        row["vs_torch"] = t_e / t["torch"]
    return row


def mlp_step(torch, batch=256, sizes=(784, 1024, 1024, 10)):
    rng = np.random.default_rng(0)
    Ws = [(rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32) for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [np.zeros(o, np.float32) for o in sizes[1:]]
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    params = [tm.tensor(p, requires_grad=True) for pair in zip(Ws, bs) for p in pair]
    tx, ty = tm.tensor(x), tm.tensor(y)
    lr = 1e-3

    def tm_step():
        h = tx
        for k in range(0, len(params), 2):
            h = tm.linear(h, params[k], params[k + 1])
            if k + 2 < len(params):
                h = h.relu()
        loss = tm.cross_entropy(h, ty)
        loss.backward()
        with tm.no_grad():
            for p in params:
                p.data -= lr * p.grad.data
                p.grad = None

    def np_step():
        acts, h = [], x
        for k, (W, b) in enumerate(zip(Ws, bs)):
            acts.append(h)
            h = h @ W.T + b
            if k + 1 < len(Ws):
                h = np.maximum(h, 0)
        loss, g = _numpy_softmax_xent_grad(h, y)
        for k in range(len(Ws) - 1, -1, -1):
            gW, gb = g.T @ acts[k], g.sum(0)
            if k:
                g = (g @ Ws[k]) * (acts[k] > 0)
            Ws[k] -= 0 * gW
            bs[k] -= 0 * gb

    fns = {"tm": tm_step, "np": np_step}
    if torch is not None:
        tp = [torch.tensor(p, requires_grad=True) for pair in zip(Ws, bs) for p in pair]
        px, py = torch.tensor(x), torch.tensor(y)

        def torch_step():
            h = px
            for k in range(0, len(tp), 2):
                h = torch.nn.functional.linear(h, tp[k], tp[k + 1])
                if k + 2 < len(tp):
                    h = h.relu()
            loss = torch.nn.functional.cross_entropy(h, py)
            loss.backward()
            with torch.no_grad():
                for p in tp:
                    p -= lr * p.grad
                    p.grad = None
        fns["torch"] = torch_step
    return _step_row(f"MLP step {'-'.join(map(str, sizes))}, batch {batch}", best_of(fns))


def _step_row(case, t):
    row = {"case": case, "tinymoon_ms": t["tm"] * 1e3}
    if "np" in t:
        row["numpy_ms"] = t["np"] * 1e3
    if "torch" in t:
        row["torch_ms"] = t["torch"] * 1e3
        row["vs_torch"] = t["tm"] / t["torch"]
    return row


CONV_STEPS = [(64, 32, 64, 28, 1, 1), (32, 64, 64, 14, 2, 1), (32, 64, 64, 28, 1, 8)]   # n, cin, cout, hw, s, g


def conv_step(torch, n, cin, cout, hw, stride, groups, k=3):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, cin, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((cout, cin // groups, k, k)) / np.sqrt(cin // groups * k * k)).astype(np.float32)
    ho = (hw + 2 - k) // stride + 1
    g = np.ones((n, cout, ho, ho), np.float32)
    tx, tw = tm.tensor(x, requires_grad=True), tm.tensor(w, requires_grad=True)

    def tm_run():
        tx.grad = tw.grad = None
        tm.conv2d(tx, tw, stride=stride, padding=1, groups=groups).backward(g)
    fns = {"tm": tm_run}
    if torch is not None:
        px, pw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        pg = torch.tensor(g)

        def t_run():
            px.grad = pw.grad = None
            torch.nn.functional.conv2d(px, pw, stride=stride, padding=1, groups=groups).backward(pg)
        fns["torch"] = t_run
    return _step_row(f"conv2d fwd+bwd {n}x{cin}x{hw}x{hw} -> {cout}, {k}x{k}, stride {stride}, groups {groups}",
                     best_of(fns))


def cnn_step(torch, batch=64):
    """conv5x5 1->16, relu, maxpool 2, conv5x5 16->32, relu, maxpool 2, linear 1568->10, cross-entropy:
    forward + backward (gradients of every parameter), the same weights in both frameworks."""
    from tinymoon import nn
    g = tm.generator(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 5, padding=2, generator=g), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 5, padding=2, generator=g), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(32 * 7 * 7, 10, generator=g))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    tx, ty = tm.tensor(x), tm.tensor(y)
    loss_fn = nn.CrossEntropyLoss()

    def tm_step():
        model.zero_grad()
        loss_fn(model(tx), ty).backward()
    fns = {"tm": tm_step}
    if torch is not None:
        tn = torch.nn
        tmod = tn.Sequential(tn.Conv2d(1, 16, 5, padding=2), tn.ReLU(), tn.MaxPool2d(2),
                             tn.Conv2d(16, 32, 5, padding=2), tn.ReLU(), tn.MaxPool2d(2), tn.Flatten(),
                             tn.Linear(1568, 10))
        tmod.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
        px, py = torch.tensor(x), torch.tensor(y)

        def torch_step():
            tmod.zero_grad()
            torch.nn.functional.cross_entropy(tmod(px), py).backward()
        fns["torch"] = torch_step
    return _step_row(f"CNN step (conv-relu-pool x2, linear), batch {batch}", best_of(fns))


# PyTorch's side of the training-sized rows in a process of its own, with its own OpenMP wait policy (the
# in-process rows run it under tinymoon's PASSIVE, which slows some of PyTorch's steps).  torch only: no
# tinymoon import here, which would set the policy.
_TORCH_OWN_CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
rounds = int(sys.argv[2])
F, tn = torch.nn.functional, torch.nn
steps = {}
ws = [torch.randn(o, i, requires_grad=True) for i, o in ((784, 1024), (1024, 1024), (1024, 10))]
bs = [torch.zeros(o, requires_grad=True) for o in (1024, 1024, 10)]
x, y = torch.randn(256, 784), torch.randint(0, 10, (256,))
def mlp():
    h = x
    for k, (w, b) in enumerate(zip(ws, bs)):
        h = F.linear(h, w, b)
        h = h.relu() if k < 2 else h
    F.cross_entropy(h, y).backward()
    with torch.no_grad():
        for p in ws + bs:
            p -= 1e-3 * p.grad
            p.grad = None
steps["mlp"] = mlp
for key, (n, cin, cout, hw, s, g) in (("conv0", (64, 32, 64, 28, 1, 1)), ("conv1", (32, 64, 64, 14, 2, 1)),
                                      ("conv2", (32, 64, 64, 28, 1, 8))):
    cx = torch.randn(n, cin, hw, hw, requires_grad=True)
    cw = torch.randn(cout, cin // g, 3, 3, requires_grad=True)
    ho = (hw + 2 - 3) // s + 1
    cg = torch.ones(n, cout, ho, ho)
    def conv(cx=cx, cw=cw, s=s, g=g, cg=cg):
        cx.grad = cw.grad = None
        F.conv2d(cx, cw, stride=s, padding=1, groups=g).backward(cg)
    steps[key] = conv
model = tn.Sequential(tn.Conv2d(1, 16, 5, padding=2), tn.ReLU(), tn.MaxPool2d(2), tn.Conv2d(16, 32, 5, padding=2),
                      tn.ReLU(), tn.MaxPool2d(2), tn.Flatten(), tn.Linear(1568, 10))
ix, iy = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
def cnn():
    model.zero_grad()
    F.cross_entropy(model(ix), iy).backward()
steps["cnn"] = cnn
best = {}
for f in steps.values():
    f(); f()
for _ in range(rounds):
    for k, f in steps.items():
        t0 = time.perf_counter(); f(); f(); f()
        best[k] = min(best.get(k, 1e9), (time.perf_counter() - t0) / 3)
print(json.dumps(best))
"""


def torch_own_process(rows):
    """Add PyTorch's time in a process of its own (its default wait policy) to the step rows."""
    import json
    import os
    import subprocess
    import sys
    env = dict(os.environ)
    from .. import kernels
    if kernels.dispatch.OMP_POLICY_SET_HERE:
        env.pop("OMP_WAIT_POLICY", None)
    out = subprocess.run([sys.executable, "-c", _TORCH_OWN_CHILD, str(os.cpu_count() or 1), str(ROUNDS)], env=env,
                         capture_output=True, text=True, check=True).stdout
    best = json.loads(out.strip().splitlines()[-1])
    for row, key in zip(rows, ["mlp", "conv0", "conv1", "conv2", "cnn"]):
        row["torch_own_ms"] = best[key] * 1e3
        row["vs_torch_own"] = row["tinymoon_ms"] / row["torch_own_ms"]


def run(argv=()):
    ap = argparse.ArgumentParser(prog="python -m tinymoon.bench ops", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 64], help="square sizes for the per-op table")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    ap.add_argument("--sections", default="per_op,steps", help="per_op, steps, or both (comma-separated)")
    add_repeat_option(ap)
    args = ap.parse_args(list(argv))
    global ROUNDS
    ROUNDS = args.repeat
    sections = {v.strip() for v in args.sections.split(",")}
    torch = None if args.no_torch else _torch()
    if torch is None:
        why = "--no-torch was given" if args.no_torch else "PyTorch is not installed (pip install torch==2.13.0)"
        print(f"note: the torch_* and vs_torch columns are empty: {why}")
    if torch is not None:
        torch.set_num_threads(max(1, __import__("os").cpu_count() or 1))
    per_op = [r for n in args.sizes for r in op_overhead(n, torch)] if "per_op" in sections else []
    cols = ["op", "size", "tinymoon_us", "numpy_us", "overhead_us", "torch_us", "vs_torch"]
    if per_op:
        print(table(per_op, cols, f"Per-op forward+backward (microseconds, best of {ROUNDS} interleaved rounds)"))
    big = [mlp_step(torch)] + [conv_step(torch, *c) for c in CONV_STEPS] + [cnn_step(torch)] if "steps" in sections else []
    bcols = ["case", "tinymoon_ms", "numpy_ms", "torch_ms", "vs_torch"]
    if big and torch is not None:
        torch_own_process(big)
        bcols += ["torch_own_ms", "vs_torch_own"]
    print()
    print(table(big, bcols, f"Training-sized steps (milliseconds, best of {ROUNDS} interleaved rounds)"))
    write_json("ops", {"per_op": per_op, "steps": big,
                       "markdown": markdown(per_op, cols) + "\n\n" + markdown(big, bcols)})
    return {"per_op": per_op, "steps": big}
