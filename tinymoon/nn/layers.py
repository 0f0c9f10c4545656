"""Layers: Linear, Conv2d, MaxPool2d, AvgPool2d, Flatten, LayerNorm, BatchNorm2d, Dropout.

Each layer is a thin Module around one tensor-level function of tinymoon.functional (the primitive does the
math and the gradients); the layer owns the parameters and their initialisation. Constructors take
`generator` (None, an int seed or a numpy Generator), `dtype` (float32 by default) and `device`.
Default initialisations are PyTorch's: Linear and Conv2d weight kaiming_uniform(a=sqrt(5)), i.e.
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)); norms weight 1, bias 0.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from .. import functional as F
from ..ops.conv import _int_pair as int_pair
from ..backend import as_dtype
from ..tensor import generator as _generator
from . import init
from .module import Module, Parameter

__all__ = ["Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "Identity", "LayerNorm", "BatchNorm2d",
           "Dropout"]


def _empty_param(shape, dtype, device):
    dtype = as_dtype(dtype if dtype is not None else backend.default_float)
    arr = np.zeros(shape, dtype=dtype)
    if device is not None and backend.normalize_device(device) != "cpu":
        arr = backend.to_device(arr, backend.normalize_device(device))
    return Parameter.wrap(arr)


def _buffer(value, shape, dtype, device):
    arr = np.full(shape, value, dtype=dtype)
    if device is not None and backend.normalize_device(device) != "cpu":
        arr = backend.to_device(arr, backend.normalize_device(device))
    return arr


class Linear(Module):
    """y = x W^T + b, W of shape (out_features, in_features), on the last axis of x (any leading axes)."""

    def __init__(self, in_features, out_features, bias=True, generator=None, dtype=None, device=None,
                 grad_estimator=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.grad_estimator = grad_estimator       # tinymoon.randomized: an unbiased weight-gradient estimator
        g = _generator(generator)
        self.weight = _empty_param((self.out_features, self.in_features), dtype, device)
        if bias:
            self.bias = _empty_param((self.out_features,), dtype, device)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(g)

    def reset_parameters(self, generator=None):
        g = _generator(generator)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=g)   # U(+-1/sqrt(fan_in))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features else 0.0
            init.uniform_(self.bias, -bound, bound, generator=g)

    def forward(self, x):
        if self.grad_estimator is not None:
            return self.grad_estimator.linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution (cross-correlation, like PyTorch) of x (N, C_in, H, W) with a weight
    (C_out, C_in/groups, kh, kw).

    padding: an int, a pair (ph, pw), a pair of pairs ((top, bottom), (left, right)), "valid" (0) or "same"
    (output size = input size; stride 1 only; for an even kernel the extra row/column goes at the
    bottom/right, as in PyTorch). padding_mode: "zeros" or "circular" (wrap around).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", generator=None, dtype=None, device=None, grad_estimator=None):
        super().__init__()
        self.grad_estimator = grad_estimator       # tinymoon.randomized: an unbiased weight-gradient estimator
        in_channels, out_channels, groups = int(in_channels), int(out_channels), int(groups)
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels ({out_channels}) must both be "
                             f"divisible by groups ({groups})")
        if padding_mode not in ("zeros", "circular"):     # what the conv2d primitive implements
            raise ValueError(f"Conv2d: padding_mode must be 'zeros' or 'circular', got {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = int_pair(kernel_size, "kernel_size", "Conv2d")
        self.stride = int_pair(stride, "stride", "Conv2d")
        self.dilation = int_pair(dilation, "dilation", "Conv2d")
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding == "valid":
                padding = 0
            elif padding == "same":
                if self.stride != (1, 1):
                    raise ValueError("Conv2d: padding='same' needs stride 1 (as in PyTorch)")
                pads = []
                for k, d in zip(self.kernel_size, self.dilation):
                    total = d * (k - 1)
                    pads.append((total // 2, total - total // 2))
                padding = tuple(pads)
            else:
                raise ValueError(f"Conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
        self.padding = self._normalise_padding(padding)
        g = _generator(generator)
        self.weight = _empty_param((out_channels, in_channels // groups) + self.kernel_size, dtype, device)
        if bias:
            self.bias = _empty_param((out_channels,), dtype, device)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(g)

    @staticmethod
    def _normalise_padding(padding):
        """((top, bottom), (left, right)) from an int, a pair, or a pair of pairs."""
        if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(isinstance(p, (tuple, list))
                                                                          for p in padding):
            return tuple(tuple(int(a) for a in p) for p in padding)
        ph, pw = int_pair(padding, "padding", "Conv2d")
        return ((ph, ph), (pw, pw))

    def _functional_padding(self):
        (t, b), (l, r) = self.padding
        return (t, l) if t == b and l == r else self.padding

    def reset_parameters(self, generator=None):
        g = _generator(generator)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=g)   # U(+-1/sqrt(fan_in))
        if self.bias is not None:
            fan_in, _ = init.fan_in_and_fan_out(self.weight.shape)
            bound = 1 / math.sqrt(fan_in) if fan_in else 0.0
            init.uniform_(self.bias, -bound, bound, generator=g)

    def forward(self, x):
        conv = F.conv2d if self.grad_estimator is None else self.grad_estimator.conv2d
        return conv(x, self.weight, self.bias, stride=self.stride, padding=self._functional_padding(),
                    dilation=self.dilation, groups=self.groups, padding_mode=self.padding_mode)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != ((0, 0), (0, 0)):
            s += f", padding={self._functional_padding()}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s


class MaxPool2d(Module):
    """Max over kernel_size windows of x (N, C, H, W); stride defaults to kernel_size; padding with -inf."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride if self.stride is not None else self.kernel_size}" \
               f", padding={self.padding}"


class AvgPool2d(Module):
    """Mean over kernel_size windows of x (N, C, H, W); stride defaults to kernel_size; zero padding."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride if self.stride is not None else self.kernel_size}" \
               f", padding={self.padding}"


class Flatten(Module):
    """Merge axes start_axis..end_axis into one (default: everything but the batch axis)."""

    def __init__(self, start_axis=1, end_axis=-1):
        super().__init__()
        self.start_axis, self.end_axis = int(start_axis), int(end_axis)

    def forward(self, x):
        return F.flatten(x, self.start_axis, self.end_axis)

    def extra_repr(self):
        return f"start_axis={self.start_axis}, end_axis={self.end_axis}"


class Identity(Module):
    """y = x."""

    def forward(self, x):
        return x


class LayerNorm(Module):
    """Normalise over the trailing `normalized_shape` axes: (x - mean) / sqrt(var + eps) * weight + bias
    (biased variance, as in PyTorch). weight starts at 1, bias at 0."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=None, device=None):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape, self.eps = tuple(int(s) for s in normalized_shape), float(eps)
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = init.ones_(_empty_param(self.normalized_shape, dtype, device))
            if bias:
                self.bias = _empty_param(self.normalized_shape, dtype, device)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class BatchNorm2d(Module):
    """Batch normalisation over (N, H, W) per channel of x (N, C, H, W).

    Training: normalise with the batch's mean and biased variance, and update the running statistics in place,
    running = (1 - momentum) running + momentum batch (the running variance takes the unbiased batch variance,
    as in PyTorch). Eval (`model.eval()`): normalise with the running statistics. Buffers `running_mean`,
    `running_var` (float, like the weight) and `num_batches_tracked` (int64) are in the state_dict."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 dtype=None, device=None):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.affine, self.track_running_stats = affine, track_running_stats
        dt = as_dtype(dtype if dtype is not None else backend.default_float)
        if affine:
            self.weight = init.ones_(_empty_param((self.num_features,), dt, device))
            self.bias = _empty_param((self.num_features,), dt, device)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", _buffer(0.0, (self.num_features,), dt, device))
            self.register_buffer("running_var", _buffer(1.0, (self.num_features,), dt, device))
            self.register_buffer("num_batches_tracked", _buffer(0, (), np.int64, device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x):
        use_batch = self.training or not self.track_running_stats
        y = F.batch_norm(x, self.running_mean if self.track_running_stats else None,
                         self.running_var if self.track_running_stats else None, self.weight, self.bias,
                         training=use_batch, momentum=self.momentum, eps=self.eps)
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1        # in place: the buffer array stays the same object
        return y

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class Dropout(Module):
    """Zero each entry with probability p in training (scaling the rest by 1/(1-p)); identity in eval.

    generator: None, an int seed or a numpy Generator — the masks are drawn from it (a seed makes the whole
    sequence of masks reproducible)."""

    def __init__(self, p=0.5, generator=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = float(p)
        self.generator = _generator(generator)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        return F.dropout(x, self.p, self.generator, self.training)

    def extra_repr(self):
        return f"p={self.p}"
