"""OpSpec: one row of the op table that drives every op test (forward vs NumPy, check_grads, no mutation).

A row names the tensor-level function, a NumPy reference computing the same value, and a strategy that
draws the inputs (shapes from hypothesis, values from the op's domain). Adding an op = adding a row.

`orders` is the highest order of derivative the op supports: 2 (the default) means its rules run on tensors
(tinymoon/autodiff/graph.py) and check_grads checks second derivatives; 1 means a second derivative raises
MissingRuleError naming the op and the order (tested too).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


@dataclass
class OpSpec:
    name: str
    fn: Callable                     # tensor-level: fn(*tensors) -> Tensor (kwargs bound with a lambda)
    ref: Callable                    # NumPy reference: ref(*arrays) -> array
    inputs: Callable                 # inputs(draw, dtype) -> list of arrays (hypothesis `draw`)
    modes: tuple = ("jvp", "vjp", "vijp")
    dtypes: tuple = ("float32", "float64")
    wrt: tuple | None = None         # differentiable argument indices (None: every float argument)
    rtol: float = 1e-6
    atol: float = 1e-7
    f32_rtol: float = 1e-5
    f32_atol: float = 1e-5
    marks: list = field(default_factory=list)
    orders: int = 2                  # highest order supported (see the module docstring)


def shapes(min_dims=1, max_dims=3, min_side=1, max_side=5):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def values(draw, shape, dtype, low=-3.0, high=3.0, away_from=None, gap=1e-2, seed=None):
    """Random values in [low, high] from a drawn seed; `away_from` (a list of kinks) keeps them at least
    `gap` away from non-differentiable points so finite differences stay meaningful."""
    seed = draw(st.integers(0, 2**32 - 1)) if seed is None else seed
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, size=shape)
    for k in away_from or ():
        close = np.abs(x - k) < gap
        x[close] = k + np.sign(x[close] - k + 1e-300) * gap * (1 + rng.random(np.sum(close)))
    return x.astype(dtype)
