"""2-D convolution (NCHW cross-correlation, as in PyTorch): forward, jvp, vjp and the vijp along x.

    y[n, o, p, q] = b[o] + sum_{c, i, j} w[o, c, i, j] * x_pad[n, g*Cg + c, p*sh + i*dh, q*sw + j*dw]

(o in group g, Cg = C_in / groups). The map is bilinear in (x, w), so
    jvp:  y_dot = conv(x_dot, w) + conv(x, w_dot) + b_dot
    vjp:  x_bar = conv_transpose(y_bar, w)   (needs w)      w_bar = y_bar (*) x   (needs x)    b_bar = sum y_bar
The residuals are declared by purpose: w is kept for the x cotangent, x for the w cotangent (so Moonwalk's
input-only reverse pass never stores the layer input). The heavy lifting is tinymoon.kernels (im2col + GEMM).

Padding: an int, a pair (ph, pw), explicit ((top, bottom), (left, right)), "valid" (none) or "same" (stride 1
only: total = dilation * (k - 1) per axis, split as total // 2 before and the rest after, so an odd total puts
the extra row/column at the BOTTOM/RIGHT, as PyTorch and TensorFlow do). padding_mode "zeros" or "circular"
(the input is wrapped around before a padding-free convolution).

Inverse mode along x (Moonwalk): x_bar = y_bar J, recover y_bar. Which configurations have a vijp, and how:
  1. non-overlapping windows (padding 0, dilation*(k-1) < stride per axis; this covers the 1x1 conv with stride 1
     and the patchify conv kernel = stride): every input pixel is read by at most one output position, so J is
     block-diagonal over patches with block M = w[g] as (Og, Cg*kh*kw). Exact dense solve per patch; exists
     with no fragment iff M has full row rank (Og <= Cg*kh*kw). Otherwise (an expanding 1x1 conv, or a
     rank-deficient M) the fragment is y_bar on Og - rank(M) output channels per pixel, the SAME channels at
     every pixel, chosen by pivoted Gram-Schmidt on M's rows (the kept rows are the best-conditioned basis).
  2. stride 1, circular padding, "same" output size, C_out <= C_in: the 2-D DFT diagonalises J; per frequency
     X_bar(w) = Y_bar(w) K(w) with K(w) the C_out x C_in kernel transform, and
     Y_bar(w) = X_bar(w) K(w)^H (K(w) K(w)^H)^-1. Exists iff every K(w) has full row rank (checked: we raise
     when the worst frequency's condition number exceeds 1 / (1000 eps)).
  3. stride 1, zero padding, "same" output size, C_out <= C_in: conjugate gradients on the normal equations
     y_bar (J J^T) = x_bar J^T (one forward and one transposed conv per step), preconditioned by the circular
     solve of case 2, started from it. Stops when ||x_bar J^T - y_bar J J^T|| <= tol * ||x_bar J^T|| per sample
     (tol: the `vijp_tol` parameter, default 1e-10 in float64 and 1e-5 in float32; at most `vijp_maxiter`
     steps, default 500); exists iff J has full row rank, which C_out <= C_in alone does not guarantee, so
     once per context a solve with a random right-hand side certifies it (a null vector of J J^T would stall
     that solve); if CG does not reach tol we raise with the residual reached.
  Anything else (overlapping strided windows, other dilated or padded layouts, channel-expanding k > 1, the
  weight as the data path) raises NotInvertibleError naming the configuration and the supported ones.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..backend import get_array_module, to_host
from ..errors import NotInvertibleError, ShapeError
from .base import Primitive, add_terms, call, on_tensors

CG_TOL = {np.dtype("float64"): 1e-10, np.dtype("float32"): 1e-5}
CG_MAXITER = 500
# A solve whose matrix has condition number above 1 / (COND_EPS_FACTOR * eps) would lose all but ~3 digits:
# we call such a matrix rank-deficient (a fragment in case 1, an error in case 2).
COND_EPS_FACTOR = 1000.0


# ------------------------------------------------------------------------------------- parameters
def _int_pair(v, what, op="conv2d"):
    if isinstance(v, (int, np.integer)):
        v = (int(v), int(v))
    try:
        v = tuple(int(t) for t in v)
    except TypeError:
        v = ()
    if len(v) != 2:
        raise ShapeError(f"{op}: {what} must be an int or a pair of ints, got {v!r}")
    return v


def _resolve_padding(padding, ksize, dilation, stride):
    """((top, bottom), (left, right)) from int | pair | ((t, b), (l, r)) | "valid" | "same"."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding != "same":
            raise ShapeError(f"conv2d: padding must be an int, a pair, ((top, bottom), (left, right)), 'valid' "
                             f"or 'same'; got {padding!r}")
        if stride != (1, 1):
            raise ShapeError(f"conv2d: padding='same' needs stride 1 (got stride={stride}); give the padding "
                             "explicitly for strided convolutions")
        out = []
        for k, d in zip(ksize, dilation):
            total = d * (k - 1)
            out.append((total // 2, total - total // 2))    # odd total: the extra goes bottom/right
        return tuple(out)
    if isinstance(padding, (int, np.integer)):
        return ((int(padding),) * 2, (int(padding),) * 2)
    padding = tuple(padding)
    if len(padding) == 2 and all(isinstance(p, (int, np.integer)) for p in padding):
        return ((int(padding[0]),) * 2, (int(padding[1]),) * 2)
    if len(padding) == 2:
        return tuple(_int_pair(p, "padding") for p in padding)
    raise ShapeError(f"conv2d: cannot read padding={padding!r}")


def conv_config(x_shape, w_shape, b_shape, stride, padding, dilation, groups, padding_mode):
    """Validated (stride, padding pairs, dilation, groups, output spatial size); ShapeError naming x and w."""
    what = f"x {tuple(x_shape)}, weight {tuple(w_shape)}"
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ShapeError(f"conv2d: x must be (N, C_in, H, W) and weight (C_out, C_in/groups, kh, kw); got {what}")
    stride, dilation = _int_pair(stride, "stride"), _int_pair(dilation, "dilation")
    groups = int(groups)
    if min(stride) < 1 or min(dilation) < 1 or groups < 1:
        raise ShapeError(f"conv2d: need stride >= 1, dilation >= 1, groups >= 1; got stride={stride}, "
                         f"dilation={dilation}, groups={groups}")
    if padding_mode not in ("zeros", "circular"):
        raise ShapeError(f"conv2d: padding_mode must be 'zeros' or 'circular', got {padding_mode!r}")
    n, c_in, h, wd = x_shape
    c_out, cg, kh, kw = w_shape
    if c_in % groups or c_out % groups:
        raise ShapeError(f"conv2d: groups={groups} must divide both C_in={c_in} and C_out={c_out} ({what})")
    if cg * groups != c_in:
        raise ShapeError(f"conv2d: channel mismatch: x has C_in={c_in} channels but weight expects "
                         f"{cg} x groups={groups} = {cg * groups} ({what})")
    if b_shape is not None and tuple(b_shape) != (c_out,):
        raise ShapeError(f"conv2d: bias must have shape ({c_out},), got {tuple(b_shape)} ({what})")
    pad = _resolve_padding(padding, (kh, kw), dilation, stride)
    if min(min(p) for p in pad) < 0:
        raise ShapeError(f"conv2d: padding must be >= 0, got {pad}")
    if padding_mode == "circular" and (max(pad[0]) > h or max(pad[1]) > wd):
        raise ShapeError(f"conv2d: circular padding {pad} is larger than the input ({what})")
    hp, wp = h + sum(pad[0]), wd + sum(pad[1])
    ekh, ekw = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    if ekh > hp or ekw > wp:
        raise ShapeError(f"conv2d: kernel {kh}x{kw} (dilated {ekh}x{ekw}) is larger than the padded input "
                         f"{hp}x{wp} ({what}, padding {pad})")
    out_hw = ((hp - ekh) // stride[0] + 1, (wp - ekw) // stride[1] + 1)
    return stride, pad, dilation, groups, out_hw


def _circular_pad(x, pad):
    (pt, pb), (pl, pr) = pad
    if not (pt or pb or pl or pr):
        return x
    return get_array_module(x).pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), mode="wrap")


def _fold_circular(x_bar_pad, pad, hw):
    """Adjoint of _circular_pad: add the wrapped border back onto the pixels it was copied from."""
    (pt, pb), (pl, pr) = pad
    h, w = hw
    if not (pt or pb or pl or pr):
        return x_bar_pad
    rows = x_bar_pad[:, :, pt:pt + h].copy()
    for r in list(range(pt)) + list(range(pt + h, pt + h + pb)):     # the few wrapped rows
        rows[:, :, (r - pt) % h] += x_bar_pad[:, :, r]
    out = rows[:, :, :, pl:pl + w].copy()
    for c in list(range(pl)) + list(range(pl + w, pl + w + pr)):     # the few wrapped columns
        out[:, :, :, (c - pl) % w] += rows[:, :, :, c]
    return out




# ---------------------------------------------------------------------------------- linear pieces
def _lin(ctx, x, w, b=None):
    """conv(x, w) (+ b, added by the kernel in the same pass), in this context's padding mode."""
    p = ctx.cfg
    if ctx.params["padding_mode"] == "circular":
        return kernels.conv2d_forward(_circular_pad(x, p["pad"]), w, p["stride"], ((0, 0), (0, 0)),
                                      p["dilation"], p["groups"], bias=b)
    return kernels.conv2d_forward(x, w, p["stride"], p["pad"], p["dilation"], p["groups"], bias=b)


def _lin_t(ctx, y_bar, w, x_shape):
    """y_bar J (the x cotangent): conv_transpose(y_bar, w)."""
    p = ctx.cfg
    y_bar = get_array_module(y_bar).ascontiguousarray(y_bar)
    if ctx.params["padding_mode"] == "circular":
        (pt, pb), (pl, pr) = p["pad"]
        padded = (x_shape[0], x_shape[1], x_shape[2] + pt + pb, x_shape[3] + pl + pr)
        g = kernels.conv2d_grad_input(y_bar, w, padded, p["stride"], ((0, 0), (0, 0)), p["dilation"], p["groups"])
        return _fold_circular(g, p["pad"], x_shape[2:])
    return kernels.conv2d_grad_input(y_bar, w, tuple(x_shape), p["stride"], p["pad"], p["dilation"], p["groups"])


# ---- the three bilinear maps, as rules use them --------------------------------------------------------------
# conv(x, w), its input cotangent y_bar J_x(w) = conv_transpose(y_bar, w) and its weight cotangent
# W_bar(x, y_bar) are bilinear, and the derivatives of each are the other two — so with the two cotangent maps
# as primitives of their own (below), conv2d is differentiable to any order. On arrays each helper runs its
# kernel at once (ops.base.call); on tensors (a differentiable backward) it applies the primitive.
def _conv_map(ctx, x, w):
    """conv(x, w) without bias, in ctx's configuration."""
    if on_tensors(get_array_module(x, w)):
        p = ctx.cfg
        return call(Conv2d, x, w, stride=p["stride"], padding=p["pad"], dilation=p["dilation"],
                    groups=p["groups"], padding_mode=ctx.params["padding_mode"])
    return _lin(ctx, x, w)


def _input_map(ctx, y_bar, w, x_shape):
    """y_bar J_x(w): the input cotangent."""
    return call(Conv2dGradInput, y_bar, w, cfg=ctx.cfg, padding_mode=ctx.params["padding_mode"],
                x_shape=tuple(x_shape))


def _weight_map(ctx, x, y_bar, w_shape):
    """W_bar with <W_bar, V> = <y_bar, conv(x, V)>: the weight cotangent."""
    return call(Conv2dGradWeight, x, y_bar, cfg=ctx.cfg, padding_mode=ctx.params["padding_mode"],
                w_shape=tuple(w_shape))


class Conv2d(Primitive):
    """y = conv2d(x, w) (+ b). Inputs (x, w) or (x, w, b). See the module docstring for the vijp cases.
    Any order: the cotangent maps are the primitives Conv2dGradInput and Conv2dGradWeight."""
    name = "conv2d"
    submersive = False       # expanding or rank-deficient kernels erase cotangent components
    orders = None

    @staticmethod
    def forward(ctx, x, w, b=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
                vijp_tol=None, vijp_maxiter=None, residual=None):
        stride, pad, dilation, groups, out_hw = conv_config(
            x.shape, w.shape, None if b is None else b.shape, stride, padding, dilation, groups, padding_mode)
        ctx.cfg = dict(stride=stride, pad=pad, dilation=dilation, groups=groups, out_hw=out_hw)
        ctx.x_shape, ctx.w_shape = tuple(x.shape), tuple(w.shape)
        ctx.save_for(0, w=w)          # the x cotangent (and x tangent) needs the weight
        if residual is None:
            ctx.save_for(1, x=x)      # the w cotangent (and w tangent) needs the input
        elif ctx.needs[1]:
            # another residual policy (tinymoon.randomized's sketches): keep what it keeps of x instead, and
            # estimate w̄ from it in the vjp; x itself only for an exact forward-mode term conv(x, ẇ)
            ctx.save(x_kept=residual.keep(x, "conv2d"))
            if residual.keep_input:
                ctx.save(x=x)
        return _lin(ctx, x, w, b)

    policy_order_why = "its weight cotangent is an estimate from what the policy keeps of x"

    @classmethod
    def jvp(cls, ctx, x_dot, w_dot, b_dot=None):
        # y_dot = conv(x_dot, w) + conv(x, w_dot) + b_dot
        return add_terms(None if x_dot is None else _lin(ctx, x_dot, ctx.w),
                         None if w_dot is None else _lin(ctx, ctx.x, w_dot),
                         None if b_dot is None else b_dot.reshape(1, -1, 1, 1))

    @classmethod
    def vjp(cls, ctx, y_bar):
        xp = get_array_module(y_bar)
        if y_bar.size == 0:          # an empty batch (or output): every cotangent is a zero array of its shape
            shapes = (ctx.x_shape, ctx.w_shape, ctx.w_shape[:1])[:len(ctx.needs)]
            return tuple(xp.zeros(s, y_bar.dtype) if n else None for s, n in zip(shapes, ctx.needs))
        x_bar = _input_map(ctx, y_bar, ctx.w, ctx.x_shape) if ctx.needs[0] else None       # conv_transpose(ȳ, w)
        w_bar = None
        if ctx.needs[1] and ctx.params.get("residual") is not None:
            w_bar = ctx.x_kept.conv_weight_cotangent(y_bar, ctx)                           # estimated from x_kept
        elif ctx.needs[1]:
            w_bar = _weight_map(ctx, ctx.x, y_bar, ctx.w_shape)                             # ȳ ⋆ x
        out = (x_bar, w_bar)
        if len(ctx.needs) == 3:
            out += (y_bar.sum(axis=(0, 2, 3)) if ctx.needs[2] else None,)                  # b̄ = Σ ȳ
        return out

    # ---- inverse mode ------------------------------------------------------------------------------
    @classmethod
    def _case(cls, ctx):
        """Which vijp applies: "patch" | "fft" | "cg", or a NotInvertibleError (returned; vijp raises it)."""
        p = ctx.cfg
        (sh, sw), pad, (dh, dw), groups = p["stride"], p["pad"], p["dilation"], p["groups"]
        c_out, cg, kh, kw = ctx.w_shape
        c_in = ctx.x_shape[1]
        config = (f"x {ctx.x_shape}, weight {ctx.w_shape}, stride {(sh, sw)}, padding {pad}, dilation "
                  f"{(dh, dw)}, groups {groups}, padding_mode {ctx.params['padding_mode']!r}")
        if ctx.wrt != 0:
            return NotInvertibleError(f"conv2d: no vijp along the {'weight' if ctx.wrt == 1 else 'bias'} (the data "
                                      "path must be x); use reverse mode for parameter gradients")
        no_pad = pad == ((0, 0), (0, 0))
        if no_pad and dh * (kh - 1) < sh and dw * (kw - 1) < sw:
            return "patch"
        same = (sh, sw) == (1, 1) and sum(pad[0]) == dh * (kh - 1) and sum(pad[1]) == dw * (kw - 1)
        if same and c_out <= c_in:
            return "fft" if ctx.params["padding_mode"] == "circular" else "cg"
        why = ("the output has more channels than the input (C_out > C_in) with a kernel larger than 1x1"
               if same else "the windows overlap or the layout is neither non-overlapping nor 'same'")
        return NotInvertibleError(
            f"conv2d: no vijp for this configuration ({config}): {why}, so the input cotangent does not determine "
            "the output cotangent (or we have no solver for it). Supported: (1) non-overlapping windows - "
            "padding 0 and dilation*(k-1) < stride (1x1 convs, patchify kernel = stride); (2) stride 1, circular "
            "'same' padding, C_out <= C_in (FFT); (3) stride 1, zero 'same' padding, C_out <= C_in (CG). "
            "Use reverse mode, or a layer from this list.")

    @classmethod
    def fragment(cls, ctx, y_bar):
        case = cls._case(ctx)
        if case != "patch":
            return None           # cases 2-3 are submersive when they exist; unsupported ones raise in vijp
        s_all = _patch_solver(ctx)["s_all"]
        if not len(s_all):
            return None
        return y_bar[:, s_all]    # y_bar on the erased output channels, at every pixel

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        case = cls._case(ctx)
        if isinstance(case, Exception):
            raise case
        if case == "patch":
            return _patch_vijp(cls, ctx, x_bar, fragment)
        if case == "fft":
            return _fft_vijp(ctx, x_bar)
        return _cg_vijp(ctx, x_bar)


class Conv2dGradInput(Primitive):
    """x_bar = T(y_bar, w) = y_bar J_x(w) = conv_transpose(y_bar, w): conv2d's input cotangent, bilinear in
    (y_bar, w). Its rules come from <z, T(y, w)> = <conv(z, w), y>:
    jvp T(y_dot, w) + T(y, w_dot);  vjp y: conv(z_bar, w), w: the weight cotangent of conv at input z_bar and
    output cotangent y."""
    name = "conv2d_grad_input"
    orders = None

    @staticmethod
    def forward(ctx, y_bar, w, cfg=None, padding_mode="zeros", x_shape=None):
        ctx.cfg, ctx.w_shape = cfg, tuple(w.shape)
        ctx.save_for(0, w=w)
        ctx.save_for(1, y_bar=y_bar)
        return _lin_t(ctx, y_bar, w, x_shape)

    @staticmethod
    def jvp(ctx, y_dot, w_dot):
        xs = ctx.params["x_shape"]
        return add_terms(None if y_dot is None else _lin_t(ctx, y_dot, ctx.w, xs),
                         None if w_dot is None else _lin_t(ctx, ctx.y_bar, w_dot, xs))

    @staticmethod
    def vjp(ctx, z_bar):
        return (_conv_map(ctx, z_bar, ctx.w) if ctx.needs[0] else None,
                _weight_map(ctx, z_bar, ctx.y_bar, ctx.w_shape) if ctx.needs[1] else None)


class Conv2dGradWeight(Primitive):
    """W_bar = V(x, y_bar), defined by <W, V(x, y)> = <y, conv(x, W)>: conv2d's weight cotangent, bilinear in
    (x, y_bar). jvp V(x_dot, y) + V(x, y_dot);  vjp given v_bar (weight-shaped): x: T(y, v_bar) (the input
    cotangent of conv with weight v_bar), y: conv(x, v_bar)."""
    name = "conv2d_grad_weight"
    orders = None

    @staticmethod
    def forward(ctx, x, y_bar, cfg=None, padding_mode="zeros", w_shape=None):
        ctx.cfg, ctx.x_shape = cfg, tuple(x.shape)
        ctx.save_for(0, y_bar=y_bar)
        ctx.save_for(1, x=x)
        return Conv2dGradWeight._v(ctx, x, y_bar)

    @staticmethod
    def _v(ctx, x, y_bar):
        p, w_shape = ctx.cfg, ctx.params["w_shape"]
        y_bar = get_array_module(y_bar).ascontiguousarray(y_bar)
        if ctx.params["padding_mode"] == "circular":
            return kernels.conv2d_grad_weight(_circular_pad(x, p["pad"]), y_bar, w_shape, p["stride"], ((0, 0), (0, 0)),
                                              p["dilation"], p["groups"])
        return kernels.conv2d_grad_weight(x, y_bar, w_shape, p["stride"], p["pad"], p["dilation"], p["groups"])

    @staticmethod
    def jvp(ctx, x_dot, y_dot):
        return add_terms(None if x_dot is None else Conv2dGradWeight._v(ctx, x_dot, ctx.y_bar),
                         None if y_dot is None else Conv2dGradWeight._v(ctx, ctx.x, y_dot))

    @staticmethod
    def vjp(ctx, v_bar):
        return (_input_map(ctx, ctx.y_bar, v_bar, ctx.x_shape) if ctx.needs[0] else None,
                _conv_map(ctx, ctx.x, v_bar) if ctx.needs[1] else None)


# ------------------------------------------------- case 1: non-overlapping windows (dense solve per patch)
def _independent_rows(m, rtol):
    """Pivoted Gram-Schmidt on the rows of m: indices of a best-conditioned maximal independent set of rows
    (at each step the row with the largest residual norm; rows whose residual falls below rtol * the largest
    row norm are dependent)."""
    r = np.array(m, dtype=np.float64)
    norms = np.einsum("ij,ij->i", r, r)
    scale = np.sqrt(norms.max()) if norms.size else 0.0
    chosen = []
    for _ in range(min(r.shape)):
        cand = norms.copy()
        cand[chosen] = -1.0
        j = int(np.argmax(cand))
        if scale == 0.0 or np.sqrt(max(cand[j], 0.0)) <= rtol * scale:
            break
        chosen.append(j)
        q = r[j] / np.linalg.norm(r[j])
        r -= np.outer(r @ q, q)
        norms = np.einsum("ij,ij->i", r, r)
    return sorted(chosen)


class _Solver(dict):
    """A factorisation a vijp builds once per context and keeps on it: saved with ctx.save, so its arrays
    count in the engine's saved bytes (and leave the count when the node is released) like any residual."""

    @property
    def nbytes(self):
        def size(v):
            if isinstance(v, dict):
                return sum(size(u) for u in v.values())
            if isinstance(v, (list, tuple)):
                return sum(size(u) for u in v)
            return int(getattr(v, "nbytes", 0))
        return size(dict(self))


def _patch_solver(ctx):
    """Per group g: kept rows K_g, erased rows S_g of M_g = w[g] as (Og, Cg*kh*kw), and the right inverse
    P_g = (M_K M_K^T)^-1 M_K (Cholesky once per context)."""
    cached = getattr(ctx, "_patch", None)
    if cached is not None:
        return cached
    xp = get_array_module(ctx.w)
    c_out, cg, kh, kw = ctx.w_shape
    groups = ctx.cfg["groups"]
    og = c_out // groups
    eps = np.finfo(ctx.w.dtype).eps
    w_host = to_host(ctx.w).astype(np.float64).reshape(groups, og, cg * kh * kw)
    per_group, s_all = [], []
    for g in range(groups):
        m = w_host[g]
        keep = _independent_rows(m, COND_EPS_FACTOR * eps * max(m.shape))
        erased = [i for i in range(og) if i not in keep]
        mk = m[keep]
        chol = np.linalg.cholesky(mk @ mk.T)                           # M_K M_K^T = L L^T
        pinv = np.linalg.solve(chol.T, np.linalg.solve(chol, mk))      # (M_K M_K^T)^-1 M_K
        per_group.append(dict(keep=keep, erased=erased, p=xp.asarray(pinv.astype(ctx.w.dtype)),
                              m_s=xp.asarray(m[erased].astype(ctx.w.dtype))))
        s_all += [g * og + i for i in erased]
    ctx.save(_patch=_Solver(groups=per_group, s_all=s_all))
    return ctx._patch


def _patch_vijp(cls, ctx, x_bar, fragment):
    # Condition: windows do not overlap (padding 0, dilation*(k-1) < stride). Exact; no fragment iff every
    # M_g has full row rank, else the fragment holds y_bar on the erased channels S.
    xp = get_array_module(x_bar)
    solver = _patch_solver(ctx)
    n, c_in, h, w = ctx.x_shape
    c_out, cg, kh, kw = ctx.w_shape
    (sh, sw), (dh, dw), groups = ctx.cfg["stride"], ctx.cfg["dilation"], ctx.cfg["groups"]
    ho, wo = ctx.cfg["out_hw"]
    og = c_out // groups
    if solver["s_all"] and fragment is None:
        raise cls.missing_fragment(f"{len(solver['s_all'])} output channel(s) per pixel (the weight's rows are not "
                                   f"independent: C_out={c_out}, rank {c_out - len(solver['s_all'])})")
    # gather x_bar at the taps of every window: (N, G, Cg*kh*kw, Ho*Wo); uncovered pixels are never read
    hh, ww = ho * sh, wo * sw
    xb = xp.zeros((n, c_in, hh, ww), x_bar.dtype)
    xb[:, :, :min(h, hh), :min(w, ww)] = x_bar[:, :, :hh, :ww]
    xb = xb.reshape(n, c_in, ho, sh, wo, sw)[:, :, :, 0:dh * (kh - 1) + 1:dh, :, 0:dw * (kw - 1) + 1:dw]
    patches = xb.transpose(0, 1, 3, 5, 2, 4).reshape(n, groups, cg * kh * kw, ho * wo)
    y_bar = xp.empty((n, c_out, ho * wo), x_bar.dtype)
    frag = None if fragment is None else fragment.reshape(n, -1, ho * wo)
    f_at = 0
    for g, sol in enumerate(solver["groups"]):
        rhs = patches[:, g]
        base = g * og
        if sol["erased"]:
            y_s = frag[:, f_at:f_at + len(sol["erased"])]
            f_at += len(sol["erased"])
            y_bar[:, [base + i for i in sol["erased"]]] = y_s
            rhs = rhs - xp.einsum("nsl,sk->nkl", y_s, sol["m_s"])       # x_bar - y_S M_S
        y_bar[:, [base + i for i in sol["keep"]]] = xp.matmul(sol["p"], rhs)   # y_K = (M_K M_K^T)^-1 M_K rhs
    return y_bar.reshape(n, c_out, ho, wo)


# ------------------------------------------------------- cases 2-3: stride 1, 'same' (FFT and CG)
def _kernel_spectrum(ctx, xp):
    """K(w) for every frequency of the rfft2 grid: (H, W//2+1, C_out, C_in) complex; the kernel embedded
    circularly at offsets (i*dh - top, j*dw - left), so that the circular conv is y = F^-1 conj(K) F x."""
    n, c_in, h, w = ctx.x_shape
    c_out, cg, kh, kw = ctx.w_shape
    groups = ctx.cfg["groups"]
    (dh, dw), ((pt, _), (pl, _)) = ctx.cfg["dilation"], ctx.cfg["pad"]
    og = c_out // groups
    emb = xp.zeros((c_out, c_in, h, w), ctx.w.dtype)
    for g in range(groups):                                   # block-diagonal over groups
        blk = ctx.w[g * og:(g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                emb[g * og:(g + 1) * og, g * cg:(g + 1) * cg, (i * dh - pt) % h, (j * dw - pl) % w] += blk[:, :, i, j]
    k_hat = xp.fft.rfft2(emb, axes=(-2, -1))
    return k_hat.transpose(2, 3, 0, 1)


def _spectral_solver(ctx, xp, ridge=False):
    """G(w) = K(w) K(w)^H per frequency and P(w) = K(w)^H G(w)^-1 (so Y_bar = X_bar P), cached on ctx."""
    key = "_spec_ridge" if ridge else "_spec"
    cached = getattr(ctx, key, None)
    if cached is not None:
        return cached
    k_hat = _kernel_spectrum(ctx, xp)
    gram = k_hat @ xp.conj(k_hat.swapaxes(-1, -2))                      # (H, W', C_out, C_out)
    out = _Solver(k_hat=k_hat)
    if ridge:
        # preconditioner only: a tiny ridge keeps it SPD where the circular operator is singular
        scale = float(xp.abs(xp.trace(gram, axis1=-2, axis2=-1)).max()) / gram.shape[-1]
        eps = np.finfo(ctx.w.dtype).eps
        gram = gram + (COND_EPS_FACTOR * eps * max(scale, 1e-300)) * xp.eye(gram.shape[-1])
        out["gram_inv"] = xp.linalg.inv(gram)                           # small C_out x C_out, once per ctx
    else:
        s = xp.linalg.svd(k_hat, compute_uv=False)                      # singular values per frequency
        smin = s[..., -1]
        cond = xp.where(smin > 0, s[..., 0] / xp.where(smin > 0, smin, 1), xp.inf)
        worst = np.unravel_index(int(xp.argmax(cond)), cond.shape)
        limit = 1.0 / (COND_EPS_FACTOR * np.finfo(ctx.w.dtype).eps)
        if float(cond[worst]) > limit:
            raise NotInvertibleError(
                f"conv2d: circular 'same' vijp does not exist here: K(w) is (numerically) rank-deficient at "
                f"frequency {tuple(int(v) for v in worst)} of the rfft2 grid, condition number "
                f"{float(cond[worst]):.3e} > {limit:.1e} (x {ctx.x_shape}, weight {ctx.w_shape}). The kernel "
                "erases cotangent components; use reverse mode")
        # P = K^H G^-1  <=>  P^H = G^-1 K  (G Hermitian)
        out["p"] = xp.conj(xp.linalg.solve(gram, k_hat).swapaxes(-1, -2))   # (H, W', C_in, C_out)
        out["cond"] = float(cond[worst])
    ctx.save(**{key: out})
    return out


def _fft_vijp(ctx, x_bar):
    # Condition: stride 1, circular 'same' padding, C_out <= C_in and every K(w) of full row rank (checked).
    # Y_bar(w) = X_bar(w) K(w)^H (K(w) K(w)^H)^-1, per frequency.
    xp = get_array_module(x_bar)
    sol = _spectral_solver(ctx, xp)
    h, w = ctx.x_shape[2:]
    xf = xp.fft.rfft2(x_bar, axes=(-2, -1)).transpose(0, 2, 3, 1)        # (N, H, W', C_in)
    yf = xp.einsum("nhwc,hwco->nhwo", xf, sol["p"])
    return xp.fft.irfft2(yf.transpose(0, 3, 1, 2), s=(h, w), axes=(-2, -1)).astype(x_bar.dtype)


def _cg_solve(ctx, b, tol, maxiter):
    """Preconditioned CG for y (J J^T) = b, per sample; returns (y, worst relative residual, iterations)."""
    xp = get_array_module(b)
    dtype = b.dtype
    h, w = ctx.x_shape[2:]
    g_inv = _spectral_solver(ctx, xp, ridge=True)["gram_inv"]

    def precond(r):                     # R(w) -> R(w) G(w)^-1 (rows, per frequency)
        rf = xp.fft.rfft2(r, axes=(-2, -1)).transpose(0, 2, 3, 1)
        zf = xp.einsum("nhwo,hwop->nhwp", rf, g_inv)
        return xp.fft.irfft2(zf.transpose(0, 3, 1, 2), s=(h, w), axes=(-2, -1)).astype(dtype)

    def normal(v):                      # v -> v J J^T: transposed conv, then conv
        return _lin(ctx, _lin_t(ctx, v, ctx.w, (v.shape[0],) + ctx.x_shape[1:]), ctx.w)

    def dot(a, c):
        return (a * c).sum(axis=(1, 2, 3), keepdims=True)

    b_norm = xp.sqrt(dot(b, b))
    b_norm = xp.where(b_norm == 0, 1, b_norm)
    y = precond(b)                      # the circular solve: the exact answer when padding were circular
    r = b - normal(y)
    z = precond(r)
    p = z
    rz = dot(r, z)
    res = float((xp.sqrt(dot(r, r)) / b_norm).max())
    it = 0
    while res > tol and it < maxiter:
        ap = normal(p)
        pap = dot(p, ap)
        alpha = rz / xp.where(pap == 0, 1, pap)
        y = y + alpha * p
        r = r - alpha * ap
        res = float((xp.sqrt(dot(r, r)) / b_norm).max())
        it += 1
        if res <= tol or not res < 1e8:           # converged, or diverging (a singular J J^T): stop
            break
        z = precond(r)
        rz_new = dot(r, z)
        p = z + (rz_new / xp.where(rz == 0, 1, rz)) * p
        rz = rz_new
    return y, res, it


def _cg_vijp(ctx, x_bar):
    # Condition: stride 1, zero 'same' padding, C_out <= C_in, J of full row rank. CG on the normal
    # equations y_bar (J J^T) = x_bar J^T, preconditioned by the circular solve (y G(w)^-1 per frequency),
    # to ||b - y A|| <= tol ||b|| per sample; raises with the residual reached when it does not get there.
    # C_out <= C_in does not make J full rank (e.g. dilated taps that only ever meet padding): a consistent
    # singular system would still converge, to a WRONG y_bar. So once per context we certify that J J^T is
    # invertible by solving it for a random right-hand side (fixed seed): with a null vector v, the residual
    # keeps its component <b, v> and CG cannot reach tol.
    xp = get_array_module(x_bar)
    tol = ctx.params.get("vijp_tol") or CG_TOL.get(np.dtype(x_bar.dtype), 1e-5)
    maxiter = ctx.params.get("vijp_maxiter") or CG_MAXITER
    config = f"x {ctx.x_shape}, weight {ctx.w_shape}, padding {ctx.cfg['pad']}, dilation {ctx.cfg['dilation']}"
    if not getattr(ctx, "_cg_certified", False):
        probe = xp.asarray(np.random.default_rng(0).standard_normal((1, ctx.w_shape[0]) + ctx.cfg["out_hw"]),
                           dtype=x_bar.dtype)
        _, res, it = _cg_solve(ctx, probe, tol, maxiter)
        if not res <= tol:
            raise NotInvertibleError(
                f"conv2d: no vijp for this zero-padded 'same' convolution ({config}): J J^T is singular or too badly "
                f"conditioned (J lacks full row rank) - CG on a random right-hand side stalls at relative residual "
                f"{res:.3e} after {it} iterations (tolerance {tol:.1e}). Use reverse mode")
        ctx._cg_certified = True
    y, res, it = _cg_solve(ctx, _lin(ctx, x_bar, ctx.w), tol, maxiter)      # b = x_bar J^T
    ctx.cg_info = dict(iterations=it, residual=res, tol=tol)
    if not res <= tol:
        raise NotInvertibleError(
            f"conv2d: the zero-padded 'same' vijp (preconditioned CG on y_bar J J^T = x_bar J^T) did not converge: "
            f"relative residual {res:.3e} after {it} iterations, tolerance {tol:.1e} ({config}). Raise vijp_maxiter "
            "or vijp_tol, or use reverse mode")
    return y
