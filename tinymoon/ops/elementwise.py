"""Elementwise arithmetic: add, sub, mul, div, neg, pow, exp, log, sqrt, abs, maximum, minimum, where, clip.

Binary rules see inputs broadcast to the output's shape and return cotangents of that shape; the engine
sums them back to each input's shape. In inverse mode the data-path input must have the output's shape
(broadcasting on the data path is an explicit tm.broadcast_to, which has a fragment rule).
"""
from __future__ import annotations

from ..backend import get_array_module
from .base import Primitive, add_terms, check_fragment

# The Jacobian of a pointwise map is diagonal, d = f'(x). The vijp divides by d; where |d| is below
# DIAG_TOL that coordinate of y_bar is (numerically) erased by the vjp, so it is a fragment instead of a
# division by ~0. The threshold trades fragment size for the conditioning of the inverse pass: an error
# e in x_bar becomes e / |d| <= e / DIAG_TOL in y_bar.
DIAG_TOL = 1e-3


class Diagonal(Primitive):
    """A map with a diagonal Jacobian d (per element), d from `derivative(ctx)`.

    jvp: x_dot * d;  vjp: y_bar * d;  vijp: y_bar = x_bar / d where |d| >= DIAG_TOL, and the fragment
    (y_bar on the other coordinates, stored as a compact 1-D array) elsewhere. The vijp is for input
    ctx.wrt; `derivative` returns d for that input.
    """
    elementwise = True
    submersive = False      # where d vanishes, unless a subclass knows d never does

    @classmethod
    def derivative(cls, ctx, i=0):
        raise NotImplementedError

    @classmethod
    def jvp(cls, ctx, *x_dot):
        return add_terms(*(None if t is None else t * cls.derivative(ctx, i) for i, t in enumerate(x_dot)))

    @classmethod
    def vjp(cls, ctx, y_bar):
        needs = ctx.needs
        if len(needs) == 1:
            return (y_bar * cls.derivative(ctx, 0),)
        if len(needs) == 2:              # the common case, without a generator
            return (y_bar * cls.derivative(ctx, 0) if needs[0] else None,
                    y_bar * cls.derivative(ctx, 1) if needs[1] else None)
        return tuple(y_bar * cls.derivative(ctx, i) if need else None for i, need in enumerate(needs))

    @classmethod
    def _erased(cls, ctx, d):
        xp = get_array_module(d)
        return xp.abs(d) < DIAG_TOL

    @classmethod
    def fragment(cls, ctx, y_bar):
        d = cls.derivative(ctx, ctx.wrt)
        erased = cls._erased(ctx, d)
        if not erased.any():
            return None
        return y_bar[erased] if y_bar.shape == erased.shape else get_array_module(y_bar).broadcast_to(
            y_bar, erased.shape)[erased]

    @classmethod
    def condition(cls, ctx):
        # ‖J‖ = max |f'|, ‖J⁺‖ = 1 / min |f'| over the kept coordinates (the erased ones come back exactly
        # from the fragment, so they amplify nothing).
        d = cls.derivative(ctx, ctx.wrt)
        a = get_array_module(d).abs(d)
        kept = a[~cls._erased(ctx, d)]
        if kept.size == 0:
            return (float(a.max()) if a.size else 1.0), 1.0
        return float(kept.max()), 1.0 / float(kept.min())

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # y_bar = x_bar / f'(x) on the kept coordinates; the fragment restores the erased ones.
        xp = get_array_module(x_bar)
        d = cls.derivative(ctx, ctx.wrt)
        erased = cls._erased(ctx, d)
        d = d.astype(x_bar.dtype, copy=False)        # a boolean mask (relu, clip...) must not promote
        if erased.any():
            if fragment is None:
                raise cls.missing_fragment(f"{int(erased.sum())} coordinate(s) where |f'| < {DIAG_TOL}")
            y_bar = x_bar / xp.where(erased, 1, d)
            check_fragment(cls.name, fragment, (int(erased.sum()),))
            y_bar[erased] = fragment
            return y_bar
        return x_bar / d


class Add(Primitive):
    name = "add"
    orders = None
    elementwise = True

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def jvp(ctx, a_dot, b_dot):
        return add_terms(a_dot, b_dot)

    @staticmethod
    def vjp(ctx, y_bar):
        return (y_bar if ctx.needs[0] else None, y_bar if ctx.needs[1] else None)

    @staticmethod
    def vijp(ctx, x_bar, fragment):
        return x_bar          # J = I for the data-path input: always invertible


class Sub(Primitive):
    name = "sub"
    orders = None
    elementwise = True

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def jvp(ctx, a_dot, b_dot):
        return add_terms(a_dot, None if b_dot is None else -b_dot)

    @staticmethod
    def vjp(ctx, y_bar):
        return (y_bar if ctx.needs[0] else None, -y_bar if ctx.needs[1] else None)

    @staticmethod
    def vijp(ctx, x_bar, fragment):
        return x_bar if ctx.wrt == 0 else -x_bar       # J = +-I


class Neg(Primitive):
    name = "neg"
    orders = None
    elementwise = True

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def jvp(ctx, x_dot):
        return -x_dot

    @staticmethod
    def vjp(ctx, y_bar):
        return (-y_bar,)

    @staticmethod
    def vijp(ctx, x_bar, fragment):
        return -x_bar


class Mul(Diagonal):
    """y = a * b. d/da = b, d/db = a; the vijp divides by the other factor (fragment where it is 0)."""
    name = "mul"
    orders = None

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for(0, b=b)
        ctx.save_for(1, a=a)
        return a * b

    @classmethod
    def derivative(cls, ctx, i=0):
        return ctx.b if i == 0 else ctx.a

    @classmethod
    def _erased(cls, ctx, d):
        return d == 0                     # exact: dividing by a tiny factor is what the user asked for


class Div(Diagonal):
    """y = a / b. d/da = 1/b, d/db = -a/b^2."""
    name = "div"
    orders = None

    @staticmethod
    def forward(ctx, a, b):
        ctx.save(b=b)
        y = a / b
        ctx.save_for(1, y=y)
        return y

    @classmethod
    def derivative(cls, ctx, i=0):
        return 1 / ctx.b if i == 0 else -ctx.y / ctx.b

    @classmethod
    def _erased(cls, ctx, d):
        return d == 0


class Pow(Diagonal):
    """y = a ** b. d/da = b a^(b-1), d/db = y log a (a > 0)."""
    name = "pow"
    orders = None

    @staticmethod
    def forward(ctx, a, b):
        y = a ** b
        ctx.save(a=a, b=b)
        ctx.save_for(1, y=y)
        return y

    @classmethod
    def derivative(cls, ctx, i=0):
        xp = get_array_module(ctx.a)
        if i == 0:
            return ctx.b * ctx.a ** (ctx.b - 1)
        return ctx.y * xp.log(xp.where(ctx.a > 0, ctx.a, 1))   # a^b with a <= 0 has no b-derivative: 0

    @classmethod
    def _erased(cls, ctx, d):
        return d == 0


class Exp(Diagonal):
    name = "exp"
    orders = None

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        y = xp.exp(x)
        ctx.save(y=y)
        return y

    @classmethod
    def derivative(cls, ctx, i=0):
        return ctx.y                       # (e^x)' = e^x

    @classmethod
    def _erased(cls, ctx, d):
        return d == 0                      # only where e^x underflowed


class Log(Diagonal):
    name = "log"
    orders = None

    @staticmethod
    def forward(ctx, x):
        ctx.save(x=x)
        return get_array_module(x).log(x)

    @classmethod
    def derivative(cls, ctx, i=0):
        return 1 / ctx.x

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        return x_bar * ctx.x               # y_bar = x_bar / (1/x): never erased (x > 0)


class Sqrt(Diagonal):
    name = "sqrt"
    orders = None

    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).sqrt(x)
        ctx.save(y=y)
        return y

    @classmethod
    def derivative(cls, ctx, i=0):
        return 0.5 / ctx.y

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        return 2 * x_bar * ctx.y           # y_bar = x_bar / (1 / 2 sqrt x)


class Log1p(Diagonal):
    """log(1 + x), accurate for small x; f' = 1 / (1 + x). (NumPy's log1p on tensors, for the activation
    formulas a differentiable backward runs.)"""
    name = "log1p"
    orders = None

    @staticmethod
    def forward(ctx, x):
        ctx.save(x=x)
        return get_array_module(x).log1p(x)

    @classmethod
    def derivative(cls, ctx, i=0):
        return 1 / (1 + ctx.x)


class Expm1(Diagonal):
    """e^x - 1, accurate for small x; f' = e^x = y + 1."""
    name = "expm1"
    orders = None

    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).expm1(x)
        ctx.save(y=y)
        return y

    @classmethod
    def derivative(cls, ctx, i=0):
        return ctx.y + 1

    @classmethod
    def _erased(cls, ctx, d):
        return d == 0                      # only where e^x underflowed


class Erf(Diagonal):
    """erf(x) = 2/sqrt(pi) times the integral of exp(-t^2) from 0 to x; f' = 2/sqrt(pi) exp(-x^2) (never 0 in
    float64 for |x| < 26). GELU's formula on tensors needs it."""
    name = "erf"
    orders = None

    @staticmethod
    def forward(ctx, x):
        from ..kernels.activations import erf
        ctx.save(x=x)
        return erf(get_array_module(x), x)

    @classmethod
    def derivative(cls, ctx, i=0):
        return get_array_module(ctx.x).exp(-ctx.x * ctx.x) * 1.1283791670955126       # 2/sqrt(pi) e^(-x^2)


class Abs(Diagonal):
    """|x|' = sign(x); at x = 0 we take the subgradient 0 (so that coordinate is a fragment). The sign is
    piecewise constant: |x|'' = 0 almost everywhere."""
    name = "abs"
    orders = None
    constants = ("s",)

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        ctx.save(s=xp.sign(x).astype(x.dtype))
        return xp.abs(x)

    @classmethod
    def derivative(cls, ctx, i=0):
        return ctx.s

    @classmethod
    def _erased(cls, ctx, d):
        return d == 0


class Maximum(Diagonal):
    """max(a, b). At a tie the gradient goes to a (the first operand), like NumPy's choice of value. The
    choice (a mask) is piecewise constant: higher derivatives go through the chosen operand."""
    name = "maximum"
    orders = None

    @staticmethod
    def forward(ctx, a, b):
        xp = get_array_module(a, b)
        take_a = a >= b
        ctx.save(take_a=take_a)
        return xp.where(take_a, a, b)

    @classmethod
    def derivative(cls, ctx, i=0):
        m = ctx.take_a if i == 0 else ~ctx.take_a
        return m

    @classmethod
    def jvp(cls, ctx, a_dot, b_dot):
        xp = get_array_module(ctx.take_a)
        return xp.where(ctx.take_a, 0 if a_dot is None else a_dot, 0 if b_dot is None else b_dot)

    @classmethod
    def vjp(cls, ctx, y_bar):
        xp = get_array_module(y_bar)
        return (xp.where(ctx.take_a, y_bar, 0) if ctx.needs[0] else None,
                xp.where(ctx.take_a, 0, y_bar) if ctx.needs[1] else None)

    @classmethod
    def _erased(cls, ctx, d):
        return ~d


class Minimum(Maximum):
    """min(a, b). At a tie the gradient goes to a (the first operand)."""
    name = "minimum"

    @staticmethod
    def forward(ctx, a, b):
        xp = get_array_module(a, b)
        take_a = a <= b
        ctx.save(take_a=take_a)
        return xp.where(take_a, a, b)


class Where(Maximum):
    """where(cond, a, b): the condition is not differentiable (inputs 1 and 2 are)."""
    name = "where"
    differentiable = (1, 2)

    @staticmethod
    def forward(ctx, cond, a, b):
        xp = get_array_module(cond, a, b)
        take_a = xp.broadcast_to(cond.astype(bool), xp.broadcast_shapes(cond.shape, a.shape, b.shape))
        ctx.save(take_a=take_a)
        return xp.where(take_a, a, b)

    @classmethod
    def derivative(cls, ctx, i=1):
        return ctx.take_a if i == 1 else ~ctx.take_a

    @classmethod
    def jvp(cls, ctx, c_dot, a_dot, b_dot):
        return super().jvp(ctx, a_dot, b_dot)      # the condition has no tangent

    @classmethod
    def vjp(cls, ctx, y_bar):
        xp = get_array_module(y_bar)
        return (None, xp.where(ctx.take_a, y_bar, 0) if ctx.needs[1] else None,
                xp.where(ctx.take_a, 0, y_bar) if ctx.needs[2] else None)


class Clip(Diagonal):
    """clip(x, lo, hi). Gradient 1 strictly inside [lo, hi] and at the bounds, 0 outside (a mask: the second
    derivative is 0 almost everywhere)."""
    name = "clip"
    orders = None

    @staticmethod
    def forward(ctx, x, lo=None, hi=None):
        xp = get_array_module(x)
        inside = xp.ones(x.shape, bool)
        if lo is not None:
            inside &= x >= lo
        if hi is not None:
            inside &= x <= hi
        ctx.save(inside=inside)
        return xp.clip(x, lo, hi)

    @classmethod
    def derivative(cls, ctx, i=0):
        return ctx.inside

    @classmethod
    def _erased(cls, ctx, d):
        return ~d


class Cast(Primitive):
    """astype between dtypes: the cotangent is cast back; non-float results carry no derivative."""
    name = "astype"
    elementwise = True
    orders = None

    @staticmethod
    def forward(ctx, x, dtype=None):
        ctx.save(src=x.dtype)
        return x.astype(dtype)

    @staticmethod
    def jvp(ctx, x_dot):
        return x_dot.astype(ctx.params["dtype"])

    @staticmethod
    def vjp(ctx, y_bar):
        return (y_bar.astype(ctx.src),)

    @staticmethod
    def vijp(ctx, x_bar, fragment):
        return x_bar.astype(ctx.params["dtype"])


class ToDevice(Primitive):
    """Move between devices; the cotangent moves back. (orders = 1: the rules move arrays; a move inside a
    function differentiated twice raises MissingRuleError.)"""
    name = "to_device"

    @staticmethod
    def forward(ctx, x, device=None):
        from ..backend import device_of, to_device
        ctx.save(src=device_of(x))
        return to_device(x, device)

    @staticmethod
    def jvp(ctx, x_dot):
        from ..backend import to_device
        return to_device(x_dot, ctx.params["device"])

    @staticmethod
    def vjp(ctx, y_bar):
        from ..backend import to_device
        return (to_device(y_bar, ctx.src),)

    @staticmethod
    def vijp(ctx, x_bar, fragment):
        from ..backend import to_device
        return to_device(x_bar, ctx.params["device"])
