"""softmax, log_softmax, and the losses cross_entropy and mse.

Softmax p = e^x / sum e^x along `axis` (stable: shifted by the max). J = diag(p) - p p^T is symmetric of rank
n-1 with cokernel span{1}: y_bar and y_bar + c*1 have the same vjp. log_softmax y = x - logsumexp(x) has
J = I - 1 p^T, cokernel span{p}. Each erases ONE scalar per row, which is the fragment.

The losses map to a scalar (or, for cross_entropy with reduction="none", one number per sample): their
Jacobian along the data input is one row vector J (per sample), and a single row vector is surjective as soon
as it is nonzero, so the vijp is y_bar = x_bar[j] / J[j] at the entry j with the largest |J[j]| (no fragment).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..errors import DTypeError, LabelError, NotInvertibleError, ShapeError
from .base import Primitive, add_terms, call




def _axis(x, axis, name):
    if not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"{name}: axis {axis} is out of range for an input of shape {tuple(x.shape)}")
    return axis % x.ndim


def _log_softmax(x, axis):
    xp = get_array_module(x)
    m = x.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    z = x - m
    return z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))


class Softmax(Primitive):
    """p = softmax(x). Fragment: c = <y_bar, p> per row (keepdims), plus y_bar where p underflowed to 0
    (those coordinates are erased too): then the fragment is the pair (c, y_bar[p == 0])."""
    name = "softmax"
    submersive = False
    orders = None          # p is the output: on tensors it is this node's own value

    @staticmethod
    def forward(ctx, x, axis=-1):
        xp = get_array_module(x)
        ax = _axis(x, axis, "softmax")
        p = xp.exp(_log_softmax(x, ax))
        ctx.ax = ax
        ctx.save(p=p)
        return p

    @classmethod
    def jvp(cls, ctx, x_dot):
        p = ctx.p
        return p * (x_dot - (p * x_dot).sum(axis=ctx.ax, keepdims=True))       # J x_dot = p (x_dot - <p, x_dot>)

    @classmethod
    def vjp(cls, ctx, y_bar):
        p = ctx.p
        return (p * (y_bar - (p * y_bar).sum(axis=ctx.ax, keepdims=True)),)    # J symmetric

    @classmethod
    def fragment(cls, ctx, y_bar):
        c = (ctx.p * y_bar).sum(axis=ctx.ax, keepdims=True)                     # <y_bar, p>: the span{1} part
        zero = ctx.p == 0
        return (c, y_bar[zero]) if zero.any() else c

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # Exists with a 1-scalar fragment per row: x_bar = p (y_bar - c) with c = <y_bar, p>, so
        # y_bar = x_bar / p + c * 1 (and y_bar from the fragment where p underflowed to 0).
        xp = get_array_module(x_bar)
        if fragment is None:
            raise cls.missing_fragment("one scalar per row (the component of y_bar along 1, since rows of J sum to 0)")
        zero = ctx.p == 0
        c, tail = fragment if isinstance(fragment, tuple) else (fragment, None)
        if zero.any() and tail is None:
            raise cls.missing_fragment(f"{int(zero.sum())} coordinate(s) where softmax underflowed to 0")
        y_bar = x_bar / xp.where(zero, 1, ctx.p) + c
        if tail is not None:
            y_bar[zero] = tail
        return y_bar


class LogSoftmax(Primitive):
    """y = x - logsumexp(x). Fragment: s = sum(y_bar) per row (keepdims): x_bar = y_bar - s p, so the
    component of y_bar along p is what the vjp erases."""
    name = "log_softmax"
    submersive = False
    orders = None

    @staticmethod
    def residuals(ctx, y, x):
        return dict(p=get_array_module(y).exp(y))            # p = e^y

    @staticmethod
    def forward(ctx, x, axis=-1):
        xp = get_array_module(x)
        ax = _axis(x, axis, "log_softmax")
        y = _log_softmax(x, ax)
        ctx.ax = ax
        ctx.save(p=xp.exp(y))
        return y

    @classmethod
    def jvp(cls, ctx, x_dot):
        return x_dot - (ctx.p * x_dot).sum(axis=ctx.ax, keepdims=True)         # J = I - 1 p^T

    @classmethod
    def vjp(cls, ctx, y_bar):
        return (y_bar - y_bar.sum(axis=ctx.ax, keepdims=True) * ctx.p,)          # y_bar J = y_bar - <y_bar, 1> p

    @classmethod
    def fragment(cls, ctx, y_bar):
        return y_bar.sum(axis=ctx.ax, keepdims=True)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # Always exists with a 1-scalar fragment per row: y_bar = x_bar + s p, s = sum(y_bar). No division.
        if fragment is None:
            raise cls.missing_fragment("one scalar per row (sum(y_bar): the component of y_bar along p)")
        return x_bar + fragment * ctx.p


# ---------------------------------------------------------------------------------------------- losses
def _scalar_vijp(name, j_row, x_bar, y_dtype):
    """y_bar = x_bar[j] / J[j] at j = argmax |J| (J a single row vector: surjective iff J != 0)."""
    xp = get_array_module(x_bar)
    flat = j_row.ravel()
    j = int(xp.argmax(xp.abs(flat)))
    if flat[j] == 0:
        raise NotInvertibleError(f"{name}: the gradient of the loss is exactly zero here (J = 0), so its vjp erases "
                                 "the output cotangent; there is no vijp at this point. Use reverse mode")
    return xp.asarray(x_bar.ravel()[j] / flat[j], dtype=y_dtype)


def check_labels(logits_shape, labels, name="cross_entropy"):
    """Labels: integer class indices of shape logits.shape without axis 1, each in [0, C)."""
    if labels.dtype.kind not in "iu":
        raise DTypeError(f"{name}: labels must be integer class indices, got dtype {labels.dtype} (probabilities or "
                         "one-hot targets are not supported; pass argmax indices)")
    if len(logits_shape) < 2:
        raise ShapeError(f"{name}: logits must be (N, C) or (N, C, d1, ...), got shape {tuple(logits_shape)}")
    want = (logits_shape[0],) + tuple(logits_shape[2:])
    if tuple(labels.shape) != want:
        raise ShapeError(f"{name}: labels of shape {tuple(labels.shape)} do not fit logits of shape "
                         f"{tuple(logits_shape)}; expected labels of shape {want}")
    c = logits_shape[1]
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= c:
            raise LabelError(f"{name}: labels must lie in [0, {c}) for logits with {c} classes; got values in "
                             f"[{lo}, {hi}]")


class CrossEntropy(Primitive):
    """loss = reduce_n( logsumexp(x_n) - x_n[label_n] ), classes along axis 1 (PyTorch layout).

    reduction "mean" (over all N*d1*... labels), "sum", or "none". Residual: the softmax probabilities p
    (for the logits cotangent) and the labels. J along the logits = (p - onehot) * scale.
    """
    name = "cross_entropy"
    differentiable = (0,)
    orders = None

    @staticmethod
    def forward(ctx, logits, labels, reduction="mean"):
        xp = get_array_module(logits)
        if reduction not in ("mean", "sum", "none"):
            raise ShapeError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        check_labels(logits.shape, labels)
        logp = _log_softmax(logits, 1)
        picked = xp.take_along_axis(logp, xp.expand_dims(labels.astype(np.intp), 1), axis=1)[:, 0]
        losses = -picked
        ctx.save_for(0, p=xp.exp(logp), labels=labels)
        ctx.scale = 1.0 / max(labels.size, 1) if reduction == "mean" else 1.0
        if reduction == "none":
            return losses
        return xp.asarray(losses.sum() * ctx.scale, dtype=logits.dtype)

    @staticmethod
    def residuals(ctx, y, logits, labels):
        return dict(p=get_array_module(logits).exp(call(LogSoftmax, logits, axis=1)))     # p = softmax(logits)

    @classmethod
    def _jac(cls, ctx):
        """J = (p - onehot) * scale, logits-shaped (one row per sample for reduction='none')."""
        p, labels = ctx.p, ctx.labels                       # labels: an integer array (a constant)
        lm = get_array_module(labels)
        c = p.shape[1]
        classes = lm.arange(c).reshape((1, c) + (1,) * (labels.ndim - 1))
        g = p - (lm.expand_dims(labels, 1) == classes).astype(p.dtype)
        return g * ctx.scale if ctx.scale != 1.0 else g

    @classmethod
    def jvp(cls, ctx, x_dot, _labels_dot=None):
        per = (cls._jac(ctx) * x_dot).sum(axis=1)                      # y_dot = <J, x_dot> per sample
        return per if ctx.params.get("reduction", "mean") == "none" else get_array_module(per).asarray(per.sum())

    @classmethod
    def vjp(cls, ctx, y_bar):
        # x_bar = y_bar J = y_bar (p - onehot) scale (per sample for reduction='none')
        yb = get_array_module(y_bar).expand_dims(y_bar, 1) if ctx.params.get("reduction", "mean") == "none" else y_bar
        return (cls._jac(ctx) * yb, None)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # Exists iff J != 0 (per sample for 'none'): y_bar = x_bar[j] / J[j] at j = argmax |J|.
        if ctx.wrt != 0:
            raise NotInvertibleError("cross_entropy: labels are not differentiable; the data path must be the logits")
        jac = cls._jac(ctx)
        if ctx.params.get("reduction", "mean") != "none":
            return _scalar_vijp("cross_entropy", jac, x_bar, x_bar.dtype)
        xp = get_array_module(x_bar)
        j = xp.expand_dims(xp.argmax(xp.abs(jac), axis=1), 1)
        jj = xp.take_along_axis(jac, j, axis=1)[:, 0]
        if bool((jj == 0).any()):
            raise NotInvertibleError(f"cross_entropy: the loss gradient is exactly zero for {int((jj == 0).sum())} "
                                     "sample(s) (p = onehot), so their output cotangent is erased; no vijp here")
        return xp.take_along_axis(x_bar, j, axis=1)[:, 0] / jj


class MSE(Primitive):
    """loss = reduce((pred - target)^2), reduction "mean" or "sum". Residual: d = pred - target.
    J along pred = 2 d * scale, along target = -2 d * scale."""
    name = "mse"
    orders = None

    @staticmethod
    def residuals(ctx, y, pred, target):
        return dict(d=pred - target)

    @staticmethod
    def forward(ctx, pred, target, reduction="mean"):
        if reduction not in ("mean", "sum"):
            raise ShapeError(f"mse: reduction must be 'mean' or 'sum', got {reduction!r}")
        if pred.shape != target.shape:
            raise ShapeError(f"mse: pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same "
                             "shape (broadcast explicitly if you mean it)")
        d = pred - target
        ctx.scale = 1.0 / max(d.size, 1) if reduction == "mean" else 1.0
        ctx.save(d=d)
        return get_array_module(d).asarray((d * d).sum() * ctx.scale, dtype=pred.dtype)

    @classmethod
    def jvp(cls, ctx, p_dot, t_dot):
        # y_dot = 2 scale <d, p_dot - t_dot>
        diff = add_terms(p_dot, None if t_dot is None else -t_dot)
        return get_array_module(diff).asarray((2 * ctx.scale) * (ctx.d * diff).sum(), dtype=diff.dtype)

    @classmethod
    def vjp(cls, ctx, y_bar):
        g = (2 * ctx.scale) * ctx.d * y_bar
        return (g if ctx.needs[0] else None, -g if ctx.needs[1] else None)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # Exists iff d != 0 somewhere (J = +-2 scale d): y_bar = x_bar[j] / J[j] at j = argmax |d|.
        jac = (2 * ctx.scale) * ctx.d * (1 if ctx.wrt == 0 else -1)
        return _scalar_vijp("mse", jac, x_bar, x_bar.dtype)
