"""Inverse mode: the vector-inverse-Jacobian product, applied along a chain in forward order.

For a chain x = x_0 -> x_1 -> ... -> x_L = out, the reverse pass computes h_{i-1} = h_i J_i. The inverse
pass undoes it one link at a time: h_i = vijp_i(h_{i-1}), the unique h_i with h_i J_i = h_{i-1} when J_i
is surjective (submersive). Where a link erases part of h_i (its cokernel), the reverse pass records
that part — the *fragment* — and the inverse pass adds it back. Only chains are allowed: where the data
path forks (a value used twice), the block needs its own vijp rule, so we raise and name the op.
"""
from __future__ import annotations

from ..errors import NotInvertibleError, ShapeError
from ..tensor import Tensor, as_tensor
from . import nesting
from .state import enable_grad, state
from .tape import check_versions


class Link:
    """One step of the chain: a tape node, which of its inputs is the data path, and the shapes."""
    __slots__ = ("node", "wrt", "in_shape", "out_shape")

    def __init__(self, node, wrt, in_shape, out_shape):
        self.node, self.wrt, self.in_shape, self.out_shape = node, wrt, in_shape, out_shape


def chain_links(nodes, source):
    """The chain from `source` (a tape node, or a leaf tensor) through `nodes` ((node, output shape) pairs in
    creation order), as
    Links — setting each node's ctx.wrt to its data-path input — or the name of the primitive where the data
    path forks (a value derived from the input used more than once). Nodes with no input on the path are
    constant sub-expressions (e.g. computed from parameters) and are skipped."""
    on_path = {id(source)}       # ids of the path's end not consumed yet
    used = set()
    links = []
    for node, out_shape in nodes:
        path = [i for i, p in enumerate(node.parents) if p is not None and (id(p) in on_path or id(p) in used)]
        if not path:
            continue
        if len(path) > 1 or any(id(node.parents[i]) in used for i in path):
            return node.prim.name
        p = node.parents[path[0]]
        on_path.discard(id(p))
        used.add(id(p))
        node.ctx.wrt = path[0]
        links.append(Link(node, path[0], node.shapes[path[0]], out_shape))
        on_path.add(id(node))
    return links, on_path


def trace_chain(f, x):
    """Run f(x) recording a tape, and return (out, links) for the chain from x to out."""
    x0 = as_tensor(x).detach()
    x0.requires_grad = True
    old, state.trace = state.trace, []
    try:
        with enable_grad():
            out = f(x0)
        traced = state.trace
    finally:
        state.trace = old
    found = chain_links([(y._node, y.data.shape) for y in traced], x0)
    if isinstance(found, str):
        raise NotInvertibleError(
            f"vijp: the data path forks at {found} (a value derived from the input is used more "
            "than once), so the inverse pass is not a chain. Wrap the forking block in a primitive or "
            "module with its own vijp rule (e.g. an additive-coupling RevBlock), or use reverse mode.")
    links, on_path = found
    end = id(out._node) if out._node is not None else id(out)
    if end not in on_path:
        raise NotInvertibleError(
            "vijp: the output is not at the end of a chain from the input (it does not depend on the input, "
            "or an intermediate value branches off the path)")
    if len(on_path) > 1:
        raise NotInvertibleError("vijp: the data path forks: a value derived from the input is not used by the "
                                 "output's chain")
    return out, links


class VijpFunction:
    """vijp_fn(x_bar, fragments=None) -> y_bar, and vijp_fn.fragments(y_bar) for the reverse pass."""

    def __init__(self, out, links):
        self.out, self.links = out, links

    def fragments(self, y_bar):
        """Reverse pass along the chain from output cotangent y_bar, recording each link's fragment
        (the cotangent coordinates its vjp erases; None where nothing is erased)."""
        h = y_bar.data if isinstance(y_bar, Tensor) else self.out.xp.asarray(y_bar)
        frags = [None] * len(self.links)
        for k in range(len(self.links) - 1, -1, -1):
            link = self.links[k]
            prim, ctx = link.node.prim, link.node.ctx
            if link.node.versions is not None:
                check_versions(link.node)        # a residual changed in place since the trace: refuse
            frags[k] = prim.fragment(ctx, h)
            cts = prim.vjp(ctx, h)
            h = (cts if isinstance(cts, tuple) else (cts,))[link.wrt]
        return frags

    def __call__(self, x_bar, fragments=None):
        h = x_bar.data if isinstance(x_bar, Tensor) else self.out.xp.asarray(x_bar)
        if self.links and h.shape != self.links[0].in_shape:
            raise ShapeError(f"vijp: cotangent shape {h.shape} does not match the input shape {self.links[0].in_shape}")
        if fragments is not None and len(fragments) != len(self.links):
            raise ShapeError(f"vijp: {len(fragments)} fragments given for a chain of {len(self.links)} links")
        for k, link in enumerate(self.links):
            prim, ctx = link.node.prim, link.node.ctx
            if link.node.versions is not None:
                check_versions(link.node)
            if prim.elementwise and link.out_shape != link.in_shape:
                raise NotInvertibleError(
                    f"vijp: {prim.name} broadcasts the data path from {link.in_shape} to {link.out_shape}; "
                    "make the broadcast explicit with tm.broadcast_to (it has a fragment rule)")
            h = prim.vijp(ctx, h, None if fragments is None else fragments[k])
        return Tensor._wrap(h)


def vijp(f, x):
    """(out, vijp_fn) for a chain from x to out; vijp_fn(x_bar, fragments) -> y_bar with y_bar J = x_bar."""
    nesting.check_primals("tm.vijp", [x])

    def traced(x0):
        with nesting.tracing("tm.vijp", [x0]):
            y = f(x0)
        nesting.check_output("tm.vijp", y)
        return y

    out, links = trace_chain(traced, x)
    return out.detach(), VijpFunction(out, links)
