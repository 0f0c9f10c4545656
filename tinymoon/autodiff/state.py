"""Interpreter state shared by the three modes: is the tape recording, is an inverse trace open, and is the
tape being recorded so that its backward pass can itself be differentiated (higher order)."""
from contextlib import contextmanager


class _State:
    __slots__ = ("grad_enabled", "trace", "higher", "level")

    def __init__(self):
        self.grad_enabled = True   # record tape nodes for reverse mode
        self.trace = None          # a list receiving every recorded output, while tm.vijp traces
        self.higher = False        # nodes also keep their inputs (and tangents): a backward through them can
                                   # be differentiated (autodiff/graph.py); see higher_order()
        self.level = 0             # 0 for the forward pass; k + 1 while a differentiable backward runs the rules
                                   # of a level-k node (a node's level + 2 is the order its rules are asked for)


state = _State()


@contextmanager
def no_grad():
    """Do not record tape nodes inside the block (inference, optimiser updates)."""
    old, state.grad_enabled = state.grad_enabled, False
    try:
        yield
    finally:
        state.grad_enabled = old


@contextmanager
def enable_grad():
    old, state.grad_enabled = state.grad_enabled, True
    try:
        yield
    finally:
        state.grad_enabled = old


@contextmanager
def higher_order(enabled=True):
    """Record the tape inside the block so that its backward pass can be differentiated again:
    `loss.backward(create_graph=True)` needs it for the ops whose first-order residual is derived from their
    input (f'(x) of tanh, softmax's p of cross_entropy, layer_norm's statistics...): each node then also keeps
    its inputs, as PyTorch's autograd does, so those residuals can be recomputed on the tape. Nested
    transforms (tm.grad of tm.grad, tm.jvp of tm.grad), tm.hvp and tm.hessian turn it on themselves."""
    old, state.higher = state.higher, bool(enabled)
    try:
        yield
    finally:
        state.higher = old


def is_grad_enabled() -> bool:
    return state.grad_enabled


class set_grad_enabled:
    """Turn tape recording on or off (PyTorch's name): called, it takes effect at once
    (`tm.set_grad_enabled(False)`); used as a context manager, it also restores the previous state on exit
    (`with tm.set_grad_enabled(training): ...`)."""

    def __init__(self, mode: bool):
        self.prev = state.grad_enabled
        state.grad_enabled = bool(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        state.grad_enabled = self.prev
        return False
