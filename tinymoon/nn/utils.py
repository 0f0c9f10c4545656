"""Gradient utilities with PyTorch's names: clip_grad_norm_ and clip_grad_value_ (both act on .grad in place)."""
from __future__ import annotations

import math

from ..errors import ArgumentError, NonFiniteError
from ..tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale every .grad by min(1, max_norm / (total_norm + 1e-6)), where total_norm is the norm_type-norm of
    all the gradients taken together (as one vector); returns total_norm as a 0-d float64 Tensor.

    norm_type: a p >= 1 or inf. error_if_nonfinite=True raises NonFiniteError when the norm is NaN or infinite
    (else such gradients are left as they are, scaled by NaN like PyTorch would — so check the result)."""
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not max_norm >= 0:
        raise ArgumentError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    if not (norm_type >= 1 or math.isinf(norm_type)):
        raise ArgumentError(f"clip_grad_norm_: norm_type must be >= 1 or inf, got {norm_type}")
    ps = _grads(parameters)
    if not ps:
        return Tensor._wrap(__import__("numpy").zeros((), "float64"))
    xp = ps[0].grad.xp
    if math.isinf(norm_type):
        total = max(float(xp.abs(p.grad.data).max()) if p.grad.data.size else 0.0 for p in ps)
    else:
        # sum of |g|^p accumulated in float64: a float32 square can overflow where the norm does not
        total = sum(float((xp.abs(p.grad.data.astype("float64")) ** norm_type).sum()) for p in ps) ** (1 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise NonFiniteError(f"clip_grad_norm_: the total {norm_type}-norm of the gradients is {total}; pass "
                             "error_if_nonfinite=False to clip anyway, or find the op that produced it")
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for p in ps:
            p.grad.data *= p.grad.data.dtype.type(coef)
    return Tensor._wrap(xp.asarray(total, dtype="float64"))


def clip_grad_value_(parameters, clip_value):
    """Clamp every .grad into [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    if not clip_value >= 0:
        raise ArgumentError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value}")
    for p in _grads(parameters):
        p.grad.xp.clip(p.grad.data, -clip_value, clip_value, out=p.grad.data)
