"""Activation modules: ReLU, LeakyReLU, ELU, GELU, SiLU, Tanh, Sigmoid, Softplus, Softmax, LogSoftmax.

The seam for few-bit (quantised-derivative) activations: every elementwise activation module computes
`forward(x) = self._fn(x)`, where `_fn` is by default a method calling the exact tinymoon function with the
module's parameters. `bits` (None by default: exact) is stored on the module; a converter (tinymoon.fewbit)
swaps in a quantised version by assigning an instance attribute, e.g.

    for m in model.modules():
        if isinstance(m, Activation) and m.bits is not None:
            m._fn = fewbit_version_of(m, m.bits)       # any callable Tensor -> Tensor

`fn_name` and `fn_params()` say which exact function the module stands for ('relu', {'negative_slope': ...}).
"""
from __future__ import annotations

from .. import functional as F
from .module import Module

__all__ = ["Activation", "ReLU", "LeakyReLU", "ELU", "GELU", "SiLU", "Tanh", "Sigmoid", "Softplus", "Softmax",
           "LogSoftmax"]


class Activation(Module):
    """Base class of the elementwise activations (see the module docstring for the few-bit seam)."""
    fn_name = ""

    def __init__(self, bits=None):
        super().__init__()
        if bits is not None and (isinstance(bits, bool) or int(bits) != bits or not 1 <= bits <= 8):
            raise ValueError(f"{type(self).__name__}: bits must be None (exact) or an integer in 1..8, got {bits!r}")
        self.bits = bits

    def fn_params(self):
        """Keyword parameters of the exact function (e.g. {'alpha': 1.0} for ELU)."""
        return {}

    def _fn(self, x):
        if self.bits is not None:          # few-bit: exact value, b-bit quantised derivative (tinymoon.fewbit)
            from ..fewbit import activate  # lazy import: fewbit builds on nn, not the other way round
            return activate(self.fn_name, x, bits=self.bits, **self.fn_params())
        return getattr(F, self.fn_name)(x, **self.fn_params())

    def forward(self, x):
        return self._fn(x)

    def extra_repr(self):
        parts = [f"{k}={v}" for k, v in self.fn_params().items()]
        if self.bits is not None:
            parts.append(f"bits={self.bits}")
        if "_fn" in self.__dict__:
            parts.append("fn=" + getattr(self.__dict__["_fn"], "__name__", "custom"))
        return ", ".join(parts)


class ReLU(Activation):
    """max(x, 0)."""
    fn_name = "relu"


class LeakyReLU(Activation):
    """x if x > 0 else negative_slope * x."""
    fn_name = "leaky_relu"

    def __init__(self, negative_slope=0.01, bits=None):
        super().__init__(bits)
        self.negative_slope = float(negative_slope)

    def fn_params(self):
        return {"negative_slope": self.negative_slope}


class ELU(Activation):
    """x if x > 0 else alpha (e^x - 1)."""
    fn_name = "elu"

    def __init__(self, alpha=1.0, bits=None):
        super().__init__(bits)
        self.alpha = float(alpha)

    def fn_params(self):
        return {"alpha": self.alpha}


class GELU(Activation):
    """x Phi(x) (exact, with the normal CDF)."""
    fn_name = "gelu"


class SiLU(Activation):
    """x sigmoid(x) (a.k.a. swish)."""
    fn_name = "silu"


class Tanh(Activation):
    fn_name = "tanh"


class Sigmoid(Activation):
    fn_name = "sigmoid"


class Softplus(Activation):
    """log(1 + e^(beta x)) / beta, linear where beta x > threshold."""
    fn_name = "softplus"

    def __init__(self, beta=1.0, threshold=20.0, bits=None):
        super().__init__(bits)
        self.beta, self.threshold = float(beta), float(threshold)

    def fn_params(self):
        return {"beta": self.beta, "threshold": self.threshold}


class Softmax(Module):
    """softmax along `axis` (not elementwise: no few-bit seam)."""

    def __init__(self, axis=-1):
        super().__init__()
        self.axis = axis

    def forward(self, x):
        return F.softmax(x, axis=self.axis)

    def extra_repr(self):
        return f"axis={self.axis}"


class LogSoftmax(Softmax):
    def forward(self, x):
        return F.log_softmax(x, axis=self.axis)
