"""Train a deep leaky-ReLU MLP on MNIST with Moonwalk (inverse-forward differentiation) and with backprop,
from the same seed, and compare test accuracy and the memory each method needed.

    python examples/moonwalk_mnist.py                          # 32 hidden layers, 1 epoch, both methods
    python examples/moonwalk_mnist.py --method moonwalk --epochs 3
    python examples/moonwalk_mnist.py --synthetic --limit 2000  # no MNIST package needed
    python examples/moonwalk_mnist.py --help

Moonwalk (tinymoon.moonwalk.backward) computes the same gradient as backprop: a reverse pass that keeps one bit
per activation gives the input gradient, then a forward sweep restores each layer's output gradient with the
vector-inverse-Jacobian product and takes the weight gradient layer by layer. The sweep inverts a contraction,
so by default it records a few true cotangents ("anchors", placed from the error it measures) and checks every
swept segment against an exact cotangent: each step's report gives its measured error and error bound.
MNIST comes from `tm.data.mnist` (`pip install -e ".[data]"`).
"""
from __future__ import annotations

import argparse
import sys
import time

import tinymoon as tm
from tinymoon import moonwalk, nn

DESCRIPTION = "Train a deep leaky-ReLU MLP on MNIST with Moonwalk and with backprop; compare accuracy and memory."
EPILOG = """model: Flatten -> Linear(784, W) -> depth x [LeakyReLU(slope) -> Linear(W, W)] -> LeakyReLU -> Linear(W, 10),
orthogonal weights (gain sqrt(2 / (1 + slope²))), Adam with a cosine learning-rate decay. Both methods start from the same seed and see the same batches;
memory is measured on the third step (after two warm-up steps): 'saved' is the peak of tinymoon.memory's
counter (residuals + fragments + anchors), 'host' the peak traced host memory (it also holds the weight gradients)."""


def build_model(depth, width, slope, seed=0, dtype="float32"):
    g = tm.generator(seed)
    layers = [nn.Flatten(), nn.Linear(784, width, generator=g, dtype=dtype)]
    for _ in range(depth):
        layers += [nn.LeakyReLU(slope), nn.Linear(width, width, generator=g, dtype=dtype)]
    layers += [nn.LeakyReLU(slope), nn.Linear(width, 10, generator=g, dtype=dtype)]
    model = nn.Sequential(*layers)
    gain = nn.init.calculate_gain("leaky_relu", slope)     # sqrt(2 / (1 + slope²)): keeps the signal's scale
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=gain, generator=g)
    return model


def load(args):
    if args.synthetic:
        n = args.limit or 6000
        (xtr, ytr), (xte, yte) = tm.data.synthetic(n, seed=args.seed), tm.data.synthetic(max(n // 5, 500), seed=args.seed,
                                                                                            split="test")
    else:
        try:
            xtr, ytr = tm.data.mnist("train")
            xte, yte = tm.data.mnist("test")
        except ImportError as e:
            sys.exit(f"{e}\n(or run with --synthetic)")
        if args.limit:
            xtr, ytr = xtr[:args.limit], ytr[:args.limit]
    return (xtr, ytr), (xte, yte)


def accuracy(model, images, labels, batch=1000, device="cpu"):
    loader = tm.data.DataLoader(images, labels, batch, normalize=(tm.data.MNIST_MEAN, tm.data.MNIST_STD),
                                device=device)
    correct = 0
    with tm.no_grad():
        for x, y in loader:
            correct += int((model(x).numpy().argmax(1) == y.numpy()).sum())
    return 100.0 * correct / len(labels)


def train(method, args, train_set, test_set):
    model = build_model(args.depth, args.width, args.slope, seed=args.seed).to(args.device)
    loss_fn = nn.CrossEntropyLoss()
    opt = tm.optim.Adam(model.parameters(), lr=args.lr)
    loader = tm.data.DataLoader(*train_set, args.batch, shuffle=True, generator=args.seed,
                                normalize=(tm.data.MNIST_MEAN, tm.data.MNIST_STD), device=args.device)
    # the cosine decay to 0 also makes the result insensitive to float32 rounding: two runs whose gradients
    # differ by ~1e-6 (Moonwalk's sweep, or simply another summation order) end within ~0.1 point
    sched = tm.optim.CosineAnnealingLR(opt, T_max=max(1, args.epochs * len(loader)))
    kept = {}
    if method == "moonwalk":
        def grad_step(x, y):                           # sets .grad like loss_fn(model(x), y).backward()
            loss = moonwalk.backward(model, loss_fn, x, y, anchors=args.anchors, on_error="warn")
            kept["report"] = loss.report
            kept["worst"] = max(kept.get("worst", 0.0), loss.report.error_bound)
            return loss
    else:
        def grad_step(x, y):                           # = loss_fn(model(x), y).backward()
            return moonwalk.backprop(model, loss_fn, x, y)
    mem = None
    t0 = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        total, n = 0.0, 0
        for x, y in loader:
            opt.zero_grad()
            step += 1
            if mem is None and (step == 3 or len(loader) * args.epochs < 3):   # after two warm-up steps
                with tm.memory.measure() as mem:
                    loss = grad_step(x, y)
                if kept:
                    kept["measured"] = kept["report"]
            else:
                loss = grad_step(x, y)
            opt.step()
            sched.step()
            total, n = total + float(loss.item()), n + 1
        print(f"  {method:8s} epoch {epoch + 1}: train loss {total / n:.4f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    acc = accuracy(model, *test_set, device=args.device)
    secs = time.perf_counter() - t0
    print(f"  {method:8s} test accuracy {acc:.2f}%   memory per step: saved {mem.peak_saved_bytes / 2**20:.2f} MiB, "
          f"host {mem.peak_host_bytes / 2**20:.2f} MiB   time {secs:.0f} s", flush=True)
    if kept:
        print(f"  {method:8s} measured step: {kept.get('measured', kept['report'])}")
        print(f"  {method:8s} largest error bound over the run: {kept['worst']:.1e} (relative, against backprop in "
              f"the same precision; one activation is {args.batch * args.width * 4 / 2**10:.0f} KiB)")
    return {"accuracy": acc, "saved_MiB": mem.peak_saved_bytes / 2**20, "host_MiB": mem.peak_host_bytes / 2**20,
            "seconds": secs}


def parse_anchors(s):
    if s in ("none", "None"):
        return None
    return s if s == "auto" else int(s)


def main(argv=None):
    p = argparse.ArgumentParser(description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=["moonwalk", "backprop", "both"], default="both")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--synthetic", action="store_true", help="tm.data.synthetic instead of MNIST (no download)")
    p.add_argument("--depth", type=int, default=32, help="hidden Linear layers (default 32)")
    p.add_argument("--width", type=int, default=64, help="hidden width (default 64)")
    p.add_argument("--slope", type=float, default=0.3, help="leaky ReLU negative slope (default 0.3)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, cosine-annealed to 0")
    p.add_argument("--anchors", type=parse_anchors, default="auto",
                   help="Moonwalk cotangent anchors: 'auto' (error-controlled, default), K (every K units) or none "
                        "(no error control: warns when the measured error passes the tolerance)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (needs pip install -e '.[gpu]' and a GPU)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for BLAS and Numba (default: 1; tm.set_num_threads)")
    args = p.parse_args(argv)
    tm.set_num_threads(args.threads)     # one thread: small batches, and pools of several runtimes fight on few cores
    train_set, test_set = load(args)
    print(f"{len(train_set[1])} training images; {args.depth} hidden layers of width {args.width}, batch {args.batch}")
    methods = ["backprop", "moonwalk"] if args.method == "both" else [args.method]
    res = {m: train(m, args, train_set, test_set) for m in methods}
    if len(res) == 2:
        b, m = res["backprop"], res["moonwalk"]
        print(f"test accuracy: backprop {b['accuracy']:.2f}%, moonwalk {m['accuracy']:.2f}% "
              f"(difference {m['accuracy'] - b['accuracy']:+.2f} points); saved bytes per step: moonwalk "
              f"{m['saved_MiB']:.2f} MiB vs backprop {b['saved_MiB']:.2f} MiB; time x{m['seconds'] / b['seconds']:.2f}")
    return res


if __name__ == "__main__":
    main()
