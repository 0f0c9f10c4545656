"""Op table rows whose derivative is an approximation by design — the residual policies of docs/design.md: a
few-bit activation (f' from a b-bit table) and a sketched linear layer (the weight cotangent estimated from a
random sketch of x). Their values are exact (checked against NumPy); their gradients are checked statistically
in tests/fewbit and tests/randomized; a second derivative raises MissingRuleError (orders = 1)."""
import numpy as np
from hypothesis import strategies as st

import tinymoon.fewbit as fb
import tinymoon.randomized as R

from .spec import OpSpec, shapes, values


def one(draw, dtype):
    return [values(draw, draw(shapes()), dtype)]


def dense(draw, dtype):
    rows, in_f, out_f = draw(st.integers(2, 6)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return [values(draw, (rows, in_f), dtype), values(draw, (out_f, in_f), dtype)]


ROWS = [
    OpSpec("fewbit_tanh", lambda x: fb.tanh(x, bits=3), np.tanh, one, modes=(), orders=1),
    OpSpec("sketched_linear", lambda x, w: R.sketched_linear(x, w, probes=2, seed=0), lambda x, w: x @ w.T, dense,
           modes=(), orders=1, f32_rtol=1e-4, f32_atol=1e-4),
]
