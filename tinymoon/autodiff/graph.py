"""A differentiable backward pass: the same vjp rules, run on Tensors.

Why this works: every rule is written against `xp = get_array_module(...)` and array methods. Given Tensors,
`xp` is NumPy's names on tensors (functional/namespace.py), so each operation of the rule applies a primitive:
with the tape recording, the backward pass is itself recorded (grad of grad, backward(create_graph=True));
with residuals that carry tangents, it pushes them (jvp of grad: forward-over-reverse). No rule has a second
version — JAX Autodidax's route, on tinymoon's tape.

What a rule reads from its context becomes a tensor connected to the graph (`GraphContext`):
- a residual that IS input i's array (tape._saved_tensors recorded which): a tensor for that input — the leaf
  itself, or the array on its parent's node (a node never holds intermediate tensors, so one is made for it),
  with the input's tangent when the forward kept it;
- the output's array: a tensor on this very node;
- a residual the forward derived (f'(x), softmax's p, layer_norm's statistics): the primitive's `residuals`
  rule recomputes it from those tensors, by its own formula. That needs the inputs, which a first-order forward
  does not keep: under `tm.higher_order()` (nested transforms turn it on) the nodes of such primitives keep
  them (tape._higher_record, counted in saved bytes);
- a piecewise-constant residual (a bit mask, argmax indices, a sign; boolean and integer arrays): a constant,
  its derivative being 0 almost everywhere;
- anything else raises MissingRuleError naming the primitive and the order: never a silent constant.

A primitive with `orders = 1` is refused at once (its rules run on arrays only).
"""
from __future__ import annotations

from numpy import ndarray

from ..errors import MissingRuleError
from ..ops.base import Primitive
from ..ops.masks import BitMask
from ..tensor import Tensor
from .state import enable_grad, no_grad, state
from .tape import HIGHER_DROPPED, Node

__all__ = ["GraphContext", "vjp_on_tensors", "order_error"]

_HOW = ("record the forward inside `with tm.higher_order():` before backward(create_graph=True) (tm.grad or "
        "tm.vjp nested in another transform, tm.hvp and tm.hessian do this themselves)")


def order_error(prim, order, why):
    return MissingRuleError(f"{prim.name}: no derivative of order {order} — {why}")


def _is_array(v):
    return isinstance(v, ndarray) or (hasattr(v, "dtype") and hasattr(v, "shape") and not isinstance(v, Tensor))


class GraphContext:
    """The residual store of `node` as its rules see it in a differentiable backward (see the module doc):
    attributes are read from node.ctx and turned into tensors on first use. `record`: whether the tensors
    carry the node's place on the tape (an outer reverse transform will differentiate what the rules compute);
    without it they carry only tangents (forward-over-reverse)."""

    def __init__(self, node, needs, record):
        self._node, self._record, self._order = node, record, node.level + 2
        self._derived = None
        self._identity = {name: i for _, _, i, name in node.versions or ()}
        ctx = node.ctx
        self.needs, self.params, self.wrt = needs, ctx.params, ctx.wrt

    # -- the tensors a rule may read -----------------------------------------------------------------
    def _tangent(self, i):
        h = self._node.higher
        return None if not h or h[2] is None else h[2][i]

    def _input(self, i, array):
        """Input i (array: its value) as a tensor on the graph."""
        p = self._node.parents[i]
        if type(p) is Tensor:                      # a leaf that requires grad: the tensor itself
            return p
        t = Tensor._wrap(array)
        if self._record and type(p) is Node:       # an intermediate: the array on its parent's node
            t._node, t.requires_grad = p, True
        t.tangent = self._tangent(i)
        return t

    def _output(self, array):
        t = Tensor._wrap(array)
        if self._record:
            t._node, t.requires_grad = self._node, True
        t.tangent = self._tangent(len(self._node.parents))
        return t

    def _recomputed(self, name):
        if self._derived is None:
            node = self._node
            if getattr(node.prim.residuals, "__func__", node.prim.residuals) is Primitive.residuals.__func__:
                self._derived = {}                 # the primitive derives nothing it could recompute
                return None
            if not node.higher or node.higher[0] is None:
                why = ("its inputs carried tangents that the forward did not keep" if node.higher is HIGHER_DROPPED
                       else "its vjp uses residuals the forward derived from its inputs, and a first-order "
                            "forward does not keep the inputs")
                raise order_error(node.prim, self._order, f"{why}; {_HOW}")
            xs, y, _ = node.higher
            derived = node.prim.residuals(self, self._output(y), *[self._input(i, x) for i, x in enumerate(xs)])
            self._derived = derived or {}
        return self._derived.get(name)

    def __getattr__(self, name):
        # only called for names not set yet: the residuals
        try:
            v = self._node.ctx.__dict__[name]
        except KeyError:
            raise AttributeError(name) from None
        i = self._identity.get(name)
        if i is not None and v.dtype.kind == "f":
            t = self._output(v) if i < 0 else self._input(i, v)
        elif self._is_constant(name, v):
            t = v
        else:
            t = self._recomputed(name)
            if t is None:
                raise order_error(self._node.prim, self._order, f"its residual {name!r} is derived from its inputs "
                                  "and the primitive has no rule to recompute it on tensors (Primitive.residuals)")
        setattr(self, name, t)
        return t

    def _is_constant(self, name, v):
        """Kept as it is: a piecewise-constant residual, or a value that is not an array (a shape, a scale)."""
        if isinstance(v, BitMask) or name in self._node.prim.constants:
            return True
        if _is_array(v):
            return v.dtype.kind in "biu"           # a mask or indices
        return isinstance(v, (int, float, str, tuple, list, dict, type(None))) or hasattr(v, "kind")   # numbers,
        # shapes, configurations, dtypes

    def save(self, **values):
        """A rule caching something on its context caches it here, for this backward only."""
        for k, v in values.items():
            setattr(self, k, v)

    def save_for(self, i, **values):
        if self.needs[i]:
            self.save(**values)


def vjp_on_tensors(node, g, needs, record):
    """The cotangents of node's inputs from the Tensor cotangent g of its output, by its vjp rule run on
    tensors (the rules it calls are recorded when `record`; tangents are pushed in any case). Refuses a
    primitive whose rules do not go past first order."""
    prim = node.prim
    order = node.level + 2
    orders = prim.orders_for(node.ctx)
    if orders is not None and order > orders:
        raise order_error(prim, order, f"{prim.name}'s rules are differentiable to order {orders} only"
                          if orders > 1 else f"{prim.name}'s vjp rule runs on arrays only (orders = 1: a "
                          "kernel without a tensor path, or a residual with no recompute)")
    if node.higher is HIGHER_DROPPED:
        raise order_error(prim, order, f"its inputs carried tangents that the forward did not keep; {_HOW}")
    gctx = GraphContext(node, needs, record)
    old_level, old_strict = state.level, Tensor._strict
    state.level, Tensor._strict = node.level + 1, True
    try:
        with (enable_grad() if record else no_grad()):
            cts = prim.vjp(gctx, g)
    finally:
        state.level, Tensor._strict = old_level, old_strict
    if type(cts) is not tuple:
        cts = (cts,)
    return tuple(c if c is None or isinstance(c, Tensor) else Tensor._wrap(c) for c in cts)
