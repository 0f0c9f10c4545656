"""2-D pooling on the GPU: one thread per output (forward, gather) or per input pixel (backward), no atomics.

Same rules as ../pool.py.  The backward kernels *gather*: thread (n, c, h, w) visits the windows that contain
its pixel — rows p with p·sh ≤ h + ph < p·sh + kh, i.e. p in [⌈(h + ph − kh + 1)/sh⌉, ⌊(h + ph)/sh⌋] — and
adds their contribution (max: only where the window's argmax is this pixel), so every x̄ element has one
writer even when windows overlap.
"""
import math

from numba import cuda

from ..pool import index_dtype, pool_params
from .common import THREADS, arg, blocks, per_dtype, xp_of


@per_dtype
def _max_forward(dt):
    @cuda.jit
    def max_forward(x, kh, kw, sh, sw, ph, pw, y, idx):
        n_, c_, h, w = x.shape
        _, _, ho, wo = y.shape
        t = cuda.grid(1)
        if t >= y.size:
            return
        q = t % wo
        p = (t // wo) % ho
        ch = (t // (wo * ho)) % c_
        b = t // (wo * ho * c_)
        neg = dt(-math.inf)
        best = neg
        at = 0
        for i in range(kh):
            hi = p * sh + i - ph
            for j in range(kw):
                wi = q * sw + j - pw
                v = x[b, ch, hi, wi] if 0 <= hi < h and 0 <= wi < w else neg
                if (i == 0 and j == 0) or v > best or (v != v and best == best):
                    best = v
                    at = i * kw + j
        y[b, ch, p, q] = best
        idx[b, ch, p, q] = at
    return max_forward


@per_dtype
def _max_backward(dt):
    @cuda.jit
    def max_backward(idx, y_bar, kh, kw, sh, sw, ph, pw, x_bar):
        n_, c_, h, w = x_bar.shape
        _, _, ho, wo = y_bar.shape
        t = cuda.grid(1)
        if t >= x_bar.size:
            return
        wi = t % w
        hi = (t // w) % h
        ch = (t // (w * h)) % c_
        b = t // (w * h * c_)
        acc = dt(0)
        r, s = hi + ph, wi + pw                       # this pixel in padded coordinates
        p0 = max(0, (r - kh + sh) // sh)              # ⌈(r − kh + 1)/sh⌉ for r − kh + 1 >= 0, else 0
        q0 = max(0, (s - kw + sw) // sw)
        for p in range(p0, min(ho, r // sh + 1)):
            for q in range(q0, min(wo, s // sw + 1)):
                if idx[b, ch, p, q] == (r - p * sh) * kw + (s - q * sw):
                    acc += y_bar[b, ch, p, q]
        x_bar[b, ch, hi, wi] = acc
    return max_backward


@per_dtype
def _max_gather(dt):
    @cuda.jit
    def max_gather(idx, a, kw, sh, sw, ph, pw, out):
        n_, c_, h, w = a.shape
        _, _, ho, wo = out.shape
        t = cuda.grid(1)
        if t >= out.size:
            return
        q = t % wo
        p = (t // wo) % ho
        ch = (t // (wo * ho)) % c_
        b = t // (wo * ho * c_)
        k = idx[b, ch, p, q]
        hi = p * sh + k // kw - ph
        wi = q * sw + k % kw - pw
        out[b, ch, p, q] = a[b, ch, hi, wi] if 0 <= hi < h and 0 <= wi < w else dt(0)
    return max_gather


@per_dtype
def _avg_forward(dt):
    @cuda.jit
    def avg_forward(x, kh, kw, sh, sw, ph, pw, y):
        n_, c_, h, w = x.shape
        _, _, ho, wo = y.shape
        t = cuda.grid(1)
        if t >= y.size:
            return
        q = t % wo
        p = (t // wo) % ho
        ch = (t // (wo * ho)) % c_
        b = t // (wo * ho * c_)
        acc = dt(0)
        for i in range(kh):
            hi = p * sh + i - ph
            if 0 <= hi < h:
                for j in range(kw):
                    wi = q * sw + j - pw
                    if 0 <= wi < w:
                        acc += x[b, ch, hi, wi]
        y[b, ch, p, q] = acc / dt(kh * kw)
    return avg_forward


@per_dtype
def _avg_backward(dt):
    @cuda.jit
    def avg_backward(y_bar, kh, kw, sh, sw, ph, pw, x_bar):
        n_, c_, h, w = x_bar.shape
        _, _, ho, wo = y_bar.shape
        t = cuda.grid(1)
        if t >= x_bar.size:
            return
        wi = t % w
        hi = (t // w) % h
        ch = (t // (w * h)) % c_
        b = t // (w * h * c_)
        acc = dt(0)
        r, s = hi + ph, wi + pw
        p0 = max(0, (r - kh + sh) // sh)
        q0 = max(0, (s - kw + sw) // sw)
        for p in range(p0, min(ho, r // sh + 1)):
            for q in range(q0, min(wo, s // sw + 1)):
                acc += y_bar[b, ch, p, q] / dt(kh * kw)
        x_bar[b, ch, hi, wi] = acc
    return avg_backward


def _c(xp, a):
    return arg(xp.ascontiguousarray(a))


def max_pool2d_forward_cuda(x, kernel, stride, padding):
    out_hw = pool_params(x.shape, kernel, stride, padding)
    xp = xp_of(x)
    y = xp.empty(x.shape[:2] + out_hw, x.dtype)
    idx = xp.empty(x.shape[:2] + out_hw, index_dtype(kernel[0] * kernel[1]))
    _max_forward(x.dtype)[blocks(y.size), THREADS](_c(xp, x), *kernel, *stride, *padding, y, idx)
    return y, idx


def max_pool2d_backward_cuda(idx, y_bar, x_shape, kernel, stride, padding):
    xp = xp_of(y_bar)
    x_bar = xp.empty(tuple(x_shape), y_bar.dtype)
    _max_backward(y_bar.dtype)[blocks(x_bar.size), THREADS](_c(xp, idx), _c(xp, y_bar), *kernel, *stride, *padding,
                                                             x_bar)
    return x_bar


def max_pool2d_gather_cuda(idx, a, kernel, stride, padding):
    xp = xp_of(a)
    out = xp.empty(idx.shape, a.dtype)
    _max_gather(a.dtype)[blocks(out.size), THREADS](_c(xp, idx), _c(xp, a), kernel[1], *stride, *padding, out)
    return out


def avg_pool2d_forward_cuda(x, kernel, stride, padding):
    out_hw = pool_params(x.shape, kernel, stride, padding)
    xp = xp_of(x)
    y = xp.empty(x.shape[:2] + out_hw, x.dtype)
    _avg_forward(x.dtype)[blocks(y.size), THREADS](_c(xp, x), *kernel, *stride, *padding, y)
    return y


def avg_pool2d_backward_cuda(y_bar, x_shape, kernel, stride, padding):
    xp = xp_of(y_bar)
    x_bar = xp.empty(tuple(x_shape), y_bar.dtype)
    _avg_backward(y_bar.dtype)[blocks(x_bar.size), THREADS](_c(xp, y_bar), *kernel, *stride, *padding, x_bar)
    return x_bar
