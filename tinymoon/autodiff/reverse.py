"""Reverse mode: the tape walked backwards.

`backward(root, y_bar)` orders the recorded nodes topologically, then `propagate` feeds each node's output
cotangent to its primitive's vjp rule and accumulates the input cotangents. A cotangent whose shape differs from
its input's (the input was broadcast) is summed back to the input's shape here — once, for every rule.
A node's residuals are released as soon as it is done, so memory falls as the pass proceeds.
"""
from __future__ import annotations

from ..errors import GradientError, ShapeError
from ..ops.shape import sum_to
from ..tensor import Tensor, as_tensor
from . import nesting
from .state import enable_grad
from .tape import Node, check_versions


def _topological(root):
    """Tape nodes reachable from root's node, inputs before outputs (leaves are not in the list)."""
    order, seen = [], set()
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


def propagate(nodes, grads, on_node=None, retain_graph=False, needs=None):
    """The reverse pass over tape `nodes` (listed inputs before outputs).

    grads maps id(node) -> the cotangent of that node's output (the seeds). Each node's cotangent goes
    through its primitive's vjp rule, and the input cotangents pass on to the parent nodes in `nodes`;
    cotangents for any other parent (a leaf, or a node outside the walk) are returned as
    {id(parent): [parent, cotangent]}. on_node(k, node, g) runs before node k's vjp (Moonwalk records
    fragments there: the only moment a cotangent exists inside the walk). Unless retain_graph, each node's
    residuals are released as soon as it is done. needs maps id(node) -> the ctx.needs its rule should see
    for this walk only (see _pruned). A residual whose tensor was changed in place after the forward saved
    it (an optimiser step, x[...] = v) raises GradientError before its vjp runs.
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
                for c, n, _ in vs:
                    if c[0] != n:
                        check_versions(node)     # raises, naming the tensor and the fix
            if on_node is not None:
                on_node(k, node, g)
            pruned = None if needs is None else needs.get(id(node))
            if pruned is None:
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
            node.released = True
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


def backprop(root, y_bar, wrt=None, retain_graph=False):
    """Propagate cotangent y_bar (an array of root's shape) through the tape.

    wrt=None: accumulate into the .grad of every leaf that requires grad (Tensor.backward).
    wrt=[leaf tensors]: return their cotangents (arrays or None) and leave every .grad untouched (tm.vjp);
    only the nodes on a path to them are visited, and no rule computes a cotangent nobody asked for.
    """
    if root._node is None:
        leaf_grads = {id(root): [root, y_bar]}
    elif wrt is None:
        leaf_grads = propagate(_topological(root), {id(root._node): y_bar}, retain_graph=retain_graph)
    else:
        order = _topological(root)
        nodes, needs = _pruned(order, {id(t) for t in wrt})
        leaf_grads = propagate(nodes, {id(root._node): y_bar}, retain_graph=retain_graph, needs=needs)
        if not retain_graph:
            for node in order:                                 # what the pruned walk skipped is done too
                if not node.released:
                    node.ctx.release()
                    node.released = True
    if wrt is not None:
        return [leaf_grads[id(t)][1] if id(t) in leaf_grads else None for t in wrt]
    handed = set()
    for t, g in leaf_grads.values():
        # A rule may pass a cotangent through unchanged (add) or as a view (reshape): copy only what could
        # alias the seed, another leaf's gradient or a residual; fresh arrays are handed over as they are.
        accumulate_grad(t, g, aliased=g is y_bar or id(g) in handed)
        handed.add(id(g))
    return None


def accumulate_grad(param, g, aliased=False):
    """param.grad += g as backward accumulates: a new array (never in place, so a caller may keep the old one
    and put it back), in the parameter's dtype; the first time, a view or an `aliased` array is copied."""
    if g.dtype != param.data.dtype:
        g = g.astype(param.data.dtype)
    elif param.grad is None and (aliased or g.base is not None):
        g = g.copy()
    param.grad = Tensor._wrap(g if param.grad is None else param.grad.data + g)


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


def _seed(out, y_bar, what):
    """The initial cotangent: given, or 1 for a scalar output."""
    if y_bar is None:
        if out.data.size != 1:
            raise GradientError(
                f"{what} of a non-scalar output of shape {out.shape} needs a cotangent: pass y_bar "
                "(an array/Tensor of the output's shape), or reduce the output to a scalar first")
        return out.xp.ones_like(out.data)
    y_bar = y_bar.data if isinstance(y_bar, Tensor) else out.xp.asarray(y_bar, dtype=out.data.dtype)
    if y_bar.shape != out.data.shape:
        raise ShapeError(f"{what}: cotangent shape {y_bar.shape} does not match output shape {out.shape}")
    if y_bar.dtype != out.data.dtype:
        y_bar = y_bar.astype(out.data.dtype)
    return y_bar


def backward(out, y_bar=None, retain_graph=False, create_graph=False):
    """Tensor.backward: accumulate d<y_bar, out>/d(leaf) into every leaf's .grad."""
    if create_graph:
        nesting.refuse_create_graph()
    if not out.requires_grad:
        raise GradientError("backward() on a tensor that does not require grad: no input of the computation "
                            "had requires_grad=True (or it ran under tm.no_grad())")
    backprop(out, _seed(out, y_bar, "backward()"), retain_graph=retain_graph)


def _as_primals(primals):
    ps = []
    for p in primals:
        q = as_tensor(p).detach()
        q.requires_grad = True
        ps.append(q)
    return ps


def vjp(f, *primals):
    """(out, vjp_fn): vjp_fn(y_bar) returns the cotangents of the primals, as a tuple of Tensors."""
    nesting.check_primals("tm.vjp", primals)
    ps = _as_primals(primals)
    with enable_grad(), nesting.tracing("tm.vjp", ps):
        out = f(*ps)
    nesting.check_output("tm.vjp", out)

    def vjp_fn(y_bar=None, retain_graph=True):
        if not out.requires_grad:
            return tuple(Tensor._wrap(p.xp.zeros_like(p.data)) for p in ps)
        gs = backprop(out, _seed(out, y_bar, "vjp"), wrt=ps, retain_graph=retain_graph)
        return tuple(Tensor._wrap(g if g is not None else p.xp.zeros_like(p.data)) for g, p in zip(gs, ps))

    return out.detach(), vjp_fn


def value_and_grad(f, argnums=0, _name="tm.value_and_grad"):
    """f -> (x -> (f(x), df/dx)) for scalar-valued f; argnums an int or a tuple of ints."""
    def wrapped(*args):
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
        nesting.check_primals(_name, args)
        ps = _as_primals([args[i] for i in nums])
        full = list(args)
        for i, p in zip(nums, ps):
            full[i] = p
        with enable_grad(), nesting.tracing(_name, ps):
            out = f(*full)
        if not isinstance(out, Tensor):
            raise GradientError(f"grad: the function returned {type(out).__name__}, expected a scalar Tensor")
        nesting.check_output(_name, out)
        if not out.requires_grad:
            gs = [None] * len(ps)
        else:
            gs = backprop(out, _seed(out, None, "grad"), wrt=ps)
        gs = tuple(Tensor._wrap(g if g is not None else p.xp.zeros_like(p.data)) for g, p in zip(gs, ps))
        return out.detach(), (gs[0] if isinstance(argnums, int) else gs)
    return wrapped


def grad(f, argnums=0):
    """f -> df/dx (argnums selects the arguments), for scalar-valued f."""
    vg = value_and_grad(f, argnums, _name="tm.grad")
    return lambda *args: vg(*args)[1]
