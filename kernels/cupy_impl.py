"""The "cupy" implementation: CuPy library calls (cuBLAS for matmul and the conv GEMMs) plus one fused
ElementwiseKernel for the activations.  Only runs with CuPy and a GPU; its tests are marked `gpu`.

Conv, pooling and bit packing reuse the xp-generic reference code (conv.py, pool.py, bitpack.py) with
xp = cupy.
"""
import functools

import numpy as np

from . import bitpack, conv, pool
from .activations import ACTIVATIONS
from .pointwise import COMPILED, parse_activation


def _cupy():
    import cupy
    return cupy


def matmul_cupy(a, b):
    return _cupy().matmul(a, b)


conv2d_forward_cupy = conv.conv2d_forward_reference
conv2d_grad_input_cupy = conv.conv2d_grad_input_reference
conv2d_grad_weight_cupy = conv.conv2d_grad_weight_reference
max_pool2d_forward_cupy = pool.max_pool2d_forward_reference
max_pool2d_backward_cupy = pool.max_pool2d_backward_reference
max_pool2d_gather_cupy = pool.max_pool2d_gather_reference
avg_pool2d_forward_cupy = pool.avg_pool2d_forward_reference
avg_pool2d_backward_cupy = pool.avg_pool2d_backward_reference
pack_bits_cupy = bitpack.pack_bits_reference
unpack_bits_cupy = bitpack.unpack_bits_reference
pack_bins_cupy = bitpack.pack_bins_reference
unpack_bins_cupy = bitpack.unpack_bins_reference

# (y, dy/dx) per activation code (pointwise.COMPILED): the table's formulas (activations.py) in CUDA C, held
# to it by the real-GPU tests; T is float or double, p and p2 the activation's parameters.
_ACT_SOURCE = r"""
T one = 1, zero = 0;
switch (code) {
case 0: y = x > zero ? x : (x <= zero ? zero : x); d = x > zero ? one : zero; break;   /* NaN stays NaN */
case 1: y = x > zero ? x : p * x; d = x > zero ? one : p; break;
case 2: { T e = exp(x < zero ? x : zero); y = x > zero ? x : p * (e - one); d = x > zero ? one : p * e; break; }
case 3: { T cdf = (one + erf(x * (T)0.7071067811865476)) / 2;
          y = x * cdf; d = cdf + x * exp(-x * x / 2) * (T)0.3989422804014327; break; }
case 4: { T e = exp(-fabs(x)); T s = x >= zero ? one / (one + e) : e / (one + e);
          y = x * s; d = s * (one + x * (one - s)); break; }
case 5: y = tanh(x); d = one - y * y; break;
case 6: { T e = exp(-fabs(x)); T s = x >= zero ? one / (one + e) : e / (one + e); y = s; d = s * (one - s); break; }
default: { T z = p * x; T e = exp(-fabs(z)); y = ((z > zero ? z : zero) + log1p(e)) / p;
           d = z >= zero ? one / (one + e) : e / (one + e);
           if (z > p2) { y = x; d = one; } }          /* linear above the threshold p2 */
}
"""


@functools.lru_cache(maxsize=None)
def _act_kernel():
    return _cupy().ElementwiseKernel("T x, int32 code, T p, T p2", "T y, T d", _ACT_SOURCE, "tinymoon_act")


def act_cupy(name, x, **params):
    code, p = parse_activation(name, params)
    p1, p2 = (tuple(p[n] for n in COMPILED[name][1]) + (0.0, 0.0))[:2]
    return _act_kernel()(x, np.int32(code), x.dtype.type(p1), x.dtype.type(p2))


def relu_mask_forward_cupy(x, slope=0.0):
    cp = _cupy()
    if slope == 0:
        y = ACTIVATIONS["relu"].forward(x, {})[0]
    else:
        y = ACTIVATIONS["leaky_relu"].forward(x, {"negative_slope": float(slope)})[0]
    return y, cp.packbits(ACTIVATIONS["relu"].code_fn(cp, x).ravel(), bitorder="little")


def masked_grad_cupy(packed, y_bar, slope=0.0):
    cp = _cupy()
    bit = bitpack.unpack_bits_reference(packed, y_bar.size).reshape(y_bar.shape)
    return cp.where(bit, y_bar, y_bar.dtype.type(0) if slope == 0 else y_bar.dtype.type(slope) * y_bar)


def fewbit_forward_cupy(name, x, borders, bits, **params):
    cp = _cupy()
    y, _ = act_cupy(name, x, **params)
    idx = cp.searchsorted(cp.asarray(borders, cp.float64), x.ravel())  # side left; NaN last
    return y, bitpack.pack_bins_reference(idx, bits)


def fewbit_backward_cupy(packed, levels, bits, y_bar):
    cp = _cupy()
    idx = bitpack.unpack_bins_reference(packed, bits, y_bar.size).reshape(y_bar.shape)
    return cp.asarray(levels).astype(y_bar.dtype)[idx] * y_bar
