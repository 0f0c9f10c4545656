"""`Table`: a b-bit piecewise-constant approximation q of an activation's derivative f'.

    borders  s_1 < s_2 < ... < s_{k-1}          (k = 2^b; the k-1 *interior* borders)
    levels   y_0, y_1, ..., y_{k-1}
    q(x)   = y_i  for x in (s_i, s_{i+1}],  with s_0 = -∞ and s_k = +∞

so the outermost levels extend to ±∞. The bin of x is `searchsorted(borders, x, side='left')` = the number of
borders strictly below x: a point exactly on a border falls in the *lower* bin (the same rule as the
reference implementation, and the same side PyTorch's relu takes at 0). NaN falls in the top bin.

Forward stores `index(x)` (b bits per element); backward multiplies the incoming cotangent by `levels[index]`.
"""
from __future__ import annotations

import numpy as np

from .errors import FewBitError

__all__ = ["Table", "MIN_BITS", "MAX_BITS"]

MIN_BITS, MAX_BITS = 1, 8      # 2 .. 256 levels; indices fit in a uint8


class Table:
    """A validated (borders, levels) pair plus a record of how it was made.

    Table(borders, levels, *, bits=None, name=None, params=None, domain=None, weight=None, grid=None,
          error=None, method=None)

    `bits` is inferred from len(levels) when omitted. The provenance fields are informational; `error` is
    the weighted L2 error ∫_L^R (f' - q)² w dx on the domain [L, R] the table was solved on.
    """

    __slots__ = ("borders", "levels", "bits", "name", "params", "domain", "weight", "grid", "error", "method")

    def __init__(self, borders, levels, *, bits=None, name=None, params=None, domain=None, weight=None,
                 grid=None, error=None, method=None):
        borders = np.array(borders, dtype=np.float64, copy=True)
        levels = np.array(levels, dtype=np.float64, copy=True)
        if borders.ndim != 1:
            raise FewBitError(f"Table: borders must be a 1-D array of interior borders, got shape {borders.shape}")
        if levels.ndim != 1:
            raise FewBitError(f"Table: levels must be a 1-D array, got shape {levels.shape}")
        k = levels.size
        if bits is None:
            # infer b from k = 2^b
            if k < 2 or k & (k - 1) or k > 2 ** MAX_BITS:
                raise FewBitError(f"Table: len(levels) must be 2**bits for bits in {MIN_BITS}..{MAX_BITS} "
                                  f"(2, 4, ..., {2 ** MAX_BITS}); got {k} levels")
            bits = k.bit_length() - 1
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
            raise FewBitError(f"Table: bits must be an integer in {MIN_BITS}..{MAX_BITS} "
                              f"(2 to {2 ** MAX_BITS} levels); got bits={bits!r}")
        bits = int(bits)
        if k != 2 ** bits:
            raise FewBitError(f"Table: a {bits}-bit table needs exactly 2**{bits} = {2 ** bits} levels; "
                              f"got {k}. Pass one level per bin")
        if borders.size != k - 1:
            raise FewBitError(f"Table: {k} levels need {k - 1} interior borders (len(levels) == "
                              f"len(borders) + 1); got {borders.size}. Give only the interior borders: "
                              f"the outer bins extend to ±infinity")
        if not np.all(np.isfinite(borders)):
            bad = np.flatnonzero(~np.isfinite(borders)).tolist()
            raise FewBitError(f"Table: borders must be finite; non-finite at positions {bad}. The outer "
                              f"bins already extend to ±infinity, so leave ±inf out")
        if not np.all(np.isfinite(levels)):
            bad = np.flatnonzero(~np.isfinite(levels)).tolist()
            raise FewBitError(f"Table: levels must be finite; non-finite at positions {bad}")
        if borders.size > 1 and not np.all(np.diff(borders) > 0):
            i = int(np.flatnonzero(~(np.diff(borders) > 0))[0])
            raise FewBitError(f"Table: borders must be strictly increasing; borders[{i}] = {float(borders[i])!r} >= "
                              f"borders[{i + 1}] = {float(borders[i + 1])!r}. Sort them and drop duplicates")
        borders.flags.writeable = False
        levels.flags.writeable = False
        self.borders, self.levels, self.bits = borders, levels, bits
        self.name = name
        self.params = dict(params or {})
        self.domain = None if domain is None else (float(domain[0]), float(domain[1]))
        self.weight = weight
        self.grid = None if grid is None else int(grid)
        self.error = None if error is None else float(error)
        self.method = method

    # -- use --
    def index(self, x) -> np.ndarray:
        """The bin of each element, uint8 in 0..2^bits-1 (a point on a border goes to the lower bin)."""
        return np.searchsorted(self.borders, np.asarray(x), side="left").astype(np.uint8)

    def derivative(self, x) -> np.ndarray:
        """q(x) = levels[index(x)], in x's floating dtype (float64 otherwise)."""
        x = np.asarray(x)
        dt = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
        return self.levels.astype(dt)[self.index(x)]

    __call__ = derivative

    def __len__(self):
        return self.levels.size

    def __eq__(self, other):
        if not isinstance(other, Table):
            return NotImplemented
        return (self.bits == other.bits and np.array_equal(self.borders, other.borders)
                and np.array_equal(self.levels, other.levels))

    __hash__ = None

    def __repr__(self):
        what = self.name if self.name is not None else "f'"
        extra = ""
        if self.params:
            extra += ", params=" + repr(self.params)
        if self.domain is not None:
            extra += f", domain={self.domain}"
        if self.weight is not None:
            extra += f", weight={self.weight!r}"
        if self.error is not None:
            extra += f", error={self.error:.6g}"
        with np.printoptions(precision=6, suppress=False):
            return (f"Table({what}, bits={self.bits}{extra},\n      borders={self.borders},\n"
                    f"      levels={self.levels})")

    # -- plain-array form (for .npz files) --
    def to_arrays(self, prefix="") -> dict:
        """Arrays only (no pickles): borders, levels, and the provenance as one JSON string."""
        import json
        meta = {"bits": self.bits, "name": self.name, "params": self.params,
                "domain": self.domain, "weight": self.weight, "grid": self.grid,
                "error": self.error, "method": self.method}
        return {prefix + "borders": self.borders, prefix + "levels": self.levels,
                prefix + "meta": np.array(json.dumps(meta, sort_keys=True))}

    @classmethod
    def from_arrays(cls, arrays, prefix="") -> "Table":
        import json
        meta = json.loads(str(arrays[prefix + "meta"][()]))
        return cls(arrays[prefix + "borders"], arrays[prefix + "levels"], **meta)

