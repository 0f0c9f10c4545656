"""Interpreter state shared by the three modes: is the tape recording, and is an inverse trace open."""
from contextlib import contextmanager


class _State:
    __slots__ = ("grad_enabled", "trace")

    def __init__(self):
        self.grad_enabled = True   # record tape nodes for reverse mode
        self.trace = None          # a list receiving every recorded output, while tm.vijp traces


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
