"""The README demo: train a small CNN on MNIST, then train a 32-layer MLP with Moonwalk and with backprop
and print the memory each needed.

    python examples/demo.py              # about a minute on 2 CPU cores once MNIST is cached
    python examples/demo.py --synthetic  # no MNIST package: a small synthetic data set instead

Part 1 (examples/train_mnist.py): a 2-conv + 2-linear CNN, one epoch of Adam: >= 97% test accuracy.
Part 2 (examples/moonwalk_mnist.py): the same deep leaky-ReLU MLP trained with backprop and with Moonwalk
(inverse-forward differentiation), same seed, same batches: the same accuracy, a fraction of the memory.
"""
import argparse
import os
import pathlib
import sys

if __name__ == "__main__":
    # One BLAS/Numba thread per process: on a 2-core machine their thread pools otherwise compete for the
    # same cores (measured in docs/training.md). Must be set before NumPy is imported.
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import moonwalk_mnist  # noqa: E402
import train_mnist  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description="tinymoon's demo: a CNN on MNIST, then Moonwalk vs backprop.")
    p.add_argument("--synthetic", action="store_true", help="use tm.data.synthetic instead of MNIST")
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only (quick look)")
    args = p.parse_args(argv)
    extra = (["--synthetic"] if args.synthetic else []) + ([f"--limit={args.limit}"] if args.limit else [])
    print("== 1. A small CNN on MNIST, one epoch ==")
    train_mnist.main(["--model", "cnn", "--epochs", "1", "--no-progress", *extra])
    print("\n== 2. A 32-layer MLP: Moonwalk vs backprop (same seed, same batches) ==")
    moonwalk_mnist.main(["--method", "both", "--epochs", "1", *extra])


if __name__ == "__main__":
    main()
