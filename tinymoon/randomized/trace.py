"""Randomized trace estimation of conv2d / linear weight gradients (XConv, Louboutin et al., arXiv 2106.06998).

The weight cotangent of a convolution is a sum of traces. With x_pad the zero-padded input, tap t = (i, j),
    w̄[o, c, t] = Σ_{b,p} ȳ[b, o, p] · x_pad[b, c, p·stride + t·dilation] = Σ_b ⟨ȳ_{b,o}, S_t x_{b,c}⟩
where S_t : R^N → R^P (N = H·W input pixels, P output pixels) reads the tap-shifted pixel, and reads 0 where the
shifted position falls in the padding. S_t is a ZERO-FILL shift on the padded grid, never a circular roll: a
roll would wrap the opposite border into the window and bias the border taps. (For padding_mode="circular",
S_t does wrap, because the layer itself wraps.)

Hutchinson: with a probe matrix Z (N x r, E[Z Zᵀ] = I, see probes.py), x ≈ Z Zᵀ x is unbiased, so
    w̄[o, c, t] ≈ Σ_b ⟨ȳ_{b,o}, S_t Z X̄_{b,c}⟩ = Σ_b (ȳ_{b,o}ᵀ S_t Z) · X̄_{b,c},     X̄_{b,c} = Zᵀ x_{b,c} ∈ R^r
Forward keeps only X̄ and the seed of Z; backward regenerates Z and moves the shift onto the probes: S_t Z is
the im2col of the probe images (r images of one channel, or of C channels), zero padded exactly like x. The
input cotangent x̄ = conv_transpose(ȳ, w) is exact: it needs only w.

Modes (memory of the sketch versus the B·C·N floats of x):
- "independent": one N x r Z shared by every (b, c); X̄ is (B, C, r): ratio r / N.
      ŵ[o,c,t] = Σ_{b,k} M[b,o,k,t] X̄[b,c,k],  M[b,o,k,t] = Σ_p ȳ[b,o,p] (S_t Z)[p,k]
      (M is conv2d_grad_weight of the probe images, one "batch" entry, against ȳ with B·C_out output channels.)
- "multichannel": one (C·N) x r Z over the channel x pixel vector of a sample; X̄ is (B, r): ratio r / (C·N).
      Z_c = the rows of channel c. ŵ[o,c,t] = Σ_k Σ_p L[k,o,p] (S_t Z_c)[p,k],  L[k,o,p] = Σ_b X̄[b,k] ȳ[b,o,p]
      = conv2d_grad_weight(probe images (r, C, H, W), L) — the probes are the batch. Unbiased because
      E[Z_c Z_c'ᵀ] = δ_cc' I; the cross-channel terms add variance, which block-orthogonal probes
      (Z_cᵀ Z_c' = 0, probes.py) remove.
Both modes may instead rebuild x̂ = Z X̄ and call the exact kernel: the same estimator with the products in
another order. `path="auto"` picks whichever costs fewer flops; the tests check the two agree.

Linear (y = x Wᵀ + b, rows m = 1..M of x flattened): W̄ = ȳᵀ x = Σ_m ȳ_m x_mᵀ, a trace along the rows. Sketch
the rows: X̄ = Zᵀ x (Z: M x r, X̄: r x in), W̄ ≈ (ȳᵀ Z) X̄; ratio r / M.

Variance (one entry: θ̂ = Σ_k z_kᵀ A z_k / r for r iid probe columns z_k of unit scale, A = Σ_b x_b a_bᵀ with
a_b = S_tᵀ ȳ_{b,o} and x_b the sketched vector of sample b):
    Gaussian:   Var θ̂ = (‖A‖_F² + tr(A²)) / r
    Rademacher: Var θ̂ = (‖A‖_F² + tr(A²) − 2 Σ_i A_ii²) / r
(E[zᵀAz zᵀAz] − tr(A)² = Σ_ijkl A_ij A_kl (E[z_i z_j z_k z_l] − δ_ij δ_kl); for Gaussian z the fourth moment is
δ_ij δ_kl + δ_ik δ_jl + δ_il δ_jk, for Rademacher the same minus 2 on i=j=k=l.) For one sample (rank-one A =
x aᵀ) this is (‖a‖²‖x‖² + ⟨a, x⟩²)/r, minus 2 Σ a_i² x_i² / r for Rademacher. `trace_variance` evaluates it.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..autodiff.apply import apply
from ..backend import get_array_module
from ..errors import ShapeError
from ..ops import conv as _conv
from ..ops import linalg as _linalg
from ..tensor import as_tensor, generator as _generator
from .policy import SketchPolicy
from .probes import DISTRIBUTIONS, new_seed, probe_matrix

MODES = ("independent", "multichannel")


def _probes(seed, n, r, dist, blocks, like):
    """Z (n x r) for `seed`, in the dtype and on the device of `like`."""
    z = probe_matrix(seed, n, r, dist, blocks)
    xp = get_array_module(like)
    return xp.asarray(z.astype(like.dtype, copy=False))


def _check_dist(mode, dist):
    if mode not in MODES:
        raise ValueError(f"trace estimator: mode must be one of {MODES}, got {mode!r}")
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"trace estimator: dist must be one of {DISTRIBUTIONS}, got {dist!r}")
    if dist == "block_orthogonal" and mode != "multichannel":
        raise ValueError("trace estimator: dist='block_orthogonal' splits the probes over channels, so it needs "
                         "mode='multichannel' (in mode='independent' every channel already has its own sketch)")


# ------------------------------------------------------------------------------------------------ conv2d
def _probe_images(ctx, z):
    """The probe columns as images: (r, 1, H, W) (independent) or (r, C, H, W) (multichannel); circularly
    padded when the layer wraps (then the kernel gets no padding)."""
    n, c, h, w = ctx.x_shape
    r = z.shape[1]
    img = z.T.reshape(r, -1, h, w)
    if ctx.params["padding_mode"] == "circular":
        return _conv._circular_pad(img, ctx.cfg["pad"]), ((0, 0), (0, 0))
    return img, ctx.cfg["pad"]


def _conv_flops(ctx, r, mode):
    """(trace, reconstruct) multiply counts of the weight estimate (to choose the cheaper path)."""
    n, c, h, w = ctx.x_shape
    co, cg, kh, kw = ctx.w_shape
    t, p = kh * kw, ctx.cfg["out_hw"][0] * ctx.cfg["out_hw"][1]
    exact = n * co * cg * t * p
    if mode == "independent":
        return n * co * r * t * p + n * co * cg * r * t, n * c * h * w * r + exact
    return n * r * co * p + r * co * cg * t * p, n * c * h * w * r + exact


def estimate_conv_weight(ctx, y_bar, sk, mode, z, path):
    """ŵ from the stored sketch sk, the regenerated probes z and ȳ (see the module docstring); ctx is the
    conv2d context (its geometry)."""
    xp = get_array_module(y_bar)
    cfg = ctx.cfg
    n, c, h, w = ctx.x_shape
    co, cg, kh, kw = ctx.w_shape
    groups, r = cfg["groups"], z.shape[1]
    if path == "reconstruct":
        # x̂ = Z X̄ (unbiased for x), then the exact kernel: ŵ = ȳ (*) x̂
        if mode == "independent":
            x_hat = (sk.reshape(n * c, r) @ z.T).reshape(ctx.x_shape)
        else:
            x_hat = (sk @ z.T).reshape(ctx.x_shape)
        if ctx.params["padding_mode"] == "circular":
            x_hat, pad = _conv._circular_pad(x_hat, cfg["pad"]), ((0, 0), (0, 0))
        else:
            pad = cfg["pad"]
        return kernels.conv2d_grad_weight(x_hat, y_bar, ctx.w_shape, cfg["stride"], pad, cfg["dilation"], groups)
    img, pad = _probe_images(ctx, z)
    if mode == "multichannel":
        # L[k, o, p] = Σ_b X̄[b, k] ȳ[b, o, p];  ŵ[o, c, t] = Σ_{k,p} L[k, o, p] (S_t Z_c)[p, k]
        ho, wo = cfg["out_hw"]
        lk = (sk.T @ y_bar.reshape(n, co * ho * wo)).reshape(r, co, ho, wo)
        return kernels.conv2d_grad_weight(img, lk, ctx.w_shape, cfg["stride"], pad, cfg["dilation"], groups)
    # independent: M[b, o, k, t] = Σ_p ȳ[b, o, p] (S_t Z)[p, k] — the probes as r channels of one image
    t = kh * kw
    img1 = img.reshape(1, r, img.shape[2], img.shape[3])
    m = kernels.conv2d_grad_weight(img1, y_bar.reshape((1, n * co) + y_bar.shape[2:]), (n * co, r, kh, kw),
                                   cfg["stride"], pad, cfg["dilation"], 1)
    m = m.reshape(n, co, r, t)
    og = co // groups
    out = xp.empty((co, cg, t), dtype=y_bar.dtype)
    for g in range(groups):
        # ŵ[o, c, t] = Σ_{b,k} M[b, o, k, t] X̄[b, c, k]   (c in o's group)
        mg = m[:, g * og:(g + 1) * og].transpose(1, 3, 0, 2).reshape(og * t, n * r)
        sg = sk[:, g * cg:(g + 1) * cg].transpose(0, 2, 1).reshape(n * r, cg)
        out[g * og:(g + 1) * og] = (mg @ sg).reshape(og, t, cg).transpose(0, 2, 1)
    return out.reshape(ctx.w_shape)


class PixelSketch(SketchPolicy):
    """Sketched policy of Conv2d: keep X̄ = Zᵀx (and the seed of Z) instead of x; ŵ is the trace estimate above,
    unbiased since E[Z Zᵀ] = I. mode "independent" (X̄ (B, C, r): r/N of x) or "multichannel" (X̄ (B, r):
    r/(C·N)); path "trace", "reconstruct" or "auto" (fewer flops)."""

    def __init__(self, probes=16, mode="independent", dist="gaussian", seed=0, path="auto", keep_input=False):
        _check_dist(mode, dist)
        super().__init__(keep_input)
        self.probes, self.mode, self.dist, self.seed, self.path = int(probes), mode, dist, int(seed), path

    def _dim(self, x_shape):
        n, c, h, w = x_shape
        return h * w if self.mode == "independent" else c * h * w

    def keep(self, x, layer="conv2d"):
        n, c = x.shape[:2]
        dim = self._dim(x.shape)
        z = _probes(self.seed, dim, self.probes, self.dist, c, x)
        # X̄ = Zᵀ x: (B, C, r) per channel, or (B, r) over the channel x pixel vector
        sk = (x.reshape(-1, dim) @ z).reshape((n, c, self.probes) if self.mode == "independent" else (n, self.probes))
        return self._holding(x, sketch=sk)

    def conv_weight_cotangent(self, y_bar, ctx):
        z = _probes(self.seed, self._dim(ctx.x_shape), self.probes, self.dist, ctx.x_shape[1], y_bar)  # forward's Z
        path = self.path
        if path == "auto":
            trace, rebuild = _conv_flops(ctx, self.probes, self.mode)
            path = "trace" if trace <= rebuild else "reconstruct"
        return estimate_conv_weight(ctx, y_bar, self.arrays["sketch"], self.mode, z, path)


# ------------------------------------------------------------------------------------------------ linear
class RowSketch(SketchPolicy):
    """Sketched policy of Linear: keep X̄ = Zᵀ x (Z: M x r over the M rows of x, X̄: r x in) instead of x:
    W̄ = ȳᵀ x ≈ (ȳᵀ Z) X̄, unbiased since E[Z Zᵀ] = I; r/M of x."""

    def __init__(self, probes=16, dist="gaussian", seed=0, keep_input=False):
        if dist == "block_orthogonal":
            raise ValueError("sketched_linear: dist='block_orthogonal' is for multichannel conv sketches; use "
                             "'gaussian', 'rademacher' or 'orthogonal'")
        super().__init__(keep_input)
        self.probes, self.dist, self.seed = int(probes), dist, int(seed)

    def keep(self, x, layer="linear"):
        x2 = x.reshape(-1, x.shape[-1])
        z = _probes(self.seed, x2.shape[0], self.probes, self.dist, 1, x)
        return self._holding(x, sketch=z.T @ x2)           # X̄ = Zᵀ x, (r, in)

    def linear_weight_cotangent(self, g):
        z = _probes(self.seed, g.shape[0], self.probes, self.dist, 1, g)
        return _linalg._matmul(g.T @ z, self.arrays["sketch"])     # W̄ ≈ (ȳᵀ Z) X̄


def _tensors(x, weight, bias):
    ts = [as_tensor(x), as_tensor(weight)] + ([] if bias is None else [as_tensor(bias)])
    return ts, any(t.tangent is not None for t in ts)


def sketched_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", *,
                    probes=16, mode="independent", dist="gaussian", seed=0, path="auto", vijp_tol=None,
                    vijp_maxiter=None):
    """conv2d (as tm.conv2d) whose weight gradient is an unbiased trace estimate from a sketch of x with
    `probes` columns regenerated from `seed` (an int). See the module docstring."""
    ts, tangent = _tensors(x, weight, bias)
    return apply(_conv.Conv2d, *ts, stride=stride, padding=padding, dilation=dilation, groups=groups,
                 padding_mode=padding_mode, vijp_tol=vijp_tol, vijp_maxiter=vijp_maxiter,
                 residual=PixelSketch(probes, mode, dist, seed, path, keep_input=tangent))


def sketched_linear(x, weight, bias=None, *, probes=16, dist="gaussian", seed=0):
    """linear (as tm.linear) whose weight gradient is an unbiased estimate from a row sketch of x."""
    ts, tangent = _tensors(x, weight, bias)
    return apply(_linalg.Linear, *ts, residual=RowSketch(probes, dist, seed, keep_input=tangent))


class TraceEstimator:
    """Trace-estimated weight gradients for Conv2d and Linear layers.

        est = TraceEstimator(probes=16, mode="multichannel", dist="gaussian", generator=0)
        y = est.conv2d(x, w, b, stride=1, padding=1)       # or est.linear(x, W, b)

    probes: r, the sketch's columns. mode: "independent" (memory r/N of the conv input) or "multichannel"
    (r/(C·N)); Linear always sketches along the rows (r/M). dist: "gaussian", "rademacher", "orthogonal" or
    (multichannel) "block_orthogonal". generator: an int seed or a numpy Generator; each call draws the seed
    of its probes from it, so the same generator seed gives the same gradients run after run (None: fresh OS
    entropy, not reproducible). exact_if_larger: a layer whose sketch would hold MORE numbers than its input
    (r > N, r > C·N, r > M) uses the exact primitive instead (same gradient in expectation, less memory).
    """

    def __init__(self, probes=16, mode="independent", dist="gaussian", generator=None, path="auto",
                 exact_if_larger=True):
        _check_dist(mode, dist)
        if int(probes) < 1:
            raise ValueError(f"TraceEstimator: probes must be >= 1, got {probes}")
        if path not in ("auto", "trace", "reconstruct"):
            raise ValueError(f"TraceEstimator: path must be 'auto', 'trace' or 'reconstruct', got {path!r}")
        self.probes, self.mode, self.dist, self.path = int(probes), mode, dist, path
        self.generator = _generator(generator)
        self.exact_if_larger = bool(exact_if_larger)

    def conv2d(self, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", **kw):
        from ..functional import conv2d
        x_shape = as_tensor(x).shape
        if len(x_shape) != 4:
            raise ShapeError(f"TraceEstimator.conv2d: x must be (N, C, H, W), got shape {tuple(x_shape)}")
        dim = x_shape[2] * x_shape[3] * (x_shape[1] if self.mode == "multichannel" else 1)
        if self.exact_if_larger and self.probes > dim:
            return conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode, **kw)
        return sketched_conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode, probes=self.probes,
                               mode=self.mode, dist=self.dist, seed=new_seed(self.generator), path=self.path, **kw)

    def linear(self, x, weight, bias=None):
        from ..functional import linear
        x_shape = as_tensor(x).shape
        rows = int(np.prod(x_shape[:-1])) if len(x_shape) > 1 else 1
        if self.exact_if_larger and self.probes > rows:
            return linear(x, weight, bias)
        dist = "orthogonal" if self.dist == "block_orthogonal" else self.dist
        return sketched_linear(x, weight, bias, probes=self.probes, dist=dist, seed=new_seed(self.generator))

    def memory_ratio(self, x_shape, layer="conv2d"):
        """Floats kept for the weight gradient / floats of the input (what the sketch saves)."""
        if layer == "linear":
            rows = int(np.prod(x_shape[:-1]))
            return min(1.0, self.probes / rows) if self.exact_if_larger else self.probes / rows
        n, c, h, w = x_shape
        dim = h * w * (c if self.mode == "multichannel" else 1)
        return min(1.0, self.probes / dim) if self.exact_if_larger else self.probes / dim

    def __repr__(self):
        return f"TraceEstimator(probes={self.probes}, mode={self.mode!r}, dist={self.dist!r})"


# ----------------------------------------------------------------------------------------------- variance
def _shifted_cotangents(y_bar, x_shape, w_shape, stride, pad, dilation):
    """a[b, o, t] = S_tᵀ ȳ[b, o] on the input grid, (B, C_out, T, H, W), float64 host arrays."""
    n, c, h, w = x_shape
    co, _, kh, kw = w_shape
    y2 = np.ascontiguousarray(y_bar.reshape((n * co, 1) + y_bar.shape[2:]), dtype=np.float64)
    out = np.empty((n, co, kh * kw, h, w))
    for t in range(kh * kw):
        e = np.zeros((1, 1, kh, kw))
        e[0, 0, t // kw, t % kw] = 1.0
        out[:, :, t] = kernels.conv2d_grad_input(y2, e, (n * co, 1, h, w), stride, pad, dilation, 1
                                                 ).reshape(n, co, h, w)
    return out


def trace_variance(x, y_bar, w_shape, stride=1, padding=0, dilation=1, groups=1, probes=16,
                   mode="independent", dist="gaussian"):
    """The exact variance of every entry of the conv2d weight estimate (shape w_shape), for Gaussian or
    Rademacher probes, zero padding, from x and ȳ (host arrays; small shapes: it forms B² Gram terms)."""
    if dist not in ("gaussian", "rademacher"):
        raise ValueError("trace_variance: the closed form is for dist='gaussian' or 'rademacher'")
    x = np.asarray(x, dtype=np.float64)
    y_bar = np.asarray(y_bar, dtype=np.float64)
    stride, pad, dilation, groups, _ = _conv.conv_config(x.shape, w_shape, None, stride, padding, dilation,
                                                         groups, "zeros")
    n, c, h, w = x.shape
    co, cg, kh, kw = w_shape
    a = _shifted_cotangents(y_bar, x.shape, w_shape, stride, pad, dilation).reshape(n, co, kh * kw, h * w)
    xs = x.reshape(n, c, h * w)
    og = co // groups
    cidx = (np.arange(co)[:, None] // og) * cg + np.arange(cg)[None, :]          # (co, cg): global channel
    # ‖A‖² = Σ_bb' ⟨a_b, a_b'⟩ ⟨x_b, x_b'⟩ (x_b the whole sketched vector: one channel, or all of them)
    gaa = np.einsum("botn,potn->otbp", a, a)                                     # (co, T, B, B)
    if mode == "independent":
        gxx = np.einsum("bcn,pcn->cbp", xs, xs)[cidx]                            # (co, cg, B, B)
    else:
        gxx = np.broadcast_to(np.einsum("bcn,pcn->bp", xs, xs), (co, cg, n, n))
    fro = np.einsum("otbp,ocbp->oct", gaa, gxx)
    # tr(A²) = Σ_bb' ⟨a_b, x_b'⟩ ⟨a_b', x_b⟩ (only channel c of x_b' meets a_b)
    cross = np.einsum("botn,pcn->ocbpt", a, xs)                                  # (co, C, B, B, T)
    cross = cross[np.arange(co)[:, None], cidx]                                  # (co, cg, B, B, T)
    tr2 = np.einsum("ocbpt,ocpbt->oct", cross, cross)
    var = fro + tr2
    if dist == "rademacher":
        # − 2 Σ_i A_ii², A_ii = Σ_b x_b[i] a_b[i] (only channel c's diagonal block is nonzero)
        diag = np.einsum("botn,bcn->octn", a, xs)[np.arange(co)[:, None], cidx]  # (co, cg, T, N)
        var = var - 2 * (diag ** 2).sum(-1)
    return (var / probes).reshape(w_shape)


def linear_trace_variance(x, y_bar, probes=16, dist="gaussian"):
    """Variance of every entry of the sketched linear weight estimate: entry (o, i) is ⟨ȳ_o, Z Zᵀ x_i⟩ over
    the M rows: (‖ȳ_o‖²‖x_i‖² + ⟨ȳ_o, x_i⟩²)/r, minus 2 Σ_m ȳ_mo² x_mi² / r for Rademacher."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
    g = np.asarray(y_bar, dtype=np.float64).reshape(-1, np.shape(y_bar)[-1])
    var = np.outer((g ** 2).sum(0), (x ** 2).sum(0)) + (g.T @ x) ** 2
    if dist == "rademacher":
        var = var - 2 * (g.T ** 2) @ (x ** 2)
    elif dist != "gaussian":
        raise ValueError("linear_trace_variance: the closed form is for dist='gaussian' or 'rademacher'")
    return var / probes
