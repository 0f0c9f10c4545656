"""The README demo: train a small CNN on MNIST, then train a 32-layer MLP with Moonwalk and with backprop
and print the memory each needed.

    python examples/demo.py              # under 30 s on 2 CPU cores (20-26 s measured; see the README)
    python examples/demo.py --synthetic  # no MNIST package: a small synthetic data set instead

Part 1 (examples/train_mnist.py): a 2-conv + 2-linear CNN, one epoch of Adam: >= 97% test accuracy, with a
tqdm progress bar when the terminal shows one.
Part 2 (examples/moonwalk_mnist.py): the same deep leaky-ReLU MLP trained with backprop and with Moonwalk
(inverse-forward differentiation), same seed, same batches: the same accuracy, a fraction of the memory.
"""
import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import moonwalk_mnist  # noqa: E402
import train_mnist  # noqa: E402

import tinymoon as tm  # noqa: E402

MEMORY_LEGEND = ("memory: 'saved' = the peak of the engine's residual counter (tinymoon.memory: the activations, "
                 "masks, fragments and anchors a method keeps for its gradient); 'host' = the peak host memory "
                 "of one step traced by tracemalloc (those plus weight gradients and temporaries)")


def main(argv=None):
    p = argparse.ArgumentParser(description="tinymoon's demo: a CNN on MNIST, then Moonwalk vs backprop.")
    p.add_argument("--synthetic", action="store_true", help="use tm.data.synthetic instead of MNIST")
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only (quick look)")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be >= 1 (got {args.limit}); leave it out to train on all the data")
    # One BLAS/Numba thread: on a 2-core machine their thread pools otherwise compete for the same cores
    # (measured in docs/training.md).
    tm.set_num_threads(1)
    extra = (["--synthetic"] if args.synthetic else []) + ([f"--limit={args.limit}"] if args.limit else [])
    progress = [] if sys.stderr.isatty() else ["--no-progress"]    # the tqdm bar, where a terminal shows it
    t0 = time.perf_counter()
    print("== 1. A small CNN on MNIST, one epoch ==")
    train_mnist.main(["--model", "cnn", "--epochs", "1", *progress, *extra])
    print("\n== 2. A 32-layer MLP: Moonwalk vs backprop (same seed, same batches) ==")
    print(MEMORY_LEGEND)
    moonwalk_mnist.main(["--method", "both", "--epochs", "1", *extra])
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
