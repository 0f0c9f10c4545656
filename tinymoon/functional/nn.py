"""Tensor-level neural-network functions: convolution, pooling, softmax, losses, normalisation, dropout.

Each converts its operands and applies one primitive (tinymoon.ops.conv / pool / softmax / norm / dropout),
where the rules — and the condition under which each vijp exists — are written down.
"""
from __future__ import annotations

import numpy as np

from ..autodiff.apply import apply
from .. import backend
from ..backend import device_of
from ..errors import ArgumentError, DeviceError, DTypeError, LabelError, ShapeError
from ..ops import conv as C
from ..ops import dropout as D
from ..ops import norm as N
from ..ops import pool as P
from ..ops import softmax as S
from ..tensor import Tensor, _generator as _named_generator, as_tensor, floating
from .aliases import UNSET, check_axis, pick

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "softmax", "log_softmax", "cross_entropy", "mse", "mse_loss",
           "layer_norm", "batch_norm", "dropout"]


def _floats(*xs, what=None, required=2):
    """Tensors for a float-valued op with several operands (None kept after the first `required`):
    integer/bool operands take the float operands' dtype, or the default float32 when there is none."""
    if any(x is None for x in xs[:required]):
        raise ArgumentError(f"{what}: its first {required} operands are tensors, got None")
    ts = [None if x is None else as_tensor(x, what=what) for x in xs]
    dt = next((t.data.dtype for t in ts if t is not None and t.data.dtype.kind == "f"), None)
    return [t if t is None or t.data.dtype.kind == "f" else
            (floating(t, what=what) if dt is None else Tensor._wrap(t.data.astype(dt))) for t in ts]


def _ints(op, name, v, allow_none=False):
    """An int >= 0 or a pair/nested pairs of them (conv and pool sizes), else an ArgumentError naming op."""
    def ok(a):
        if isinstance(a, (tuple, list)):
            return len(a) > 0 and all(ok(b) for b in a)
        return isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_))
    if (v is None and allow_none) or ok(v):
        return v
    raise ArgumentError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", *,
           vijp_tol=None, vijp_maxiter=None):
    """2-D cross-correlation in NCHW, like torch.nn.functional.conv2d.

    x (N, C_in, H, W), weight (C_out, C_in/groups, kh, kw), bias (C_out,) or None. stride and dilation: int
    or pair. padding: int, pair (ph, pw), ((top, bottom), (left, right)), "valid" or "same" (stride 1 only;
    an odd total puts the extra row/column at the bottom/right, as PyTorch and TensorFlow). padding_mode:
    "zeros" or "circular". vijp_tol / vijp_maxiter: the conjugate-gradient tolerance (relative residual of
    the normal equations; default 1e-10 in float64, 1e-5 in float32) and step cap (default 500) of the
    inverse-mode solve for zero-padded 'same' convolutions (see tinymoon/ops/conv.py).
    """
    stride, dilation, groups = (_ints("conv2d", n, v) for n, v in (("stride", stride), ("dilation", dilation),
                                                                    ("groups", groups)))
    if not isinstance(padding, str):
        _ints("conv2d", "padding", padding)
    ts = [t for t in _floats(x, weight, bias, what="conv2d") if t is not None]
    return apply(C.Conv2d, *ts, stride=stride, padding=padding, dilation=dilation, groups=groups,
                 padding_mode=padding_mode, vijp_tol=vijp_tol, vijp_maxiter=vijp_maxiter)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over kh x kw windows (stride defaults to kernel_size; padding counts as -inf, at most k/2).
    At ties the first maximum in row-major window order gets the gradient."""
    kernel_size, stride, padding = (_ints("max_pool2d", n, v, n == "stride") for n, v in
                                    (("kernel_size", kernel_size), ("stride", stride), ("padding", padding)))
    return apply(P.MaxPool2d, floating(x, what="max_pool2d"), kernel_size=kernel_size, stride=stride, padding=padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over kh x kw windows; zero padding is counted in the divisor (count_include_pad=True)."""
    kernel_size, stride, padding = (_ints("avg_pool2d", n, v, n == "stride") for n, v in
                                    (("kernel_size", kernel_size), ("stride", stride), ("padding", padding)))
    return apply(P.AvgPool2d, floating(x, what="avg_pool2d"), kernel_size=kernel_size, stride=stride, padding=padding)


def _softmax_operands(x, axis, dim, op):
    """(x as a float tensor, the axis): an empty tensor has no softmax along any axis."""
    x = floating(x, what=op)
    a = check_axis(op, pick(op, "axis", axis, "dim", dim, -1), False, False)
    if x.data.size == 0 and -x.ndim <= a < x.ndim:
        raise ShapeError(f"{op}: the tensor of shape {x.shape} is empty, so no {op} is defined along axis {a}")
    return x, a


def softmax(x, axis=-1, *, dim=UNSET):
    """e^x / sum(e^x) along axis (stable); dim= is PyTorch's spelling of axis=."""
    x, axis = _softmax_operands(x, axis, dim, "softmax")
    return apply(S.Softmax, x, axis=axis)


def log_softmax(x, axis=-1, *, dim=UNSET):
    """x - logsumexp(x) along axis (stable); dim= is PyTorch's spelling of axis=."""
    x, axis = _softmax_operands(x, axis, dim, "log_softmax")
    return apply(S.LogSoftmax, x, axis=axis)


def _labels(labels):
    if isinstance(labels, Tensor):
        return labels
    if hasattr(labels, "dtype") and hasattr(labels, "shape"):
        return as_tensor(labels, what="cross_entropy")
    try:
        arr = np.asarray(labels)
    except (ValueError, TypeError) as e:
        raise LabelError(f"cross_entropy: labels must be an array of class indices ({e})") from None
    return Tensor._wrap(arr)


def cross_entropy(logits, labels, reduction="mean"):
    """Softmax cross-entropy with integer class labels: logits (N, C) or (N, C, d1, ...), labels (N,) or
    (N, d1, ...) in [0, C). reduction: "mean" (over all labels), "sum" or "none". Labels get no gradient."""
    logits = floating(logits, what="cross_entropy")
    if logits.ndim >= 1 and logits.shape[1 if logits.ndim >= 2 else 0] == 0:
        raise ShapeError(f"cross_entropy: logits of shape {logits.shape} have no classes (the class axis is empty)")
    return apply(S.CrossEntropy, logits, _labels(labels), reduction=reduction)


def mse(pred, target, reduction="mean"):
    """Mean (or sum) of squared differences; pred and target of the same shape."""
    return apply(S.MSE, *_floats(pred, target, what="mse"), reduction=reduction)


mse_loss = mse


def _affine(weight, bias, what):
    ts = [t for t in _floats(weight, bias, what=what, required=0) if t is not None]
    return ts, dict(has_weight=weight is not None, has_bias=bias is not None)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing `normalized_shape` dims (biased variance), then y * weight + bias."""
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (int(normalized_shape),)
    ts, flags = _affine(weight, bias, "layer_norm")
    return apply(N.LayerNorm, floating(x, what="layer_norm"), *ts, normalized_shape=tuple(normalized_shape), eps=eps, **flags)


def _raw(a):
    return a.data if isinstance(a, Tensor) else a


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=True, momentum=0.1, eps=1e-5):
    """Batch normalisation over (N, C, ...) with per-channel statistics over every axis but 1.

    training=True: batch statistics (biased variance); running_mean / running_var (raw arrays or tensors,
    or None) are updated IN PLACE with momentum, running_var with the unbiased variance (as PyTorch).
    training=False: the running statistics normalise (a per-channel affine map)."""
    ts, flags = _affine(weight, bias, "batch_norm")
    x = floating(x, what="batch_norm")
    rm, rv = _raw(running_mean), _raw(running_var)
    for a, what in ((rm, "running_mean"), (rv, "running_var")):
        if a is not None and not (isinstance(a, np.ndarray) or backend.is_cupy_array(a)):
            raise ArgumentError(f"batch_norm: {what} must be an array, a Tensor or None, got {type(a).__name__}")
        if a is not None and a.dtype.kind != "f":
            raise DTypeError(f"batch_norm: {what} must be a float array (it is updated in place), got {a.dtype}")
        if a is not None and device_of(a) != x.device:
            raise DeviceError(f"batch_norm: {what} is on {device_of(a)} but x is on {x.device}; keep the "
                              f"running statistics with the data (Module.to(device) moves a BatchNorm's buffers)")
    if training or rm is None or rv is None:
        return apply(N.BatchNorm, x, *ts, running_mean=rm if training else None,
                     running_var=rv if training else None, momentum=momentum, eps=eps, **flags)
    return apply(N.BatchNormEval, x, *ts, running_mean=rm, running_var=rv, eps=eps, **flags)


def dropout(x, p, generator, training=True):
    """Inverted dropout: zero each element with probability p and scale the rest by 1/(1-p). `generator`:
    a numpy Generator or an int seed (never global state). training=False returns x unchanged."""
    x = floating(x, what="dropout")
    if not training or p == 0:
        return x
    if generator is None:
        raise ArgumentError("dropout: pass an explicit numpy Generator (tm.generator(seed)) or an int seed")
    return apply(D.Dropout, x, p=float(p), generator=_named_generator(generator, "dropout"))
