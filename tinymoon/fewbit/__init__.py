"""Few-bit activation derivatives (Novikov et al., arXiv:2202.00441) — the pure-NumPy part.

Store a b-bit bin index of each activation input instead of the input, and use a piecewise-constant
derivative q(x) = levels[bin] in backward. This package computes the optimal tables:

    activation(name)                  the activation table's entry: value, exact derivative, parameters
    solve(f, bits, domain, weight)    DP-optimal Table for f' (f: a name or a callable derivative)
    get_table(name, bits, **params)   the default table: shipped file, else disk cache, else solved
    Table(borders, levels)            a validated table; .index(x), .derivative(x)

and the engine side (the quantised residual policy: the ordinary activation primitives, computing f(x)
exactly, keep b bits per element for backward):

    gelu(x, bits=3), silu, ..., relu6   tensor functions (functional.py; `table=` for a custom table)
    GELU(bits=3), ..., convert(model)   modules, and converting an existing model's activations (modules.py)
    Quantised(table), PackedBins        the policy and its residual (quantized.py)
"""
from .activations import activation, continuous_names, names, piecewise_names
from .cache import CacheWarning, cache_dir, get_table
from .errors import FewBitError
from .solver import (DEFAULT_DOMAIN, DEFAULT_GRID, DEFAULT_WEIGHT, discretise, solve, solve_reference,
                     weighted_error)
from .table import MAX_BITS, MIN_BITS, Table
from .quantized import PackedBins, Quantised
from . import functional
from .functional import (DEFAULT_BITS, activate, celu, elu, gelu, hardsigmoid, hardswish, hardtanh, leaky_relu,
                         logsigmoid, mish, relu, relu6, selu, sigmoid, silu, softplus, softsign, table_for, tanh,
                         tanhshrink)
from .modules import (CELU, ELU, GELU, Hardsigmoid, Hardswish, Hardtanh, LeakyReLU, LogSigmoid, Mish, ReLU,
                      ReLU6, SELU, FewBitFn, Sigmoid, SiLU, Softplus, Softsign, Tanh, Tanhshrink, convert)

__all__ = ["activation", "names", "continuous_names", "piecewise_names",
           "FewBitError", "Table", "MIN_BITS", "MAX_BITS", "solve", "solve_reference", "discretise",
           "weighted_error", "get_table", "cache_dir", "CacheWarning", "DEFAULT_DOMAIN", "DEFAULT_GRID", "DEFAULT_WEIGHT",
           # engine side
           "Quantised", "PackedBins", "functional", "DEFAULT_BITS",
           "activate", "table_for", "convert", "FewBitFn",
           "gelu", "silu", "tanh", "sigmoid", "elu", "selu", "celu", "softplus", "mish", "softsign", "logsigmoid",
           "hardswish", "tanhshrink", "relu", "leaky_relu", "relu6", "hardtanh", "hardsigmoid",
           "GELU", "SiLU", "Tanh", "Sigmoid", "ELU", "SELU", "CELU", "Softplus", "Mish", "Softsign", "LogSigmoid",
           "Hardswish", "Tanhshrink", "ReLU", "LeakyReLU", "ReLU6", "Hardtanh", "Hardsigmoid"]
