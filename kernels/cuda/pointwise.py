"""Fused activation kernels on the GPU: one thread per element (y and dy/dx in one pass), and the
relu sign mask packed by one thread per byte.  Same rules and subgradients as ../pointwise.py."""
import math

from numba import cuda

from ..bitpack import nbytes_for
from ..pointwise import parse_activation
from .common import THREADS, arg, blocks, xp_of


@cuda.jit(device=True)
def sigmoid_dev(z):
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)
    return e / (1 + e)


@cuda.jit(device=True)
def act_dev(code, x, p):
    """(f(x), f'(x)) for activation `code` (numbering of pointwise.ACTIVATIONS)."""
    zero = x - x
    one = zero + 1
    if code == 0:  # relu
        return (x, one) if x > 0 else (zero, zero)
    if code == 1:  # leaky_relu
        return (x, one) if x > 0 else (p * x, p)
    if code == 2:  # elu
        if x > 0:
            return x, one
        e = math.exp(x)
        return p * (e - 1), p * e
    if code == 3:  # gelu: x Φ(x), Φ + x φ
        cdf = (1 + math.erf(x * 0.7071067811865476)) / 2
        return x * cdf, cdf + x * math.exp(-x * x / 2) * 0.3989422804014327
    if code == 4:  # silu
        s = sigmoid_dev(x)
        return x * s, s * (1 + x * (1 - s))
    if code == 5:  # tanh
        y = math.tanh(x)
        return y, 1 - y * y
    if code == 6:  # sigmoid
        s = sigmoid_dev(x)
        return s, s * (1 - s)
    z = p * x  # softplus
    return (max(z, zero) + math.log1p(math.exp(-abs(z)))) / p, sigmoid_dev(z)


@cuda.jit
def _act_kernel(code, x, p, y, d):
    i = cuda.grid(1)
    if i < x.size:
        y[i], d[i] = act_dev(code, x[i], p)


@cuda.jit
def _relu_mask_kernel(x, y, packed):
    k = cuda.grid(1)  # byte k: elements 8k .. 8k+7
    if k < packed.size:
        v = 0
        for t in range(min(8, x.size - 8 * k)):
            xi = x[8 * k + t]
            if xi > 0:
                y[8 * k + t] = xi
                v |= 1 << t
            else:
                y[8 * k + t] = 0
        packed[k] = v


@cuda.jit
def _masked_grad_kernel(packed, y_bar, slope, x_bar):
    i = cuda.grid(1)
    if i < y_bar.size:
        g = y_bar[i]
        x_bar[i] = g if (packed[i // 8] >> (i % 8)) & 1 else slope * g


def act_cuda(name, x, **params):
    code, p = parse_activation(name, params)
    xp = xp_of(x)
    xf = xp.ascontiguousarray(x).reshape(-1)
    y, d = xp.empty_like(xf), xp.empty_like(xf)
    _act_kernel[blocks(xf.size), THREADS](code, arg(xf), x.dtype.type(p), y, d)
    return y.reshape(x.shape), d.reshape(x.shape)


def relu_mask_forward_cuda(x):
    xp = xp_of(x)
    xf = xp.ascontiguousarray(x).reshape(-1)
    y = xp.empty_like(xf)
    packed = xp.empty(nbytes_for(xf.size, 1), xp.uint8)
    _relu_mask_kernel[blocks(packed.size), THREADS](arg(xf), y, packed)
    return y.reshape(x.shape), packed


def masked_grad_cuda(packed, y_bar, slope=0.0):
    xp = xp_of(y_bar)
    g = xp.ascontiguousarray(y_bar).reshape(-1)
    out = xp.empty_like(g)
    _masked_grad_kernel[blocks(g.size), THREADS](arg(packed.reshape(-1)), arg(g), y_bar.dtype.type(slope), out)
    return out.reshape(y_bar.shape)
