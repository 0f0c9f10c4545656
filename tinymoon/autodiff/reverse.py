"""Reverse mode: the tape walked backwards.

`backward(root, y_bar)` orders the recorded nodes topologically, then `propagate` feeds each node's output
cotangent to its primitive's vjp rule and accumulates the input cotangents. A cotangent whose shape differs from
its input's (the input was broadcast) is summed back to the input's shape here — once, for every rule.
A node's residuals are released as soon as it is done, so memory falls as the pass proceeds.

Differentiable backward (`graph=True`): the cotangents are Tensors and each rule runs on tensors (graph.py), so
the pass is itself recorded — backward(create_graph=True), and any tm.grad / tm.vjp running inside another
transform (nesting.py decides). Its forward nodes are then kept (retain_graph), since the derivative of the
gradient flows through them again.
"""
from __future__ import annotations

import numpy as np

from ..errors import GradientError, ShapeError
from ..ops.shape import Identity, sum_to
from ..tensor import Tensor, as_tensor
from . import nesting
from .apply import apply
from .graph import vjp_on_tensors
from .state import enable_grad, no_grad
from .tape import Node, check_versions


def _topological(root, stop=()):
    """Tape nodes reachable from root's node, inputs before outputs (leaves are not in the list); the walk
    does not enter the nodes whose ids are in `stop` (an inner transform's primals on an outer tape)."""
    order, seen = [], set(stop)
    stack = [(root._node, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for p in node.parents:
            if type(p) is Node and id(p) not in seen:
                stack.append((p, False))
    return order


def _pruned(nodes, wanted):
    """For a walk that only wants the cotangents of the leaves `wanted` (ids): the nodes on a path to one of
    them, and for each node whose rule would compute a cotangent nobody wants, the `needs` it should see
    instead (a linear layer then skips its input-cotangent GEMM)."""
    reach = set()
    keep, needs = [], {}
    for node in nodes:                                         # inputs before outputs
        want = tuple(bool(n) and p is not None and (id(p) in wanted or id(p) in reach)
                     for n, p in zip(node.ctx.needs, node.parents))
        if not any(want):
            continue
        reach.add(id(node))
        keep.append(node)
        if want != tuple(bool(n) for n in node.ctx.needs):
            needs[id(node)] = list(want)
    return keep, needs


def propagate(nodes, grads, on_node=None, retain_graph=False, needs=None, graph=None):
    """The reverse pass over tape `nodes` (listed inputs before outputs).

    grads maps id(node) -> the cotangent of that node's output (the seeds). Each node's cotangent goes
    through its primitive's vjp rule, and the input cotangents pass on to the parent nodes in `nodes`;
    cotangents for any other parent (a leaf, or a node outside the walk) are returned as
    {id(parent): [parent, cotangent]}. on_node(k, node, g) runs before node k's vjp (Moonwalk records
    fragments there: the only moment a cotangent exists inside the walk). Unless retain_graph, each node's
    residuals are released as soon as it is done. needs maps id(node) -> the ctx.needs its rule should see
    for this walk only (see _pruned). A residual whose tensor was changed in place after the forward saved
    it (an optimiser step, x[...] = v) raises GradientError before its vjp runs.

    graph: None for arrays; "record" or "push" for a differentiable backward on Tensor cotangents (the rules
    run on tensors: recorded on the tape, or only pushing tangents under an outer tm.jvp; the caller sets the
    tape's recording accordingly, as backprop does).
    """
    members = {id(n) for n in nodes}
    outside = {}
    for k in range(len(nodes) - 1, -1, -1):
        node = nodes[k]
        g = grads.pop(id(node), None)
        if g is not None:
            if node.released:
                raise GradientError(
                    f"backward through {node.prim.name} a second time: its residuals were already freed. "
                    "Pass retain_graph=True to the first backward if you need to differentiate twice.")
            vs = node.versions
            if vs is not None:
                for c, n, _, _ in vs:
                    if c[0] != n:
                        check_versions(node)     # raises, naming the tensor and the fix
            if on_node is not None:
                on_node(k, node, g)
            pruned = None if needs is None else needs.get(id(node))
            if graph is not None:
                cts = vjp_on_tensors(node, g, node.ctx.needs if pruned is None else pruned, graph == "record")
            elif pruned is None:
                cts = node.prim.vjp(node.ctx, g)
            else:
                full, node.ctx.needs = node.ctx.needs, pruned
                try:
                    cts = node.prim.vjp(node.ctx, g)
                finally:
                    node.ctx.needs = full
            if type(cts) is not tuple:
                cts = (cts,)
            for i, (p, ct, shape) in enumerate(zip(node.parents, cts, node.shapes)):
                if ct is None or p is None or (pruned is not None and not pruned[i]):
                    continue
                if ct.shape != shape:
                    ct = sum_to(ct, shape)
                if type(p) is Node and id(p) in members:
                    prev = grads.get(id(p))
                    grads[id(p)] = ct if prev is None else prev + ct
                else:
                    entry = outside.get(id(p))
                    if entry is None:
                        outside[id(p)] = [p, ct]
                    else:
                        entry[1] = entry[1] + ct
        if not retain_graph:
            node.ctx.release()
            node.released, node.higher = True, None
    return outside


def allow_in_place(root, tensors):
    """Let the tape under `root` be differentiated after `tensors` were changed in place: their version
    records are dropped from its nodes, so its vjps use whatever values the tensors hold by then. Only
    for algorithms that mean exactly that (delayed gradients without weight stashing use the current
    parameters in backward); anywhere else the check is what keeps a gradient true."""
    if root._node is None:
        return
    counters = {id(t._version) for t in tensors if t._version is not None}
    if not counters:
        return
    for node in _topological(root):
        if node.versions is not None:
            kept = [r for r in node.versions if id(r[0]) not in counters]
            node.versions = kept or None


def _key(t):
    """What the tape calls tensor t: its node, or itself for a leaf."""
    return id(t._node) if t._node is not None else id(t)


def backprop(root, y_bar, wrt=None, retain_graph=False, graph=None):
    """Propagate cotangent y_bar (an array of root's shape; a Tensor when `graph`) through the tape.

    wrt=None: accumulate into the .grad of every leaf that requires grad (Tensor.backward).
    wrt=[tensors]: return their cotangents (or None) and leave every .grad untouched (tm.vjp); only the nodes
    on a path to them are visited, and no rule computes a cotangent nobody asked for. A tensor of wrt may be on
    the tape itself (an inner transform's primal on an outer tape): the walk stops there.
    graph: None, or "record" / "push" for a differentiable backward (see propagate).
    """
    if graph is not None:
        with (enable_grad() if graph == "record" else no_grad()):
            return _backprop(root, y_bar, wrt, retain_graph, graph)
    return _backprop(root, y_bar, wrt, retain_graph, None)


def _backprop(root, y_bar, wrt, retain_graph, graph):
    wanted = {} if wrt is None else {_key(t): t for t in wrt}
    if root._node is None or id(root._node) in wanted:
        leaf_grads = {_key(root): [root, y_bar]}
    elif wrt is None:
        leaf_grads = propagate(_topological(root), {id(root._node): y_bar}, retain_graph=retain_graph, graph=graph)
    else:
        order = _topological(root, stop=[k for k, t in wanted.items() if t._node is not None])
        nodes, needs = _pruned(order, set(wanted))
        leaf_grads = propagate(nodes, {id(root._node): y_bar}, retain_graph=retain_graph, needs=needs, graph=graph)
        if not retain_graph:
            for node in order:                                 # what the pruned walk skipped is done too
                if not node.released:
                    node.ctx.release()
                    node.released, node.higher = True, None
    if wrt is not None:
        return [leaf_grads[_key(t)][1] if _key(t) in leaf_grads else None for t in wrt]
    handed = set()
    for t, g in leaf_grads.values():
        # A rule may pass a cotangent through unchanged (add) or as a view (reshape): copy only what could
        # alias the seed, another leaf's gradient or a residual; fresh arrays are handed over as they are.
        accumulate_grad(t, g, aliased=g is y_bar or id(g) in handed)
        handed.add(id(g))
    return None


def accumulate_grad(param, g, aliased=False):
    """param.grad += g as backward accumulates: a new array (never in place, so a caller may keep the old one
    and put it back), in the parameter's dtype; the first time, a view or an `aliased` array is copied.
    A Tensor g (a differentiable backward) stays on the tape: param.grad is then a tensor with a history."""
    if type(g) is Tensor:
        if g.dtype != param.data.dtype:
            g = g.astype(param.data.dtype)
        param.grad = g if param.grad is None else param.grad + g
        return
    data, grad = param._data, param.grad
    if g.dtype != data.dtype:
        g = g.astype(data.dtype)
    elif grad is None and (aliased or g.base is not None):
        g = g.copy()
    param.grad = Tensor._wrap(g if grad is None else grad.data + g)


def vjp_into(root, y_bar, inputs=(), params=(), accumulate=True):
    """A local vjp of root's tape seeded with the array y_bar: the cotangents of the leaf tensors `inputs`
    (arrays in y_bar's dtype, None where nothing reached them), and those of `params` added to their .grad
    (accumulate=True) or returned after the inputs' (accumulate=False). The seed's dtype is kept, so float64
    cotangents through a float32 tape stay float64 until they reach a parameter's .grad."""
    inputs, params = list(inputs), list(params)
    if root._node is None or not (inputs or params):
        return [None] * (len(inputs) + (0 if accumulate else len(params)))
    gs = backprop(root, y_bar, wrt=inputs + params)
    if not accumulate:
        return gs
    for p, g in zip(params, gs[len(inputs):]):
        if g is not None:
            accumulate_grad(p, g)
    return gs[:len(inputs)]


def _seed(out, y_bar, what, graph=None):
    """The initial cotangent: given, or 1 for a scalar output (a Tensor for a differentiable backward: a
    given Tensor seed then stays on the tape, so the result is differentiable in it too)."""
    if y_bar is None:
        if out.data.size != 1:
            raise GradientError(
                f"{what} of a non-scalar output of shape {out.shape} needs a cotangent: pass y_bar "
                "(an array/Tensor of the output's shape), or reduce the output to a scalar first")
        seed = out.xp.ones_like(out.data)
        return seed if graph is None else Tensor._wrap(seed)
    if graph is not None and isinstance(y_bar, Tensor):
        if y_bar.shape != out.data.shape:
            raise ShapeError(f"{what}: cotangent shape {y_bar.shape} does not match output shape {out.shape}")
        return y_bar if y_bar.dtype == out.data.dtype else y_bar.astype(out.data.dtype)
    if graph is None and type(y_bar) is np.ndarray and y_bar.dtype is out._data.dtype \
            and y_bar.shape == out._data.shape and type(out._data) is np.ndarray:
        return y_bar                     # the common case, kept cheap: a host seed of the output's dtype and shape
    y_bar = y_bar.data if isinstance(y_bar, Tensor) else out.xp.asarray(y_bar, dtype=out.data.dtype)
    if y_bar.shape != out.data.shape:
        raise ShapeError(f"{what}: cotangent shape {y_bar.shape} does not match output shape {out.shape}")
    if y_bar.dtype != out.data.dtype:
        y_bar = y_bar.astype(out.data.dtype)
    return y_bar if graph is None else Tensor._wrap(y_bar)


def _graph_mode(create_graph=False):
    """None (a backward on arrays), "record" or "push" (a differentiable one: see propagate): asked by
    create_graph, or by a transform running around this reverse pass (nesting.py)."""
    if not nesting.nested():
        return "record" if create_graph else None
    if create_graph or nesting.record_backward():
        return "record"
    return "push"                        # only a tm.jvp runs around us: tangents, no tape


def backward(out, y_bar=None, retain_graph=None, create_graph=False):
    """Tensor.backward: accumulate d<y_bar, out>/d(leaf) into every leaf's .grad. create_graph=True (or a
    transform running around this call) records the backward pass, so the .grad tensors can be differentiated
    again; retain_graph defaults to create_graph, as in PyTorch."""
    if not out.requires_grad:
        raise GradientError("backward() on a tensor that does not require grad: no input of the computation "
                            "had requires_grad=True (or it ran under tm.no_grad())")
    graph = _graph_mode(create_graph)
    if retain_graph is None:
        retain_graph = graph == "record"     # an outer reverse pass walks the forward nodes again
    backprop(out, _seed(out, y_bar, "backward()", graph), retain_graph=retain_graph, graph=graph)


def _as_primals(primals, nested):
    """Fresh primals for a reverse transform: leaves that require grad — or, nested in another transform,
    identity nodes on its tape (they carry its tangents too), so that it differentiates what this one
    computes. Either way a closure over the argument itself is a different variable: no perturbation
    confusion."""
    ps = []
    for p in primals:
        p = as_tensor(p)
        if nested and (p.requires_grad or p.tangent is not None):
            with enable_grad():
                q = apply(Identity, p)
            if q._node is None:             # a tm.jvp alone runs around us: a leaf with a tangent
                q.requires_grad = True
        else:
            q = p.detach()
            q.requires_grad = True
        ps.append(q)
    return ps


def _zeros_where_none(gs, ps, graph):
    """The cotangents as Tensors, a zero where nothing reached a primal (a function independent of it)."""
    return tuple((g if graph is not None else Tensor._wrap(g)) if g is not None
                 else Tensor._wrap(p.xp.zeros_like(p.data)) for g, p in zip(gs, ps))


def vjp(f, *primals):
    """(out, vjp_fn): vjp_fn(y_bar) returns the cotangents of the primals, as a tuple of Tensors. Inside
    another transform, out and the cotangents stay differentiable by it."""
    nested, graph = nesting.nested(), _graph_mode()
    nesting.check_reverse("tm.vjp", primals)
    ps = _as_primals(primals, nested)
    with enable_grad(), nesting.running("tm.vjp", ps):
        out = f(*ps)

    def vjp_fn(y_bar=None, retain_graph=True):
        if not out.requires_grad:
            return tuple(Tensor._wrap(p.xp.zeros_like(p.data)) for p in ps)
        gs = backprop(out, _seed(out, y_bar, "vjp", graph), wrt=ps, retain_graph=retain_graph or graph == "record",
                      graph=graph)
        return _zeros_where_none(gs, ps, graph)

    return (out if nested else out.detach()), vjp_fn


def value_and_grad(f, argnums=0, _name="tm.value_and_grad"):
    """f -> (x -> (f(x), df/dx)) for scalar-valued f; argnums an int or a tuple of ints. Inside another
    transform both results stay differentiable by it (grad of grad, jvp of grad)."""
    def wrapped(*args):
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        nested, graph = nesting.nested(), _graph_mode()
        nesting.check_reverse(_name, [args[i] for i in nums])
        ps = _as_primals([args[i] for i in nums], nested)
        full = list(args)
        for i, p in zip(nums, ps):
            full[i] = p
        with enable_grad(), nesting.running(_name, ps):
            out = f(*full)
        if not isinstance(out, Tensor):
            raise GradientError(f"grad: the function returned {type(out).__name__}, expected a scalar Tensor")
        if not out.requires_grad:
            gs = [None] * len(ps)
        else:
            # under an outer reverse pass the forward nodes are walked again (kept); under a tm.jvp alone they
            # are done with as the pass goes, as in first order
            gs = backprop(out, _seed(out, None, "grad", graph), wrt=ps, retain_graph=graph == "record", graph=graph)
        gs = _zeros_where_none(gs, ps, graph)
        return (out if nested else out.detach()), (gs[0] if isinstance(argnums, int) else gs)
    return wrapped


def grad(f, argnums=0):
    """f -> df/dx (argnums selects the arguments), for scalar-valued f."""
    vg = value_and_grad(f, argnums, _name="tm.grad")
    return lambda *args: vg(*args)[1]
