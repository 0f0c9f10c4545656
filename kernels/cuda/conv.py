"""Direct 2-D convolution kernels on the GPU: one thread per output element of each map, no atomics.

  forward      thread (n, o, p, q):  y = Σ_{c,i,j} w[o,c,i,j] x[n, g·Cg+c, p·sh−pt+i·dh, q·sw−pl+j·dw]
  grad_input   thread (n, c, h, v):  x̄ = Σ_{o∈group, i, j} w[o,c',i,j] ȳ[n,o,p,q] over the (p, q) that read
               pixel (h, v): p = (h + pt − i·dh)/sh when that is an integer in [0, H_out)  (gather, so
               each x̄ element has exactly one writer)
  grad_weight  thread (o, c, i, j):  w̄ = Σ_{n,p,q} ȳ[n,o,p,q] x[n, g·Cg+c, ...]
These are the readable, verifiable GPU versions; the "cupy" implementation (im2col + cuBLAS, or cuDNN
through a framework) is the fast path.
"""
from numba import cuda

from ..conv import conv_params
from .common import THREADS, arg, blocks, per_dtype, xp_of


@per_dtype
def _forward(dt):
    @cuda.jit
    def conv_forward(x, w, sh, sw, pt, pl, dh, dw, y):
        n_, c_in, h, wd = x.shape
        c_out, cg, kh, kw = w.shape
        _, _, ho, wo = y.shape
        t = cuda.grid(1)
        if t >= y.size:
            return
        q = t % wo
        p = (t // wo) % ho
        o = (t // (wo * ho)) % c_out
        n = t // (wo * ho * c_out)
        g = o // (c_out // (c_in // cg))
        acc = dt(0)
        for c in range(cg):
            for i in range(kh):
                hi = p * sh - pt + i * dh
                if 0 <= hi < h:
                    for j in range(kw):
                        wi = q * sw - pl + j * dw
                        if 0 <= wi < wd:
                            acc += w[o, c, i, j] * x[n, g * cg + c, hi, wi]
        y[n, o, p, q] = acc
    return conv_forward


@per_dtype
def _grad_input(dt):
    @cuda.jit
    def conv_grad_input(y_bar, w, sh, sw, pt, pl, dh, dw, x_bar):
        n_, c_in, h, wd = x_bar.shape
        c_out, cg, kh, kw = w.shape
        _, _, ho, wo = y_bar.shape
        t = cuda.grid(1)
        if t >= x_bar.size:
            return
        v = t % wd
        hh = (t // wd) % h
        c = (t // (wd * h)) % c_in
        n = t // (wd * h * c_in)
        g, cc = c // cg, c % cg
        og = c_out // (c_in // cg)
        acc = dt(0)
        for i in range(kh):
            ph = hh + pt - i * dh  # = p·sh for the output row p that reads this pixel through tap i
            if ph >= 0 and ph % sh == 0 and ph // sh < ho:
                p = ph // sh
                for j in range(kw):
                    qw = v + pl - j * dw
                    if qw >= 0 and qw % sw == 0 and qw // sw < wo:
                        q = qw // sw
                        for o in range(g * og, (g + 1) * og):
                            acc += w[o, cc, i, j] * y_bar[n, o, p, q]
        x_bar[n, c, hh, v] = acc
    return conv_grad_input


@per_dtype
def _grad_weight(dt):
    @cuda.jit
    def conv_grad_weight(x, y_bar, sh, sw, pt, pl, dh, dw, w_bar):
        n_b, c_in, h, wd = x.shape
        c_out, cg, kh, kw = w_bar.shape
        _, _, ho, wo = y_bar.shape
        t = cuda.grid(1)
        if t >= w_bar.size:
            return
        j = t % kw
        i = (t // kw) % kh
        c = (t // (kw * kh)) % cg
        o = t // (kw * kh * cg)
        g = o // (c_out // (c_in // cg))
        acc = dt(0)
        for n in range(n_b):
            for p in range(ho):
                hi = p * sh - pt + i * dh
                if 0 <= hi < h:
                    for q in range(wo):
                        wi = q * sw - pl + j * dw
                        if 0 <= wi < wd:
                            acc += y_bar[n, o, p, q] * x[n, g * cg + c, hi, wi]
        w_bar[o, c, i, j] = acc
    return conv_grad_weight


def _scalars(stride, padding, dilation):
    return stride[0], stride[1], padding[0][0], padding[1][0], dilation[0], dilation[1]


def conv2d_forward_cuda(x, w, stride, padding, dilation, groups, bias=None):
    stride, padding, dilation, groups, out_hw = conv_params(x.shape, w.shape, stride, padding, dilation, groups)
    xp = xp_of(x)
    y = xp.empty((x.shape[0], w.shape[0]) + out_hw, x.dtype)
    _forward(x.dtype)[blocks(y.size), THREADS](arg(xp.ascontiguousarray(x)), arg(xp.ascontiguousarray(w)),
                                               *_scalars(stride, padding, dilation), y)
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return y


def conv2d_grad_input_cuda(y_bar, w, x_shape, stride, padding, dilation, groups):
    stride, padding, dilation, groups, _ = conv_params(x_shape, w.shape, stride, padding, dilation, groups)
    xp = xp_of(y_bar)
    x_bar = xp.empty(tuple(x_shape), y_bar.dtype)
    _grad_input(y_bar.dtype)[blocks(x_bar.size), THREADS](arg(xp.ascontiguousarray(y_bar)), arg(xp.ascontiguousarray(w)),
                                                          *_scalars(stride, padding, dilation), x_bar)
    return x_bar


def conv2d_grad_weight_cuda(x, y_bar, w_shape, stride, padding, dilation, groups):
    stride, padding, dilation, groups, _ = conv_params(x.shape, w_shape, stride, padding, dilation, groups)
    xp = xp_of(x)
    w_bar = xp.empty(tuple(w_shape), x.dtype)
    _grad_weight(x.dtype)[blocks(w_bar.size), THREADS](arg(xp.ascontiguousarray(x)), arg(xp.ascontiguousarray(y_bar)),
                                                       *_scalars(stride, padding, dilation), w_bar)
    return w_bar
