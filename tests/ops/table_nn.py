"""Op table rows: conv2d (with each of its vijp cases), pooling, softmax / log_softmax, cross_entropy, mse,
layer_norm, batch_norm (train and eval), dropout. Shapes stay small (N <= 2, C <= 4, H, W <= 7).

The NumPy references are deliberately naive (conv2d: explicit loops over output positions and taps), so they
share no code with tinymoon.kernels.
"""
import numpy as np
from hypothesis import strategies as st

import tinymoon as tm
from tinymoon.backend import to_device

from .spec import OpSpec, values


# ------------------------------------------------------------------------------------------ references
def _pair(v):
    return (v, v) if isinstance(v, (int, np.integer)) else tuple(v)


def ref_padding(padding, ksize, dilation):
    """((top, bottom), (left, right)); 'same' puts the odd extra at the bottom/right (PyTorch, TF)."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        tot = [d * (k - 1) for k, d in zip(ksize, dilation)]
        return tuple((t // 2, t - t // 2) for t in tot)
    if isinstance(padding, (int, np.integer)):
        return ((padding, padding), (padding, padding))
    if all(isinstance(p, (int, np.integer)) for p in padding):
        return ((padding[0],) * 2, (padding[1],) * 2)
    return tuple(tuple(p) for p in padding)


def conv2d_ref(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """Naive loops: y[n, o, p, q] = b[o] + sum_{c,i,j} w[o, c, i, j] x_pad[n, g*Cg + c, p*sh + i*dh, q*sw + j*dw]."""
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    c_out, cg, kh, kw = w.shape
    (pt, pb), (pl, pr) = ref_padding(padding, (kh, kw), (dh, dw))
    mode = "wrap" if padding_mode == "circular" else "constant"
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), mode=mode)
    n, _, hp, wp = xp.shape
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    og = c_out // groups
    y = np.zeros((n, c_out, ho, wo), x.dtype)
    for p in range(ho):
        for q in range(wo):
            for i in range(kh):
                for j in range(kw):
                    for g in range(groups):
                        patch = xp[:, g * cg:(g + 1) * cg, p * sh + i * dh, q * sw + j * dw]   # (N, Cg)
                        y[:, g * og:(g + 1) * og, p, q] += patch @ w[g * og:(g + 1) * og, :, i, j].T
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def _windows(x, k, s, p, fill):
    k, s, p = _pair(k), _pair(s if s is not None else k), _pair(p)
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=fill)
    ho, wo = (xp.shape[2] - k[0]) // s[0] + 1, (xp.shape[3] - k[1]) // s[1] + 1
    out = np.empty(x.shape[:2] + (ho, wo, k[0] * k[1]), x.dtype)
    for a in range(ho):
        for c in range(wo):
            out[:, :, a, c] = xp[:, :, a * s[0]:a * s[0] + k[0], c * s[1]:c * s[1] + k[1]].reshape(x.shape[:2] + (-1,))
    return out


def max_pool_ref(x, k, s=None, p=0):
    return _windows(x, k, s, p, -np.inf).max(axis=-1)


def avg_pool_ref(x, k, s=None, p=0):
    return _windows(x, k, s, p, 0).mean(axis=-1).astype(x.dtype)


def log_softmax_ref(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def softmax_ref(x, axis=-1):
    return np.exp(log_softmax_ref(x, axis))


def cross_entropy_ref(logits, labels, reduction="mean"):
    lp = log_softmax_ref(logits, 1)
    per = -np.take_along_axis(lp, np.expand_dims(labels, 1), axis=1)[:, 0]
    return per if reduction == "none" else (per.mean() if reduction == "mean" else per.sum()).astype(logits.dtype)


def norm_ref(x, axes, w=None, b=None, eps=1e-5, mean=None, var=None):
    if mean is None:
        mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return (y if w is None else y * w) + (0 if b is None else b)


# ------------------------------------------------------------------------------------------ inputs
def well_conditioned_kernel(draw, c_out, cg, kh, kw, dtype, groups=1):
    """1.5 on the (rectangular) channel diagonal of the tap that 'same' padding aligns with the output pixel
    (index (k-1)//2), plus random taps of total norm <= 0.5: then J = 1.5 [I 0] + E with ||E|| <= 0.5, so
    sigma_min(J) >= 1 for zero and circular padding alike, and every inverse-mode solve is well conditioned."""
    og = c_out // groups
    amp = 0.5 / (kh * kw * max(cg, og))
    w = values(draw, (c_out, cg, kh, kw), "float64", -amp, amp)
    for o in range(c_out):
        w[o, (o % og) % cg, (kh - 1) // 2, (kw - 1) // 2] += 1.5
    return w.astype(dtype)


def conv_inputs(k=3, c_out_le_c_in=True, c_out=None, groups=1, bias=False, min_hw=None, conditioned=True,
                hw=(1, 7)):
    """x (N, C_in, H, W) and weight (C_out, C_in/groups, k, k) [, bias]."""
    kh, kw = _pair(k)

    def draw_inputs(draw, dtype):
        n = draw(st.integers(1, 2))
        c_in = groups * draw(st.integers(1, 4 // groups))
        if c_out is not None:
            co = c_out(draw, c_in)
        elif c_out_le_c_in:
            co = groups * draw(st.integers(1, c_in // groups))
        else:
            co = groups * draw(st.integers(1, 4 // groups))
        lo = max(hw[0], min_hw if min_hw is not None else max(kh, kw))
        h, w_ = draw(st.integers(lo, hw[1])), draw(st.integers(lo, hw[1]))
        x = values(draw, (n, c_in, h, w_), dtype)
        if conditioned:
            weight = well_conditioned_kernel(draw, co, c_in // groups, kh, kw, dtype, groups)
        else:
            weight = values(draw, (co, c_in // groups, kh, kw), dtype, -1.0, 1.0)
        out = [x, weight]
        if bias:
            out.append(values(draw, (co,), dtype))
        return out
    return draw_inputs


def images(min_hw=2, max_hw=7, max_c=3):
    def draw_inputs(draw, dtype):
        s = (draw(st.integers(1, 2)), draw(st.integers(1, max_c)), draw(st.integers(min_hw, max_hw)),
             draw(st.integers(min_hw, max_hw)))
        return [values(draw, s, dtype)]
    return draw_inputs


def matrix(max_rows=3, max_cols=5):
    def draw_inputs(draw, dtype):
        return [values(draw, (draw(st.integers(1, max_rows)), draw(st.integers(2, max_cols))), dtype)]
    return draw_inputs


def logits_labels(spatial=False):
    def draw_inputs(draw, dtype):
        n, c = draw(st.integers(1, 3)), draw(st.integers(2, 5))
        extra = (draw(st.integers(1, 3)),) if spatial else ()
        x = values(draw, (n, c) + extra, dtype)
        labels = np.random.default_rng(draw(st.integers(0, 2**31))).integers(0, c, (n,) + extra)
        return [x, labels]
    return draw_inputs


def pred_target(draw, dtype):
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 4)))
    target = values(draw, s, "float64")
    pred = target + values(draw, s, "float64", 0.1, 1.0)       # d != 0: the loss gradient J never vanishes
    return [pred.astype(dtype), target.astype(dtype)]


def _nonzero_weight(draw, shape, dtype):
    w = values(draw, shape, "float64", 0.5, 2.0)
    return (w * np.where(values(draw, shape, "float64") > 0, 1, -1)).astype(dtype)


def ln_inputs(affine, norm_dims=1):
    def draw_inputs(draw, dtype):
        lead = (draw(st.integers(1, 3)),)
        norm = tuple(draw(st.integers(2, 4)) for _ in range(norm_dims))
        out = [values(draw, lead + norm, dtype)]
        if affine:
            out += [_nonzero_weight(draw, norm, dtype), values(draw, norm, dtype)]
        return out
    return draw_inputs


def bn_inputs(affine, ndim=4):
    def draw_inputs(draw, dtype):
        c = draw(st.integers(1, 3))
        rest = tuple(draw(st.integers(2, 4)) for _ in range(ndim - 2))
        out = [values(draw, (draw(st.integers(2, 3)), c) + rest, dtype)]
        if affine:
            out += [_nonzero_weight(draw, (c,), dtype), values(draw, (c,), dtype)]
        return out
    return draw_inputs


def running_stats(c, dtype):
    """Deterministic eval-mode running statistics for C channels."""
    return np.linspace(-0.5, 0.5, c).astype(dtype), np.linspace(0.5, 2.0, c).astype(dtype)


def _bn_eval(x, w, b):
    rm, rv = (to_device(a, x.device) for a in running_stats(x.shape[1], x.dtype))
    return tm.batch_norm(x, rm, rv, w, b, training=False)


def _bn_eval_ref(x, w, b):
    rm, rv = running_stats(x.shape[1], x.dtype)
    s = (1, -1, 1, 1)
    return norm_ref(x, None, w.reshape(s), b.reshape(s), mean=rm.reshape(s), var=rv.reshape(s)).astype(x.dtype)


def _dropout_ref(x, p=0.4, seed=1234):
    keep = np.random.default_rng(seed).random(x.shape) >= p
    return (x * keep / (1 - p)).astype(x.dtype)


CONV_TOL = dict(f32_rtol=1e-4, f32_atol=1e-4)
_expand = lambda draw, c_in: draw(st.integers(c_in + 1, 4)) if c_in < 4 else 5   # noqa: E731

ROWS = [
    # conv2d: reverse/forward modes on layouts without a vijp
    OpSpec("conv2d_strided_groups", lambda x, w, b: tm.conv2d(x, w, b, stride=2, padding=1, groups=2),
           lambda x, w, b: conv2d_ref(x, w, b, stride=2, padding=1, groups=2),
           conv_inputs(groups=2, c_out_le_c_in=False, bias=True, conditioned=False), modes=("jvp", "vjp"),
           **CONV_TOL),
    OpSpec("conv2d_dilated_asym_pad", lambda x, w: tm.conv2d(x, w, stride=(1, 2), padding=((1, 0), (2, 1)), dilation=2),
           lambda x, w: conv2d_ref(x, w, stride=(1, 2), padding=((1, 0), (2, 1)), dilation=2),
           conv_inputs(k=2, c_out_le_c_in=False, conditioned=False, min_hw=2), modes=("jvp", "vjp"), **CONV_TOL),
    OpSpec("conv2d_circular_strided", lambda x, w: tm.conv2d(x, w, stride=2, padding=1, padding_mode="circular"),
           lambda x, w: conv2d_ref(x, w, stride=2, padding=1, padding_mode="circular"),
           conv_inputs(c_out_le_c_in=False, conditioned=False), modes=("jvp", "vjp"), **CONV_TOL),
    # conv2d vijp case 1: non-overlapping windows (1x1, patchify), dense solve per patch (+ fragment if expanding)
    OpSpec("conv2d_1x1", lambda x, w: tm.conv2d(x, w), lambda x, w: conv2d_ref(x, w), conv_inputs(k=1), **CONV_TOL),
    OpSpec("conv2d_1x1_expanding", lambda x, w, b: tm.conv2d(x, w, b), lambda x, w, b: conv2d_ref(x, w, b),
           conv_inputs(k=1, c_out=_expand, bias=True, conditioned=False), **CONV_TOL),
    OpSpec("conv2d_patchify", lambda x, w, b: tm.conv2d(x, w, b, stride=2),
           lambda x, w, b: conv2d_ref(x, w, b, stride=2),
           conv_inputs(k=2, c_out=lambda draw, c_in: draw(st.integers(1, 4 * c_in)), bias=True, conditioned=False),
           **CONV_TOL),
    # conv2d vijp case 2: stride 1, circular 'same' (FFT)
    OpSpec("conv2d_circular_same", lambda x, w: tm.conv2d(x, w, padding="same", padding_mode="circular"),
           lambda x, w: conv2d_ref(x, w, padding="same", padding_mode="circular"), conv_inputs(), **CONV_TOL),
    # conv2d vijp case 3: stride 1, zero 'same' (preconditioned CG); even kernel = asymmetric padding
    OpSpec("conv2d_same", lambda x, w, b: tm.conv2d(x, w, b, padding=1), lambda x, w, b: conv2d_ref(x, w, b, padding=1),
           conv_inputs(bias=True), **CONV_TOL),
    OpSpec("conv2d_same_even", lambda x, w: tm.conv2d(x, w, padding="same"),
           lambda x, w: conv2d_ref(x, w, padding="same"), conv_inputs(k=2), **CONV_TOL),
    OpSpec("conv2d_same_dilated_groups", lambda x, w: tm.conv2d(x, w, padding="same", dilation=2, groups=2),
           lambda x, w: conv2d_ref(x, w, padding="same", dilation=2, groups=2), conv_inputs(groups=2), **CONV_TOL),
    # pooling: vijp for non-overlapping windows only
    OpSpec("max_pool2d", lambda x: tm.max_pool2d(x, 2), lambda x: max_pool_ref(x, 2), images()),
    OpSpec("max_pool2d_padded", lambda x: tm.max_pool2d(x, 3, padding=1), lambda x: max_pool_ref(x, 3, 3, 1), images()),
    OpSpec("max_pool2d_overlapping", lambda x: tm.max_pool2d(x, 3, stride=1, padding=1),
           lambda x: max_pool_ref(x, 3, 1, 1), images(), modes=("jvp", "vjp")),
    OpSpec("avg_pool2d", lambda x: tm.avg_pool2d(x, 2), lambda x: avg_pool_ref(x, 2), images()),
    OpSpec("avg_pool2d_padded", lambda x: tm.avg_pool2d(x, (3, 2), padding=(1, 1)),
           lambda x: avg_pool_ref(x, (3, 2), None, (1, 1)), images()),
    OpSpec("avg_pool2d_overlapping", lambda x: tm.avg_pool2d(x, 3, stride=2, padding=1),
           lambda x: avg_pool_ref(x, 3, 2, 1), images(3), modes=("jvp", "vjp")),
    # softmax family: 1-scalar fragments
    OpSpec("softmax", tm.softmax, softmax_ref, matrix()),
    OpSpec("softmax_axis0", lambda x: tm.softmax(x, axis=0), lambda x: softmax_ref(x, 0), matrix(4, 3)),
    OpSpec("log_softmax", tm.log_softmax, log_softmax_ref, matrix()),
    # losses: scalar-output vijp (y_bar = x_bar[j] / J[j])
    OpSpec("cross_entropy", tm.cross_entropy, cross_entropy_ref, logits_labels()),
    OpSpec("cross_entropy_sum", lambda x, t: tm.cross_entropy(x, t, reduction="sum"),
           lambda x, t: cross_entropy_ref(x, t, "sum"), logits_labels()),
    OpSpec("cross_entropy_none_spatial", lambda x, t: tm.cross_entropy(x, t, reduction="none"),
           lambda x, t: cross_entropy_ref(x, t, "none"), logits_labels(spatial=True)),
    OpSpec("mse", tm.mse, lambda p, t: ((p - t) ** 2).mean().astype(p.dtype), pred_target),
    OpSpec("mse_sum", lambda p, t: tm.mse(p, t, reduction="sum"), lambda p, t: ((p - t) ** 2).sum().astype(p.dtype),
           pred_target),
    # normalisation: 2-scalar fragments per group (eval batch_norm: diagonal, none)
    OpSpec("layer_norm", lambda x: tm.layer_norm(x, x.shape[-1]), lambda x: norm_ref(x, -1).astype(x.dtype),
           ln_inputs(False)),
    OpSpec("layer_norm_affine_2d", lambda x, w, b: tm.layer_norm(x, w.shape, w, b),
           lambda x, w, b: norm_ref(x, (-2, -1), w, b).astype(x.dtype), ln_inputs(True, 2)),
    OpSpec("batch_norm_train", lambda x, w, b: tm.batch_norm(x, None, None, w, b),
           lambda x, w, b: norm_ref(x, (0, 2, 3), w.reshape(1, -1, 1, 1), b.reshape(1, -1, 1, 1)).astype(x.dtype),
           bn_inputs(True)),
    OpSpec("batch_norm_train_2d", lambda x: tm.batch_norm(x, None, None),
           lambda x: norm_ref(x, 0).astype(x.dtype), bn_inputs(False, ndim=2)),
    OpSpec("batch_norm_eval", _bn_eval, _bn_eval_ref, bn_inputs(True)),
    OpSpec("dropout", lambda x: tm.dropout(x, 0.4, 1234), _dropout_ref, images()),
]
