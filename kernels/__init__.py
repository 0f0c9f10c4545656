"""tinymoon.kernels — low-level kernels on raw arrays (NumPy on the host, CuPy on a GPU).

Raw arrays in, raw arrays out: nothing here imports tinymoon.  Every kernel family has a plain NumPy
reference (the spec), a Numba CPU version, a Numba CUDA version and a CuPy version; `dispatch.py` picks
one per call (see there for the rules and how to force one).  docs/kernels.md has the measurements.

Public API (the ops layer calls exactly these):
  matmul(a, b)
  conv2d_forward(x, w, stride, padding, dilation, groups, bias=None)
  conv2d_grad_input(y_bar, w, x_shape, stride, padding, dilation, groups)
  conv2d_grad_weight(x, y_bar, w_shape, stride, padding, dilation, groups)
  max_pool2d_forward(x, kernel, stride, padding) -> (y, idx) / max_pool2d_backward(idx, y_bar, x_shape, ...)
  max_pool2d_gather(idx, a, kernel, stride, padding)
  avg_pool2d_forward(x, kernel, stride, padding) / avg_pool2d_backward(y_bar, x_shape, kernel, stride, padding)
  pack_bits(mask) / unpack_bits(packed, n)
  pack_bins(idx, bits) / unpack_bins(packed, bits, n)
  act_forward(name, x, **params) -> (y, dydx)          name in COMPILED
  ACTIVATIONS: the activation table (activations.py): every activation's f and f', the spec of all the above
  relu_mask_forward(x, slope=0.0) -> (y, packed) / masked_grad(packed, y_bar, slope=0.0)
  fewbit_forward(name, x, borders, bits, **params) -> (y, packed) / fewbit_backward(packed, levels, bits, y_bar)
  set_impl(name_or_None), use(name), available_impls()
"""
import numpy as np

from . import numba_cache  # noqa: F401  first: every cached kernel below is stamped with the package's hash
from . import blas, dispatch, fewbit, pointwise
from .bitpack import VALID_BITS, check_bits, check_packed, nbytes_for
from .conv import conv_params
from .dispatch import available_impls, set_impl, use
from .fewbit import check_fewbit
from .activations import ACTIVATIONS
from .pool import index_dtype, pool_params
from .pointwise import COMPILED, check_float, parse_activation

__all__ = ["matmul", "conv2d_forward", "conv2d_grad_input", "conv2d_grad_weight", "max_pool2d_forward",
           "max_pool2d_backward", "max_pool2d_gather", "avg_pool2d_forward", "avg_pool2d_backward", "pack_bits",
           "unpack_bits",
           "pack_bins", "unpack_bins", "act_forward", "relu_mask_forward", "masked_grad", "fewbit_forward",
           "fewbit_backward", "set_impl", "use", "available_impls", "ACTIVATIONS", "COMPILED", "VALID_BITS", "nbytes_for"]


def matmul(a, b):
    """a @ b with numpy.matmul semantics (1-D promotion, batch broadcasting)."""
    if type(a) is np.ndarray and type(b) is np.ndarray and dispatch.unforced():
        return blas.matmul(a, b)            # the host default (CPU_CHOICE "reference"), without the lookup
    return dispatch.call("matmul", (a, b), a, b)


def _same_float(what, *arrays):
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) != 1 or not {np.dtype(np.float32), np.dtype(np.float64)} >= dtypes:
        raise ValueError(f"{what}: needs float32 or float64 arrays of one dtype, got "
                         f"{[str(a.dtype) for a in arrays]} (no silent promotion)")


def conv2d_forward(x, w, stride, padding, dilation, groups, bias=None):
    """y (N, C_out, H_out, W_out) = conv of x (N, C_in, H, W) with w (C_out, C_in/groups, kh, kw), plus bias
    (C_out,) per output channel when given (added in the same pass where the implementation can).
    stride, dilation: (sh, sw); padding: ((top, bottom), (left, right)) zero padding."""
    _same_float("conv2d_forward", x, w, *(() if bias is None else (bias,)))
    conv_params(x.shape, w.shape, stride, padding, dilation, groups)
    if bias is not None and tuple(bias.shape) != (w.shape[0],):
        raise ValueError(f"conv2d_forward: bias must have shape ({w.shape[0]},), got {tuple(bias.shape)}")
    return dispatch.call("conv2d_forward", (x, w), x, w, stride, padding, dilation, groups, bias=bias)


def conv2d_grad_input(y_bar, w, x_shape, stride, padding, dilation, groups):
    """x̄ = ȳ ∂y/∂x, shape x_shape."""
    _same_float("conv2d_grad_input", y_bar, w)
    *_, out_hw = conv_params(tuple(x_shape), w.shape, stride, padding, dilation, groups)
    _check_y_bar("conv2d_grad_input", y_bar, (x_shape[0], w.shape[0]) + out_hw)
    return dispatch.call("conv2d_grad_input", (y_bar, w), y_bar, w, tuple(x_shape), stride, padding, dilation,
                         groups)


def conv2d_grad_weight(x, y_bar, w_shape, stride, padding, dilation, groups):
    """w̄ = ȳ ∂y/∂w, shape w_shape."""
    _same_float("conv2d_grad_weight", x, y_bar)
    *_, out_hw = conv_params(x.shape, tuple(w_shape), stride, padding, dilation, groups)
    _check_y_bar("conv2d_grad_weight", y_bar, (x.shape[0], w_shape[0]) + out_hw)
    return dispatch.call("conv2d_grad_weight", (x, y_bar), x, y_bar, tuple(w_shape), stride, padding, dilation,
                         groups)


def _check_y_bar(what, y_bar, shape):
    if tuple(y_bar.shape) != tuple(shape):
        raise ValueError(f"{what}: y_bar has shape {tuple(y_bar.shape)}, the convolution output is {tuple(shape)}")


def _pool_args(what, x_shape, kernel, stride, padding):
    kernel, stride, padding = (tuple(int(v) for v in p) for p in (kernel, stride, padding))
    if not len(kernel) == len(stride) == len(padding) == 2:
        raise ValueError(f"{what}: kernel, stride and padding must be pairs; got {kernel}, {stride}, {padding}")
    return kernel, stride, padding, pool_params(tuple(x_shape), kernel, stride, padding)


def _check_idx(what, idx, shape, kernel):
    if tuple(idx.shape) != tuple(shape) or idx.dtype != index_dtype(kernel[0] * kernel[1]):
        raise ValueError(f"{what}: idx must be the {index_dtype(kernel[0] * kernel[1])} array of shape {tuple(shape)} "
                         f"that max_pool2d_forward returned; got {idx.dtype} {tuple(idx.shape)}")


def max_pool2d_forward(x, kernel, stride, padding):
    """(y, idx): y (N, C, H_out, W_out) the max over each window (padding = −inf), idx the argmax as the tap
    i·kw + j in the smallest unsigned type for kh·kw taps.  Ties: the first maximum; NaN is the maximum."""
    check_float(x, "max_pool2d_forward")
    kernel, stride, padding, _ = _pool_args("max_pool2d_forward", x.shape, kernel, stride, padding)
    return dispatch.call("max_pool2d_forward", (x,), x, kernel, stride, padding)


def max_pool2d_backward(idx, y_bar, x_shape, kernel, stride, padding):
    """x̄ (x_shape): ȳ added at each window's argmax."""
    check_float(y_bar, "max_pool2d_backward")
    kernel, stride, padding, out_hw = _pool_args("max_pool2d_backward", x_shape, kernel, stride, padding)
    _check_y_bar("max_pool2d_backward", y_bar, tuple(x_shape[:2]) + out_hw)
    _check_idx("max_pool2d_backward", idx, y_bar.shape, kernel)
    return dispatch.call("max_pool2d_backward", (y_bar,), idx, y_bar, tuple(x_shape), kernel, stride, padding)


def max_pool2d_gather(idx, a, kernel, stride, padding):
    """a (input-shaped) at each window's argmax: the linear map y_dot = J a of max pooling."""
    check_float(a, "max_pool2d_gather")
    kernel, stride, padding, out_hw = _pool_args("max_pool2d_gather", a.shape, kernel, stride, padding)
    _check_idx("max_pool2d_gather", idx, tuple(a.shape[:2]) + out_hw, kernel)
    return dispatch.call("max_pool2d_gather", (a,), idx, a, kernel, stride, padding)


def avg_pool2d_forward(x, kernel, stride, padding):
    """y = the mean over each window, padding counted as 0 and the divisor always kh·kw."""
    check_float(x, "avg_pool2d_forward")
    kernel, stride, padding, _ = _pool_args("avg_pool2d_forward", x.shape, kernel, stride, padding)
    return dispatch.call("avg_pool2d_forward", (x,), x, kernel, stride, padding)


def avg_pool2d_backward(y_bar, x_shape, kernel, stride, padding):
    """x̄[pixel] = Σ over the windows containing it of ȳ / (kh·kw)."""
    check_float(y_bar, "avg_pool2d_backward")
    kernel, stride, padding, out_hw = _pool_args("avg_pool2d_backward", x_shape, kernel, stride, padding)
    _check_y_bar("avg_pool2d_backward", y_bar, tuple(x_shape[:2]) + out_hw)
    return dispatch.call("avg_pool2d_backward", (y_bar,), y_bar, tuple(x_shape), kernel, stride, padding)


def pack_bits(mask):
    """uint8[ceil(n/8)], LSB first: numpy.packbits(mask.ravel() != 0, bitorder="little")."""
    return dispatch.call("pack_bits", (mask,), mask)


def unpack_bits(packed, n):
    """bool[n] (flat) from pack_bits' layout."""
    n = int(n)
    check_packed(packed, n, 1, "unpack_bits")
    return dispatch.call("unpack_bits", (packed,), packed, n)


def pack_bins(idx, bits):
    """uint8[ceil(n*bits/8)]: element i in stream bits [i*bits, (i+1)*bits), LSB first."""
    bits = check_bits(bits)
    if idx.dtype.kind not in "ui":
        raise ValueError(f"pack_bins: idx must be an integer array, got {idx.dtype}")
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= 1 << bits):
        raise ValueError(f"pack_bins: indices must lie in [0, {1 << bits}) for bits={bits}, got range "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    return dispatch.call("pack_bins", (idx,), idx, bits)


def unpack_bins(packed, bits, n):
    """uint8[n] indices from pack_bins' layout."""
    bits, n = check_bits(bits), int(n)
    check_packed(packed, n, bits, "unpack_bins")
    return dispatch.call("unpack_bins", (packed,), packed, bits, n)


def act_forward(name, x, **params):
    """(y, dy/dx) of activation `name` in one pass, the table's f and f' (ACTIVATIONS[name]).  name in
    COMPILED; parameters: leaky_relu(negative_slope, or slope), elu(alpha), softplus(beta, threshold)."""
    parse_activation(name, params)
    check_float(x, f"act_forward({name!r})")
    return dispatch.call("act_forward", (x,), name, x, **params)


def relu_mask_forward(x, slope=0.0):
    """(y, pack_bits(x > 0)) with y = x where x > 0, else slope·x (relu: slope 0, exactly 0 there)."""
    check_float(x, "relu_mask_forward")
    if type(x) is np.ndarray and dispatch.unforced():
        return pointwise.relu_mask_forward_numba(x, float(slope))   # the host default, without the lookup
    return dispatch.call("relu_mask_forward", (x,), x, float(slope))


def masked_grad(packed, y_bar, slope=0.0):
    """x̄ = ȳ where the packed bit is set, slope·ȳ elsewhere (relu: slope 0, leaky relu: its slope)."""
    check_float(y_bar, "masked_grad")
    check_packed(packed, y_bar.size, 1, "masked_grad")
    if type(y_bar) is np.ndarray and dispatch.unforced():
        return pointwise.masked_grad_numba(packed, y_bar, float(slope))   # the host default, without the lookup
    return dispatch.call("masked_grad", (y_bar,), packed, y_bar, float(slope))


def fewbit_forward(name, x, borders, bits, **params):
    """(activation(x), pack_bins(searchsorted(borders, x), bits)); borders: 2^bits − 1 sorted values."""
    parse_activation(name, params)
    check_float(x, f"fewbit_forward({name!r})")
    bits, borders = check_fewbit(_host(borders), None, bits, "fewbit_forward")
    if type(x) is np.ndarray and dispatch.unforced():
        return fewbit.fewbit_forward_numba(name, x, borders, bits, **params)   # the host default, without the lookup
    return dispatch.call("fewbit_forward", (x,), name, x, borders, bits, **params)


def fewbit_backward(packed, levels, bits, y_bar):
    """x̄ = levels[idx] · ȳ with idx unpacked from `packed` (levels cast to ȳ's dtype)."""
    check_float(y_bar, "fewbit_backward")
    bits, _ = check_fewbit(None, levels, bits, "fewbit_backward")
    check_packed(packed, y_bar.size, bits, "fewbit_backward")
    if type(y_bar) is np.ndarray and dispatch.unforced():
        return fewbit.fewbit_backward_numba(packed, levels, bits, y_bar)   # the host default, without the lookup
    return dispatch.call("fewbit_backward", (y_bar,), packed, levels, bits, y_bar)


def _host(a):
    """Small parameter arrays (borders) may come from either device; bring them to the host."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)
