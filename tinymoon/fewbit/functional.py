"""Few-bit activations on tensors: `tm.fewbit.gelu(x, bits=3)` and friends.

Each function applies the ordinary activation primitive (tinymoon/ops/activations.py) with the quantised
residual policy (quantized.py): the exact value, and b bits per element kept for the derivative:

    continuous        gelu silu tanh sigmoid elu(alpha) selu celu(alpha) softplus(beta, threshold) mish
                      softsign logsigmoid hardswish tanhshrink
                      -> q(x) = levels[bin(x)] from a b-bit table (default bits = 3; `table=` for a custom one)
    piecewise-linear  relu leaky_relu(negative_slope) relu6 hardtanh(min_val, max_val) hardsigmoid
                      -> the exact derivative from a 1-bit mask (bits is accepted and checked, but a mask
                         always needs exactly 1 bit per element)

`table` is a `tinymoon.fewbit.Table` (e.g. from `solve(...)` fitted to your network's pre-activations) or a
pair (borders, levels) of 2^b - 1 interior borders and 2^b levels, validated by `Table`. The default tables
depend on the activation's parameters: `elu(x, alpha=0.5)` uses a table solved for alpha = 0.5 (solved once,
then cached on disk and in memory; see cache.py).
"""
from __future__ import annotations

import numpy as np

from ..autodiff.apply import apply
from ..ops.activations import PRIMITIVES
from ..tensor import as_tensor
from .activations import activation, names
from .cache import get_table
from .errors import FewBitError
from .quantized import Quantised
from .table import MAX_BITS, MIN_BITS, Table

__all__ = ["DEFAULT_BITS", "activate", "table_for", "check_bits", "gelu", "silu", "tanh", "sigmoid", "elu",
           "selu", "celu", "softplus", "mish", "softsign", "logsigmoid", "hardswish", "tanhshrink", "relu",
           "leaky_relu", "relu6", "hardtanh", "hardsigmoid"]

DEFAULT_BITS = 3

_tables = {}      # (name, bits, params) -> Table: get_table reads the disk cache; this keeps it in memory


def check_bits(bits, what="fewbit"):
    """bits as an int in 1..8; FewBitError otherwise."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
        raise FewBitError(f"{what}: bits must be an integer in {MIN_BITS}..{MAX_BITS} (2 to {2 ** MAX_BITS} "
                          f"levels per table); got bits={bits!r}")
    return int(bits)


def table_for(name, bits=None, table=None, **params) -> Table:
    """The table a continuous activation uses: `table` checked against name/bits/params, or the default one."""
    act = activation(name)
    return _table_for(act, name, act.resolve(**params), bits, table)


def _table_for(act, name, p, bits, table):
    # table_for with the parameters already resolved (activate has them: resolving twice cost ~1.5 µs a call)
    if act.piecewise_linear:
        raise FewBitError(f"fewbit.{name} is piecewise-linear: its derivative is exact with a 1-bit mask and "
                          f"takes no table")
    if table is None:
        bits = DEFAULT_BITS if bits is None else check_bits(bits, f"fewbit.{name}")
        key = (name, bits, tuple(sorted(p.items())))
        t = _tables.get(key)
        if t is None:
            t = _tables[key] = get_table(name, bits, **p)
        return t
    if not isinstance(table, Table):
        try:
            borders, levels = table
        except (TypeError, ValueError):
            raise FewBitError(f"fewbit.{name}: table must be a tinymoon.fewbit.Table or a pair (borders, levels); "
                              f"got {type(table).__name__}") from None
        table = Table(borders, levels)                  # validates: sorted, finite, 2^b levels, 2^b - 1 borders
    if bits is not None and check_bits(bits, f"fewbit.{name}") != table.bits:
        raise FewBitError(f"fewbit.{name}: bits={bits} but the table has {table.bits} bits ({len(table)} levels); "
                          f"pass one or the other")
    if table.name is not None and table.name != name:
        raise FewBitError(f"fewbit.{name}: the table was made for {table.name!r}, not {name!r}")
    if table.name == name:
        clash = {k: (v, p[k]) for k, v in table.params.items() if k in p and float(v) != p[k]}
        if clash:
            raise FewBitError(f"fewbit.{name}: the table was made for other parameters "
                              f"({', '.join(f'{k}={a!r}, not {b!r}' for k, (a, b) in clash.items())}); use "
                              f"get_table({name!r}, bits, **params) for these parameters")
    return table


def activate(name, x, *, bits=None, table=None, **params):
    """The few-bit form of activation `name` (see the module docstring) applied to x."""
    act = activation(name)                              # unknown name -> FewBitError listing the known ones
    x = as_tensor(x)
    p = act.resolve(**params)
    if act.piecewise_linear:
        if table is not None:
            raise FewBitError(f"fewbit.{name} is piecewise-linear: its derivative is exact with a 1-bit mask "
                              f"and takes no table")
        if bits is not None:
            check_bits(bits, f"fewbit.{name}")
        policy = Quantised.exact(act, p)
    else:
        policy = Quantised(_table_for(act, name, p, bits, table))
    return apply(PRIMITIVES[name], x, residual=policy, **p)


# ---- one function per activation ----------------------------------------------------------------------------

def gelu(x, *, bits=None, table=None, approximate="none"):
    """x Φ(x) (exact, erf form); b-bit quantised derivative. `approximate="tanh"` is refused: its derivative
    differs from the exact GELU's, so it would need its own table."""
    if approximate != "none":
        raise FewBitError(f"fewbit.gelu: only the exact (erf) GELU is supported, got approximate={approximate!r}; "
                          "use approximate='none' (the tables are fitted to the exact GELU's derivative)")
    return activate("gelu", x, bits=bits, table=table)


def silu(x, *, bits=None, table=None):
    """x σ(x); b-bit quantised derivative."""
    return activate("silu", x, bits=bits, table=table)


def tanh(x, *, bits=None, table=None):
    return activate("tanh", x, bits=bits, table=table)


def sigmoid(x, *, bits=None, table=None):
    return activate("sigmoid", x, bits=bits, table=table)


def elu(x, alpha=1.0, *, bits=None, table=None):
    """x > 0 ? x : α(eˣ - 1); the table is solved for this α."""
    return activate("elu", x, bits=bits, table=table, alpha=alpha)


def selu(x, *, bits=None, table=None):
    return activate("selu", x, bits=bits, table=table)


def celu(x, alpha=1.0, *, bits=None, table=None):
    """x > 0 ? x : α(e^{x/α} - 1); the table is solved for this α."""
    return activate("celu", x, bits=bits, table=table, alpha=alpha)


def softplus(x, beta=1.0, threshold=20.0, *, bits=None, table=None):
    """log(1 + e^{βx})/β, linear where βx > threshold; the table is solved for these β, threshold."""
    return activate("softplus", x, bits=bits, table=table, beta=beta, threshold=threshold)


def mish(x, *, bits=None, table=None):
    return activate("mish", x, bits=bits, table=table)


def softsign(x, *, bits=None, table=None):
    return activate("softsign", x, bits=bits, table=table)


def logsigmoid(x, *, bits=None, table=None):
    return activate("logsigmoid", x, bits=bits, table=table)


def hardswish(x, *, bits=None, table=None):
    return activate("hardswish", x, bits=bits, table=table)


def tanhshrink(x, *, bits=None, table=None):
    return activate("tanhshrink", x, bits=bits, table=table)


def relu(x, *, bits=None):
    """max(x, 0); exact derivative from a 1-bit mask (f'(0) = 0)."""
    return activate("relu", x, bits=bits)


def leaky_relu(x, negative_slope=0.01, *, bits=None):
    return activate("leaky_relu", x, bits=bits, negative_slope=negative_slope)


def relu6(x, *, bits=None):
    """min(max(x, 0), 6); exact derivative from a 1-bit mask (0 at and beyond 0 and 6)."""
    return activate("relu6", x, bits=bits)


def hardtanh(x, min_val=-1.0, max_val=1.0, *, bits=None):
    return activate("hardtanh", x, bits=bits, min_val=min_val, max_val=max_val)


def hardsigmoid(x, *, bits=None):
    return activate("hardsigmoid", x, bits=bits)


assert set(__all__[4:]) == set(names())
