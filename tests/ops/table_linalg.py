"""Op table rows: matmul (numpy.matmul shapes and broadcasting) and linear (x Wᵀ + b), with inverse mode
along the left operand / the layer input — contracting (m <= n) and expanding (m > n, with fragments)."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinymoon as tm

from .spec import OpSpec, values


def broadcasting(draw, dtype):
    s = draw(hnp.mutually_broadcastable_shapes(signature="(n?,k),(k,m?)->(n?,m?)", max_dims=4, max_side=4))
    return [values(draw, s.input_shapes[0], dtype), values(draw, s.input_shapes[1], dtype)]


def _well_conditioned(draw, shape, dtype):
    """A random matrix plus 1.5 on its (rectangular) diagonal: full rank, modest condition number."""
    w = values(draw, shape, "float64", -1.0, 1.0) + 1.5 * np.eye(*shape)
    return w.astype(dtype)


def left_data(b_1d=False):
    """a: (batch..., rows?, n), b: (n, m) (or (n,)) fixed: vijp along a, m <= n or m > n."""
    def draw_inputs(draw, dtype):
        n, m = draw(st.integers(1, 5)), draw(st.integers(1, 6))
        lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
        b = _well_conditioned(draw, (n, m), dtype)
        if b_1d:
            b = b[:, 0].copy()
        return [values(draw, lead + (n,), dtype), b]
    return draw_inputs


def dense(bias):
    def draw_inputs(draw, dtype):
        in_f, out_f = draw(st.integers(1, 5)), draw(st.integers(1, 6))
        lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
        out = [values(draw, lead + (in_f,), dtype), _well_conditioned(draw, (out_f, in_f), dtype)]
        if bias:
            out.append(values(draw, (out_f,), dtype))
        return out
    return draw_inputs


def _linear_ref(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


ROWS = [
    OpSpec("matmul_broadcast", tm.matmul, np.matmul, broadcasting, modes=("jvp", "vjp"),
           f32_rtol=1e-4, f32_atol=1e-4),
    OpSpec("matmul_vijp", lambda a, b: a @ b, np.matmul, left_data(), f32_rtol=1e-4, f32_atol=1e-4),
    OpSpec("matmul_vijp_vector", lambda a, b: a @ b, np.matmul, left_data(b_1d=True), f32_rtol=1e-4,
           f32_atol=1e-4),
    OpSpec("linear", tm.linear, _linear_ref, dense(bias=False), f32_rtol=1e-4, f32_atol=1e-4),
    OpSpec("linear_bias", tm.linear, _linear_ref, dense(bias=True), f32_rtol=1e-4, f32_atol=1e-4),
]
