"""Activations: one Diagonal primitive per entry of the activation table (kernels/activations.py).

The math of each — f, f', its parameters and PyTorch's subgradient at a kink — is written once, in the table;
each class below states it in one line. jvp, vjp and vijp follow from the derivative (elementwise.Diagonal),
which the primitive reads from its residual (residuals.py). What it keeps is the residual policy:

- by default (`residual=None`): relu and leaky_relu a bit-packed sign mask (1 bit per element, the input-only
  residual Moonwalk's phase 1 relies on), softplus its input, every other activation f'(x) itself — from one
  fused kernel pass (`kernels.act_forward`) where the kernels compile it, from the table otherwise;
- `residual=policy`: the policy's own residual, e.g. tinymoon.fewbit's quantised b-bit bin index. A few-bit
  Tanh is this Tanh primitive with that residual.

Higher order: in a differentiable backward f'(x) is recomputed on tensors by the table's own formula (f' is
written in `xp`), so the second and later derivatives are the formula's; a piecewise-linear activation's f' is
piecewise constant (its second derivative is 0 almost everywhere: the residual is a constant). A residual
policy keeps an approximation of f' (a few-bit table, whose derivative is 0, not the second derivative): with
one, a second derivative raises.
"""
from __future__ import annotations

from .. import kernels
from ..backend import get_array_module
from ..kernels.activations import ACTIVATIONS
from .elementwise import Diagonal
from .residuals import Derivative, FromInput, compiled_for, sign_mask


class TableActivation(Diagonal):
    """An activation of the table; every rule asks the residual (`ctx.r`) for f'."""
    formula = None          # the table entry
    compiled = False        # True: value and f' from one pass of kernels.act_forward
    orders = None

    policy_order_why = "it keeps an approximation of f' whose derivative is not the second derivative"

    @classmethod
    def residuals(cls, ctx, y, x):
        # f'(x) on tensors, by the table's formula: its derivatives are the higher ones of f
        p = {**cls.formula.defaults, **{k: v for k, v in ctx.params.items() if k != "residual"}}
        return dict(r=Derivative(cls.formula.df(get_array_module(x), x, y, **p)))

    @classmethod
    def forward(cls, ctx, x, residual=None, **params):
        p = {**cls.formula.defaults, **params}
        if residual is not None:                                    # a policy: it keeps what it keeps
            y, r = residual.keep(cls.formula, x, p, any(ctx.needs))
        else:
            y, r = cls.keep(ctx, x, p)
        if r is not None:
            ctx.save(r=r)
        return y

    @classmethod
    def keep(cls, ctx, x, p):
        """(y, residual) of the default policy: f'(x) itself."""
        if cls.compiled:
            y, d = kernels.act_forward(cls.formula.name, x, **p)
        else:
            y, d = cls.formula.forward(x, p)
        return y, Derivative(d)

    @classmethod
    def derivative(cls, ctx, i=0):
        return ctx.r.derivative()

    @classmethod
    def vjp(cls, ctx, y_bar):
        return (ctx.r.scale(y_bar),)                 # x̄ = ȳ f'(x)

    @classmethod
    def jvp(cls, ctx, x_dot):
        return ctx.r.scale(x_dot)                    # ẏ = f'(x) ẋ

    @classmethod
    def _erased(cls, ctx, d):
        return ctx.r.erased(d)

    @classmethod
    def fragment(cls, ctx, y_bar):
        if ctx.r.invertible:
            return None                              # f' never vanishes: nothing erased, no pass over it
        return super().fragment(ctx, y_bar)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        if ctx.r.invertible:
            return ctx.r.divide(x_bar)               # ȳ = x̄ / f'(x), exactly
        return super().vijp(ctx, x_bar, fragment)    # the same, with the fragment where f' (nearly) vanishes

    @classmethod
    def condition(cls, ctx):
        return ctx.r.condition() or super().condition(ctx)


class ReLU(TableActivation):
    """f = max(x, 0);  f' = 1 for x > 0, else 0 (f'(0) = 0). The units with x <= 0 erase their
    cotangent: the fragment is y_bar there, as a compact 1-D array."""
    name, formula = "relu", ACTIVATIONS["relu"]
    constants = ("r",)          # f' is piecewise constant: the second derivative is 0 a.e.

    @classmethod
    def keep(cls, ctx, x, p):
        return sign_mask(x)                          # one pass: y and the bit per element of x > 0


class LeakyReLU(TableActivation):
    """f = x for x > 0, else slope·x;  f' = 1 or slope (f'(0) = slope). With slope != 0 the Jacobian
    is invertible: no fragment."""
    name, formula = "leaky_relu", ACTIVATIONS["leaky_relu"]
    constants = ("r",)          # f' is piecewise constant: the second derivative is 0 a.e.

    @classmethod
    def keep(cls, ctx, x, p):
        return sign_mask(x, p["negative_slope"])


class Softplus(TableActivation):
    """f = log(1 + e^(βx))/β, x where βx > threshold (as PyTorch);  f' = σ(βx), 1 above the
    threshold. Keeps its input (the derivative is computed from it when needed)."""
    name, formula = "softplus", ACTIVATIONS["softplus"]

    @classmethod
    def keep(cls, ctx, x, p):
        ctx.save(x=x)                                # counted (or not, for a leaf) as the engine's own array
        y = kernels.act_forward(cls.name, x, **p)[0] if compiled_for(cls.formula, x, p) else cls.formula.f_at(x, p)
        return y, FromInput(x, cls.formula, p)       # y from the fused pass; f' recomputed from x in backward


class Tanh(TableActivation):
    """f = tanh(x);  f' = 1 − tanh²(x) (never 0 in float64 for |x| < 19, a fragment beyond)."""
    name, formula, compiled = "tanh", ACTIVATIONS["tanh"], True


class Sigmoid(TableActivation):
    """f = σ(x) = 1/(1 + e^−x), without overflow;  f' = σ(x)(1 − σ(x))."""
    name, formula, compiled = "sigmoid", ACTIVATIONS["sigmoid"], True


class ELU(TableActivation):
    """f = x for x > 0, else α(eˣ − 1);  f' = 1 or α eˣ (f'(0) = α)."""
    name, formula, compiled = "elu", ACTIVATIONS["elu"], True


class GELU(TableActivation):
    """f = x Φ(x) (exact, Φ the normal CDF);  f' = Φ(x) + x φ(x), which vanishes near x = −0.7518 (fragments
    there)."""
    name, formula, compiled = "gelu", ACTIVATIONS["gelu"], True


class SiLU(TableActivation):
    """f = x σ(x);  f' = σ(x)(1 + x(1 − σ(x))), zero near x = −1.2785 (fragment there)."""
    name, formula, compiled = "silu", ACTIVATIONS["silu"], True


class SELU(TableActivation):
    """f = λ·elu(x, α) (PyTorch's λ, α);  f' = λ or λα eˣ (f'(0) = λα)."""
    name, formula = "selu", ACTIVATIONS["selu"]


class CELU(TableActivation):
    """f = x for x > 0, else α(e^(x/α) − 1);  f' = 1 or e^(x/α) (continuous)."""
    name, formula = "celu", ACTIVATIONS["celu"]


class Mish(TableActivation):
    """f = x tanh(softplus(x));  f' = tanh(sp) + x (1 − tanh²(sp)) σ(x), sp = softplus(x)."""
    name, formula = "mish", ACTIVATIONS["mish"]


class Softsign(TableActivation):
    """f = x/(1 + |x|);  f' = 1/(1 + |x|)²."""
    name, formula = "softsign", ACTIVATIONS["softsign"]


class LogSigmoid(TableActivation):
    """f = log σ(x) = −softplus(−x);  f' = σ(−x)."""
    name, formula = "logsigmoid", ACTIVATIONS["logsigmoid"]


class Hardswish(TableActivation):
    """f = x·relu6(x + 3)/6;  f' = 0 for x <= −3, x/3 + 1/2 inside, 1 for x >= 3."""
    name, formula = "hardswish", ACTIVATIONS["hardswish"]


class Tanhshrink(TableActivation):
    """f = x − tanh(x);  f' = tanh²(x)."""
    name, formula = "tanhshrink", ACTIVATIONS["tanhshrink"]


class ReLU6(TableActivation):
    """f = min(max(x, 0), 6);  f' = 1 on (0, 6), else 0 (0 at both kinks)."""
    name, formula = "relu6", ACTIVATIONS["relu6"]
    constants = ("r",)          # f' is piecewise constant: the second derivative is 0 a.e.


class Hardtanh(TableActivation):
    """f = clip(x, min_val, max_val);  f' = 1 strictly inside, else 0."""
    name, formula = "hardtanh", ACTIVATIONS["hardtanh"]
    constants = ("r",)          # f' is piecewise constant: the second derivative is 0 a.e.


class Hardsigmoid(TableActivation):
    """f = clip(x/6 + 1/2, 0, 1);  f' = 1/6 on (−3, 3), else 0."""
    name, formula = "hardsigmoid", ACTIVATIONS["hardsigmoid"]
    constants = ("r",)          # f' is piecewise constant: the second derivative is 0 a.e.


# name -> primitive, for every entry of the table
PRIMITIVES = {cls.name: cls for cls in (ReLU, LeakyReLU, Softplus, Tanh, Sigmoid, ELU, GELU, SiLU, SELU, CELU, Mish,
                                        Softsign, LogSigmoid, Hardswish, Tanhshrink, ReLU6, Hardtanh, Hardsigmoid)}
assert set(PRIMITIVES) == set(ACTIVATIONS)
