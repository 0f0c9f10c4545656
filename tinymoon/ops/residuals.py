"""Residual policies as types: what a primitive keeps of its input for a cotangent (docs/design.md §2).

A residual is an object the rule keeps in its context. It carries the one operation the rule needs from it,
and counts its own bytes: `nbytes` is what Context.save adds to the engine's saved-bytes figure, so nothing it
holds escapes the count.

| policy     | type                               | keeps                                   | the rule asks it for          |
|------------|------------------------------------|-----------------------------------------|-------------------------------|
| full       | `Derivative`                       | f'(x), as many bytes as x               | f'(x) v                       |
| full       | the input itself (`FromInput`)     | x (softplus; Linear and Conv2d keep x)  | f'(x) from x; the exact W̄     |
| input-only | `SignMask`                         | 1 bit per element, x > 0 (relu, leaky)  | v or slope·v                  |
| quantised  | `tinymoon.fewbit.PackedBins`       | a b-bit bin index and the table's levels| levels[idx] v                 |
| sketched   | `tinymoon.randomized.RowSketch`... | a random sketch of x                    | an unbiased W̄ from ȳ          |

Elementwise (`Diagonal`) rules need from their residual: `derivative()` (f' as an array: the fragment, the
vijp's division, the condition), `scale(v)` = f'·v (vjp and jvp), and where an exact shortcut exists,
`divide(x_bar)` (the vijp when nothing is ever erased, `invertible`) and `condition()`. Linear and Conv2d need `weight_cotangent`.

A policy is passed to a primitive as `residual=`: an instance configured with its parameters (a table, a
probe count and seed); the primitive's forward calls its `keep`, which returns the residual — an instance
of the same type holding the arrays. `residual=None` is the primitive's own (full or input-only) policy.
"""
from __future__ import annotations

from .. import kernels
from ..backend import get_array_module
from .elementwise import DIAG_TOL
from .masks import BitMask, where_mask


class DiagonalResidual:
    """What an elementwise rule keeps for f'. Subclasses give `derivative`; `scale` may be a faster f'·v."""
    __slots__ = ()
    nbytes = 0
    invertible = False      # True: f' never vanishes, so there is no fragment and `divide` is the vijp

    def derivative(self):
        raise NotImplementedError

    def scale(self, v):
        return v * self.derivative()                   # ȳ f'(x) (vjp), f'(x) ẋ (jvp)

    def erased(self, d):
        """The coordinates whose cotangent the vjp erases (numerically): the vijp's fragment."""
        return get_array_module(d).abs(d) < DIAG_TOL

    def divide(self, x_bar):
        """ȳ = x̄ / f'(x), for an `invertible` residual."""
        raise NotImplementedError

    def condition(self):
        """(‖J‖, ‖J⁺‖) when known without a pass over f'; None: measured from derivative()."""
        return None


class Derivative(DiagonalResidual):
    """Full: f'(x) itself (from the fused kernel pass, or the table), as many bytes as x."""
    __slots__ = ("d",)

    def __init__(self, d):
        self.d = d

    @property
    def nbytes(self):
        return self.d.nbytes

    def derivative(self):
        return self.d


class FromInput(DiagonalResidual):
    """Full: the input itself; f' is computed from it when a rule asks (the table's formula). The input is saved
    next to it as the context's `x`, so the engine sees that very array (a leaf's array is not counted, and
    its version is checked); this object holds no bytes of its own."""
    __slots__ = ("x", "formula", "params")

    def __init__(self, x, formula, params):
        self.x, self.formula, self.params = x, formula, params

    def derivative(self):
        if compiled_for(self.formula, self.x, self.params):   # one fused pass (kernels.act_forward) instead
            return kernels.act_forward(self.formula.name, self.x, **self.params)[1]   # of the table's passes
        return self.formula.df_at(self.x, self.params)


def compiled_for(formula, x, params):
    """Whether kernels.act_forward computes this formula on x with these parameters: a compiled body, a
    float dtype, and parameters the table's check accepts (the engine takes PyTorch's wider ranges, e.g. a
    softplus threshold <= 0, which stay on the table's formula)."""
    if formula.name not in kernels.COMPILED or getattr(x, "dtype", None) not in ("float32", "float64"):
        return False
    try:
        formula.resolve(**params)
    except formula.error:
        return False
    return True


class SignMask(BitMask, DiagonalResidual):
    """Input-only: the bit x > 0, packed (1 bit per element); f' is 1 there and `slope` elsewhere (relu: 0).

    With slope != 0 nothing is erased and the inverse is exact: ȳ = x̄ where the bit is set, x̄ / slope
    elsewhere. With slope 0 the units with x <= 0 erase their cotangent: exactly those are the fragment."""
    __slots__ = ("slope",)

    def __init__(self, packed, shape, slope=0.0):
        BitMask.__init__(self, packed, shape)
        self.slope = float(slope)

    def derivative(self):
        m = self.unpack()
        return m if self.slope == 0 else get_array_module(self.packed).where(m, 1.0, self.slope)

    def scale(self, v):
        return where_mask(self, v, self.slope)         # v where x > 0, slope·v elsewhere (0 for relu, even ∞)

    def erased(self, d):
        return get_array_module(d).abs(d) == 0          # only slope-0 units: a small slope is still exact

    @property
    def invertible(self):
        return self.slope != 0

    def divide(self, x_bar):
        return where_mask(self, x_bar, 1.0 / self.slope)                    # ȳ = x̄ / f'(x)

    def condition(self):
        # f' is 1 on the positive units and the slope on the others: only the slopes that occur count
        s = abs(self.slope)
        if s == 0:
            return 1.0, 1.0                             # erased units come back exactly from the fragment
        pos, neg = self.any(), not self.all()
        return max(1.0 if pos else 0.0, s if neg else 0.0), max(1.0 if pos else 0.0, 1.0 / s if neg else 0.0)


def sign_mask(x, slope=0.0):
    """(relu or leaky relu of x, its SignMask) in one kernel pass."""
    y, packed = kernels.relu_mask_forward(x, slope)
    return y, SignMask(packed, x.shape, slope)
