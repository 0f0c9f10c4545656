"""How Moonwalk walks a model: units, and what each kind of unit does in the two phases.

A model (an nn.Sequential, possibly nested) is flattened into *units* x_i = f_i(x_{i-1}; θ_i): every entry
that is not itself a Sequential is one unit. Per unit, Moonwalk needs two things:

- phase 1, `reverse_unit`: the input cotangent h_{i-1} = h_i J_i alone (parameters are frozen, so no rule
  saved a layer input and no weight-gradient GEMM runs), plus the fragments — the coordinates of h_i that
  the vjp erases — for a chain unit;
- phase 2, `sweep_unit`: recompute x_i from x_{i-1} with a local tape, h_i = vijp_i(h_{i-1}, fragments), and
  accumulate θ̄_i = h_i ∂f_i/∂θ_i into .grad with a local vjp.

Kinds of unit:
- "chain": the data path through the unit is a chain of primitives (Linear, activations, Conv2d, pools,
  Flatten, any module that applies them one after another). The vijp is the primitives' vijp rules in
  forward order (tinymoon.autodiff.inverse).
- "revblock": an additive coupling y1 = x1 + F(x2), y2 = x2 + G(y1) (nn.RevBlock). Its data path forks, but
  the vijp has a closed form through one vjp of F and one of G, which also give θ̄_F and θ̄_G:
      z̄ = x̄1;  ȳ2 = x̄2 − z̄ J_F(x2);  ȳ1 = z̄ − ȳ2 J_G(y1);  θ̄_F = z̄ ∂F/∂θ_F;  θ̄_G = ȳ2 ∂G/∂θ_G.
- "fork": any other unit whose data path forks (a plain residual block...). It has no vijp here, so
  Moonwalk records the true cotangent at its output in phase 1 (a forced anchor) and phase 2 only needs
  its local parameter vjp.
"""
from __future__ import annotations

from .. import memory
from ..autodiff.inverse import VijpFunction, trace_chain
from ..autodiff.reverse import backprop, sweep
from ..autodiff.state import enable_grad, no_grad, state
from ..errors import NotInvertibleError
from ..nn.module import Module, Sequential
from ..nn.reversible import RevBlock
from ..tensor import Tensor

__all__ = ["flatten_units", "frozen", "Stash", "UnitTape", "record_forward", "reverse_unit", "sweep_unit",
           "local_backprop", "accumulate"]


# ---- the model as a list of units ----------------------------------------------------------------------

def flatten_units(model):
    """The units of `model`: the entries of nested Sequentials, in order (a non-Sequential is one unit)."""
    if not isinstance(model, Module):
        raise TypeError(f"moonwalk: the model must be a tinymoon.nn Module, got {type(model).__name__}")
    for m in model.modules():
        if type(m).__name__ == "Dropout" and m.training and getattr(m, "p", 0) > 0:
            raise ValueError(
                "moonwalk: the model contains Dropout in training mode; Moonwalk (like checkpointing) runs the "
                "forward pass twice and a second Dropout mask would give a wrong gradient. Call model.eval() on "
                "the Dropout modules, or use backprop for this model.")
    units = []

    def walk(m):
        if isinstance(m, Sequential):
            for c in m:
                walk(c)
        else:
            units.append(m)
    walk(model)
    return units


def unit_params(unit, cache=None):
    """The parameters of `unit` that require grad (memoised in `cache`, a dict, within one gradient step:
    walking the module tree for every unit of a deep network twice per step is measurable)."""
    if cache is None:
        return [p for p in unit.parameters() if p.requires_grad]
    ps = cache.get(id(unit))
    if ps is None:
        ps = cache[id(unit)] = [p for p in unit.parameters() if p.requires_grad]
    return ps


class frozen:
    """Context manager: the given parameters do not require grad inside (Moonwalk phase 1), so every rule
    saves only what the input cotangent needs (masks, a reference to the weight)."""

    def __init__(self, params):
        self.params = list(params)

    def __enter__(self):
        self.flags = [p.requires_grad for p in self.params]
        for p in self.params:
            p.requires_grad = False
        return self

    def __exit__(self, *exc):
        for p, f in zip(self.params, self.flags):
            p.requires_grad = f
        return False


def accumulate(param, g):
    """param.grad += g, exactly as Tensor.backward accumulates (a fresh copy the first time)."""
    param.grad = Tensor._wrap(g.copy() if param.grad is None else param.grad.data + g)


class Stash:
    """Arrays an algorithm keeps between its passes (fragments, anchors, checkpoints), counted in
    tinymoon.memory like residuals, so every memory claim reads one counter."""

    def __init__(self):
        self.items, self.nbytes = {}, 0

    @staticmethod
    def _size(v):
        if v is None:
            return 0
        if isinstance(v, (list, tuple)):
            return sum(Stash._size(a) for a in v)
        return int(getattr(v, "nbytes", 0))

    def put(self, key, value):
        self.pop(key)
        n = self._size(value)
        self.items[key] = value
        self.nbytes += n
        memory._add(n)

    def get(self, key, default=None):
        return self.items.get(key, default)

    def __contains__(self, key):
        return key in self.items

    def pop(self, key, default=None):
        if key not in self.items:
            return default
        v = self.items.pop(key)
        n = self._size(v)
        self.nbytes -= n
        memory._sub(n)
        return v

    def clear(self):
        for k in list(self.items):
            self.pop(k)

    def __del__(self):
        if self.nbytes:
            memory._sub(self.nbytes)


# ---- phase 1: forward with input-only residuals, then the reverse pass for h alone -------------------

class _NodeLog(list):
    """Stands in for the inverse-mode trace while phase 1 runs a unit: it keeps the tape nodes the unit
    records, never the output tensors (which would keep every activation alive)."""
    __slots__ = ()

    def append(self, out):
        list.append(self, out._node)


class UnitTape:
    """Phase-1 record of one unit: its tape nodes in creation order (a topological order), the node or
    leaf its input came from, its output node, and its kind ("chain", "revblock" or "fork")."""
    __slots__ = ("nodes", "source", "out_node", "kind")

    def __init__(self, nodes, source, out_node, kind):
        self.nodes, self.source, self.out_node, self.kind = nodes, source, out_node, kind


def _kind(unit, nodes, source):
    """'chain' when every node has one data-path input and no value is used twice; else 'revblock' for a
    RevBlock and 'fork' otherwise. Sets ctx.wrt (the data-path input) on chain nodes."""
    used = set()
    chain = True
    for node in nodes:
        path = [i for i, p in enumerate(node.parents) if p is not None]
        if len(path) != 1 or id(node.parents[path[0]]) in used:
            chain = False
            break
        used.add(id(node.parents[path[0]]))
        node.ctx.wrt = path[0]
    if chain:
        return "chain"
    return "revblock" if isinstance(unit, RevBlock) else "fork"


def record_forward(units, x0):
    """Run the units on x0 (a leaf requiring grad; parameters frozen by the caller) recording the tape
    unit by unit. Returns (x_L, [UnitTape])."""
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
                if y is x:                                  # an identity unit
                    tapes.append(UnitTape([], source, None, "chain"))
                    continue
                if not isinstance(y, Tensor) or y._node is None:
                    raise NotInvertibleError(
                        f"moonwalk: unit {i} ({type(unit).__name__}) returns a value that does not depend on its "
                        "input, so every cotangent before it is zero and no inverse pass can restore it")
                nodes = list(log)
                tapes.append(UnitTape(nodes, source, y._node, _kind(unit, nodes, source)))
                x = y
    finally:
        state.trace = old
    return x, tapes


def _may_erase(node):
    """Whether asking this node for a fragment can return one (submersive primitives never erase)."""
    return not node.prim.submersive


def reverse_unit(tape, h_out, record_fragments=True):
    """h_in = h_out J_unit (input cotangent only), releasing the unit's residuals as it goes.

    Returns (h_in, fragments): for a chain unit with record_fragments, fragments[k] is what node k's vjp
    erased (None where nothing), in the order phase 2's trace_chain will list the links; else None.
    """
    nodes = tape.nodes
    if not nodes:
        return h_out, None
    chain = tape.kind == "chain"
    frags = [None] * len(nodes) if (chain and record_fragments) else None

    def record(k, node, g):
        if frags is not None and _may_erase(node):
            frags[k] = node.prim.fragment(node.ctx, g)           # the only time h exists inside this unit

    outside = sweep(nodes, {id(tape.out_node): h_out}, on_node=record)
    h_in = None
    for _, ct in outside.values():                               # the unit's input (parameters are frozen)
        h_in = ct if h_in is None else h_in + ct
    if h_in is None:
        raise NotInvertibleError("moonwalk: no cotangent reached a unit's input: its output does not depend on it")
    return h_in, frags


# ---- phase 2: the forward sweep -----------------------------------------------------------------------

def local_backprop(out, y_bar, params, inputs=()):
    """Cotangents of `inputs` (arrays or None) for out's local tape with cotangent y_bar, accumulating the
    parameter cotangents into .grad."""
    leaves = list(inputs) + list(params)
    if not leaves or out._node is None:
        return [None] * len(inputs)
    gs = backprop(out, y_bar, wrt=leaves)
    for p, g in zip(params, gs[len(inputs):]):
        if g is not None:
            accumulate(p, g)
    return gs[:len(inputs)]


def _drop_input_cotangent(links):
    """The sweep already has h_{i-1}: stop the local vjp from computing the first link's input cotangent
    (a wasted GEMM for a linear layer)."""
    node, wrt = links[0].node, links[0].wrt
    node.ctx.needs[wrt] = False
    node.parents = tuple(None if i == wrt else p for i, p in enumerate(node.parents))


def _leaf(array, requires_grad):
    return Tensor._wrap(array, requires_grad=requires_grad)


def sweep_chain(unit, x_in, h_in, fragments, cache=None):
    """x_out, h_out = f(x_in), vijp(h_in, fragments), then θ̄ = h_out ∂f/∂θ into .grad."""
    params = unit_params(unit, cache)
    out, links = trace_chain(unit, x_in)
    h_out = VijpFunction(out, links)(h_in, fragments).data
    if h_out.dtype != out.data.dtype:
        # a vijp rule promoted the dtype (ReLU's divides by an integer mask): keep the model's dtype
        h_out = h_out.astype(out.data.dtype)
    if params:
        if links:
            _drop_input_cotangent(links)
        local_backprop(out, h_out, params)
    return out.data, h_out


def sweep_revblock(block, x_in, h_in, cache=None):
    """Closed-form vijp of y1 = x1 + F(x2), y2 = x2 + G(y1), with θ̄_F and θ̄_G from the same two vjps."""
    axis = block.split_axis % x_in.ndim
    c1 = (x_in.shape[axis] + 1) // 2
    head = (slice(None),) * axis
    i1, i2 = head + (slice(0, c1),), head + (slice(c1, None),)
    x1, x2 = x_in[i1], x_in[i2]
    z_bar, x2_bar = h_in[i1], h_in[i2]                      # z̄ = x̄1 is the cotangent of y1 before G
    x2t = _leaf(x2, True)
    with enable_grad():
        f = block.F(x2t)
    (zJ,) = local_backprop(f, z_bar, unit_params(block.F, cache), [x2t])     # z̄ J_F(x2), θ̄_F = z̄ ∂F/∂θ_F
    y2_bar = x2_bar if zJ is None else x2_bar - zJ          # ȳ2 = x̄2 − z̄ J_F(x2)
    y1 = x1 + f.data
    del f
    y1t = _leaf(y1, True)
    with enable_grad():
        g = block.G(y1t)
    (yJ,) = local_backprop(g, y2_bar, unit_params(block.G, cache), [y1t])    # ȳ2 J_G(y1), θ̄_G = ȳ2 ∂G/∂θ_G
    y1_bar = z_bar if yJ is None else z_bar - yJ            # ȳ1 = z̄ − ȳ2 J_G(y1)
    y2 = x2 + g.data
    xp = Tensor._wrap(x_in).xp
    return xp.concatenate([y1, y2], axis=axis), xp.concatenate([y1_bar, y2_bar], axis=axis)


def sweep_known(unit, x_in, h_out, cache=None):
    """A unit whose output cotangent is known (an anchor): recompute it and accumulate θ̄ = h_out ∂f/∂θ."""
    params = unit_params(unit, cache)
    if not params:
        with no_grad():
            return unit(_leaf(x_in, False)).data
    with enable_grad():
        out = unit(_leaf(x_in, False))
    local_backprop(out, h_out, params)
    return out.data


def sweep_unit(unit, kind, x_in, h_in, fragments, cache=None):
    """One step of phase 2 for a unit whose output cotangent is not known: (x_out, h_out)."""
    if kind == "revblock":
        return sweep_revblock(unit, x_in, h_in, cache)
    if kind == "fork":
        raise NotInvertibleError(
            f"moonwalk: {type(unit).__name__} forks its data path and has no closed-form vijp; phase 1 should "
            "have anchored its output cotangent")
    return sweep_chain(unit, _leaf(x_in, False), h_in, fragments, cache)
