"""Few-bit activation derivatives (Novikov et al., arXiv:2202.00441) — the pure-NumPy part.

Store a b-bit bin index of each activation input instead of the input, and use a piecewise-constant
derivative q(x) = levels[bin] in backward. This package computes the optimal tables:

    activation(name)                  value / exact derivative of a registered activation
    solve(f, bits, domain, weight)    DP-optimal Table for f' (f: a name or a callable derivative)
    get_table(name, bits, **params)   the default table: shipped file, else disk cache, else solved
    Table(borders, levels)            a validated table; .index(x), .derivative(x)
"""
from .activations import ACTIVATIONS, Activation, activation, continuous_names, names, piecewise_names
from .cache import CacheWarning, cache_dir, get_table
from .errors import FewBitError
from .solver import (DEFAULT_DOMAIN, DEFAULT_GRID, DEFAULT_WEIGHT, discretise, solve, solve_reference,
                     weighted_error)
from .table import MAX_BITS, MIN_BITS, Table

__all__ = ["ACTIVATIONS", "Activation", "activation", "names", "continuous_names", "piecewise_names",
           "FewBitError", "Table", "MIN_BITS", "MAX_BITS", "solve", "solve_reference", "discretise",
           "weighted_error", "get_table", "cache_dir", "CacheWarning", "DEFAULT_DOMAIN", "DEFAULT_GRID", "DEFAULT_WEIGHT"]
