"""RevBlock: an additive-coupling reversible block (RevNet, Gomez et al. 2017), the unit PETRA and Moonwalk
reconstruct activations with.

x = (x1, x2) split along `split_axis` (x1 takes the first ceil(C/2) channels, like torch.chunk);
    y1 = x1 + F(x2)
    y2 = x2 + G(y1)
y = concat(y1, y2). The inverse needs no stored activation:
    x2 = y2 - G(y1)
    x1 = y1 - F(x2)
F maps x2's channels to x1's, G maps x1's channels to x2's; both may be any Module (they need not be
invertible themselves).

The block owns its rules: `forward`; `inverse` (x from y); `inverse_vjp` (RevBackprop's step: x from y and
x̄ from ȳ in one pass, with the parameter cotangents); and `vijp` (ȳ from x̄ = ȳ J, in closed form, with the
parameter cotangents from the same two vjps). Moonwalk, PETRA and the RevBackprop baseline call them;
nothing else re-derives the coupling.
"""
from __future__ import annotations

from .. import functional as Fn
from ..autodiff.reverse import vjp_into
from ..autodiff.state import enable_grad, no_grad
from ..backend import get_array_module
from ..errors import ShapeError
from ..tensor import Tensor, as_tensor
from .module import Module

__all__ = ["RevBlock"]


def _trainable(module):
    return [p for p in module.parameters() if p.requires_grad]


def _split_sizes(n, axis, shape):
    if n < 2:
        raise ShapeError(f"RevBlock: the split axis {axis} of an input of shape {shape} has {n} channel(s); "
                         "it needs at least 2 to split into (x1, x2)")
    c1 = (n + 1) // 2
    return c1, n - c1


class RevBlock(Module):
    """Additive coupling y1 = x1 + F(x2), y2 = x2 + G(y1) over a split of `split_axis` (default 1, the
    channel axis of NCHW or the feature axis of (N, D)); `inverse(y)` reconstructs x exactly, storing nothing."""

    def __init__(self, F, G, split_axis=1):
        super().__init__()
        if not isinstance(F, Module) or not isinstance(G, Module):
            raise TypeError(f"RevBlock(F, G): F and G must be Modules, got {type(F).__name__} and {type(G).__name__}")
        self.F, self.G = F, G
        self.split_axis = int(split_axis)

    def _slices(self, x):
        """(index of x1, index of x2, axis): x1 = x[..., :c1, ...], x2 = x[..., c1:, ...] along split_axis."""
        axis = self.split_axis % x.ndim
        c1, _ = _split_sizes(x.shape[axis], axis, x.shape)
        head = (slice(None),) * axis
        return head + (slice(0, c1),), head + (slice(c1, None),), axis

    def forward(self, x):
        i1, i2, axis = self._slices(x)
        x1, x2 = Fn.getitem(x, i1), Fn.getitem(x, i2)
        y1 = x1 + self.F(x2)
        y2 = x2 + self.G(y1)
        return Fn.concatenate([y1, y2], axis=axis)

    def inverse(self, y):
        """x from y = self(x): x2 = y2 - G(y1), x1 = y1 - F(x2), under no_grad (nothing recorded)."""
        y = as_tensor(y)
        with no_grad():
            i1, i2, axis = self._slices(y)
            y1, y2 = Tensor._wrap(y.data[i1]), Tensor._wrap(y.data[i2])
            x2 = (y2 - self.G(y1)).data
            x1 = (y1 - self.F(Tensor._wrap(x2))).data
            return Tensor._wrap(y.xp.concatenate([x1, x2], axis=axis))

    def inverse_vjp(self, y, y_bar, input_grad=True):
        """RevBackprop's step through the block, fused: from the output y and its cotangent ȳ (arrays), return
        (x, x̄) — x̄ None unless input_grad — and add θ̄_G, θ̄_F to the parameters' .grad:

            x2 = y2 − G(y1),   z̄ = ȳ1 + ȳ2 J_G(y1),   θ̄_G = ȳ2 ∂G/∂θ_G
            x1 = y1 − F(x2),   x̄2 = ȳ2 + z̄ J_F(x2),    θ̄_F = z̄ ∂F/∂θ_F,   x̄1 = z̄

        Each branch runs once, on a tape, and gives both the reconstruction and its vjp; nothing is stored
        between the forward and this call. The reconstruction uses the current F and G: with weights updated
        since the forward (PETRA's delayed gradients) x is the input the *new* block would map to y."""
        i1, i2, axis = self._slices(y)
        y1, y2 = y[i1], y[i2]
        y1_bar, y2_bar = y_bar[i1], y_bar[i2]
        y1t = Tensor._wrap(y1, requires_grad=True)
        with enable_grad():
            g = self.G(y1t)
        x2 = y2 - g.data
        (yJ,) = vjp_into(g, y2_bar, [y1t], _trainable(self.G))           # ȳ2 J_G(y1), θ̄_G into .grad
        del g
        z_bar = y1_bar if yJ is None else y1_bar + yJ
        x2t = Tensor._wrap(x2, requires_grad=input_grad)
        with enable_grad():
            f = self.F(x2t)
        x1 = y1 - f.data
        got = vjp_into(f, z_bar, [x2t] if input_grad else [], _trainable(self.F))   # z̄ J_F(x2), θ̄_F
        xp = get_array_module(y)
        x = xp.concatenate([x1, x2], axis=axis)
        if not input_grad:
            return x, None
        x2_bar = y2_bar if got[0] is None else y2_bar + got[0]
        return x, xp.concatenate([z_bar, x2_bar], axis=axis)

    def vijp(self, x, x_bar):
        """Inverse mode through the block, for any F and G: from the input x and its cotangent x̄ = ȳ J (arrays),
        return (y, ȳ) and add θ̄_F, θ̄_G to the parameters' .grad:

            z̄ = x̄1   (the cotangent of y1 before G adds to it)
            ȳ2 = x̄2 − z̄ J_F(x2),   θ̄_F = z̄ ∂F/∂θ_F
            ȳ1 = z̄ − ȳ2 J_G(y1),   θ̄_G = ȳ2 ∂G/∂θ_G

        (the backward pass is z̄ = ȳ1 + ȳ2 J_G, x̄1 = z̄, x̄2 = ȳ2 + z̄ J_F; solving it for ȳ gives the above).
        No matrix is inverted, so the block is always submersive. x̄'s dtype is kept (float64 cotangents
        through a float32 block stay float64)."""
        i1, i2, axis = self._slices(x)
        x1, x2 = x[i1], x[i2]
        z_bar, x2_bar = x_bar[i1], x_bar[i2]
        x2t = Tensor._wrap(x2, requires_grad=True)
        with enable_grad():
            f = self.F(x2t)
        (zJ,) = vjp_into(f, z_bar, [x2t], _trainable(self.F))           # z̄ J_F(x2), θ̄_F into .grad
        y2_bar = x2_bar if zJ is None else x2_bar - zJ
        y1 = x1 + f.data
        del f
        y1t = Tensor._wrap(y1, requires_grad=True)
        with enable_grad():
            g = self.G(y1t)
        (yJ,) = vjp_into(g, y2_bar, [y1t], _trainable(self.G))          # ȳ2 J_G(y1), θ̄_G into .grad
        y1_bar = z_bar if yJ is None else z_bar - yJ
        y2 = x2 + g.data
        xp = get_array_module(x)
        return xp.concatenate([y1, y2], axis=axis), xp.concatenate([y1_bar, y2_bar], axis=axis)

    @staticmethod
    def vijp_growth(norm):
        """A bound on how much `vijp` amplifies a relative error, given a bound `norm` on ‖J_F‖ and ‖J_G‖:
        each of the two subtractions adds at most ‖J‖ times the cotangent, so (1 + norm)²."""
        return (1.0 + norm) ** 2

    def extra_repr(self):
        return f"split_axis={self.split_axis}"
