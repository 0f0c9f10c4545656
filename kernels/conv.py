"""2-D convolution (cross-correlation, as in every deep-learning library) in NCHW layout, and its two VJPs.

  y[n, o, p, q] = Σ_{c, i, j} w[o, c, i, j] · x_pad[n, g·Cg + c, p·sh + i·dh, q·sw + j·dw]
where o belongs to group g = o // Og (Og = C_out/groups, Cg = C_in/groups) and x_pad is x with
zero padding (top, bottom) rows and (left, right) columns.  Output size per axis:
  H_out = ⌊(H + top + bottom − dh·(kh − 1) − 1) / sh⌋ + 1.

The reference method (and the im2col path): im2col + GEMM.  Gather every receptive field into a column matrix
  cols[n, g, (c, i, j), (p, q)] = x_pad[n, g·Cg + c, p·sh + i·dh, q·sw + j·dw]     (N, G, K, L)
with K = Cg·kh·kw and L = H_out·W_out.  Then the three maps are matrix products (BLAS does the flops):
  forward      y[n, g]   = W[g] @ cols[n, g]                    W[g] = w of group g as (Og, K)
  grad_weight  w̄[g]      = Σ_n ȳ[n, g] @ cols[n, g]ᵀ
  grad_input   dcols[n,g] = W[g]ᵀ @ ȳ[n, g], then col2im: scatter-add every column entry back to the pixel
               it came from.  col2im is kh·kw strided slice additions (one per tap (i, j)): within one
               tap, distinct output positions hit distinct pixels, so a slice `+=` is exact (no np.add.at).
The batched matmuls need no transposed copies: numpy.matmul hands the transposed views to BLAS directly.

CPU implementations: the reference (below) builds cols with one strided-view copy (as_strided over the padded
input) and does col2im in kh·kw slice additions.  The Numba implementation (the default, dispatch.py) is
two algorithms, picked per layer by `direct_wins`: the direct kernels of conv_direct.py (no column matrix)
and an im2col + BLAS path that builds the column matrix a chunk of samples at a time (cache-sized) with
parallel Numba gathers, and scatters col2im per (n, c) plane.  `python -m tinymoon.bench kernels
--sections conv2d` measures all of them against each other and PyTorch (docs/kernels.md).

The reference functions are written against an array module `xp` (numpy or cupy), so the CuPy
implementation is the same code on the GPU (cuBLAS for the GEMMs).
"""
import numpy as np
from numba import njit, prange, uintp

from .threads import kernel


def _pair(v, what):
    if isinstance(v, (int, np.integer)):
        v = (v, v)
    v = tuple(int(t) for t in v)
    if len(v) != 2:
        raise ValueError(f"conv2d: {what} must be an int pair, got {v!r}")
    return v


def conv_params(x_shape, w_shape, stride, padding, dilation, groups):
    """Validate and normalise; returns (stride, ((pt, pb), (pl, pr)), dilation, groups, (H_out, W_out))."""
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if isinstance(padding, (int, np.integer)):
        padding = ((padding, padding), (padding, padding))
    padding = tuple(_pair(p, "padding") for p in padding)
    if len(padding) != 2:
        raise ValueError(f"conv2d: padding must be ((top, bottom), (left, right)), got {padding!r}")
    if min(stride) < 1 or min(dilation) < 1 or min(min(p) for p in padding) < 0:
        raise ValueError(f"conv2d: need stride >= 1, dilation >= 1, padding >= 0; got "
                         f"stride={stride}, dilation={dilation}, padding={padding}")
    groups = int(groups)
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"conv2d: x must be (N, C_in, H, W) and w (C_out, C_in/groups, kh, kw); "
                         f"got x {tuple(x_shape)}, w {tuple(w_shape)}")
    n, c_in, h, wd = x_shape
    c_out, cg, kh, kw = w_shape
    if groups < 1 or c_in % groups or c_out % groups or cg != c_in // groups:
        raise ValueError(f"conv2d: groups={groups} must divide C_in={c_in} and C_out={c_out}, and w.shape[1] "
                         f"must be C_in/groups; got x {tuple(x_shape)}, w {tuple(w_shape)}")
    h_out = (h + sum(padding[0]) - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (wd + sum(padding[1]) - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(f"conv2d: empty output ({h_out}x{w_out}) for x {tuple(x_shape)}, kernel {kh}x{kw}, "
                         f"padding {padding}, dilation {dilation}")
    return stride, padding, dilation, groups, (h_out, w_out)


def _xp(a):
    return np if isinstance(a, np.ndarray) else __import__("cupy")


# ---------------------------------------------------------------------------------------------- reference
def _cols_reference(x, kh, kw, stride, padding, dilation, groups, out_hw):
    """im2col: the (N, G, K, L) column matrix, by one copy of a strided window view of the padded input."""
    xp = _xp(x)
    (pt, pb), (pl, pr) = padding
    xpad = xp.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr))) if pt or pb or pl or pr else xp.ascontiguousarray(x)
    n, c = x.shape[:2]
    s_n, s_c, s_h, s_w = xpad.strides
    cg = c // groups
    windows = xp.lib.stride_tricks.as_strided(
        xpad, shape=(n, groups, cg, kh, kw) + out_hw,
        strides=(s_n, cg * s_c, s_c, dilation[0] * s_h, dilation[1] * s_w, stride[0] * s_h, stride[1] * s_w))
    return xp.ascontiguousarray(windows).reshape(n, groups, cg * kh * kw, out_hw[0] * out_hw[1])


def conv2d_forward_reference(x, w, stride, padding, dilation, groups, bias=None):
    stride, padding, dilation, groups, out_hw = conv_params(x.shape, w.shape, stride, padding, dilation, groups)
    c_out, cg, kh, kw = w.shape
    cols = _cols_reference(x, kh, kw, stride, padding, dilation, groups, out_hw)
    y = _xp(x).matmul(w.reshape(groups, c_out // groups, cg * kh * kw), cols)  # (N, G, Og, L)
    return _add_bias(y.reshape((x.shape[0], c_out) + out_hw), bias)


def _add_bias(y, bias):
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)          # y is fresh: in place, no second output array
    return y


def conv2d_grad_weight_reference(x, y_bar, w_shape, stride, padding, dilation, groups):
    stride, padding, dilation, groups, out_hw = conv_params(x.shape, w_shape, stride, padding, dilation, groups)
    c_out, cg, kh, kw = w_shape
    n = x.shape[0]
    cols = _cols_reference(x, kh, kw, stride, padding, dilation, groups, out_hw)
    g = y_bar.reshape(n, groups, c_out // groups, -1)
    # w̄[g] = Σ_n ȳ[n,g] @ cols[n,g]ᵀ: batched GEMM on a transposed view, then a small sum over n
    w_bar = _xp(x).matmul(g, cols.transpose(0, 1, 3, 2)).sum(axis=0)
    return w_bar.reshape(w_shape)


def _col2im_reference(dcols, x_shape, kh, kw, stride, padding, dilation, out_hw):
    xp = _xp(dcols)
    n, c, h, wd = x_shape
    (pt, pb), (pl, pr) = padding
    (sh, sw), (dh, dw), (ho, wo) = stride, dilation, out_hw
    x_bar = xp.zeros((n, c, h + pt + pb, wd + pl + pr), dcols.dtype)
    d = dcols.reshape(n, c, kh, kw, ho, wo)
    for i in range(kh):
        for j in range(kw):
            # tap (i, j) read x_pad[p·sh + i·dh, q·sw + j·dw]: distinct (p, q) -> distinct pixels
            x_bar[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw] += d[:, :, i, j]
    return x_bar[:, :, pt: pt + h, pl: pl + wd]


def conv2d_grad_input_reference(y_bar, w, x_shape, stride, padding, dilation, groups):
    x_shape = tuple(x_shape)
    stride, padding, dilation, groups, out_hw = conv_params(x_shape, w.shape, stride, padding, dilation, groups)
    c_out, cg, kh, kw = w.shape
    n = x_shape[0]
    # W[g]ᵀ (G, K, Og), made contiguous (it is small): measured 1.6x faster in matmul than the transposed view
    wg = _xp(w).ascontiguousarray(w.reshape(groups, c_out // groups, cg * kh * kw).transpose(0, 2, 1))
    dcols = _xp(w).matmul(wg, y_bar.reshape(n, groups, c_out // groups, -1))  # (N, G, K, L)
    x_bar = _col2im_reference(dcols, x_shape, kh, kw, stride, padding, dilation, out_hw)
    return _xp(w).ascontiguousarray(x_bar)


# ---------------------------------------------------------------------------------------------- numba CPU
# Two algorithms, one picked per layer by `direct_wins` (measured: `python -m tinymoon.bench kernels`):
#  - direct (conv_direct.py): no column matrix; wins wherever the per-group products are small or middling
#    (grouped, few channels, stride 2, and the 32 -> 64 3x3 layer itself);
#  - im2col + BLAS (below): the column matrix built a chunk of samples at a time, so that it stays in cache
#    while BLAS reads it; wins once C_in/groups · kh · kw is large (256 -> 256 3x3 and up).
# Indices in the loops are unsigned (uintp): Numba's wraparound test on signed indices blocks vectorisation.
DIRECT_MAX_K = 2304      # C_in/groups · kh · kw up to which the direct kernels win (256 channels, 3x3)
CHUNK_BYTES = 2 << 20    # column-matrix chunk: a few samples, about L2-sized


def direct_wins(w_shape, groups):
    c_out, cg, kh, kw = w_shape
    return cg * kh * kw <= DIRECT_MAX_K


@njit(inline="always")
def _valid_q(j, sw, pl, dw, wd, wo):
    """Output columns q in [q0, q1) whose tap j reads inside the row: 0 <= q·sw − pl + j·dw < wd."""
    off = j * dw - pl
    q0 = 0 if off >= 0 else (-off + sw - 1) // sw
    q1 = min(wo, (wd - 1 - off) // sw + 1) if wd - 1 - off >= 0 else 0
    return q0, max(q0, q1), off


@kernel(boundscheck=False)
def _im2col(x, n0, kh, kw, sh, sw, pt, pl, dh, dw, cols):
    # cols (nb, C, kh, kw, Ho, Wo) for samples n0 .. n0 + nb; entries in the zero padding are written as 0
    nb, c = cols.shape[0], cols.shape[1]
    h, wd = x.shape[2], x.shape[3]
    ho_n, wo_n = cols.shape[4], cols.shape[5]
    for bc in prange(nb * c):
        b, ch = bc // c, bc % c
        for i in range(kh):
            for j in range(kw):
                q0, q1, off = _valid_q(j, sw, pl, dw, wd, wo_n)
                for p in range(ho_n):
                    row = cols[b, ch, i, j, p]
                    hi = p * sh - pt + i * dh
                    if hi < 0 or hi >= h:
                        row[:] = 0
                        continue
                    xr = x[n0 + b, ch, hi]
                    for q in range(uintp(q0)):
                        row[q] = 0
                    base, start = uintp(q0 * sw + off), uintp(q0)      # column of x read by q0 (>= 0)
                    for k in range(uintp(q1 - q0)):
                        row[start + k] = xr[base + k * uintp(sw)]
                    for q in range(uintp(q1), uintp(wo_n)):
                        row[q] = 0


@kernel(boundscheck=False)
def _col2im(dcols, n0, sh, sw, pt, pl, dh, dw, x_bar):
    # one (n, c) plane per iteration: the scatter-adds of a plane never leave it, so no races.
    nb, c, kh, kw, ho_n, wo_n = dcols.shape
    h, wd = x_bar.shape[2], x_bar.shape[3]
    for bc in prange(nb * c):
        b, ch = bc // c, bc % c
        plane = x_bar[n0 + b, ch]
        plane[:] = 0
        for i in range(kh):
            for j in range(kw):
                q0, q1, off = _valid_q(j, sw, pl, dw, wd, wo_n)
                for p in range(ho_n):
                    hi = p * sh - pt + i * dh
                    if 0 <= hi < h:
                        xr = plane[hi]
                        src = dcols[b, ch, i, j, p]
                        base, start = uintp(q0 * sw + off), uintp(q0)
                        for k in range(uintp(q1 - q0)):
                            xr[base + k * uintp(sw)] += src[start + k]


def _chunk(n, c, kh, kw, out_hw, itemsize):
    per_sample = c * kh * kw * out_hw[0] * out_hw[1] * itemsize
    return max(1, min(n, CHUNK_BYTES // max(per_sample, 1)))


def _cols_chunk(x, n0, nb, kh, kw, stride, padding, dilation, out_hw, buf):
    cols = buf[:nb]
    _im2col(x, n0, kh, kw, stride[0], stride[1], padding[0][0], padding[1][0], dilation[0], dilation[1], cols)
    return cols


def conv2d_forward_im2col(x, w, stride, padding, dilation, groups, bias=None):
    stride, padding, dilation, groups, out_hw = conv_params(x.shape, w.shape, stride, padding, dilation, groups)
    c_out, cg, kh, kw = w.shape
    n, c = x.shape[:2]
    x = np.ascontiguousarray(x)
    nb = _chunk(n, c, kh, kw, out_hw, x.itemsize)
    buf = np.empty((nb, c, kh, kw) + out_hw, x.dtype)
    wg = w.reshape(groups, c_out // groups, cg * kh * kw)
    y = np.empty((n, groups, c_out // groups, out_hw[0] * out_hw[1]), x.dtype)
    for n0 in range(0, n, nb):
        m = min(nb, n - n0)
        cols = _cols_chunk(x, n0, m, kh, kw, stride, padding, dilation, out_hw, buf)
        np.matmul(wg, cols.reshape(m, groups, cg * kh * kw, -1), out=y[n0:n0 + m])
    return _add_bias(y.reshape((n, c_out) + out_hw), bias)


def conv2d_grad_weight_im2col(x, y_bar, w_shape, stride, padding, dilation, groups):
    stride, padding, dilation, groups, out_hw = conv_params(x.shape, w_shape, stride, padding, dilation, groups)
    c_out, cg, kh, kw = w_shape
    n, c = x.shape[:2]
    x = np.ascontiguousarray(x)
    nb = _chunk(n, c, kh, kw, out_hw, x.itemsize)
    buf = np.empty((nb, c, kh, kw) + out_hw, x.dtype)
    g = y_bar.reshape(n, groups, c_out // groups, -1)
    w_bar = np.zeros((groups, c_out // groups, cg * kh * kw), x.dtype)
    for n0 in range(0, n, nb):
        m = min(nb, n - n0)
        cols = _cols_chunk(x, n0, m, kh, kw, stride, padding, dilation, out_hw, buf)
        # w̄[g] += Σ_n ȳ[n,g] @ cols[n,g]ᵀ over the chunk
        w_bar += np.matmul(g[n0:n0 + m], cols.reshape(m, groups, cg * kh * kw, -1).transpose(0, 1, 3, 2)).sum(0)
    return w_bar.reshape(w_shape)


def conv2d_grad_input_im2col(y_bar, w, x_shape, stride, padding, dilation, groups):
    x_shape = tuple(x_shape)
    stride, padding, dilation, groups, out_hw = conv_params(x_shape, w.shape, stride, padding, dilation, groups)
    c_out, cg, kh, kw = w.shape
    n, c = x_shape[:2]
    nb = _chunk(n, c, kh, kw, out_hw, y_bar.itemsize)
    wg = np.ascontiguousarray(w.reshape(groups, c_out // groups, cg * kh * kw).transpose(0, 2, 1))
    g = np.ascontiguousarray(y_bar).reshape(n, groups, c_out // groups, -1)
    dcols = np.empty((nb, groups, cg * kh * kw, out_hw[0] * out_hw[1]), y_bar.dtype)
    x_bar = np.empty(x_shape, y_bar.dtype)
    for n0 in range(0, n, nb):
        m = min(nb, n - n0)
        np.matmul(wg, g[n0:n0 + m], out=dcols[:m])
        _col2im(dcols[:m].reshape((m, c, kh, kw) + out_hw), n0, stride[0], stride[1], padding[0][0],
                padding[1][0], dilation[0], dilation[1], x_bar)
    return x_bar


def conv2d_forward_numba(x, w, stride, padding, dilation, groups, bias=None):
    if direct_wins(w.shape, groups):
        return conv2d_forward_direct(x, w, stride, padding, dilation, groups, bias)
    return conv2d_forward_im2col(x, w, stride, padding, dilation, groups, bias)


def conv2d_grad_weight_numba(x, y_bar, w_shape, stride, padding, dilation, groups):
    if direct_wins(w_shape, groups):
        return conv2d_grad_weight_direct(x, y_bar, w_shape, stride, padding, dilation, groups)
    return conv2d_grad_weight_im2col(x, y_bar, w_shape, stride, padding, dilation, groups)


def conv2d_grad_input_numba(y_bar, w, x_shape, stride, padding, dilation, groups):
    if direct_wins(w.shape, groups):
        return conv2d_grad_input_direct(y_bar, w, x_shape, stride, padding, dilation, groups)
    return conv2d_grad_input_im2col(y_bar, w, x_shape, stride, padding, dilation, groups)


from .conv_direct import (conv2d_forward_direct, conv2d_grad_input_direct,  # noqa: E402  (imports conv_params)
                          conv2d_grad_weight_direct)
