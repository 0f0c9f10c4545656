"""Op table rows: elementwise arithmetic and activations."""
import math

import numpy as np
from hypothesis.extra import numpy as hnp

import tinymoon as tm
from tinymoon.functional import namespace

from .spec import OpSpec, shapes, values

_erf = np.vectorize(math.erf)


def unary(low=-3.0, high=3.0, kinks=()):
    def draw_inputs(draw, dtype):
        return [values(draw, draw(shapes()), dtype, low, high, away_from=kinks)]
    return draw_inputs


def binary(low=-3.0, high=3.0, b_low=None, b_high=None, kinks_diff=False):
    """Two mutually broadcastable inputs (the first has the full output shape, for the vijp)."""
    def draw_inputs(draw, dtype):
        s = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=3, max_side=4))
        a = values(draw, s.result_shape, dtype, low, high)
        b = values(draw, s.input_shapes[1], dtype, low if b_low is None else b_low, high if b_high is None else b_high)
        if kinks_diff:   # keep a and b apart so max/min are differentiable
            b = b + np.where(np.abs(np.broadcast_to(b, a.shape) - a).min() < 1e-2, 0.5, 0).astype(dtype)
        return [a, b]
    return draw_inputs


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softplus(x, beta=1.0, threshold=20.0):
    return np.where(beta * x > threshold, x, np.log1p(np.exp(beta * x)) / beta)


ROWS = [
    OpSpec("add", tm.add, np.add, binary()),
    OpSpec("sub", tm.sub, np.subtract, binary()),
    OpSpec("mul", tm.mul, np.multiply, binary(b_low=0.5, b_high=2.0)),
    OpSpec("div", tm.div, np.divide, binary(b_low=0.5, b_high=2.0)),
    OpSpec("pow", tm.pow, np.power, binary(low=0.5, high=2.0, b_low=-2.0, b_high=2.0)),
    OpSpec("maximum", tm.maximum, np.maximum, binary(kinks_diff=True), modes=("jvp", "vjp")),
    OpSpec("minimum", tm.minimum, np.minimum, binary(kinks_diff=True), modes=("jvp", "vjp")),
    OpSpec("neg", tm.neg, np.negative, unary()),
    OpSpec("exp", tm.exp, np.exp, unary()),
    OpSpec("log", tm.log, np.log, unary(0.1, 4.0)),
    OpSpec("sqrt", tm.sqrt, np.sqrt, unary(0.1, 4.0)),
    OpSpec("log1p", namespace.log1p, np.log1p, unary(-0.5, 3.0)),       # the tensor namespace's (activation formulas)
    OpSpec("expm1", namespace.expm1, np.expm1, unary()),
    OpSpec("abs", tm.abs, np.abs, unary(kinks=(0.0,))),
    OpSpec("clip", lambda x: tm.clip(x, -1.0, 1.5), lambda x: np.clip(x, -1.0, 1.5),
           unary(kinks=(-1.0, 1.5)), modes=("jvp", "vjp")),
    OpSpec("where", lambda a, b: tm.where(a > 0, a, b), lambda a, b: np.where(a > 0, a, b),
           binary(), modes=("jvp", "vjp")),
    OpSpec("tanh", tm.tanh, np.tanh, unary()),
    OpSpec("sigmoid", tm.sigmoid, _sigmoid, unary()),
    OpSpec("relu", tm.relu, lambda x: np.maximum(x, 0), unary(kinks=(0.0,))),
    OpSpec("leaky_relu", lambda x: tm.leaky_relu(x, 0.1), lambda x: np.where(x > 0, x, 0.1 * x), unary(kinks=(0.0,))),
    OpSpec("elu", lambda x: tm.elu(x, 0.7), lambda x: np.where(x > 0, x, 0.7 * np.expm1(x)), unary(kinks=(0.0,))),
    OpSpec("gelu", tm.gelu, lambda x: x * 0.5 * (1 + _erf(x / np.sqrt(2))), unary()),
    OpSpec("silu", tm.silu, lambda x: x * _sigmoid(x), unary()),
    OpSpec("softplus", lambda x: tm.softplus(x, 2.0), lambda x: _softplus(x, 2.0), unary()),
]
