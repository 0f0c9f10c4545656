"""A model run unit by unit on one tape: what Moonwalk's phase 1 asks of the engine.

Together with reverse.py and inverse.py this is the only code that reads tape nodes.

- `record_units(units, x0)` runs the units one after another on x0 (a leaf that requires grad; the caller
  froze the parameters, so every rule keeps only what the *input* cotangent needs: bit masks, a reference to
  a weight) and returns (x_L, [UnitTape]). A UnitTape lists the unit's nodes — never its output tensors, so
  an activation lives only while a rule saved it — and says whether the unit's data path is a chain.
- `reverse_unit(tape, h_out)` is h_in = h_out J_unit for the input alone, releasing the unit's residuals and
  recording the fragments of a chain (the coordinates of h_out its vjp erases: the only time they exist).
- `unit_condition(tape)` multiplies the primitives' condition bounds ‖J‖·‖J⁺‖ along a chain.
"""
from __future__ import annotations

from ..errors import NotInvertibleError
from ..tensor import Tensor
from .inverse import chain_links
from .reverse import propagate
from .state import enable_grad, state

__all__ = ["UnitTape", "record_units", "reverse_unit", "unit_condition", "tape_norm"]


class _NodeLog(list):
    """Stands in for the inverse-mode trace while a unit runs: keeps (node, output shape) of every recorded
    output, never the output tensor itself."""
    __slots__ = ()

    def append(self, out):
        list.append(self, (out._node, out.data.shape))


class UnitTape:
    """One unit's part of the phase-1 tape: its nodes in creation order (a topological order), the node or leaf
    its input came from, its output node, and `chain` (True when the data path through it is a chain of
    primitives, each node's ctx.wrt then naming its data-path input)."""
    __slots__ = ("nodes", "source", "out_node", "chain")

    def __init__(self, nodes, source, out_node, chain):
        self.nodes, self.source, self.out_node, self.chain = nodes, source, out_node, chain


EMPTY = UnitTape([], None, None, True)          # a unit that returns its input, or one run without a tape


def record_units(units, x0):
    """Run `units` on x0 recording the tape unit by unit. Returns (x_L, [UnitTape])."""
    tapes = []
    x = x0
    old = state.trace
    try:
        with enable_grad():
            for i, unit in enumerate(units):
                log = _NodeLog()
                state.trace = log
                source = x._node if x._node is not None else x
                y = unit(x)
                state.trace = old
                if y is x:
                    tapes.append(EMPTY)
                    continue
                if not isinstance(y, Tensor) or y._node is None:
                    raise NotInvertibleError(
                        f"moonwalk: unit {i} ({type(unit).__name__}) returns a value that does not depend on its "
                        "input, so every cotangent before it is zero and no inverse pass can restore it")
                found = chain_links(log, source)
                chain = not isinstance(found, str) and found[1] == {id(y._node)}
                tapes.append(UnitTape([n for n, _ in log], source, y._node, chain))
                x = y
    finally:
        state.trace = old
    return x, tapes


def reverse_unit(tape, h_out, record_fragments=True):
    """h_in = h_out J_unit (input cotangent only), releasing the unit's residuals as it goes.

    Returns (h_in, fragments): for a chain with record_fragments, fragments[k] is what the k-th node's vjp
    erased (None where nothing), in the order the chain's links run in inverse mode; otherwise None.
    """
    nodes = tape.nodes
    if not nodes:
        return h_out, None
    frags = [None] * len(nodes) if (tape.chain and record_fragments) else None

    def record(k, node, g):
        if frags is not None and not node.prim.submersive:
            frags[k] = node.prim.fragment(node.ctx, g)

    outside = propagate(nodes, {id(tape.out_node): h_out}, on_node=record)
    h_in = None
    for _, ct in outside.values():                       # the unit's input (the parameters are frozen)
        h_in = ct if h_in is None else h_in + ct
    if h_in is None:
        raise NotInvertibleError("moonwalk: no cotangent reached a unit's input: its output does not depend on it")
    return h_in, frags


def unit_condition(tape, unknown=1.0):
    """Π ‖J_k‖·‖J_k⁺‖ over the unit's primitives: a bound on how much its vijp can amplify a relative error.
    A primitive without a condition rule counts as `unknown`."""
    k = 1.0
    for node in tape.nodes:
        b = node.prim.condition(node.ctx)
        k *= unknown if b is None else b[0] * b[1]
    return k


def tape_norm(tape):
    """Π ‖J_k‖ over the unit's primitives (1 where unknown): a bound on any Jacobian path through it."""
    n = 1.0
    for node in tape.nodes:
        b = node.prim.condition(node.ctx)
        n *= 1.0 if b is None else b[0]
    return n
