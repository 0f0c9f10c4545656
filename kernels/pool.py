"""2-D max and average pooling over NCHW (PyTorch semantics, floor mode), forward and backward as one pass each.

Window (p, q) covers the padded input rows p·sh .. p·sh + kh − 1 and columns q·sw .. q·sw + kw − 1; tap (i, j)
of it reads x_pad[p·sh + i, q·sw + j] = x[p·sh + i − ph, q·sw + j − pw].
  max:  y = max over the window, padding counting as −inf.  The argmax is kept as the tap index i·kw + j in
        the smallest unsigned type that holds kh·kw (uint8 up to 16×16 windows) — 1 byte per output, not the
        8-byte flat index.  Ties: the FIRST maximum in row-major tap order; a NaN is the maximum (the first
        NaN).  backward: x̄ = ȳ added at each window's argmax (windows overlap when stride < kernel; a
        padding argmax — only when the whole window is −inf — is dropped); gather: a at each argmax
        (the jvp y_dot = x_dot[argmax], and the vijp).
  avg:  y = (Σ over the window) / (kh·kw), padding counting as 0 (count_include_pad, PyTorch's default);
        backward: x̄[pixel] = Σ over the windows containing it of ȳ / (kh·kw).

Implementations: `*_reference` — the readable spec, a loop over the kh·kw taps with strided views, written
against an array module (NumPy or CuPy: it is also the "cupy" implementation); `*_numba` — one parallel pass
over the (n, c) planes: each output reads its window once (forward), each window adds into its own plane
(backward: a plane is one task, so no races).  cuda/pool.py has the GPU kernels.
"""
import numpy as np
from numba import njit, prange, uintp

from .threads import kernel


def pool_params(x_shape, kernel, stride, padding):
    """Validate (kernel, stride, padding) pairs against x (N, C, H, W); returns the output (H_out, W_out)."""
    if len(x_shape) != 4:
        raise ValueError(f"pool2d: x must be (N, C, H, W), got shape {tuple(x_shape)}")
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0 or ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"pool2d: need kernel >= 1, stride >= 1, 0 <= padding <= kernel // 2; got kernel "
                         f"{kernel}, stride {stride}, padding {padding}")
    h, w = x_shape[2] + 2 * ph, x_shape[3] + 2 * pw
    if kh > h or kw > w:
        raise ValueError(f"pool2d: kernel {kernel} is larger than the padded input {h}x{w} (x {tuple(x_shape)})")
    return (h - kh) // sh + 1, (w - kw) // sw + 1


def index_dtype(taps):
    """The smallest unsigned integer type holding 0 .. taps − 1."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if taps - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def _xp(a):
    return np if isinstance(a, np.ndarray) else __import__("cupy")


# ---------------------------------------------------------------------------------------------- reference
def _tap(a_pad, i, j, s, out_hw):
    """The (H_out, W_out) view of the padded array read by tap (i, j)."""
    return a_pad[:, :, i:i + s[0] * (out_hw[0] - 1) + 1:s[0], j:j + s[1] * (out_hw[1] - 1) + 1:s[1]]


def _pad(a, p, value=0.0):
    if p == (0, 0):
        return a
    return _xp(a).pad(a, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=value)


def max_pool2d_forward_reference(x, kernel, stride, padding):
    xp = _xp(x)
    out_hw = pool_params(x.shape, kernel, stride, padding)
    xpad = _pad(x, padding, -np.inf)
    best = _tap(xpad, 0, 0, stride, out_hw).copy()
    idx = xp.zeros(best.shape, index_dtype(kernel[0] * kernel[1]))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            if i == j == 0:
                continue
            v = _tap(xpad, i, j, stride, out_hw)
            better = (v > best) | (xp.isnan(v) & ~xp.isnan(best))       # strict >: the first max stays
            best = xp.where(better, v, best)
            idx[better] = i * kernel[1] + j
    return best, idx


def max_pool2d_backward_reference(idx, y_bar, x_shape, kernel, stride, padding):
    xp = _xp(y_bar)
    n, c, h, w = x_shape
    out_hw = idx.shape[2:]
    x_bar = xp.zeros((n, c, h + 2 * padding[0], w + 2 * padding[1]), y_bar.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            _tap(x_bar, i, j, stride, out_hw)[...] += xp.where(idx == i * kernel[1] + j, y_bar, 0)
    return xp.ascontiguousarray(x_bar[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + w])


def max_pool2d_gather_reference(idx, a, kernel, stride, padding):
    xp = _xp(a)
    out_hw = idx.shape[2:]
    a_pad = _pad(a, padding)
    out = xp.zeros(idx.shape, a.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            out = xp.where(idx == i * kernel[1] + j, _tap(a_pad, i, j, stride, out_hw), out)
    return out


def avg_pool2d_forward_reference(x, kernel, stride, padding):
    out_hw = pool_params(x.shape, kernel, stride, padding)
    a_pad = _pad(x, padding)
    out = _tap(a_pad, 0, 0, stride, out_hw).copy()
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            if i or j:
                out += _tap(a_pad, i, j, stride, out_hw)
    return out / out.dtype.type(kernel[0] * kernel[1])


def avg_pool2d_backward_reference(y_bar, x_shape, kernel, stride, padding):
    xp = _xp(y_bar)
    n, c, h, w = x_shape
    out_hw = y_bar.shape[2:]
    x_bar = xp.zeros((n, c, h + 2 * padding[0], w + 2 * padding[1]), y_bar.dtype)
    g = y_bar / y_bar.dtype.type(kernel[0] * kernel[1])
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            _tap(x_bar, i, j, stride, out_hw)[...] += g
    return xp.ascontiguousarray(x_bar[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + w])


# ---------------------------------------------------------------------------------------------- numba CPU
# One task per (n, c) plane.  Max pooling: each output reads its window once, tap by tap, keeping the best
# value and its tap (the reference's rule: strict >, so the first maximum stays; a NaN beats any number and
# the first NaN stays).  Windows inside x take paths without bounds tests — 2x2 with column stride 2
# (MaxPool2d(2), the common case) unrolled with a literal stride, which LLVM vectorises (8x faster than
# the generic loop, measured); others with the tap kept by arithmetic instead of a data-dependent branch
# (2.7x faster than the branch); border windows read padding as −inf.
@njit(cache=True, boundscheck=False, inline="always")
def _better(v, best):
    return (v > best) | ((v != v) & (best == best))


@kernel(boundscheck=False)
def _max_forward(x, kh, kw, sh, sw, ph, pw, y, idx):
    n, c, h, w = x.shape
    ho, wo = y.shape[2], y.shape[3]
    neg = x.dtype.type(-np.inf)
    # outputs whose window is inside x: p in [p0, p1), q in [q0, q1)
    p0, q0 = (ph + sh - 1) // sh, (pw + sw - 1) // sw
    p1, q1 = max(p0, min(ho, (h + ph - kh) // sh + 1)), max(q0, min(wo, (w + pw - kw) // sw + 1))
    two = kh == 2 and kw == 2 and sw == 2
    for nc in prange(n * c):
        b, ch = nc // c, nc % c
        plane = x[b, ch]
        for p in range(ho):
            yr, ir = y[b, ch, p], idx[b, ch, p]
            r0 = p * sh - ph
            inside = p0 <= p < p1
            if inside and two:
                ra, rb = plane[uintp(r0)], plane[uintp(r0 + 1)]
                # the literal stride 2 lets LLVM vectorise (interleaved loads, the branches become selects)
                base, two_, one = uintp(2 * q0 - pw), uintp(2), uintp(1)
                for q in range(uintp(q0), uintp(q1)):
                    cq = base + two_ * (q - uintp(q0))
                    a0, a1, a2, a3 = ra[cq], ra[cq + one], rb[cq], rb[cq + one]
                    best, at = a0, np.uint8(0)
                    if a1 > best or (a1 != a1 and best == best):
                        best, at = a1, np.uint8(1)
                    if a2 > best or (a2 != a2 and best == best):
                        best, at = a2, np.uint8(2)
                    if a3 > best or (a3 != a3 and best == best):
                        best, at = a3, np.uint8(3)
                    yr[q], ir[q] = best, at
            elif inside:
                for q in range(q0, q1):
                    c0 = q * sw - pw
                    best, at, k = plane[uintp(r0), uintp(c0)], 0, 0
                    for i in range(kh):
                        row = plane[uintp(r0 + i)]
                        for j in range(kw):
                            v = row[uintp(c0 + j)]
                            better = _better(v, best)
                            best = v if better else best
                            at = k * better + at * (1 - better)
                            k += 1
                    yr[q], ir[q] = best, at
            for q in range(wo):
                if inside and q0 <= q < q1:
                    continue
                best, at = neg, 0
                for i in range(kh):
                    for j in range(kw):
                        hi, wi = r0 + i, q * sw - pw + j
                        v = plane[uintp(hi), uintp(wi)] if 0 <= hi < h and 0 <= wi < w else neg
                        if (i == 0 and j == 0) or _better(v, best):
                            best, at = v, i * kw + j
                yr[q], ir[q] = best, at


@kernel(boundscheck=False)
def _max_backward(idx, y_bar, kh, kw, sh, sw, ph, pw, x_bar):
    n, c, h, w = x_bar.shape
    ho, wo = y_bar.shape[2], y_bar.shape[3]
    for nc in prange(n * c):
        b, ch = nc // c, nc % c
        plane = x_bar[b, ch]
        plane[:] = 0
        for p in range(ho):
            gr, ir = y_bar[b, ch, p], idx[b, ch, p]
            for q in range(wo):
                k = ir[q]
                i = k // kw                                  # small unsigned ints: cheap
                hi, wi = p * sh + i - ph, q * sw + (k - i * kw) - pw
                if 0 <= hi < h and 0 <= wi < w:
                    plane[uintp(hi), uintp(wi)] += gr[q]


@kernel(boundscheck=False)
def _max_gather(idx, a, kh, kw, sh, sw, ph, pw, out):
    n, c, h, w = a.shape
    ho, wo = out.shape[2], out.shape[3]
    for nc in prange(n * c):
        b, ch = nc // c, nc % c
        plane = a[b, ch]
        for p in range(ho):
            orow, ir = out[b, ch, p], idx[b, ch, p]
            for q in range(wo):
                k = ir[q]
                i = k // kw
                hi, wi = p * sh + i - ph, q * sw + (k - i * kw) - pw
                orow[q] = plane[uintp(hi), uintp(wi)] if 0 <= hi < h and 0 <= wi < w else 0


@kernel(boundscheck=False)
def _avg_forward(x, kh, kw, sh, sw, ph, pw, y):
    n, c, h, w = x.shape
    ho, wo = y.shape[2], y.shape[3]
    taps = y.dtype.type(kh * kw)          # divide, as the reference does (x * (1/9) rounds differently)
    two = kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
    for nc in prange(n * c):
        b, ch = nc // c, nc % c
        plane, yp = x[b, ch], y[b, ch]
        for p in range(ho):
            yr = yp[p]
            if two:                            # AvgPool2d(2): literal strides, vectorised; the reference's order
                ra, rb = plane[uintp(2 * p)], plane[uintp(2 * p + 1)]
                for q in range(uintp(wo)):
                    yr[q] = (ra[2 * q] + ra[2 * q + 1] + rb[2 * q] + rb[2 * q + 1]) / taps
                continue
            i0, i1 = max(0, ph - p * sh), min(kh, h + ph - p * sh)
            for q in range(wo):
                j0, j1 = max(0, pw - q * sw), min(kw, w + pw - q * sw)
                s = y.dtype.type(0)
                for i in range(i0, i1):
                    row = plane[uintp(p * sh + i - ph)]
                    for j in range(j0, j1):
                        s += row[uintp(q * sw + j - pw)]
                yr[q] = s / taps


@kernel(boundscheck=False)
def _avg_backward(y_bar, kh, kw, sh, sw, ph, pw, x_bar):
    n, c, h, w = x_bar.shape
    ho, wo = y_bar.shape[2], y_bar.shape[3]
    taps = x_bar.dtype.type(kh * kw)
    two = kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
    for nc in prange(n * c):
        b, ch = nc // c, nc % c
        plane, gp = x_bar[b, ch], y_bar[b, ch]
        plane[:] = 0
        for p in range(ho):
            gr = gp[p]
            if two:                            # non-overlapping 2x2: each pixel gets one window's share
                ra, rb = plane[uintp(2 * p)], plane[uintp(2 * p + 1)]
                for q in range(uintp(wo)):
                    g = gr[q] / taps
                    ra[2 * q] = g
                    ra[2 * q + 1] = g
                    rb[2 * q] = g
                    rb[2 * q + 1] = g
                continue
            i0, i1 = max(0, ph - p * sh), min(kh, h + ph - p * sh)
            for q in range(wo):
                j0, j1 = max(0, pw - q * sw), min(kw, w + pw - q * sw)
                g = gr[q] / taps
                for i in range(i0, i1):
                    row = plane[uintp(p * sh + i - ph)]
                    for j in range(j0, j1):
                        row[uintp(q * sw + j - pw)] += g


def max_pool2d_forward_numba(x, kernel, stride, padding):
    out_hw = pool_params(x.shape, kernel, stride, padding)
    y = np.empty(x.shape[:2] + out_hw, x.dtype)
    idx = np.empty(x.shape[:2] + out_hw, index_dtype(kernel[0] * kernel[1]))
    _max_forward(np.ascontiguousarray(x), kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], y, idx)
    return y, idx


def max_pool2d_backward_numba(idx, y_bar, x_shape, kernel, stride, padding):
    x_bar = np.empty(tuple(x_shape), y_bar.dtype)
    _max_backward(np.ascontiguousarray(idx), np.ascontiguousarray(y_bar), *kernel, *stride, *padding, x_bar)
    return x_bar


def max_pool2d_gather_numba(idx, a, kernel, stride, padding):
    out = np.empty(idx.shape, a.dtype)
    _max_gather(np.ascontiguousarray(idx), np.ascontiguousarray(a), *kernel, *stride, *padding, out)
    return out


def avg_pool2d_forward_numba(x, kernel, stride, padding):
    out_hw = pool_params(x.shape, kernel, stride, padding)
    y = np.empty(x.shape[:2] + out_hw, x.dtype)
    _avg_forward(np.ascontiguousarray(x), kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], y)
    return y


def avg_pool2d_backward_numba(y_bar, x_shape, kernel, stride, padding):
    x_bar = np.empty(tuple(x_shape), y_bar.dtype)
    _avg_backward(np.ascontiguousarray(y_bar), kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1],
                  x_bar)
    return x_bar
