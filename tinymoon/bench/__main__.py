"""python -m tinymoon.bench <name> [options]: run one benchmark, print its table, write its JSON.

Every benchmark is a module tinymoon.bench.<name> with `run(argv) -> dict`. Benchmarks are not tests:
they report numbers (ratios against a baseline measured in the same run, saved and peak bytes), and the
numbers go into docs/ with the command that produced them.
"""
import importlib
import pkgutil
import sys

import tinymoon.bench as pkg

_NOT_BENCHMARKS = {"common"}


def available():
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name not in _NOT_BENCHMARKS
                  and not m.name.startswith("_"))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("benchmarks:", ", ".join(names))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in names:
        print(f"unknown benchmark {name!r}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    from . import common
    common.STEADY_ALLOCATOR = common.steady_allocator()    # before any benchmark allocates (see there)
    importlib.import_module(f"tinymoon.bench.{name}").run(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
