"""The tape: what reverse mode records when a primitive meets tensors that require grad.

A Node keeps the primitive, its residual store (the Context) and where each input came from — never an
intermediate tensor, so an activation lives only while a rule saved it (counted in tinymoon.memory) or the
caller holds it: that is what makes the memory figures of the algorithms true.

A residual that is a tensor's own array is recorded with the tensor's version counter: an in-place change
of that tensor before the backward pass (an optimiser step, `x[...] = v`) would give a wrong gradient, so
the reverse pass refuses it (`check_versions`). A leaf's own array (a parameter, the data batch) lives
anyway, so keeping a reference to it costs nothing and is not counted as saved bytes.
"""
from __future__ import annotations

from .. import memory
from ..errors import GradientError
from .state import state

__all__ = ["Node", "record", "check_versions"]


class Node:
    """A tape entry: the primitive, its residual store, and where each input came from.

    parents[i] is the Node that produced input i, or the input tensor itself when it is a leaf that
    requires grad (its .grad is set there), or None. The node never holds an intermediate tensor: an
    activation stays alive only if a rule saved it as a residual (counted in tinymoon.memory) or the
    caller keeps a reference — which is what makes the memory numbers of the algorithms honest.

    versions: None, or one (counter, n, i, name) per residual `name` that is input i's own array (i = -1: the
    output's): the tensor's version counter and its value n when the forward saved it. The reverse pass checks
    them (`check_versions`): a residual whose tensor was changed in place since would give a wrong gradient.
    A differentiable backward reads i too: such a residual becomes the input's tensor (graph.py).

    higher: None, or what a differentiable backward needs beyond the residuals, recorded under
    `tm.higher_order()` (nested transforms turn it on): (the input arrays and the output array — for a primitive
    that recomputes residuals from them, else None — and the tangents of the inputs and the output, or None).
    HIGHER_DROPPED marks a node whose inputs carried tangents that were not kept. level: 0 for the forward pass, k + 1 for a node a differentiable backward recorded while running the
    rules of a level-k node.
    """
    __slots__ = ("prim", "ctx", "parents", "shapes", "released", "versions", "higher", "level")

    def __init__(self, prim, ctx, parents, shapes, versions=None, higher=None, level=0):
        self.prim, self.ctx, self.parents, self.shapes, self.released = prim, ctx, parents, shapes, False
        self.versions, self.higher, self.level = versions, higher, level


HIGHER_DROPPED = ()      # Node.higher of a node whose input tangents were not kept (recorded without higher order)


def _saved_tensors(ctx, inputs, xs, y, out):
    """The residuals that are a tensor's own array, as Node.versions records them (None if there are none).

    A residual that is a leaf input's own array (a parameter, the data batch) lives anyway: keeping a
    reference costs no memory, so it is not counted as saved bytes. Such a residual is also the one an
    optimiser step or `x[...] = v` changes in place, hence the version recorded with it."""
    counted = ctx.nbytes != 0
    rec = None
    for name, v in ctx.__dict__.items():
        if v is y:
            t, i = out, -1
        else:
            i = 0
            for x in xs:
                if v is x:
                    break
                i += 1
            else:
                continue
            t = inputs[i]
            if counted and t._node is None:
                ctx.nbytes -= x.nbytes
                memory._sub(x.nbytes)
        c = t._version
        if c is None:
            c = t._version = [0]
        if rec is None:
            rec = [(c, c[0], i, name)]
        else:
            rec.append((c, c[0], i, name))
    return rec


def check_versions(node):
    """Raise GradientError if a residual of `node` belongs to a tensor changed in place since the forward."""
    for c, n, i, _ in node.versions:
        if c[0] != n:
            raise _stale(node, n, c[0], i)


def _stale(node, saved, now, i):
    name = node.prim.name
    if i < 0:
        what = "its output"
    else:
        p = node.parents[i]
        kind = "a leaf tensor that requires grad (a parameter?)" if p is not None and type(p) is not Node else \
            "a tensor computed earlier" if p is not None else "a tensor that does not require grad (an input?)"
        what = f"its input {i}, {kind} of shape {node.shapes[i]}"
    return GradientError(
        f"{name}: {what} was modified in place after the forward saved it for the gradient (version {saved} "
        f"then, {now} now), so this gradient would be computed from the wrong values. Change tensors only "
        "after the backward pass that needs them: call the optimiser's step() (or load_state_dict, or "
        "x[...] = v, or x.data = ...) after loss.backward(), and run the forward again before the next "
        "backward; to keep an old value, copy it first (tm.tensor(x)).")


def _derives(prim):
    """Whether prim recomputes residuals from its inputs in a differentiable backward (Primitive.residuals)."""
    own = prim.__dict__.get("_derives")
    if own is None:
        from ..ops.base import Primitive
        own = getattr(prim.residuals, "__func__", prim.residuals) is not Primitive.residuals.__func__
        prim._derives = own
    return own


def _higher_record(prim, ctx, inputs, xs, y, out, versions, tangents):
    """Node.higher under higher order: the input and output arrays for a primitive that recomputes residuals
    from them (counted in the node's saved bytes: an intermediate is kept alive for it, as a residual is), and
    the tangents of what a differentiable backward turns into tensors (all inputs and the output for such a
    primitive, else the inputs and output saved as residuals)."""
    derives = _derives(prim)
    if derives:
        extra, seen = 0, {id(v) for v in ctx.__dict__.values()}
        for t, a in zip(inputs, xs):
            if t._node is not None and id(a) not in seen:         # a leaf's own array lives anyway
                seen.add(id(a))
                extra += a.nbytes
        if id(y) not in seen:
            extra += y.nbytes
        if extra:
            ctx.nbytes += extra
            memory._add(extra)
    kept = None
    if tangents:
        used = {i for _, _, i, _ in versions or ()}
        kept = tuple(t.tangent if derives or i in used else None for i, t in enumerate(inputs)) + \
            (out.tangent if derives or -1 in used else None,)
    return (tuple(xs), y, kept) if derives else (None, None, kept)


def record(prim, ctx, inputs, xs, y, out, needs, peak0, tangents=False):
    """Put `out` on the tape: a Node for prim applied to `inputs` (arrays xs) giving y, with the residuals
    in ctx; parents are the inputs' nodes, or the inputs themselves for leaves that require grad.
    tangents: whether inputs carry tangents (an outer tm.jvp): under higher order they are kept with the
    node, so that a differentiable backward through it pushes them too."""
    versions = None
    if ctx.__dict__:
        versions = _saved_tensors(ctx, inputs, xs, y, out)
        # Only this op's saves happened since peak0, so the true high-water mark is exact:
        memory._peak = max(peak0, memory._saved)
    higher = None
    if state.higher:
        higher = _higher_record(prim, ctx, inputs, xs, y, out, versions, tangents)
        memory._peak = max(peak0, memory._saved)
    elif tangents:
        higher = HIGHER_DROPPED
    out.requires_grad = True
    out._node = Node(prim, ctx, tuple([(t._node or t) if n and t.requires_grad else None   # (a list: faster
                                       for t, n in zip(inputs, needs)]),                    # than a generator)
                     tuple([a.shape for a in xs]), versions, higher, state.level)
    if state.trace is not None:
        state.trace.append(out)
