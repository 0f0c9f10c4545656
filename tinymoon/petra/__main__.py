"""python -m tinymoon.petra <command> [options]

commands:
  train     train with PETRA, a PETRA-synchronous run, delayed gradients or backprop
            (under `mpiexec -n R` the stages are spread over R ranks; alone, the tick simulator runs them)
  diagram   print the schedule as a tick diagram

examples:
  python -m tinymoon.petra train --dataset synthetic --epochs 1
  mpiexec -n 4 python -m tinymoon.petra train --dataset mnist --model revnet --stages 4 --epochs 1
  python -m tinymoon.petra diagram --stages 4 --microbatches 6
"""
import argparse
import sys


def _diagram(argv):
    from .schedule import Schedule
    p = argparse.ArgumentParser(prog="python -m tinymoon.petra diagram", description="Print the PETRA schedule.")
    p.add_argument("--stages", type=int, default=4)
    p.add_argument("--microbatches", type=int, default=6)
    p.add_argument("--mode", choices=("petra", "sync"), default="petra")
    a = p.parse_args(argv)
    print(Schedule(a.stages, a.microbatches, a.mode).diagram())
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "train":
        from .train import main as train_main
        return train_main(rest)
    if cmd == "diagram":
        return _diagram(rest)
    print(f"unknown command {cmd!r}; use train or diagram (see --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
