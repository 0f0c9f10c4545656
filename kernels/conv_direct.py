"""Direct 2-D convolution on the CPU (Numba): no column matrix, the flops in two register-blocked micro-kernels.

The im2col path (conv.py) copies every receptive field into a (C_in·kh·kw) × (H_out·W_out) matrix — nine
times the input for a 3×3 kernel — and hands the flops to BLAS.  When the matrix products are small (grouped
convolutions, few channels) that copy costs more than the flops; this path does without it.

Layout: one (sample n, group g) at a time, the group's input is *staged* into a zero-bordered buffer `xs` in
polyphase order — for stride (sh, sw) the padded input splits into sh·sw phases
    xs[c, a, b][u, v] = x_pad[n, g·Cg + c, u·sh + a, v·sw + b]        (rows of pitch Wφ, zeros outside x)
so that tap (i, j) of every output (p, q) reads phase (i·dh mod sh, j·dw mod sw) at (p + ⌊i·dh/sh⌋,
q + ⌊j·dw/sw⌋): a plain shift.  Flattening (p, q) to t = p·Wφ + q (columns q ≥ W_out are junk, computed and
dropped), every map is a sum over taps k = (c, i, j) of shifted rows of xs, off(k) its offset:
  forward      y[o, t]  = Σ_k w[o, k] · xs[off(k) + t]                                    (AXPY form)
  grad_weight  w̄[o, k] += Σ_t ȳ[o, t] · xs[off(k) + t]      (ȳ staged on the same grid, junk columns 0) (DOT form)
  grad_input   per phase (a, b) of x̄: x̄φ[c, t] = Σ_{o, (i,j) in the phase} w[o, c, i, j] · ys[off'(o,i,j) + t]
               — the transposed convolution is the forward one on ȳ staged with a (kh−1)·dh/sh,
               (kw−1)·dw/sw border, with the kernel flipped: ys[o][u', v'] = ȳ[o, u' − ⌊(kh−1)dh/sh⌋, ...] and
               off'(o, i, j) = (o·Hy + ⌊(kh−1)dh/sh⌋ − ⌊i·dh/sh⌋)·Wy + ⌊(kw−1)dw/sw⌋ − ⌊j·dw/sw⌋.  Each x̄ pixel
               belongs to exactly one phase, so it is written once (no atomics, no scatter).
The two micro-kernels (`_axpy_rows`, `_dot_rows`) work on 4 rows × 4 taps at a time: in the AXPY form each
loaded xs vector feeds 4 accumulator rows (16 FMAs per 4 loads and 4 stores), in the DOT form 16 running
sums stay in registers.  They need `fastmath={"contract"}` (fused multiply-add) and, for the DOT sums,
`"reassoc"` (vector lanes sum in a different order): rounding differs from the reference by a few ulps of
the result's magnitude, which the tests bound.  Indices are unsigned (`uintp`): Numba's negative-index
wraparound on signed indices otherwise blocks vectorisation (3× slower, measured).

Parallel over (n, g) in `nthreads` slots, each with its own staging buffers; grad_weight keeps one partial
w̄ per slot and sums them at the end (a slot owns its tasks, so there are no races).  Small layers run the
serial compilation (threads.Kernel: the pool's launch would cost more than it saves).
"""
import numpy as np
from numba import njit, prange, uintp

from .conv import conv_params
from .threads import kernel

FMA = {"contract"}
FMA_REASSOC = {"contract", "reassoc"}
TILE = 512          # positions per AXPY tile: 8 rows x 512 x 4 bytes = 16 KiB of accumulators in L1


# ------------------------------------------------------------------------------------------ micro-kernels
# AXPY form: acc rows r.. += Σ over taps k.. of wv[r, k] · xs[off(k) + t].  8 rows × 4 taps measured fastest
# (198 GF/s float32 on one Zen 5 core, against 155 for 4 × 4 and 80 for 8 × 1): four loaded xs vectors feed
# 32 FMAs, and each accumulator row is loaded and stored once per 4 FMAs.  The weights are scalars held
# outside the loop (an indexed load inside it stops LLVM from proving they do not alias acc: 20× slower).
@njit(cache=True, boundscheck=False, fastmath=FMA, inline="always")
def _axpy84(acc, a, m, n, xs, o0, o1, o2, o3, wv, r, k):
    w0 = (wv[r, k], wv[r, k + 1], wv[r, k + 2], wv[r, k + 3])
    w1 = (wv[r + 1, k], wv[r + 1, k + 1], wv[r + 1, k + 2], wv[r + 1, k + 3])
    w2 = (wv[r + 2, k], wv[r + 2, k + 1], wv[r + 2, k + 2], wv[r + 2, k + 3])
    w3 = (wv[r + 3, k], wv[r + 3, k + 1], wv[r + 3, k + 2], wv[r + 3, k + 3])
    w4 = (wv[r + 4, k], wv[r + 4, k + 1], wv[r + 4, k + 2], wv[r + 4, k + 3])
    w5 = (wv[r + 5, k], wv[r + 5, k + 1], wv[r + 5, k + 2], wv[r + 5, k + 3])
    w6 = (wv[r + 6, k], wv[r + 6, k + 1], wv[r + 6, k + 2], wv[r + 6, k + 3])
    w7 = (wv[r + 7, k], wv[r + 7, k + 1], wv[r + 7, k + 2], wv[r + 7, k + 3])
    # (all index arithmetic in uintp: in Numba uintp + int64 is float64, which silently kills the loop)
    a0, a1, a2, a3 = a, a + m, a + uintp(2) * m, a + uintp(3) * m
    a4, a5, a6, a7 = a + uintp(4) * m, a + uintp(5) * m, a + uintp(6) * m, a + uintp(7) * m
    for t in range(n):
        x0, x1, x2, x3 = xs[o0 + t], xs[o1 + t], xs[o2 + t], xs[o3 + t]
        acc[a0 + t] += w0[0] * x0 + w0[1] * x1 + w0[2] * x2 + w0[3] * x3
        acc[a1 + t] += w1[0] * x0 + w1[1] * x1 + w1[2] * x2 + w1[3] * x3
        acc[a2 + t] += w2[0] * x0 + w2[1] * x1 + w2[2] * x2 + w2[3] * x3
        acc[a3 + t] += w3[0] * x0 + w3[1] * x1 + w3[2] * x2 + w3[3] * x3
        acc[a4 + t] += w4[0] * x0 + w4[1] * x1 + w4[2] * x2 + w4[3] * x3
        acc[a5 + t] += w5[0] * x0 + w5[1] * x1 + w5[2] * x2 + w5[3] * x3
        acc[a6 + t] += w6[0] * x0 + w6[1] * x1 + w6[2] * x2 + w6[3] * x3
        acc[a7 + t] += w7[0] * x0 + w7[1] * x1 + w7[2] * x2 + w7[3] * x3


@njit(cache=True, boundscheck=False, fastmath=FMA, inline="always")
def _axpy81(acc, a, m, n, xs, o0, wv, r, k):
    w = (wv[r, k], wv[r + 1, k], wv[r + 2, k], wv[r + 3, k], wv[r + 4, k], wv[r + 5, k], wv[r + 6, k], wv[r + 7, k])
    a0, a1, a2, a3 = a, a + m, a + uintp(2) * m, a + uintp(3) * m
    a4, a5, a6, a7 = a + uintp(4) * m, a + uintp(5) * m, a + uintp(6) * m, a + uintp(7) * m
    for t in range(n):
        x0 = xs[o0 + t]
        acc[a0 + t] += w[0] * x0
        acc[a1 + t] += w[1] * x0
        acc[a2 + t] += w[2] * x0
        acc[a3 + t] += w[3] * x0
        acc[a4 + t] += w[4] * x0
        acc[a5 + t] += w[5] * x0
        acc[a6 + t] += w[6] * x0
        acc[a7 + t] += w[7] * x0


@njit(cache=True, boundscheck=False, fastmath=FMA, inline="always")
def _axpy14(acc, a, n, xs, o0, o1, o2, o3, wv, r, k):
    w = (wv[r, k], wv[r, k + 1], wv[r, k + 2], wv[r, k + 3])
    for t in range(n):
        acc[a + t] += w[0] * xs[o0 + t] + w[1] * xs[o1 + t] + w[2] * xs[o2 + t] + w[3] * xs[o3 + t]


@njit(cache=True, boundscheck=False, fastmath=FMA, inline="always")
def _axpy11(acc, a, n, xs, o0, wv, r, k):
    w = wv[r, k]
    for t in range(n):
        acc[a + t] += w * xs[o0 + t]


@njit(cache=True, boundscheck=False, fastmath=FMA)
def _axpy_rows(acc, xs, wv, offs, m, tile=TILE):
    """acc[r·m + t] += Σ_k wv[r, k] · xs[offs[k] + t]   for r < wv.shape[0], t < m.
    Blocks of 8 rows, and t in tiles: 8 accumulator rows of one tile stay in L1 across all the taps."""
    nrows, ntap = wv.shape
    mu = uintp(m)
    k4 = ntap - ntap % 4
    r = 0
    while r < nrows:
        rows = 8 if r + 8 <= nrows else 1
        for t0 in range(0, m, tile):
            n = uintp(min(tile, m - t0))
            a = uintp(r) * mu + uintp(t0)
            for k in range(0, k4, 4):
                o0, o1 = uintp(offs[k] + t0), uintp(offs[k + 1] + t0)
                o2, o3 = uintp(offs[k + 2] + t0), uintp(offs[k + 3] + t0)
                if rows == 8:
                    _axpy84(acc, a, mu, n, xs, o0, o1, o2, o3, wv, r, k)
                else:
                    _axpy14(acc, a, n, xs, o0, o1, o2, o3, wv, r, k)
            for k in range(k4, ntap):
                if rows == 8:
                    _axpy81(acc, a, mu, n, xs, uintp(offs[k] + t0), wv, r, k)
                else:
                    _axpy11(acc, a, n, xs, uintp(offs[k] + t0), wv, r, k)
        r += rows


# DOT form: 4 rows × 4 taps of running sums, all 16 in registers (186 GF/s float32 on one core).
@njit(cache=True, boundscheck=False, fastmath=FMA_REASSOC, inline="always")
def _dot44(ys, b0, b1, b2, b3, xs, o0, o1, o2, o3, m):
    z = ys.dtype.type(0)
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = z
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = z
    for t in range(uintp(m)):
        x0, x1, x2, x3 = xs[o0 + t], xs[o1 + t], xs[o2 + t], xs[o3 + t]
        y0, y1, y2, y3 = ys[b0 + t], ys[b1 + t], ys[b2 + t], ys[b3 + t]
        s00 += y0 * x0
        s01 += y0 * x1
        s02 += y0 * x2
        s03 += y0 * x3
        s10 += y1 * x0
        s11 += y1 * x1
        s12 += y1 * x2
        s13 += y1 * x3
        s20 += y2 * x0
        s21 += y2 * x1
        s22 += y2 * x2
        s23 += y2 * x3
        s30 += y3 * x0
        s31 += y3 * x1
        s32 += y3 * x2
        s33 += y3 * x3
    return (s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33)


@njit(cache=True, boundscheck=False, fastmath=FMA_REASSOC, inline="always")
def _dot11(ys, b0, xs, o0, m):
    s = ys.dtype.type(0)
    for t in range(uintp(m)):
        s += ys[b0 + t] * xs[o0 + t]
    return s


@njit(cache=True, boundscheck=False, fastmath=FMA_REASSOC)
def _dot_rows(out, ys, ystride, xs, offs, m):
    """out[r, k] += Σ_t ys[r·ystride + t] · xs[offs[k] + t]   for r < out.shape[0], k < out.shape[1], t < m."""
    nrows, ntap = out.shape
    r4, k4 = nrows - nrows % 4, ntap - ntap % 4
    for r in range(0, r4, 4):
        b0, b1, b2, b3 = uintp(r * ystride), uintp((r + 1) * ystride), uintp((r + 2) * ystride), uintp((r + 3) * ystride)
        for k in range(0, k4, 4):
            s = _dot44(ys, b0, b1, b2, b3, xs, uintp(offs[k]), uintp(offs[k + 1]), uintp(offs[k + 2]),
                       uintp(offs[k + 3]), m)
            for a in range(4):
                for b in range(4):
                    out[r + a, k + b] += s[a * 4 + b]
    for r in range(nrows):                     # the rows and taps the 4 x 4 blocks left over
        for k in range(ntap):
            if r >= r4 or k >= k4:
                out[r, k] += _dot11(ys, uintp(r * ystride), xs, uintp(offs[k]), m)


# ------------------------------------------------------------------------------------------ staging
@njit(cache=True, boundscheck=False)
def _stage_phases(x, n0, ns, c0, cg, sh, sw, pt, pl, hph, wph, xs):
    """xs[(((c·sh + a)·sw + b)·ns + s)·hph·wph + u·wph + v] = x[n0 + s, c0 + c, u·sh + a − pt, v·sw + b − pl]
    where that is inside x.  Positions outside x are never written: the caller zeroes xs once (the geometry is
    the same for every task), so they stay zero.  Samples past the batch (a last, short chunk) are zeroed."""
    n_b, h, wd = x.shape[0], x.shape[2], x.shape[3]
    for c in range(cg):
        for a in range(sh):
            for b in range(sw):
                # v·sw + b − pl in [0, wd)  <=>  v in [v0, v1)
                v0 = max(0, (pl - b + sw - 1) // sw)
                v1 = min(wph, (wd - 1 + pl - b) // sw + 1) if wd - 1 + pl - b >= 0 else 0
                for s in range(ns):
                    base = (((c * sh + a) * sw + b) * ns + s) * hph * wph
                    for u in range(hph):
                        hi = u * sh + a - pt
                        if 0 <= hi < h and v0 < v1:
                            row = uintp(base + u * wph)
                            if n0 + s < n_b:
                                xr = x[n0 + s, c0 + c, hi]
                                col = uintp(v0 * sw + b - pl)
                                for v in range(uintp(v0), uintp(v1)):
                                    xs[row + v] = xr[col + (v - uintp(v0)) * uintp(sw)]
                            else:
                                for v in range(uintp(v0), uintp(v1)):
                                    xs[row + v] = 0


@njit(cache=True, boundscheck=False)
def _stage_rows(a, n0, ns, c0, rows, top, left, hs, ws, rstride, buf):
    """buf[r·rstride + (s·hs + p + top)·ws + q + left] = a[n0 + s, c0 + r, p, q] for the (p, q) that fit; the rest
    of buf keeps what it had (zero).  Samples past the batch are zeroed."""
    n_b, ho, wo = a.shape[0], a.shape[2], a.shape[3]
    q0, q1 = max(0, -left), min(wo, ws - left)
    for r in range(rows):
        for s in range(ns):
            base = r * rstride + s * hs * ws
            for p in range(max(0, -top), min(ho, hs - top)):
                row = uintp(base + (p + top) * ws + left)
                if n0 + s < n_b:
                    ar = a[n0 + s, c0 + r, p]
                    for q in range(uintp(q0), uintp(q1)):
                        buf[row + q] = ar[q]
                else:
                    for q in range(uintp(q0), uintp(q1)):
                        buf[row + q] = 0


# ------------------------------------------------------------------------------------------ the three maps
# A task is (chunk of ns samples, group).  The ns samples of a chunk sit one under the other on the staged
# grid (hph rows each), so the flattened position t = (s·hph + p)·wph + q runs over all of them and the
# micro-kernels get long rows even for small images (the rows p >= H_out between samples are junk too).
@kernel(boundscheck=False)
def _forward_kernel(x, wf, bias, offs, groups, ns, sh, sw, pt, pl, hph, wph, m, xs_len, nthreads, y):
    n_b, cg = x.shape[0], x.shape[1] // groups
    og, ho, wo = wf.shape[1], y.shape[2], y.shape[3]
    chunks = (n_b + ns - 1) // ns
    tasks = chunks * groups
    nt = min(tasks, nthreads)
    for th in prange(nt):
        xs = np.zeros(xs_len, x.dtype)
        acc = np.empty(og * m, x.dtype)
        for task in range(th, tasks, nt):
            n0, g = (task // groups) * ns, task % groups
            _stage_phases(x, n0, ns, g * cg, cg, sh, sw, pt, pl, hph, wph, xs)
            acc[:] = 0
            _axpy_rows(acc, xs, wf[g], offs, m)
            for s in range(min(ns, n_b - n0)):
                for oo in range(og):
                    b = bias[g * og + oo]                 # the bias rides along with the copy out
                    for p in range(ho):
                        yr = y[n0 + s, g * og + oo, p]
                        src = uintp(oo * m + (s * hph + p) * wph)
                        for q in range(uintp(wo)):
                            yr[q] = acc[src + q] + b


@kernel(boundscheck=False)
def _grad_weight_kernel(x, y_bar, offs, groups, ns, sh, sw, pt, pl, hph, wph, m, xs_len, nthreads, partial):
    # partial[slot, g, o, k] += Σ_t ȳ[n, g·og + o, t] · xs[off(k) + t]  over this slot's tasks
    n_b, cg = x.shape[0], x.shape[1] // groups
    og = partial.shape[2]
    ystride = max(ns * hph * wph, m)      # >= m: a row's dot product never reaches the next row
    chunks = (n_b + ns - 1) // ns
    tasks = chunks * groups
    nt = min(tasks, nthreads)
    for th in prange(nt):
        xs = np.zeros(xs_len, x.dtype)
        ys = np.zeros(og * ystride, x.dtype)      # junk rows, columns and padding stay 0: they add nothing
        for task in range(th, tasks, nt):
            n0, g = (task // groups) * ns, task % groups
            _stage_phases(x, n0, ns, g * cg, cg, sh, sw, pt, pl, hph, wph, xs)
            _stage_rows(y_bar, n0, ns, g * og, og, 0, 0, hph, wph, ystride, ys)
            _dot_rows(partial[th, g], ys, ystride, xs, offs, m)


@kernel(boundscheck=False)
def _grad_input_kernel(y_bar, wg, offs, phase_start, groups, ns, sh, sw, pt, pl, top, left, hu, hy, wy, m, ys_len,
                       nthreads, x_bar):
    # per task: ys = ȳ of the chunk and group with a (top, left) border, hy rows per sample; per
    # phase (a, b) of x̄: acc[c, t] = Σ_k wg[g, c, k] · ys[off(k) + t] over the phase's taps, and x̄ pixel
    # (u·sh + a − pt, v·sw + b − pl) of sample s is acc[c, (s·hy + u)·wy + v].
    n_b, og = y_bar.shape[0], y_bar.shape[1] // groups
    cg, h, wd = x_bar.shape[1] // groups, x_bar.shape[2], x_bar.shape[3]
    chunks = (n_b + ns - 1) // ns
    tasks = chunks * groups
    nt = min(tasks, nthreads)
    for th in prange(nt):
        ys = np.zeros(ys_len, y_bar.dtype)
        acc = np.empty(cg * m, y_bar.dtype)
        for task in range(th, tasks, nt):
            n0, g = (task // groups) * ns, task % groups
            _stage_rows(y_bar, n0, ns, g * og, og, top, left, hy, wy, ns * hy * wy, ys)
            for a in range(sh):
                for b in range(sw):
                    ph = a * sw + b
                    acc[:] = 0
                    k0, k1 = phase_start[ph], phase_start[ph + 1]
                    if k1 > k0:     # the phase's weights: a contiguous (cg, k1 - k0) block of wg[g]
                        wv = wg[g, cg * k0:cg * k1].reshape(cg, k1 - k0)
                        _axpy_rows(acc, ys, wv, offs[k0:k1], m)
                    # v·sw + b − pl in [0, wd)
                    v0 = max(0, (pl - b + sw - 1) // sw)
                    v1 = min(wy, (wd - 1 + pl - b) // sw + 1) if wd - 1 + pl - b >= 0 else 0
                    if v1 <= v0:
                        continue
                    col0, stp, n_v = uintp(v0 * sw + b - pl), uintp(sw), uintp(v1 - v0)
                    for s in range(min(ns, n_b - n0)):
                        for c in range(cg):
                            for u in range(hu):
                                hi = u * sh + a - pt
                                if 0 <= hi < h:
                                    xr = x_bar[n0 + s, g * cg + c, hi]
                                    src = uintp(c * m + (s * hy + u) * wy + v0)
                                    for t in range(n_v):
                                        xr[col0 + t * stp] = acc[src + t]


# ------------------------------------------------------------------------------------------ planning
TARGET_ROW = 1024     # flattened positions per micro-kernel row worth stacking samples for


def _samples_per_task(n, groups, grid, nthreads):
    """Stack samples until a row has ~TARGET_ROW positions, but keep >= 2 tasks per thread when we can."""
    ns = max(1, min(n, -(-TARGET_ROW // grid)))
    while ns > 1 and -(-n // ns) * groups < 2 * nthreads:
        ns -= 1
    return ns


def _forward_plan(cg, kh, kw, stride, dilation, out_hw, ns, x_hw, padding):
    """Phase grid (hph, wph) of the staged input, and off(k) for the taps k = (c, i, j) of one group."""
    (sh, sw), (dh, dw), (ho, wo) = stride, dilation, out_hw
    hph, wph = ho + (kh - 1) * dh // sh, wo + (kw - 1) * dw // sw
    if (sh, sw) == (1, 1):
        # Stride 1: neighbouring rows (and stacked samples) can share their zero padding.  With pitch
        # W + max(pl, pr) a read past a row's end lands in the next row's left padding, which is zero as
        # long as the gap covers both sides' needs (gap >= pl for the row's own left edge, >= pr for what
        # the row's last outputs read); likewise H + max(pt, pb) rows per sample.  That is fewer junk
        # positions: 5x5 "same" on 14x14 computes 16x16 instead of 18x18 per sample (77% useful, not 60%).
        (pt, pb), (pl, pr) = padding
        rows, pitch = x_hw[0] + max(pt, pb), x_hw[1] + max(pl, pr)
        if rows >= ho and pitch >= wo:
            hph, wph = min(hph, rows), min(wph, pitch)
    i, j = np.arange(kh)[:, None], np.arange(kw)[None, :]
    phase = ((i * dh) % sh) * sw + (j * dw) % sw                 # which phase tap (i, j) reads
    shift = ((i * dh) // sh) * wph + (j * dw) // sw               # and where in it
    block = ns * hph * wph                                         # one (channel, phase) of the chunk
    offs = (np.arange(cg)[:, None, None] * (sh * sw) + phase[None]) * block + shift[None]
    return hph, wph, offs.reshape(-1).astype(np.int64)


def _work(n, c_out, out_hw, cg, kh, kw):
    # multiply-adds / 64: the kernels do ~1 element-equivalent of work per 64 (see threads.PARALLEL_MIN_WORK)
    return n * c_out * out_hw[0] * out_hw[1] * cg * kh * kw // 64


def _row_length(m):
    # a multiple of 64 positions: the vector loops (16 float32 lanes, unrolled 4x) then have no scalar
    # remainder, which on rows of a few hundred positions cost more than the junk positions computed instead
    return -(-m // 64) * 64


def conv2d_forward_direct(x, w, stride, padding, dilation, groups, bias=None):
    stride, padding, dilation, groups, out_hw = conv_params(x.shape, w.shape, stride, padding, dilation, groups)
    c_out, cg, kh, kw = w.shape
    run, nt = _forward_kernel.pick(_work(x.shape[0], c_out, out_hw, cg, kh, kw))
    hph, wph, _ = _forward_plan(cg, kh, kw, stride, dilation, out_hw, 1, x.shape[2:], padding)
    ns = _samples_per_task(x.shape[0], groups, hph * wph, nt)
    hph, wph, offs = _forward_plan(cg, kh, kw, stride, dilation, out_hw, ns, x.shape[2:], padding)
    m = _row_length(((ns - 1) * hph + out_hw[0]) * wph)
    xs_len = max(cg * stride[0] * stride[1] * ns * hph * wph, int(offs.max()) + m)
    wf = np.ascontiguousarray(w.reshape(groups, c_out // groups, cg * kh * kw))
    y = np.empty((x.shape[0], c_out) + out_hw, x.dtype)
    b = np.zeros(c_out, x.dtype) if bias is None else np.ascontiguousarray(bias, x.dtype)
    run(np.ascontiguousarray(x), wf, b, offs, groups, ns, stride[0], stride[1], padding[0][0], padding[1][0], hph,
        wph, m, xs_len, nt, y)
    return y


def conv2d_grad_weight_direct(x, y_bar, w_shape, stride, padding, dilation, groups):
    stride, padding, dilation, groups, out_hw = conv_params(x.shape, w_shape, stride, padding, dilation, groups)
    c_out, cg, kh, kw = w_shape
    run, nt = _grad_weight_kernel.pick(_work(x.shape[0], c_out, out_hw, cg, kh, kw))
    hph, wph, _ = _forward_plan(cg, kh, kw, stride, dilation, out_hw, 1, x.shape[2:], padding)
    ns = _samples_per_task(x.shape[0], groups, hph * wph, nt)
    hph, wph, offs = _forward_plan(cg, kh, kw, stride, dilation, out_hw, ns, x.shape[2:], padding)
    m = _row_length(((ns - 1) * hph + out_hw[0]) * wph)
    xs_len = max(cg * stride[0] * stride[1] * ns * hph * wph, int(offs.max()) + m)
    nt = max(1, min(nt, -(-x.shape[0] // ns) * groups))
    partial = np.zeros((nt, groups, c_out // groups, cg * kh * kw), x.dtype)
    run(np.ascontiguousarray(x), np.ascontiguousarray(y_bar), offs, groups, ns, stride[0], stride[1], padding[0][0],
        padding[1][0], hph, wph, m, xs_len, nt, partial)
    return partial.sum(axis=0).reshape(w_shape)


def conv2d_grad_input_direct(y_bar, w, x_shape, stride, padding, dilation, groups):
    x_shape = tuple(x_shape)
    stride, padding, dilation, groups, out_hw = conv_params(x_shape, w.shape, stride, padding, dilation, groups)
    (sh, sw), (dh, dw) = stride, dilation
    (pt, pb), (pl, pr) = padding
    c_out, cg, kh, kw = w.shape
    og = c_out // groups
    h, wd = x_shape[2:]
    flipped_pad = (((kh - 1) * dh - pt, (kh - 1) * dh - pb), ((kw - 1) * dw - pl, (kw - 1) * dw - pr))
    if (sh, sw) == (1, 1) and min(min(p) for p in flipped_pad) >= 0:
        # stride 1: x̄ = conv(ȳ, w flipped in space and transposed per group) with the complementary padding
        # — the forward kernels, shared-padding grid and all (one phase, so nothing else to do)
        wt = w.reshape(groups, og, cg, kh, kw)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
        return conv2d_forward_direct(y_bar, np.ascontiguousarray(wt).reshape(groups * cg, og, kh, kw), stride,
                                     flipped_pad, dilation, groups)
    top, left = (kh - 1) * dh // sh, (kw - 1) * dw // sw           # ȳ border: the largest tap shift
    hu, wu = -(-(h + pt) // sh), -(-(wd + pl) // sw)               # phase grid covering every x̄ pixel
    # rows per sample: the ȳ rows sit at [top, top + H_out); the reads of output row u span [u, u + top], and
    # a read past the block lands in the next block's `top` zero rows — fine while hu <= hy.  So the blocks
    # share that padding (max, not sum); the same for columns.
    hy, wy = max(hu, top + out_hw[0]), max(wu, left + out_hw[1])
    run, nt = _grad_input_kernel.pick(_work(x_shape[0], c_out, out_hw, cg, kh, kw))
    ns = _samples_per_task(x_shape[0], groups, hy * wy, nt)
    # taps (o, i, j) grouped by the phase of x̄ they write, offsets and weight columns laid out alike:
    # off' = ((o·ns)·hy + top − ⌊i·dh/sh⌋)·wy + left − ⌊j·dw/sw⌋
    i, j = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    phase = (((i * dh) % sh) * sw + (j * dw) % sw).ravel()
    shift = ((top - (i * dh) // sh) * wy + left - (j * dw) // sw).ravel()
    wt = w.reshape(groups, og, cg, kh * kw)
    offs, wcols, starts = [], [], [0]
    for ph in range(sh * sw):
        taps = np.flatnonzero(phase == ph)
        offs.append((np.arange(og)[:, None] * (ns * hy * wy) + shift[taps][None]).ravel())
        wcols.append(wt[:, :, :, taps].transpose(0, 2, 1, 3).reshape(groups, cg * og * len(taps)))
        starts.append(starts[-1] + og * len(taps))
    offs = np.concatenate(offs).astype(np.int64)
    wg = np.ascontiguousarray(np.concatenate(wcols, axis=1))      # (groups, phase blocks of (cg, taps))
    m = _row_length(((ns - 1) * hy + hu) * wy)
    ys_len = max(og * ns * hy * wy, int(offs.max()) + m)
    x_bar = np.empty(x_shape, y_bar.dtype)
    run(np.ascontiguousarray(y_bar), wg, offs, np.asarray(starts, np.int64), groups, ns, sh, sw, pt, pl, top, left,
        hu, hy, wy, m, ys_len, nt, x_bar)
    return x_bar
