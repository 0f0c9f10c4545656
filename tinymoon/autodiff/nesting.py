"""Nested transforms: which one is running inside which, and what that asks of the engine.

Every transform (grad, value_and_grad, vjp, jvp, vijp) runs its function inside `running(...)`, which keeps a
stack of the transforms whose function is running. That stack is the switch for higher order:

- a reverse transform (tm.grad, tm.value_and_grad, tm.vjp) or a backward() running inside another transform
  is differentiated by it: its primals stay connected to the outer transform (an identity node on the tape,
  which also carries their tangents), its function's tape is recorded with higher order on (every node keeps
  its inputs: tape.record), and its backward pass runs the vjp rules on tensors (graph.py) — recorded on the
  tape when a reverse transform encloses it (`record_backward`), pushing tangents when a tm.jvp does;
- forward and inverse mode nested in a transform are refused with MissingRuleError (grad of jvp, jvp of jvp,
  vijp nested either way): their rules would need tangents of tangents, which tinymoon does not carry. The
  same numbers come from forward-over-reverse: tm.jvp(tm.grad(f), ...) or tm.hvp. An inner tm.jvp or tm.vijp
  that does not touch the outer transform's variables (its primals are constants, its function closes over
  none of them) is a constant to the outer one, and allowed.
Outside any transform nothing is walked, so the checks cost nothing.
"""
from __future__ import annotations

from contextlib import contextmanager

from ..errors import MissingRuleError
from ..tensor import Tensor
from .state import state
from .tape import Node

REVERSE = ("tm.grad", "tm.value_and_grad", "tm.vjp", "backward")
_running = []     # (name of the transform, ids of its primals and of their nodes), outermost first


def nested() -> bool:
    """Whether a transform's function is running: a reverse pass started now is differentiated by it."""
    return bool(_running)


def record_backward() -> bool:
    """Whether a reverse transform is running: a differentiable backward must be recorded on the tape (under
    a tm.jvp alone it only needs to push tangents)."""
    return any(name in REVERSE for name, _ in _running)


@contextmanager
def running(what: str, primals):
    """Mark transform `what` as running its function on `primals`; inside a nested transform the tape is
    recorded with higher order on (tape.record keeps each node's inputs and tangents)."""
    ids = set()
    for p in primals:
        ids.add(id(p))
        if isinstance(p, Tensor) and p._node is not None:
            ids.add(id(p._node))
    old = state.higher
    state.higher = old or bool(_running)
    _running.append((what, frozenset(ids)))
    try:
        yield
    finally:
        _running.pop()
        state.higher = old


def _refuse(inner: str, outer: str) -> MissingRuleError:
    return MissingRuleError(
        f"{inner} inside {outer}: nested {'forward' if inner == 'tm.jvp' else 'inverse'} mode is not supported — "
        f"its rules compute on arrays, so {outer} would see {inner}'s result as a constant. For second derivatives "
        "use forward-over-reverse, tm.jvp(tm.grad(f), ...) or tm.hvp(f, x, v), or reverse-over-reverse, "
        "tm.grad(tm.grad(f)); both are exact")


def _outer_primal_reached(out) -> str | None:
    """The name of the innermost running transform one of whose primals `out`'s tape reaches, else None."""
    if not _running or not getattr(out, "requires_grad", False):
        return None
    ids = set().union(*(ids for _, ids in _running))
    if id(out) in ids or id(out._node) in ids:
        return _running[-1][0]
    seen, stack = set(), [out._node] if out._node is not None else []
    while stack:
        node = stack.pop()
        for p in node.parents:
            if p is None:
                continue
            if id(p) in ids:
                return next(what for what, i in reversed(_running) if id(p) in i)
            if type(p) is Node and id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
    return None


def check_primals(what: str, primals) -> None:
    """A tm.jvp or tm.vijp refuses primals through which a running transform differentiates."""
    if not _running:
        return
    if what == "tm.jvp" and any(name == "tm.jvp" for name, _ in _running):
        raise _refuse(what, "tm.jvp")
    for p in primals:
        if not isinstance(p, Tensor):
            continue
        if p.tangent is not None:
            raise _refuse(what, "tm.jvp")
        reverse = [(name, ids) for name, ids in _running if name != "tm.jvp"]
        if reverse and p.requires_grad and (p._node is not None or any(id(p) in ids for _, ids in reverse)):
            raise _refuse(what, reverse[-1][0])


def check_reverse(what: str, primals) -> None:
    """A reverse transform inside a running tm.vijp refuses primals that tm.vijp traces: inverse mode has no
    rules for a backward pass (it would be traced as a forking graph, not a chain)."""
    if not any(name == "tm.vijp" for name, _ in _running):
        return
    ids = set().union(*(ids for name, ids in _running if name == "tm.vijp"))
    for p in primals:
        if isinstance(p, Tensor) and p.requires_grad and (p._node is not None or id(p) in ids):
            raise MissingRuleError(
                f"{what} inside tm.vijp: inverse mode through a gradient is not supported (the backward pass has "
                "no vijp rules); take tm.vijp of the function itself, or use tm.vjp / tm.grad for both levels")


def check_output(what: str, out) -> None:
    """A tm.jvp or tm.vijp refuses an output that depends on a running transform's variables by a closure."""
    if not _running:
        return
    if getattr(out, "tangent", None) is not None and what != "tm.jvp":
        raise _refuse(what, "tm.jvp")
    outer = _outer_primal_reached(out)
    if outer is not None:
        raise _refuse(what, outer)
