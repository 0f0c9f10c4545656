"""The activations few-bit knows: the activation table (tinymoon.kernels.activations), raising FewBitError.

Each entry (a `Formula`) gives the value f(x), the exact derivative f'(x), the parameters with PyTorch's names
and defaults, the points where f' jumps, and for the piecewise-linear ones (relu, leaky_relu, relu6, hardtanh,
hardsigmoid) the exact 1-bit mask `code(x)` with `code_levels()`: f'(x) = code_levels[code(x)], no table
needed. The continuous ones get a fitted b-bit table (solver.py). The tests hold the table to PyTorch.
"""
from __future__ import annotations

from ..kernels import activations as _table
from .errors import FewBitError

__all__ = ["activation", "names", "continuous_names", "piecewise_names"]

names, continuous_names, piecewise_names = _table.names, _table.continuous_names, _table.piecewise_names
_FORMULAS = {n: f.raising(FewBitError) for n, f in _table.ACTIVATIONS.items()}


def activation(name: str):
    """The table's formula for activation `name` (its parameter errors raise FewBitError); FewBitError listing
    the known names otherwise."""
    try:
        return _FORMULAS[name]
    except (KeyError, TypeError):
        raise FewBitError(f"unknown activation {name!r}; known: {', '.join(names())}. "
                          f"For another function pass its derivative as a callable to "
                          f"tinymoon.fewbit.solve(fprime, bits, domain=...)") from None
