"""Few-bit activation modules and `convert`, which turns the activations of an existing model few-bit.

    model = tm.fewbit.convert(model, bits=2)        # every tm.nn activation module, recursively
    act = tm.fewbit.GELU(bits=3)                     # or build with the few-bit modules directly

The modules are `tm.nn.Activation`s (few-bit GELU is also a `tm.nn.GELU`, etc.), so `convert`, `repr`,
`state_dict` and the nn seam treat them alike. `convert` uses the seam tinymoon.nn provides: each activation
module computes `self._fn(x)`, and converting assigns a `FewBitFn` there (and sets `module.bits`); the
module's class, parameters and place in the model do not change. `convert(model, bits=None)` undoes it.
"""
from __future__ import annotations

from .. import nn
from .activations import activation, names
from .errors import FewBitError
from .functional import DEFAULT_BITS, activate, check_bits, table_for

__all__ = ["FewBitFn", "convert", "GELU", "SiLU", "Tanh", "Sigmoid", "ELU", "SELU", "CELU", "Softplus", "Mish",
           "Softsign", "LogSigmoid", "Hardswish", "Tanhshrink", "ReLU", "LeakyReLU", "ReLU6", "Hardtanh",
           "Hardsigmoid"]


class FewBitFn:
    """The callable `convert` puts in an nn activation module's `_fn` seam: Tensor -> Tensor."""
    __slots__ = ("name", "bits", "table", "params", "__name__")

    def __init__(self, name, bits, table=None, params=None):
        self.name, self.bits, self.table, self.params = name, bits, table, dict(params or {})
        self.__name__ = f"fewbit.{name}[{bits} bit{'s' if bits > 1 else ''}]"

    def __call__(self, x):
        return activate(self.name, x, bits=self.bits, table=self.table, **self.params)

    def __repr__(self):
        return self.__name__


class _FewBit:
    """Mixin: a module whose forward is the few-bit function of its `fn_name` (bits default 3)."""
    table = None

    def _setup(self, bits, table):
        if bits is None and table is None:
            raise FewBitError(f"fewbit.{type(self).__name__}: bits=None has no few-bit form; use the exact "
                              f"tm.nn module instead, or give bits in {1}..{8}")
        if table is not None:
            table = table_for(self.fn_name, bits, table, **self.fn_params())   # validated now, not at 1st call
            bits = table.bits
        self.bits = check_bits(bits, f"fewbit.{type(self).__name__}")
        self.table = table

    def _fn(self, x):
        return activate(self.fn_name, x, bits=self.bits, table=self.table, **self.fn_params())


def _simple(cls_name, fn, base=nn.Activation, doc=""):
    def __init__(self, bits=DEFAULT_BITS, table=None):
        base.__init__(self)
        self._setup(bits, table)
    return type(cls_name, (_FewBit, base), {"fn_name": fn, "__init__": __init__, "__doc__": doc,
                                           "__module__": __name__})


GELU = _simple("GELU", "gelu", nn.GELU, "Exact GELU x Φ(x); b-bit quantised derivative (default 3 bits).")
SiLU = _simple("SiLU", "silu", nn.SiLU, "x σ(x); b-bit quantised derivative.")
Tanh = _simple("Tanh", "tanh", nn.Tanh, "tanh; b-bit quantised derivative.")
Sigmoid = _simple("Sigmoid", "sigmoid", nn.Sigmoid, "σ; b-bit quantised derivative.")
SELU = _simple("SELU", "selu", doc="SELU (PyTorch's constants); b-bit quantised derivative.")
Mish = _simple("Mish", "mish", doc="x tanh(softplus(x)); b-bit quantised derivative.")
Softsign = _simple("Softsign", "softsign", doc="x / (1 + |x|); b-bit quantised derivative.")
LogSigmoid = _simple("LogSigmoid", "logsigmoid", doc="log σ(x); b-bit quantised derivative.")
Hardswish = _simple("Hardswish", "hardswish", doc="x relu6(x + 3) / 6; b-bit quantised derivative.")
Tanhshrink = _simple("Tanhshrink", "tanhshrink", doc="x - tanh(x); b-bit quantised derivative.")
ReLU = _simple("ReLU", "relu", nn.ReLU, "max(x, 0); exact derivative from a 1-bit mask.")
ReLU6 = _simple("ReLU6", "relu6", doc="min(max(x, 0), 6); exact derivative from a 1-bit mask.")
Hardsigmoid = _simple("Hardsigmoid", "hardsigmoid", doc="clip(x/6 + 1/2, 0, 1); exact 1-bit mask derivative.")


class ELU(_FewBit, nn.ELU):
    """x > 0 ? x : α(eˣ - 1); b-bit quantised derivative from a table solved for this α."""

    def __init__(self, alpha=1.0, bits=DEFAULT_BITS, table=None):
        nn.ELU.__init__(self, alpha)
        self._setup(bits, table)


class CELU(_FewBit, nn.Activation):
    """x > 0 ? x : α(e^{x/α} - 1); b-bit quantised derivative from a table solved for this α."""
    fn_name = "celu"

    def __init__(self, alpha=1.0, bits=DEFAULT_BITS, table=None):
        nn.Activation.__init__(self)
        self.alpha = float(alpha)
        self._setup(bits, table)

    def fn_params(self):
        return {"alpha": self.alpha}


class Softplus(_FewBit, nn.Softplus):
    """log(1 + e^{βx})/β (linear where βx > threshold); b-bit quantised derivative solved for β, threshold."""

    def __init__(self, beta=1.0, threshold=20.0, bits=DEFAULT_BITS, table=None):
        nn.Softplus.__init__(self, beta, threshold)
        self._setup(bits, table)


class LeakyReLU(_FewBit, nn.LeakyReLU):
    """x > 0 ? x : slope·x; exact derivative from a 1-bit mask."""

    def __init__(self, negative_slope=0.01, bits=DEFAULT_BITS):
        nn.LeakyReLU.__init__(self, negative_slope)
        self._setup(bits, None)


class Hardtanh(_FewBit, nn.Activation):
    """clip(x, min_val, max_val); exact derivative from a 1-bit mask."""
    fn_name = "hardtanh"

    def __init__(self, min_val=-1.0, max_val=1.0, bits=DEFAULT_BITS):
        nn.Activation.__init__(self)
        self.min_val, self.max_val = float(min_val), float(max_val)
        activation("hardtanh").resolve(**self.fn_params())      # min_val < max_val
        self._setup(bits, None)

    def fn_params(self):
        return {"min_val": self.min_val, "max_val": self.max_val}


# ---- convert -----------------------------------------------------------------------------------------------

def convert(model, bits=DEFAULT_BITS, table_fn=None):
    """Make every activation module of `model` (recursively, `model` included) few-bit; returns `model`.

    bits: 1..8 (piecewise-linear activations always use their exact 1-bit mask), or None to restore the exact
        tm.nn activations (tinymoon.fewbit modules have no exact form and raise).
    table_fn: optional `table_fn(name, bits, params) -> Table | None` giving the table of each continuous
        activation (None: the default table), e.g. one fitted to that layer's recorded pre-activations.

    An activation module whose function has no few-bit form raises FewBitError before anything is changed.
    Non-elementwise modules (Softmax, LogSoftmax) and layers are left alone.
    """
    if not isinstance(model, nn.Module):
        raise FewBitError(f"fewbit.convert: expected a tinymoon.nn.Module, got {type(model).__name__}")
    if bits is not None:
        bits = check_bits(bits, "fewbit.convert")
    plan = []
    for path, m in model.named_modules():
        if not isinstance(m, nn.Activation):
            continue
        where = f"{path or '<model>'} ({type(m).__name__})"
        if m.fn_name not in names():
            raise FewBitError(f"fewbit.convert: {where} computes {m.fn_name!r}, which has no few-bit form; "
                              f"known: {', '.join(names())}")
        params = activation(m.fn_name).resolve(**m.fn_params())
        if bits is None and isinstance(m, _FewBit):
            raise FewBitError(f"fewbit.convert(bits=None): {where} is a tinymoon.fewbit module with no exact "
                              f"form; replace it with the tm.nn module")
        table = None
        if bits is not None and table_fn is not None and not activation(m.fn_name).piecewise_linear:
            table = table_fn(m.fn_name, bits, dict(params))
            if table is not None:
                table = table_for(m.fn_name, bits, table, **params)
        plan.append((m, params, table))
    for m, params, table in plan:                # nothing changes unless every module could be converted
        if bits is None:
            m.__dict__.pop("_fn", None)
            m.bits = None
        elif isinstance(m, _FewBit):
            m.bits, m.table = bits, table
        else:
            m.bits = bits
            m._fn = FewBitFn(m.fn_name, bits, table, m.fn_params())
    return model
