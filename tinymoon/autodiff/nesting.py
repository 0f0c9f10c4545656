"""Nested differentiation — grad of grad, jvp of grad, grad of jvp, create_graph — is refused here, in one place.

Why refuse: the rules compute cotangents and tangents on raw arrays, so the derivative an inner transform
returns is a constant to an outer one. Without a check, `tm.grad(tm.grad(f))(x)` returns zeros and
`tm.jvp(tm.grad(f), ...)` a zero tangent: silently wrong numbers. Until the primitives' rules are themselves
differentiable (higher-order support), every entry point asks this module, and this module raises
MissingRuleError naming the combination. Higher-order support replaces this module, nothing else.

How nesting is seen, without touching the tape:
- every transform (grad, value_and_grad, vjp, vijp, jvp) runs its function inside `tracing(...)`, which
  records the ids of its primals while the function runs;
- a tm.jvp inside another tm.jvp's function is refused outright: a closure over the outer tangents would
  mix them into the inner tangent, and that cannot be seen from the values;
- an inner transform otherwise refuses (a) a primal that carries a tangent (an outer jvp is running), (b) a primal
  that is an outer transform's primal or a value computed from one (it requires grad and is on a tape),
  and (c) an output that still carries a tangent or whose tape reaches an outer primal (the inner function
  closed over an outer variable). Outside any transform nothing is walked, so the check costs nothing.
"""
from __future__ import annotations

from contextlib import contextmanager

from ..errors import MissingRuleError
from ..tensor import Tensor
from .tape import Node

_outer = []     # (name of the transform, ids of its primals), for each transform whose function is running


def _refuse(inner: str, outer: str) -> MissingRuleError:
    return MissingRuleError(
        f"{inner} inside {outer}: higher-order differentiation is not supported yet — the rules compute "
        f"derivatives on raw arrays, so {outer} would see {inner}'s result as a constant and return zeros. "
        "Differentiate once (tm.grad / tm.vjp / tm.jvp of the function itself), or use finite differences of "
        "the first derivative (tinymoon.testing.check_grads checks first derivatives only)")


@contextmanager
def tracing(what: str, primals):
    """Mark the primals of reverse transform `what` while its function runs."""
    _outer.append((what, frozenset(id(p) for p in primals)))
    try:
        yield
    finally:
        _outer.pop()


def _outer_primal_reached(out) -> str | None:
    """The name of the innermost outer transform one of whose primals `out`'s tape reaches, else None."""
    if not _outer or not getattr(out, "requires_grad", False):
        return None
    ids = set().union(*(ids for _, ids in _outer))
    if id(out) in ids:
        return _outer[-1][0]
    seen, stack = set(), [out._node] if out._node is not None else []
    while stack:
        node = stack.pop()
        for p in node.parents:
            if p is None:
                continue
            if type(p) is Node:
                if id(p) not in seen:
                    seen.add(id(p))
                    stack.append(p)
            elif id(p) in ids:
                return next(what for what, i in reversed(_outer) if id(p) in i)
    return None


def check_primals(what: str, primals) -> None:
    """Refuse primals through which an outer transform is differentiating (see the module docstring)."""
    if what == "tm.jvp" and any(name == "tm.jvp" for name, _ in _outer):
        raise _refuse(what, "tm.jvp")
    for p in primals:
        if not isinstance(p, Tensor):
            continue
        if p.tangent is not None:
            raise _refuse(what, "tm.jvp")
        reverse = [(name, ids) for name, ids in _outer if name != "tm.jvp"]
        if reverse and p.requires_grad and (p._node is not None or any(id(p) in ids for _, ids in reverse)):
            raise _refuse(what, reverse[-1][0])


def check_output(what: str, out) -> None:
    """Refuse an inner output that depends on an outer transform's variables through a closure."""
    if getattr(out, "tangent", None) is not None and what != "tm.jvp":
        raise _refuse(what, "tm.jvp")
    outer = _outer_primal_reached(out)
    if outer is not None:
        raise _refuse(what, outer)


def refuse_create_graph() -> None:
    raise MissingRuleError(
        "backward(create_graph=True): higher-order differentiation is not supported yet — the gradients "
        "backward computes are not recorded on a tape, so they cannot be differentiated again. Call "
        "backward() without create_graph, or differentiate the first derivative by finite differences")
