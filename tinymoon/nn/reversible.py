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
"""
from __future__ import annotations

from .. import functional as Fn
from ..autodiff.state import no_grad
from ..errors import ShapeError
from ..tensor import Tensor, as_tensor
from .module import Module

__all__ = ["RevBlock"]


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

    def extra_repr(self):
        return f"split_axis={self.split_axis}"
