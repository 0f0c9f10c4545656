"""Fused activation kernels on the GPU: one thread per element (y and dy/dx in one pass), and the
relu sign mask packed by one thread per byte.  The formulas of the table (../activations.py) as CUDA
device code, held to it by the tests (the CUDA simulator in CI, a real GPU where there is one)."""
import math

from numba import cuda

from ..bitpack import nbytes_for
from ..pointwise import _constants, parse_activation
from .common import THREADS, arg, blocks, xp_of


@cuda.jit(device=True)
def sigmoid_dev(z, k):
    e = math.exp(-abs(z))  # never overflows
    return k[1] / (k[1] + e) if z >= k[0] else e / (k[1] + e)


@cuda.jit(device=True)
def act_dev(code, x, k):
    """(f(x), f'(x)) for activation `code` (numbering of pointwise.COMPILED).  Constants come in `k`
    (pointwise._constants: [0, 1, 1/2, 2, p, 1/√2, 1/√(2π), p2] in x's dtype) so float32 stays float32 —
    a float64 literal would promote the math to double precision, up to 64x slower on many GPUs."""
    zero, one = k[0], k[1]
    if code == 0:  # relu (NaN stays NaN)
        if x > zero:
            return x, one
        return (zero, zero) if x <= zero else (x, zero)
    if code == 1:  # leaky_relu
        return (x, one) if x > zero else (k[4] * x, k[4])
    if code == 2:  # elu
        if x > zero:
            return x, one
        e = math.exp(x)
        return k[4] * (e - one), k[4] * e
    if code == 3:  # gelu: x Φ(x), Φ + x φ
        cdf = k[2] * (one + math.erf(x * k[5]))
        return x * cdf, cdf + x * math.exp(-k[2] * x * x) * k[6]
    if code == 4:  # silu
        s = sigmoid_dev(x, k)
        return x * s, s * (one + x * (one - s))
    if code == 5:  # tanh
        y = math.tanh(x)
        return y, one - y * y
    if code == 6:  # sigmoid
        s = sigmoid_dev(x, k)
        return s, s * (one - s)
    z = k[4] * x  # softplus, linear above the threshold k[7]
    if z > k[7]:
        return x, one
    return (max(z, zero) + math.log1p(math.exp(-abs(z)))) / k[4], sigmoid_dev(z, k)


@cuda.jit
def _act_kernel(code, x, k, y, d):
    i = cuda.grid(1)
    if i < x.size:
        y[i], d[i] = act_dev(code, x[i], k)


@cuda.jit
def _relu_mask_kernel(x, slope, y, packed):
    k = cuda.grid(1)  # byte k: elements 8k .. 8k+7
    if k < packed.size:
        v = 0
        zero = slope - slope
        for t in range(min(8, x.size - 8 * k)):
            xi = x[8 * k + t]
            if slope == zero:
                y[8 * k + t] = zero if xi <= zero else xi   # relu: +0, not 0·x = −0; NaN stays NaN
            else:
                y[8 * k + t] = xi if xi > zero else slope * xi
            if xi > zero:
                v |= 1 << t
        packed[k] = v


@cuda.jit
def _masked_grad_kernel(packed, y_bar, slope, x_bar):
    i = cuda.grid(1)
    if i < y_bar.size:
        g = y_bar[i]
        zero = slope - slope
        x_bar[i] = g if (packed[i // 8] >> (i % 8)) & 1 else (zero if slope == zero else slope * g)


def act_cuda(name, x, **params):
    code, p = parse_activation(name, params)
    xp = xp_of(x)
    xf = xp.ascontiguousarray(x).reshape(-1)
    y, d = xp.empty_like(xf), xp.empty_like(xf)
    _act_kernel[blocks(xf.size), THREADS](code, arg(xf), xp.asarray(_constants(x.dtype, name, p)), y, d)
    return y.reshape(x.shape), d.reshape(x.shape)


def relu_mask_forward_cuda(x, slope=0.0):
    xp = xp_of(x)
    xf = xp.ascontiguousarray(x).reshape(-1)
    y = xp.empty_like(xf)
    packed = xp.empty(nbytes_for(xf.size, 1), xp.uint8)
    _relu_mask_kernel[blocks(packed.size), THREADS](arg(xf), x.dtype.type(slope), y, packed)
    return y.reshape(x.shape), packed


def masked_grad_cuda(packed, y_bar, slope=0.0):
    xp = xp_of(y_bar)
    g = xp.ascontiguousarray(y_bar).reshape(-1)
    out = xp.empty_like(g)
    _masked_grad_kernel[blocks(g.size), THREADS](arg(packed.reshape(-1)), arg(g), y_bar.dtype.type(slope), out)
    return out.reshape(y_bar.shape)
