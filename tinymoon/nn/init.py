"""Weight initialisation, in place, from an explicit generator (never numpy's global state).

The formulas are PyTorch's (torch.nn.init), so a ported model starts from the same distributions:
- kaiming_uniform_: U(-b, b), b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a);
  Linear/Conv2d use a = sqrt(5) with leaky_relu, which gives b = 1 / sqrt(fan_in);
- kaiming_normal_:  N(0, std^2), std = gain / sqrt(fan);
- xavier_uniform_:  U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out));  xavier_normal_: std = gain sqrt(2/(fan_in+fan_out));
- orthogonal_: the Q of a QR decomposition of a Gaussian matrix (rows = dim 0, columns = the rest), with the
  signs of diag(R) folded in so Q is Haar-distributed, times gain.
fan_in = size(1) * receptive field, fan_out = size(0) * receptive field (receptive field = prod(shape[2:])).

Every function takes `generator`: None (fresh OS entropy: not reproducible), an int seed, or a
numpy Generator (used and advanced). Samples are drawn in float64 and cast to the tensor's dtype.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..tensor import generator as _generator

__all__ = ["calculate_gain", "fan_in_and_fan_out", "uniform_", "normal_", "constant_", "zeros_", "ones_",
           "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "orthogonal_"]


def _fill(t, values):
    """Write host float64 `values` into tensor/array t in place (its dtype and device)."""
    arr = t.data if hasattr(t, "requires_grad") else t
    v = values.astype(arr.dtype, copy=False)
    if backend.device_of(arr) != "cpu":
        v = backend.to_device(v, backend.device_of(arr))
    arr[...] = v
    return t


def _shape(t):
    return tuple(t.shape)


def calculate_gain(nonlinearity, param=None):
    """PyTorch's recommended gain for a nonlinearity ('linear', 'conv2d', 'sigmoid', 'tanh', 'relu',
    'leaky_relu' (param = negative slope, default 0.01), 'selu')."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def fan_in_and_fan_out(shape):
    """(fan_in, fan_out) of a weight of `shape` (out, in, *kernel); needs at least 2 dimensions."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dimensions, got shape {shape}")
    rf = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * rf, shape[0] * rf


def _fan(shape, mode):
    fi, fo = fan_in_and_fan_out(shape)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fi if mode == "fan_in" else fo


def uniform_(t, a=0.0, b=1.0, generator=None):
    """t ~ U(a, b), in place."""
    return _fill(t, _generator(generator).uniform(a, b, size=_shape(t)))


def normal_(t, mean=0.0, std=1.0, generator=None):
    """t ~ N(mean, std^2), in place."""
    return _fill(t, _generator(generator).normal(mean, std, size=_shape(t)))


def constant_(t, value):
    return _fill(t, np.full(_shape(t), float(value)))


def zeros_(t):
    return constant_(t, 0.0)


def ones_(t):
    return constant_(t, 1.0)


def kaiming_uniform_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """t ~ U(-b, b), b = gain * sqrt(3 / fan) (He et al. 2015), in place."""
    fan = _fan(_shape(t), mode)
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan) if fan else 0.0
    return uniform_(t, -bound, bound, generator)


def kaiming_normal_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """t ~ N(0, std^2), std = gain / sqrt(fan), in place."""
    fan = _fan(_shape(t), mode)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0
    return normal_(t, 0.0, std, generator)


def xavier_uniform_(t, gain=1.0, generator=None):
    """t ~ U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010), in place."""
    fi, fo = fan_in_and_fan_out(_shape(t))
    bound = gain * math.sqrt(6.0 / (fi + fo))
    return uniform_(t, -bound, bound, generator)


def xavier_normal_(t, gain=1.0, generator=None):
    fi, fo = fan_in_and_fan_out(_shape(t))
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fi + fo)), generator)


def orthogonal_(t, gain=1.0, generator=None):
    """t (viewed as rows x cols, rows = shape[0]) with orthonormal rows or columns, times gain, in place."""
    shape = _shape(t)
    if len(shape) < 2:
        raise ValueError(f"orthogonal_ needs a tensor with at least 2 dimensions, got shape {shape}")
    rows, cols = shape[0], math.prod(shape[1:])
    a = _generator(generator).standard_normal((rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))         # fold the signs of diag(R) in: Q is then Haar-distributed
    if rows < cols:
        q = q.T
    return _fill(t, gain * q.reshape(shape))
