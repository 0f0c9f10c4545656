"""Default tables: shipped with the package, else cached on disk, else solved (and then cached).

    get_table(name, bits, **params)        the default table of a continuous activation

Defaults (the same for every continuous activation, chosen to match the authors' DP notebook and the 3-bit
GELU table used in their RoBERTa experiments, see reference/fewbit.md §1.3, §3.2):

    domain (-10, 10), weight "uniform" (w ≡ 1), grid 4096 cells, exact DP.

Every known kink of the registered activations (0, ±3) lies on that grid. `domain=`, `weight=` ("uniform" or
"gaussian") and `grid=` may be overridden; such tables are cached too. (Callable or sample weights are not
cacheable by name: call `solve` directly.)

Lookup order:
1. `tables/defaults.npz` inside this package — default parameters, default settings, bits 1..4 — written by
   `scripts/make_fewbit_tables.py`;
2. the disk cache `$TINYMOON_CACHE_DIR/fewbit/` (default `~/.cache/tinymoon/fewbit/`), one `.npz` per table
   whose name carries a hash of everything the table depends on (activation, parameters, bits, domain,
   weight, grid, format version);
3. `solve(...)`, then written to the cache.

Every file holds a SHA-256 checksum of its arrays. Files are read without unpickling, and bounded (each
member's header is checked before its data is read, 64 MiB at most per file: `serialization.read_npz`). A
cache entry that fails to load, fails its checksum, holds malformed metadata, or was made for other settings
is reported with a warning ("corrupt cache entry ...; rebuilding it") and rebuilt. Writes are atomic (temporary file in the same directory + `os.replace`), so a crash or a
concurrent writer never leaves a half-written entry under the final name. An unwritable cache directory
only costs a warning.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from ..serialization import atomic_write, read_npz
from .activations import activation
from .errors import FewBitError
from .solver import DEFAULT_DOMAIN, DEFAULT_GRID, DEFAULT_WEIGHT, _check_grid, solve
from .table import MAX_BITS, MIN_BITS, Table

__all__ = ["get_table", "cache_dir", "table_key", "SHIPPED_PATH", "SHIPPED_BITS", "FORMAT_VERSION",
           "checksum", "write_npz_atomic", "load_shipped"]

FORMAT_VERSION = 1                   # bump when the solver or the file layout changes what a key means
SHIPPED_PATH = Path(__file__).with_name("tables") / "defaults.npz"
SHIPPED_BITS = (1, 2, 3, 4)


class CacheWarning(UserWarning):
    """A cache entry or the shipped file was unreadable or inconsistent (and was rebuilt / skipped)."""


def cache_dir() -> Path:
    """`$TINYMOON_CACHE_DIR/fewbit`, else `$XDG_CACHE_HOME/tinymoon/fewbit`, else `~/.cache/tinymoon/fewbit`."""
    root = os.environ.get("TINYMOON_CACHE_DIR")
    if root:
        return Path(root) / "fewbit"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tinymoon" / "fewbit"


def table_key(name, bits, params, domain, weight, grid) -> dict:
    """Everything a table depends on, as plain JSON-able values."""
    return {"version": FORMAT_VERSION, "name": name, "params": {k: float(v) for k, v in sorted(params.items())},
            "bits": int(bits), "domain": [float(domain[0]), float(domain[1])], "weight": weight,
            "grid": int(grid)}


def _key_json(key) -> str:
    return json.dumps(key, sort_keys=True)


def checksum(arrays: dict) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the arrays (sorted by name)."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode())
        h.update(a.dtype.str.encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_npz_atomic(path, arrays: dict, compressed=False):
    """Write arrays (+ their checksum under 'checksum') to `path` atomically."""
    path = Path(path)
    payload = dict(arrays)
    payload["checksum"] = np.array(checksum(arrays))
    atomic_write(path, lambda fh: (np.savez_compressed if compressed else np.savez)(fh, **payload))


MAX_FILE_BYTES = 64 << 20           # a table is kilobytes; anything claiming more is not one of ours


def _read_npz_checked(path) -> dict:
    """All arrays of an .npz, after checking its checksum; raises ValueError (or OSError) otherwise."""
    def bad(what, key=None):
        return ValueError(what if key is None else f"{key!r}: {what}")
    try:
        arrays = read_npz(path, max_bytes=MAX_FILE_BYTES, allow_compressed=True, bad=bad)
    except (OSError, ValueError):
        raise
    except Exception as e:  # anything else a damaged zip can raise
        raise ValueError(f"unreadable ({type(e).__name__}: {e})") from None
    if "checksum" not in arrays:
        raise ValueError("no checksum")
    stored = str(arrays.pop("checksum")[()])
    if checksum(arrays) != stored:
        raise ValueError("checksum mismatch")
    return arrays


# ---- the shipped tables ------------------------------------------------------------------------
# One small file: all borders concatenated, all levels concatenated, and a JSON list of entries
# {"key": table_key(...), "meta": provenance, "b0": offset into borders, "l0": offset into levels}.

def pack_shipped(tables_and_keys) -> dict:
    """Arrays of the shipped file from [(table, key), ...]."""
    borders, levels, entries = [], [], []
    nb = nl = 0
    for table, key in tables_and_keys:
        meta = json.loads(str(table.to_arrays()["meta"][()]))
        entries.append({"key": key, "meta": meta, "b0": nb, "l0": nl})
        borders.append(table.borders)
        levels.append(table.levels)
        nb += table.borders.size
        nl += table.levels.size
    return {"borders": np.concatenate(borders), "levels": np.concatenate(levels),
            "entries": np.array(json.dumps(entries, sort_keys=True))}


_shipped = None          # {key json: Table}, or {} when the file is missing / bad


def load_shipped(path=None) -> dict:
    """{key json: Table} of the shipped file (checked), kept in memory; {} with a warning if it is bad."""
    global _shipped
    if path is None and _shipped is not None:
        return _shipped
    try:
        arrays = _read_npz_checked(SHIPPED_PATH if path is None else path)
        out = {}
        for e in json.loads(str(arrays["entries"][()])):
            k = 2 ** e["meta"]["bits"]
            out[_key_json(e["key"])] = Table(arrays["borders"][e["b0"]:e["b0"] + k - 1],
                                             arrays["levels"][e["l0"]:e["l0"] + k], **e["meta"])
    except FileNotFoundError:
        out = {}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError) as e:
        if path is not None:
            raise
        warnings.warn(f"tinymoon.fewbit: shipped tables {SHIPPED_PATH} are unusable ({e}); tables will be "
                      f"solved and cached instead. Regenerate with scripts/make_fewbit_tables.py",
                      CacheWarning, stacklevel=3)
        out = {}
    if path is None:
        _shipped = out
    return out


def _from_shipped(key) -> Table | None:
    # None when not shipped, or shipped for other settings / an older format (the key differs)
    return load_shipped().get(_key_json(key))


# ---- the disk cache ----------------------------------------------------------------------------

def _cache_path(key) -> Path:
    digest = hashlib.sha256(_key_json(key).encode()).hexdigest()[:20]
    return cache_dir() / f"{key['name']}-{key['bits']}bit-{digest}.npz"


def _from_cache(key, path) -> Table | None:
    if not path.exists():
        return None
    try:
        arrays = _read_npz_checked(path)
        if str(arrays.get("key", np.array(""))[()]) != _key_json(key):
            raise ValueError("made for other settings")
        return Table.from_arrays(arrays)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError) as e:
        # FewBitError is a ValueError; malformed metadata (a 'meta' that is not the keyword arguments of a
        # Table, levels of the wrong kind) raises TypeError & co: all mean the entry is not a table.
        warnings.warn(f"tinymoon.fewbit: corrupt cache entry {path} ({type(e).__name__}: {e}); rebuilding it",
                      CacheWarning, stacklevel=3)
        return None


def _to_cache(key, path, table):
    arrays = table.to_arrays()
    arrays["key"] = np.array(_key_json(key))
    try:
        write_npz_atomic(path, arrays)
    except OSError as e:
        warnings.warn(f"tinymoon.fewbit: cannot write cache entry {path} ({e}); the table was solved but not "
                      f"cached. Set TINYMOON_CACHE_DIR to a writable directory", CacheWarning, stacklevel=3)


# ---- public ------------------------------------------------------------------------------------

def get_table(name, bits, *, domain=None, weight=None, grid=None, **params) -> Table:
    """The default b-bit table for activation `name` with parameters `params` (see the module docstring)."""
    act = activation(name)
    if act.piecewise_linear:
        raise FewBitError(f"{name} is piecewise-linear: its derivative is exact with a {act.code_bits}-bit "
                          f"mask, no table needed; use activation({name!r}).code(x) and .code_levels()")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
        raise FewBitError(f"bits must be an integer in {MIN_BITS}..{MAX_BITS}; got {bits!r}")
    p = act.resolve(**params)
    domain = DEFAULT_DOMAIN if domain is None else domain
    weight = DEFAULT_WEIGHT if weight is None else weight
    grid = _check_grid(DEFAULT_GRID if grid is None else grid)     # bounded before any lookup
    if weight not in ("uniform", "gaussian"):
        raise FewBitError(f"get_table caches only weight='uniform' or 'gaussian' (got {weight!r}); call "
                          f"tinymoon.fewbit.solve(...) for a callable or sample weight")
    key = table_key(name, int(bits), p, domain, weight, grid)
    table = _from_shipped(key)
    if table is not None:
        return table
    path = _cache_path(key)
    table = _from_cache(key, path)
    if table is None:
        table = solve(name, int(bits), domain=domain, weight=weight, grid=grid, method="exact", **p)
        _to_cache(key, path, table)
    return table
