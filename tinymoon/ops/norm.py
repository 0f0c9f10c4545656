"""Normalisation layers: layer_norm, batch_norm (training: batch statistics; eval: running statistics).

Both normalise groups: y_hat = (x - mean) / sigma, sigma = sqrt(var + eps) (biased variance), then
y = y_hat * w + b. LayerNorm's groups are the trailing `normalized_shape` of each sample; training-mode
BatchNorm's group is channel c across (N, H, W, ...).

Jacobian of the normalisation within a group of size n (r = 1/sigma):
    J = r (I - 1 1^T / n - y_hat y_hat^T / n)          (symmetric)
Its null space is span{1} (plus y_hat up to eps: J y_hat = r eps/(var+eps) y_hat, numerically ~0), so the
vjp erases the components of h = y_bar * w along 1 and y_hat. The fragment is those two numbers per group,
a = mean(h) and b = mean(h * y_hat), stacked as (2, *group_shape); the vijp is exact for any eps:
    h = sigma * x_bar + a * 1 + b * y_hat,      y_bar = h / w.
It needs w != 0 everywhere (a zero weight erases y_bar there): zero entries raise NotInvertibleError.

Eval-mode BatchNorm is a per-channel affine map y = (x - running_mean) * r * w + b with r = 1/sqrt(running_var
+ eps): diagonal J = r w, vijp y_bar = x_bar / (r w), exists iff w != 0 on every channel.
"""
from __future__ import annotations

from ..backend import get_array_module
from ..errors import NotInvertibleError, ShapeError
from .base import Primitive, add_terms, check_fragment


def _affine_inputs(ctx, affine):
    """(weight, bias) from the positional affine inputs, according to has_weight / has_bias."""
    it = iter(affine)
    w = next(it) if ctx.params.get("has_weight") else None
    b = next(it) if ctx.params.get("has_bias") else None
    return w, b


def _zero_weight_error(name, w):
    xp = get_array_module(w)
    return NotInvertibleError(
        f"{name}: the affine weight has {int((w == 0).sum())} zero entr(ies) of {w.size}; they erase the output "
        f"cotangent there, so there is no vijp. Use nonzero weights (or reverse mode)") if bool(xp.any(w == 0)) \
        else None


class _Normalize(Primitive):
    """Shared rules of LayerNorm and training-mode BatchNorm. Subclasses set, on ctx:
        group_axes    the axes one normalised group spans (its mean and variance are taken over them)
        affine_shape  the shape weight and bias are viewed as to broadcast against x
        sum_axes      the axes summed for the weight and bias cotangents
        param_shape   the shape of weight and bias themselves
    and call _normalize, which sets weight_at / bias_at: the input positions of weight and bias (None if
    absent)."""
    submersive = False

    @staticmethod
    def _normalize(ctx, x, w, b, eps):
        xp = get_array_module(x)
        mean = x.mean(axis=ctx.group_axes, keepdims=True)
        xc = x - mean
        var = (xc * xc).mean(axis=ctx.group_axes, keepdims=True)
        rstd = 1 / xp.sqrt(var + eps)
        yhat = xc * rstd
        weight_at = 1 if w is not None else None
        bias_at = 1 + (w is not None) if b is not None else None
        ctx.weight_at, ctx.bias_at = weight_at, bias_at
        if ctx.needs[0]:
            ctx.save(yhat=yhat, rstd=rstd)
            if w is not None:
                ctx.save(w=w)
        elif weight_at is not None and ctx.needs[weight_at]:
            ctx.save(yhat=yhat)          # the weight cotangent needs only y_hat
        y = yhat
        if w is not None:
            y = y * w.reshape(ctx.affine_shape)
        if b is not None:
            y = y + b.reshape(ctx.affine_shape)
        return y, mean, var

    @classmethod
    def _j(cls, ctx, v):
        # J v = r (v - mean(v) - y_hat mean(y_hat v)), J symmetric (so it is also the vjp)
        yhat = ctx.yhat
        return ctx.rstd * (v - v.mean(axis=ctx.group_axes, keepdims=True)
                           - yhat * (yhat * v).mean(axis=ctx.group_axes, keepdims=True))

    @classmethod
    def _w(cls, ctx):
        return None if ctx.weight_at is None else ctx.w.reshape(ctx.affine_shape)

    @classmethod
    def jvp(cls, ctx, x_dot, *affine_dots):
        w_dot = affine_dots[0] if ctx.weight_at is not None else None
        b_dot = affine_dots[ctx.bias_at - 1] if ctx.bias_at is not None else None
        t_x = None
        if x_dot is not None:
            t_x = cls._j(ctx, x_dot)
            if ctx.weight_at is not None:
                t_x = t_x * cls._w(ctx)
        return add_terms(t_x, None if w_dot is None else ctx.yhat * w_dot.reshape(ctx.affine_shape),
                         None if b_dot is None else b_dot.reshape(ctx.affine_shape))

    @classmethod
    def vjp(cls, ctx, y_bar):
        out = [None] * len(ctx.needs)
        if ctx.needs[0]:
            h = y_bar if ctx.weight_at is None else y_bar * cls._w(ctx)
            out[0] = cls._j(ctx, h)
        if ctx.weight_at is not None and ctx.needs[ctx.weight_at]:
            out[ctx.weight_at] = (y_bar * ctx.yhat).sum(axis=ctx.sum_axes).reshape(ctx.param_shape)
        if ctx.bias_at is not None and ctx.needs[ctx.bias_at]:
            out[ctx.bias_at] = y_bar.sum(axis=ctx.sum_axes).reshape(ctx.param_shape)
        return tuple(out)

    @classmethod
    def fragment(cls, ctx, y_bar):
        # the two erased numbers per group: a = mean(h), b = mean(h y_hat), h = y_bar * w
        xp = get_array_module(y_bar)
        h = y_bar if ctx.weight_at is None else y_bar * cls._w(ctx)
        return xp.stack([h.mean(axis=ctx.group_axes, keepdims=True), (h * ctx.yhat).mean(axis=ctx.group_axes, keepdims=True)])

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # Exists with a 2-scalar fragment per group, iff w != 0 everywhere:
        # h = sigma x_bar + a 1 + b y_hat, y_bar = h / w.
        if ctx.wrt != 0:
            raise NotInvertibleError(f"{cls.name}: no vijp along the affine parameters (the data path must be x)")
        if fragment is None:
            raise cls.missing_fragment("two scalars per normalised group (the components of y_bar*w along 1 and "
                                       "along y_hat)")
        if ctx.weight_at is not None:
            err = _zero_weight_error(cls.name, ctx.w)
            if err is not None:
                raise err
        check_fragment(cls.name, fragment, (2,) + ctx.rstd.shape)
        h = x_bar / ctx.rstd + fragment[0] + fragment[1] * ctx.yhat
        return h if ctx.weight_at is None else h / cls._w(ctx)


def _check_affine(name, a, shape, what):
    if a is not None and tuple(a.shape) != tuple(shape):
        raise ShapeError(f"{name}: {what} must have shape {tuple(shape)}, got {tuple(a.shape)}")


class LayerNorm(_Normalize):
    """layer_norm(x, normalized_shape, weight, bias, eps): groups = the trailing dims of x."""
    name = "layer_norm"

    @staticmethod
    def forward(ctx, x, *affine, normalized_shape=None, eps=1e-5, has_weight=False, has_bias=False):
        shape = tuple(normalized_shape)
        k = len(shape)
        if k == 0 or k > x.ndim or tuple(x.shape[x.ndim - k:]) != shape:
            raise ShapeError(f"layer_norm: normalized_shape {shape} must be the trailing dims of x {tuple(x.shape)}")
        w, b = _affine_inputs(ctx, affine)
        _check_affine("layer_norm", w, shape, "weight")
        _check_affine("layer_norm", b, shape, "bias")
        ctx.group_axes = tuple(range(x.ndim - k, x.ndim))
        ctx.sum_axes = tuple(range(x.ndim - k))
        ctx.affine_shape = ctx.param_shape = shape
        return _Normalize._normalize(ctx, x, w, b, eps)[0]


class BatchNorm(_Normalize):
    """Training-mode batch_norm over (N, C, ...): per-channel statistics over every axis but 1. Updates the
    running statistics in place (raw arrays): r <- (1 - momentum) r + momentum * stat, with the UNBIASED
    variance for running_var, as PyTorch."""
    name = "batch_norm"

    @staticmethod
    def forward(ctx, x, *affine, running_mean=None, running_var=None, momentum=0.1, eps=1e-5, has_weight=False,
                has_bias=False):
        if x.ndim < 2:
            raise ShapeError(f"batch_norm: x must be (N, C, ...), got shape {tuple(x.shape)}")
        c = x.shape[1]
        w, b = _affine_inputs(ctx, affine)
        for a, what in ((w, "weight"), (b, "bias"), (running_mean, "running_mean"), (running_var, "running_var")):
            _check_affine("batch_norm", a, (c,), what)
        n = x.size // max(c, 1)
        if n <= 1:
            raise ShapeError(f"batch_norm: training needs more than one value per channel, got x {tuple(x.shape)}")
        ctx.group_axes = ctx.sum_axes = (0,) + tuple(range(2, x.ndim))
        ctx.affine_shape = (1, c) + (1,) * (x.ndim - 2)
        ctx.param_shape = (c,)
        y, mean, var = _Normalize._normalize(ctx, x, w, b, eps)
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += (momentum * mean.reshape(c)).astype(running_mean.dtype)
        if running_var is not None:
            running_var *= 1 - momentum
            running_var += (momentum * var.reshape(c) * (n / (n - 1))).astype(running_var.dtype)
        return y


class BatchNormEval(Primitive):
    """Eval-mode batch_norm: y = (x - running_mean) r w + b, r = 1/sqrt(running_var + eps), per channel.
    Residuals: r*w (C numbers) for the x cotangent; x for the weight cotangent."""
    name = "batch_norm_eval"

    @staticmethod
    def forward(ctx, x, *affine, running_mean=None, running_var=None, eps=1e-5, has_weight=False, has_bias=False):
        xp = get_array_module(x)
        if x.ndim < 2:
            raise ShapeError(f"batch_norm: x must be (N, C, ...), got shape {tuple(x.shape)}")
        c = x.shape[1]
        w, b = _affine_inputs(ctx, affine)
        for a, what in ((w, "weight"), (b, "bias"), (running_mean, "running_mean"), (running_var, "running_var")):
            if a is None and what.startswith("running"):
                raise ShapeError("batch_norm: eval mode needs running_mean and running_var")
            _check_affine("batch_norm", a, (c,), what)
        affine_shape = (1, c) + (1,) * (x.ndim - 2)
        ctx.weight_at = 1 if w is not None else None
        ctx.bias_at = 1 + (w is not None) if b is not None else None
        ctx.affine_shape, ctx.sum_axes = affine_shape, (0,) + tuple(range(2, x.ndim))
        rstd = (1 / xp.sqrt(running_var.astype(x.dtype) + eps)).reshape(affine_shape)
        mean = running_mean.astype(x.dtype).reshape(affine_shape)
        scale = rstd if w is None else rstd * w.reshape(affine_shape)
        ctx.save_for(0, scale=scale)
        if ctx.weight_at is not None and ctx.needs[ctx.weight_at]:
            ctx.save(xhat=(x - mean) * rstd)
        y = (x - mean) * scale
        return y if b is None else y + b.reshape(affine_shape)

    @classmethod
    def jvp(cls, ctx, x_dot, *affine_dots):
        w_dot = affine_dots[0] if ctx.weight_at is not None else None
        b_dot = affine_dots[ctx.bias_at - 1] if ctx.bias_at is not None else None
        return add_terms(None if x_dot is None else x_dot * ctx.scale,
                         None if w_dot is None else ctx.xhat * w_dot.reshape(ctx.affine_shape),
                         None if b_dot is None else b_dot.reshape(ctx.affine_shape))

    @classmethod
    def vjp(cls, ctx, y_bar):
        out = [None] * len(ctx.needs)
        if ctx.needs[0]:
            out[0] = y_bar * ctx.scale
        if ctx.weight_at is not None and ctx.needs[ctx.weight_at]:
            out[ctx.weight_at] = (y_bar * ctx.xhat).sum(axis=ctx.sum_axes)
        if ctx.bias_at is not None and ctx.needs[ctx.bias_at]:
            out[ctx.bias_at] = y_bar.sum(axis=ctx.sum_axes)
        return tuple(out)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # Exists iff r w != 0 on every channel (w != 0): y_bar = x_bar / (r w).
        if ctx.wrt != 0:
            raise NotInvertibleError("batch_norm_eval: no vijp along the affine parameters (the data path must be x)")
        err = _zero_weight_error("batch_norm (eval)", ctx.scale)
        if err is not None:
            raise err
        return x_bar / ctx.scale
