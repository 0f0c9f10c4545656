"""Training speed (and, with --full, accuracy): tinymoon against the same model and optimiser in PyTorch (CPU).

    python -m tinymoon.bench train                     # seconds per epoch, extrapolated from timed steps
    python -m tinymoon.bench train --full              # + 5-epoch trainings with test accuracy (slow)
    python -m tinymoon.bench train --models mlp --steps 100 --batch-size 128

Models (2 conv + 2 linear for the CNN; the MLP is 784-512-512-10 with ReLU), Adam, cross-entropy, float32.
Both frameworks start from the same weights (tinymoon's PyTorch-style initialisation, copied into torch) and
see the same batches, in the same run. torch uses `torch.set_num_threads(--threads)`, equal to the number of
cores NumPy's BLAS uses by default; both numbers are reported.

Default mode: each framework runs `--warmup` untimed steps, then `--steps` timed training steps (forward,
backward, optimiser step); seconds per epoch = seconds per step x ceil(60000 / batch size) — an
extrapolation, labelled as such in the table and the JSON. --full: the real thing, `--epochs` whole epochs of
MNIST per framework (timed per epoch, data batching included) and the test accuracy after each epoch.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

import tinymoon as tm
from tinymoon import nn

from .common import table, write_json

TRAIN_SIZE = 60000


# ---- models -----------------------------------------------------------------------------------------------

def tm_model(kind, seed=0):
    g = tm.generator(seed)
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512, generator=g), nn.ReLU(),
                             nn.Linear(512, 512, generator=g), nn.ReLU(), nn.Linear(512, 10, generator=g))
    if kind == "cnn":
        return nn.Sequential(nn.Conv2d(1, 16, 5, stride=2, padding=2, generator=g), nn.ReLU(),
                             nn.Conv2d(16, 32, 3, stride=2, padding=1, generator=g), nn.ReLU(), nn.Flatten(),
                             nn.Linear(32 * 7 * 7, 128, generator=g), nn.ReLU(), nn.Linear(128, 10, generator=g))
    raise ValueError(f"unknown model {kind!r}")


def torch_model(kind, ours):
    """The same architecture in PyTorch, with `ours`'s weights copied in."""
    import torch
    tn = torch.nn
    if kind == "mlp":
        m = tn.Sequential(tn.Flatten(), tn.Linear(784, 512), tn.ReLU(), tn.Linear(512, 512), tn.ReLU(),
                          tn.Linear(512, 10))
    else:
        m = tn.Sequential(tn.Conv2d(1, 16, 5, stride=2, padding=2), tn.ReLU(),
                          tn.Conv2d(16, 32, 3, stride=2, padding=1), tn.ReLU(), tn.Flatten(),
                          tn.Linear(32 * 7 * 7, 128), tn.ReLU(), tn.Linear(128, 10))
    sd = {k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}
    m.load_state_dict(sd)
    return m


# ---- data -------------------------------------------------------------------------------------------------

def load(synthetic):
    if synthetic:
        tr = tm.data.synthetic(n=TRAIN_SIZE, seed=0, split="train")
        te = tm.data.synthetic(n=10000, seed=0, split="test")
        return "synthetic", (tr[0].reshape(-1, 1, 28, 28), tr[1]), (te[0].reshape(-1, 1, 28, 28), te[1])
    tr, te = tm.data.mnist("train"), tm.data.mnist("test")
    return "mnist", (tr[0][:, None], tr[1]), (te[0][:, None], te[1])


def normalise(images):
    return ((images.astype(np.float32) / np.float32(255) - np.float32(tm.data.MNIST_MEAN))
            / np.float32(tm.data.MNIST_STD))


def batches(images, labels, batch_size, seed, epoch):
    """The shuffled batches of one epoch, identical for both frameworks (normalised float32, int64)."""
    order = np.random.default_rng([seed, epoch]).permutation(len(labels))
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield normalise(images[idx]), labels[idx].astype(np.int64)


# ---- one framework ----------------------------------------------------------------------------------------

class TinymoonTrainer:
    name = "tinymoon"

    def __init__(self, kind, lr, seed, cosine_steps=None):
        self.model = tm_model(kind, seed)
        self.opt = tm.optim.Adam(list(self.model.parameters()), lr=lr)
        self.sched = tm.optim.CosineAnnealingLR(self.opt, cosine_steps) if cosine_steps else None
        self.loss_fn = nn.CrossEntropyLoss()

    def step(self, x, y):
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(tm.Tensor._wrap(x)), tm.Tensor._wrap(y))
        loss.backward()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        return float(loss.item())

    def accuracy(self, images, labels):
        self.model.eval()
        correct = 0
        with tm.no_grad():
            for i in range(0, len(labels), 1000):
                out = self.model(tm.Tensor._wrap(normalise(images[i:i + 1000])))
                correct += int((out.data.argmax(1) == labels[i:i + 1000]).sum())
        self.model.train()
        return correct / len(labels)


class TorchTrainer:
    name = "pytorch"

    def __init__(self, kind, lr, seed, ours, cosine_steps=None):
        import torch
        self.torch = torch
        self.model = torch_model(kind, ours)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, cosine_steps) if cosine_steps else None
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def step(self, x, y):
        t = self.torch
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(t.from_numpy(x)), t.from_numpy(y))
        loss.backward()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        return float(loss.item())

    def accuracy(self, images, labels):
        t = self.torch
        self.model.eval()
        correct = 0
        with t.no_grad():
            for i in range(0, len(labels), 1000):
                out = self.model(t.from_numpy(normalise(images[i:i + 1000])))
                correct += int((out.argmax(1).numpy() == labels[i:i + 1000]).sum())
        self.model.train()
        return correct / len(labels)


def time_steps(trainer, data, args):
    """Seconds per training step over args.steps timed steps (after args.warmup untimed ones)."""
    it = batches(*data, args.batch_size, args.seed, epoch=0)
    pre = [next(it) for _ in range(args.warmup + args.steps)]
    for x, y in pre[:args.warmup]:
        trainer.step(x, y)
    t0 = time.perf_counter()
    for x, y in pre[args.warmup:]:
        trainer.step(x, y)
    return (time.perf_counter() - t0) / args.steps


def full_training(trainer, train, test, args):
    """args.epochs real epochs: per-epoch seconds (batching included), final loss, test accuracy per epoch."""
    out = {"epoch_seconds": [], "test_acc": [], "train_loss": []}
    for e in range(args.epochs):
        t0 = time.perf_counter()
        total, n = 0.0, 0
        for x, y in batches(*train, args.batch_size, args.seed, epoch=e + 1):
            total += trainer.step(x, y) * len(y)
            n += len(y)
        out["epoch_seconds"].append(time.perf_counter() - t0)
        out["train_loss"].append(total / n)
        out["test_acc"].append(trainer.accuracy(*test))
        print(f"  {trainer.name} epoch {e + 1}: {out['epoch_seconds'][-1]:.1f} s, loss {total / n:.4f}, "
              f"test accuracy {100 * out['test_acc'][-1]:.2f}%", flush=True)
    return out


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m tinymoon.bench train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn (default: both)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: 1e-3 mlp, 2e-3 cnn)")
    p.add_argument("--steps", type=int, default=60, help="timed steps per framework and model (default 60)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before timing (default 5)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch.set_num_threads and numba.set_num_threads value (default: os.cpu_count(), what "
                        "NumPy's BLAS uses unless OPENBLAS_NUM_THREADS says otherwise: set it to match)")
    p.add_argument("--full", action="store_true", help="also train --epochs full epochs and record test accuracy")
    p.add_argument("--epochs", type=int, default=5, help="epochs for --full (default 5)")
    p.add_argument("--cosine", action="store_true",
                   help="--full: anneal the learning rate to 0 over the run (per-step cosine), in both frameworks")
    p.add_argument("--no-torch", action="store_true", help="tinymoon only")
    p.add_argument("--synthetic", action="store_true", help="synthetic data instead of MNIST")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_results", help="folder for train.json (default bench_results)")
    return p.parse_args(argv)


def _blas_threads():
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            return int(os.environ[var])
    return os.cpu_count()


def run(argv=None):
    args = parse(argv or [])
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            print("PyTorch is not installed: tinymoon only (pip install torch to compare)")
    numba_threads = None
    try:                                   # Numba's pool can shrink at run time (BLAS's cannot: use the env var)
        import numba
        numba.set_num_threads(max(1, min(args.threads, numba.config.NUMBA_NUM_THREADS)))
        numba_threads = numba.get_num_threads()
    except ImportError:
        pass
    dataset, train, test = load(args.synthetic)
    steps_per_epoch = math.ceil(len(train[1]) / args.batch_size)
    rows, results = [], {}
    for kind in [m.strip() for m in args.models.split(",") if m.strip()]:
        lr = args.lr if args.lr is not None else (1e-3 if kind == "mlp" else 2e-3)
        ours = TinymoonTrainer(kind, lr, args.seed)
        trainers = [ours]
        if torch is not None:
            trainers.append(TorchTrainer(kind, lr, args.seed, ours.model))
        res = {"lr": lr, "batch_size": args.batch_size, "steps_per_epoch": steps_per_epoch}
        for tr in trainers:
            sps = time_steps(tr, train, args)
            res[tr.name] = {"seconds_per_step": sps, "seconds_per_epoch_extrapolated": sps * steps_per_epoch}
        if args.full:
            cos = args.epochs * steps_per_epoch if args.cosine else None
            for tr in ([TinymoonTrainer(kind, lr, args.seed, cos)] +
                       ([TorchTrainer(kind, lr, args.seed, tm_model(kind, args.seed), cos)] if torch else [])):
                print(f"{kind}: {args.epochs}-epoch training, {tr.name}", flush=True)
                res[tr.name]["full"] = full_training(tr, train, test, args)
        results[kind] = res
        row = {"model": kind, "tinymoon s/epoch (extrap.)": res["tinymoon"]["seconds_per_epoch_extrapolated"]}
        if torch is not None:
            row["pytorch s/epoch (extrap.)"] = res["pytorch"]["seconds_per_epoch_extrapolated"]
            row["ratio"] = res["tinymoon"]["seconds_per_step"] / res["pytorch"]["seconds_per_step"]
        if args.full:
            for name in ("tinymoon", "pytorch"):
                if name in res and "full" in res[name]:
                    f = res[name]["full"]
                    row[f"{name} s/epoch (measured)"] = float(np.mean(f["epoch_seconds"]))
                    row[f"{name} acc@{args.epochs}"] = f"{100 * f['test_acc'][-1]:.2f}%"
        rows.append(row)
        print(table([row], list(row)), flush=True)
    columns = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    print(table(rows, columns, title=f"training on {dataset}, batch {args.batch_size}, Adam, float32; "
                                     f"numpy BLAS threads {_blas_threads()}, numba threads {numba_threads}, torch threads "
                                     f"{torch.get_num_threads() if torch else None}"))
    payload = {"dataset": dataset, "args": vars(args), "blas_threads": _blas_threads(), "numba_threads": numba_threads,
               "torch_threads": torch.get_num_threads() if torch else None,
               "extrapolation": f"seconds per epoch = seconds per step (mean over {args.steps} timed steps after "
                                f"{args.warmup} warm-up steps) x {steps_per_epoch} steps",
               "results": results, "rows": rows}
    write_json("train", payload, out_dir=args.out)
    return payload


if __name__ == "__main__":
    run(__import__("sys").argv[1:])
