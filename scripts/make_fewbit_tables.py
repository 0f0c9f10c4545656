"""Regenerate tinymoon/fewbit/tables/defaults.npz: the default tables shipped with the package.

    python scripts/make_fewbit_tables.py [--check]

For every continuous activation (default parameters) and bits 1..4: the exact DP table with the default
settings of `tinymoon.fewbit.get_table` (domain (-10, 10), uniform weight, 4096 cells). The output is
deterministic (same numbers, same bytes: zip members carry numpy's fixed timestamp). `--check` regenerates
in memory and exits 1 if the shipped file differs.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time

from tinymoon.fewbit import continuous_names, solve
from tinymoon.fewbit.cache import (SHIPPED_BITS, SHIPPED_PATH, _read_npz_checked, checksum, pack_shipped,
                                   table_key, write_npz_atomic)
from tinymoon.fewbit.solver import DEFAULT_DOMAIN, DEFAULT_GRID, DEFAULT_WEIGHT


def build() -> dict:
    entries = []
    for name in continuous_names():
        for bits in SHIPPED_BITS:
            t0 = time.perf_counter()
            table = solve(name, bits, domain=DEFAULT_DOMAIN, weight=DEFAULT_WEIGHT, grid=DEFAULT_GRID,
                          method="exact")
            key = table_key(name, bits, table.params, DEFAULT_DOMAIN, DEFAULT_WEIGHT, DEFAULT_GRID)
            entries.append((table, key))
            print(f"{name:>11s} {bits} bit  error {table.error:.6e}  ({time.perf_counter() - t0:.2f} s)")
    return pack_shipped(entries)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing")
    args = ap.parse_args(argv)
    arrays = build()
    if args.check:
        shipped = _read_npz_checked(SHIPPED_PATH)
        same = checksum(shipped) == checksum(arrays)
        print("shipped tables are", "up to date" if same else "STALE: rerun without --check")
        return 0 if same else 1
    write_npz_atomic(SHIPPED_PATH, arrays, compressed=True)
    data = SHIPPED_PATH.read_bytes()
    print(f"wrote {SHIPPED_PATH} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
