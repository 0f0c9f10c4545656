"""The primitive: one class, four rules side by side, on raw arrays.

| rule                          | meaning                                   | map            |
|-------------------------------|-------------------------------------------|----------------|
| forward(ctx, *x, **params)    | the value; stores residuals in ctx        | x -> y         |
| jvp(ctx, *x_dot)              | forward mode (x_dot[i] is None when zero) | x_dot -> J x_dot |
| vjp(ctx, y_bar)               | reverse mode, one cotangent per input     | y_bar -> y_bar J |
| fragment(ctx, y_bar)          | the part of y_bar the vjp erases          | y_bar -> frag  |
| vijp(ctx, x_bar, fragment)    | inverse mode along input ctx.wrt          | y_bar J -> y_bar |
| condition(ctx)                | (‖J‖, ‖J⁺‖) bounds along ctx.wrt          | for error control |

Rules receive and return arrays (NumPy or CuPy) — this module imports no Tensor (docs/design.md). The engine
(tinymoon.autodiff) is the only place that knows how a primitive meets tensors, tapes and tangents; it
also un-broadcasts cotangents once, so elementwise rules return cotangents of the output's shape.

Higher order: the rules are written against `xp = get_array_module(...)` and array methods, so the engine can
run them on Tensors when the backward pass itself is to be differentiated (tinymoon/autodiff/graph.py); then
every operation a rule performs is a recorded primitive. A primitive says how far that goes with `orders`
(1: its rules run on arrays only — a kernel without a tensor path, a residual that cannot be recomputed;
None: any order) and, for the residuals that are neither one of its inputs nor its output, how they are
recomputed on tensors (`residuals`) or that they are constants (`constants`: piecewise constant, so their
derivative is 0 almost everywhere — bit masks, signs, argmax indices; boolean and integer arrays are always
constants).

Residuals are declared by purpose. `ctx.save_for(i, name=array)` keeps `array` only if input i needs a
cotangent (or a tangent, or is the inverse-mode data path): a dense layer keeps its weight for the input
cotangent and its input for the weight cotangent, and an interpreter that asks only for the input
cotangent (Moonwalk phase 1) simply never stores the layer input. `ctx.save(name=array)` keeps what every
mode needs. The bytes kept are counted in tinymoon.memory — an array's, or a residual object's own `nbytes`
(the residual policies of residuals.py: a bit mask, a packed bin index, a sketch), so nothing escapes.
"""
from __future__ import annotations

import numpy as np

from .. import memory
from ..backend import get_array_module
from ..errors import MissingRuleError, NotInvertibleError, ShapeError


class Context:
    """The residual store of one primitive application.

    needs[i] is True when input i needs a derivative (reverse, forward or inverse); wrt is the index of
    the data-path input in inverse mode; params holds the primitive's keyword parameters.
    """
    __slots__ = ("needs", "params", "wrt", "nbytes", "__dict__")   # residuals live in __dict__

    def __init__(self, needs, params):
        self.needs = needs
        self.params = params
        self.wrt = 0
        self.nbytes = 0

    def save(self, **arrays):
        """Keep residuals that every mode needs."""
        self.__dict__.update(arrays)
        n = 0
        for a in arrays.values():
            n += getattr(a, "nbytes", 0)
        if n:
            self.nbytes += n
            memory._add(n)

    def save_for(self, i, **arrays):
        """Keep residuals needed only for the derivative with respect to input i."""
        if self.needs[i]:
            self.save(**arrays)

    def release(self):
        """Drop every residual (the node is done): the bytes leave the engine's count."""
        self.__dict__.clear()
        if self.nbytes:
            memory._sub(self.nbytes)
            self.nbytes = 0

    def __del__(self):
        if self.nbytes:
            memory._sub(self.nbytes)


class Primitive:
    """Base class. Subclasses set `name`, implement `forward` and whichever rules exist.

    `differentiable` lists the inputs that carry derivatives (None = all); integer indices, conditions
    and labels are not. `submersive` documents whether the vjp can erase cotangent components in general
    (True: never; False: it can, so `fragment` says which); rules enforce it at run time.
    """
    name = "primitive"
    differentiable = None
    submersive = True
    elementwise = False    # True: inputs broadcast to the output's shape (the engine un-broadcasts)
    orders = 1             # the highest order of derivative through this primitive (None: any); see above
    constants = ()         # names of float residuals that are piecewise constant (no derivative to carry)

    @staticmethod
    def forward(ctx, *x, **params):
        raise NotImplementedError

    @classmethod
    def jvp(cls, ctx, *x_dot):
        raise MissingRuleError(f"{cls.name}: no jvp rule (forward mode is not available for this primitive)")

    @classmethod
    def orders_for(cls, ctx):
        """The orders this application supports: `orders`, unless another residual policy (`residual=`) keeps
        an approximation of what the vjp needs — then its derivative is not the second derivative, and a
        graph through this backward raises MissingRuleError naming the policy (`policy_order_why` says why)."""
        policy = ctx.params.get("residual")
        if policy is not None:
            raise MissingRuleError(
                f"{cls.name}: no derivative of order 2 with the {type(policy).__name__} residual policy: "
                f"{cls.policy_order_why}; differentiate twice with the default residual")
        return cls.orders

    policy_order_why = "it keeps an approximation of what the vjp needs"

    @classmethod
    def residuals(cls, ctx, y, *x):
        """The residuals the forward derived from its inputs (f'(x), a softmax, a normalised input), recomputed
        from the tensors x and y = the output by the same formula, as a dict {name: tensor}: what a
        differentiable backward uses instead of the saved arrays. None: the primitive derives nothing."""
        return None

    @classmethod
    def vjp(cls, ctx, y_bar):
        raise MissingRuleError(f"{cls.name}: no vjp rule (reverse mode is not available for this primitive)")

    @classmethod
    def fragment(cls, ctx, y_bar):
        """Submersive primitives erase nothing: no fragment."""
        return None

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        raise MissingRuleError(
            f"{cls.name}: no vijp rule for input {ctx.wrt} (inverse mode is not available for this primitive "
            "with respect to this input); use reverse mode, or provide a block-level vijp")

    @classmethod
    def condition(cls, ctx):
        """(‖J‖, ‖J⁺‖): bounds on how much the vjp and the vijp along ctx.wrt can stretch a cotangent. A
        relative error δ in x̄ becomes at most ‖J‖‖J⁺‖·δ in the restored ȳ, which is what Moonwalk's error
        control multiplies along a chain. None: no bound known (the caller measures instead)."""
        return None

    # ---- helpers shared by rules -----------------------------------------------------------------
    @classmethod
    def missing_fragment(cls, what: str):
        """The error every non-submersive vijp raises when the reverse pass recorded no fragment."""
        return NotInvertibleError(
            f"{cls.name}: the vjp erased {what}, so the output cotangent cannot be recovered from the input "
            "cotangent alone. Record the fragment in the reverse pass (vijp_fn.fragments(y_bar), or "
            "Moonwalk's fragmental checkpointing) and pass it to the vijp.")


def check_fragment(name: str, fragment, shape) -> None:
    """A vijp fragment must have exactly the shape its fragment() rule records: one of another shape (a single
    number, say) would broadcast silently into y_bar and give a wrong cotangent."""
    if tuple(getattr(fragment, "shape", ())) != tuple(shape):
        raise ShapeError(f"{name}: vijp fragment of shape {tuple(getattr(fragment, 'shape', ()))}, expected "
                         f"{tuple(shape)}: pass the fragments the reverse pass recorded for this very call "
                         "(vijp_fn.fragments(y_bar))")


def add_terms(*terms):
    """Sum the non-None terms (a None tangent is a symbolic zero); None if all are None."""
    out = None
    for t in terms:
        if t is not None:
            out = t if out is None else out + t
    return out


def call(prim, *args, **params):
    """Primitive `prim` on `args` from inside another primitive's rule: on arrays its forward alone (nothing is
    kept), on Tensors through the engine (`xp.apply`: recorded on the tape), so a rule that needs another
    primitive — a scatter, a transposed convolution — stays differentiable."""
    xp = get_array_module(*args)
    if on_tensors(xp):
        return xp.apply(prim, *args, **params)
    return prim.forward(_Scratch(params), *args, **params)


def on_tensors(xp) -> bool:
    """Whether `xp` (from get_array_module) is tinymoon's namespace of Tensors — a rule running on tensors for a
    differentiable backward — rather than NumPy or CuPy: where a rule calls a kernel, this picks the tensor path."""
    return xp is not np and getattr(xp, "on_tensors", False) is True


class _Scratch:
    """The context of a primitive's forward run by call() on arrays: it keeps nothing (no input needs a
    derivative) and counts nothing."""
    __slots__ = ("params", "wrt", "__dict__")
    needs = (False,) * 8

    def __init__(self, params):
        self.params, self.wrt = params, 0

    def save(self, **arrays):
        pass

    def save_for(self, i, **arrays):
        pass
