"""PETRA stages: a Sequential cut into J contiguous pieces, each with its own optimiser.

Four kinds of stage, one interface (`forward`, `backward`, `forward_backward` for the head):

- `ReversibleStage` — every layer is invertible (a `RevBlock`, or any module with `inverse`). Its forward
  runs without a tape and keeps *nothing*. Its backward receives (x̃_j, δ_{j+1}) from above, reconstructs its
  input x̃_{j-1} = F_j⁻¹(x̃_j, θ_j) with its CURRENT parameters, and computes δ_j = ∂ₓF_jᵀ δ_{j+1} and the
  parameter gradient at that reconstructed input. For a RevBlock the reconstruction and the vjp are fused
  (the inverse evaluates G(y1) and F(x2) at exactly the points the forward did, so their tapes serve the vjp):
  one forward-cost inversion plus one backward — 4 forward-units per micro-batch instead of 3.
- `BufferedStage` — anything non-invertible (stem, down-sampling): keeps its input in a FIFO and recomputes
  its forward with a tape in backward (activation checkpointing).
- `HeadStage` — the last stage: forward, loss and backward in one tick (so no buffer at all).
- `TapeStage` — the baseline: keeps the full tape of every micro-batch in flight (stored activations). Under
  the "sync" schedule this is plain backprop; under the "petra" schedule it is delayed gradients.

Gradients: every backward adds ∂_θ into `p.grad`; every k backward passes the stage divides the sum by the
number accumulated (averaged accumulation), steps its optimiser and its LR schedule, and clears `p.grad`.
BatchNorm running statistics are updated by the forward only: the recomputations in backward use batch
statistics, as the forward did, but leave the running statistics as they were.
"""
from __future__ import annotations

import time
from collections import deque
from contextlib import contextmanager

import numpy as np

from .. import memory
from ..autodiff.reverse import allow_in_place
from ..autodiff.state import enable_grad, no_grad
from ..errors import TinymoonError
from ..nn import CrossEntropyLoss, Module, Sequential
from ..tensor import Tensor
from .recipe import Recipe

__all__ = ["Stage", "ReversibleStage", "BufferedStage", "HeadStage", "TapeStage", "split", "is_invertible",
           "PetraError"]


class PetraError(TinymoonError):
    """A PETRA pipeline was misused or went out of step (wrong micro-batch order, bad split...)."""


def is_invertible(layer):
    return callable(getattr(layer, "inverse", None))


def _leaf(array, requires_grad):
    t = Tensor._wrap(array)
    if requires_grad:
        t.requires_grad_(True)
    return t


@contextmanager
def _keep_buffers(module):
    """Run a recomputation without touching the buffers (BatchNorm running statistics, counters)."""
    saved = [(b, b.copy()) for b in module.buffers()]
    try:
        yield
    finally:
        for b, old in saved:
            b[...] = old


class Stage:
    """One piece of the network: its layers, its optimiser, its gradient accumulator, its timers."""
    kind = "stage"
    needs_output = False      # does its backward need x̃_j (its own output) sent back from above?

    def __init__(self, index, layers, recipe=None):
        self.index = index
        self.layers = layers if isinstance(layers, Module) else Sequential(*layers)
        self.params = list(self.layers.parameters())
        self.recipe = recipe or Recipe()
        self.optimizer = self.scheduler = None
        if self.params:
            self.optimizer, self.scheduler = self.recipe.optimizer(self.params)
        self.n_acc = 0            # backward passes accumulated since the last step
        self.n_backward = 0       # backward passes done, in all
        self.n_steps = 0          # optimiser steps done
        self.fifo = deque()       # (micro-batch, stored things) between forward and backward
        self.fifo_bytes = 0       # bytes held in the FIFO right now (activations kept for backward)
        self.max_held = 0         # high-water mark of bytes held between forward and backward
        self.backward_peak = 0    # peak residual bytes (tm.memory) during one backward
        self.time = {"forward": 0.0, "backward": 0.0, "step": 0.0}      # wall seconds
        self.cpu = {"forward": 0.0, "backward": 0.0, "step": 0.0}       # CPU seconds of this thread
        self.counts = {"forward": 0, "backward": 0}

    def _clock(self, what, t0, c0):
        self.time[what] += time.perf_counter() - t0
        self.cpu[what] += time.thread_time() - c0

    @property
    def input_grad(self):
        """Stage 0's input is the data: it needs no cotangent."""
        return self.index > 0

    def __repr__(self):
        return f"{type(self).__name__}(index={self.index}, layers={len(self.layers)}, params={len(self.params)})"

    # ---- gradient accumulation -------------------------------------------------------------------------
    def _after_backward(self):
        self.n_backward += 1
        self.n_acc += 1

    def maybe_step(self):
        """At the end of a tick: step if k backward passes have been accumulated."""
        if self.n_acc >= self.recipe.k:
            self.step()

    def step(self):
        """Average the accumulated gradients over the passes accumulated, step the optimiser and the LR."""
        t0, c0 = time.perf_counter(), time.thread_time()
        if self.n_acc and self.optimizer is not None:
            inv = 1.0 / self.n_acc
            for p in self.params:
                if p.grad is not None:
                    p.grad = Tensor._wrap(p.grad.data * p.grad.data.dtype.type(inv))   # Δ = (1/k) Σ ∂θ
            self.optimizer.step()
            self.optimizer.zero_grad()
            if self.scheduler is not None:
                self.scheduler.step()
            self.n_steps += 1
        self.n_acc = 0
        self._clock("step", t0, c0)

    def flush(self):
        """At the end of a run: step on a partial accumulation, if any."""
        if self.n_acc:
            self.step()

    # ---- memory bookkeeping ----------------------------------------------------------------------------
    def _push(self, m, item, nbytes):
        self.fifo.append((m, item, nbytes))
        self.fifo_bytes += nbytes
        self.max_held = max(self.max_held, self.fifo_bytes)

    def _pop(self, m):
        if not self.fifo:
            raise PetraError(f"stage {self.index}: backward of micro-batch {m} but the input FIFO is empty")
        m0, item, nbytes = self.fifo.popleft()
        if m0 != m:
            raise PetraError(f"stage {self.index}: backward of micro-batch {m}, but the FIFO's oldest entry is "
                             f"micro-batch {m0} (the schedule went out of step)")
        self.fifo_bytes -= nbytes
        return item

    @contextmanager
    def _measure_backward(self):
        base = memory.saved_bytes()
        memory.reset_peak()
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self._clock("backward", t0, c0)
            self.counts["backward"] += 1
            self.backward_peak = max(self.backward_peak, memory.peak_saved_bytes() - base)

    # ---- the work --------------------------------------------------------------------------------------
    def forward(self, m, x):
        """y = F_j(x) for micro-batch m, without a tape (subclasses decide what to keep)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        with no_grad():
            y = self.layers(Tensor._wrap(x)).data
        self._clock("forward", t0, c0)
        self.counts["forward"] += 1
        return y

    def backward(self, m, y_tilde, y_bar):
        """(x̃_{j-1}, δ_j) from (x̃_j, δ_{j+1}) for micro-batch m; accumulates ∂_θ and steps every k."""
        raise NotImplementedError

    # ---- checkpoints -----------------------------------------------------------------------------------
    def state_dict(self):
        """Everything a resumed run needs: parameters and buffers, optimiser and LR state, the gradient
        accumulator, the counters and the FIFO of stored inputs."""
        fifo = []
        for m, item, nbytes in self.fifo:
            if not isinstance(item, np.ndarray):
                raise PetraError(f"stage {self.index} ({self.kind}) holds tapes, which cannot be checkpointed; "
                                 "checkpoint a PETRA run (reversible/buffered stages) instead")
            fifo.append({"m": int(m), "x": item})
        return {
            "kind": self.kind,
            "module": {k: v.copy() for k, v in self.layers.state_dict().items()},
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "grads": [None if p.grad is None else p.grad.data.copy() for p in self.params],
            "counters": {"n_acc": self.n_acc, "n_backward": self.n_backward, "n_steps": self.n_steps},
            "fifo": fifo,
        }

    def load_state_dict(self, state):
        if state["kind"] != self.kind:
            raise PetraError(f"stage {self.index}: checkpoint holds a {state['kind']} stage, this is a {self.kind}")
        self.layers.load_state_dict(state["module"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        for p, g in zip(self.params, state["grads"]):
            p.grad = None if g is None else Tensor._wrap(np.array(g, dtype=p.dtype))
        c = state["counters"]
        self.n_acc, self.n_backward, self.n_steps = int(c["n_acc"]), int(c["n_backward"]), int(c["n_steps"])
        self.fifo.clear()
        self.fifo_bytes = 0
        for e in state["fifo"]:
            self._push(int(e["m"]), np.asarray(e["x"]), e["x"].nbytes)


class ReversibleStage(Stage):
    """Invertible layers: stores nothing; reconstructs its input from its output in backward."""
    kind = "reversible"
    needs_output = True

    def __init__(self, index, layers, recipe=None):
        super().__init__(index, layers, recipe)
        bad = [type(layer).__name__ for layer in self.layers if not is_invertible(layer)]
        if bad:
            raise PetraError(f"stage {index}: a reversible stage needs invertible layers (with .inverse), "
                             f"got {', '.join(bad)}")

    def backward(self, m, y_tilde, y_bar):
        if y_tilde is None:
            raise PetraError(f"stage {self.index}: a reversible stage needs its output x̃ sent back with δ")
        layers = list(self.layers)
        with self._measure_backward(), _keep_buffers(self.layers):
            y, yb = y_tilde, y_bar
            for i in reversed(range(len(layers))):
                need = self.input_grad or i > 0
                y, yb = self._layer_backward(layers[i], y, yb, need)
        self._after_backward()
        return y, yb

    @staticmethod
    def _layer_backward(layer, y, y_bar, input_grad):
        from ..nn import RevBlock
        if isinstance(layer, RevBlock):
            return layer.inverse_vjp(y, y_bar, input_grad)    # the block owns its fused inverse + vjp
        # any other invertible module: reconstruct, then recompute the forward with a tape (the "naive" way)
        with no_grad():
            x = layer.inverse(Tensor._wrap(y)).data
        with enable_grad():
            x_t = _leaf(x, input_grad)
            out = layer(x_t)
            out.backward(y_bar)
            return x, (x_t.grad.data if input_grad and x_t.grad is not None else None)


class BufferedStage(Stage):
    """Non-invertible layers: an input FIFO of depth 2(J-1-j) and a recomputed forward in backward."""
    kind = "buffered"

    def forward(self, m, x):
        self._push(m, x, x.nbytes)
        return super().forward(m, x)

    def backward(self, m, y_tilde, y_bar):
        x = self._pop(m)
        with self._measure_backward(), _keep_buffers(self.layers), enable_grad():
            x_t = _leaf(x, self.input_grad)
            y = self.layers(x_t)
            y.backward(y_bar)
            x_bar = x_t.grad.data if self.input_grad and x_t.grad is not None else None
            del y
        self._after_backward()
        return x, x_bar


class HeadStage(Stage):
    """The last stage: forward, loss and backward in one tick; sends (x_{J-1}, δ_J) down."""
    kind = "head"

    def __init__(self, index, layers, recipe=None, loss=None):
        super().__init__(index, layers, recipe)
        self.loss_fn = loss or CrossEntropyLoss()
        self.losses = []          # (micro-batch, loss, correct predictions, size)

    def forward_backward(self, m, x, labels):
        with self._measure_backward(), enable_grad():
            x_t = _leaf(x, self.input_grad)
            out = self.layers(x_t)
            loss = self.loss_fn(out, Tensor._wrap(labels))
            loss.backward()
            x_bar = x_t.grad.data if self.input_grad and x_t.grad is not None else None
            correct = int((out.data.argmax(axis=-1) == labels).sum())
            self.losses.append((int(m), float(loss.data), correct, int(labels.shape[0])))
        self.counts["forward"] += 1       # its time is under "backward" (forward, loss and backward at once)
        self._after_backward()
        return x, x_bar

    def state_dict(self):
        s = super().state_dict()
        s["losses"] = np.array(self.losses, dtype=np.float64).reshape(-1, 4)
        return s

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.losses = [(int(a), float(b), int(c), int(d)) for a, b, c, d in np.asarray(state["losses"])]


class TapeStage(Stage):
    """Baseline stage: keeps the full tape of each micro-batch from its forward to its backward."""
    kind = "tape"

    def forward(self, m, x):
        t0, c0 = time.perf_counter(), time.thread_time()
        base = memory.saved_bytes()
        with enable_grad():
            x_t = _leaf(x, self.input_grad)
            y = self.layers(x_t)
        # No weight stashing, on purpose: the backward, ticks later, uses the parameters as updated by then.
        allow_in_place(y, list(self.layers.parameters()))
        # held: the stage input (kept alive by the tape) and every residual the tape saved
        self._push(m, (x_t, y), x.nbytes + memory.saved_bytes() - base)
        self._clock("forward", t0, c0)
        self.counts["forward"] += 1
        return y.data

    def backward(self, m, y_tilde, y_bar):
        x_t, y = self._pop(m)
        with self._measure_backward():
            y.backward(y_bar)
            x_bar = x_t.grad.data if self.input_grad and x_t.grad is not None else None
        del y
        self._after_backward()
        return None, x_bar


def split(model, stages=None, boundaries=None, recipe=None, method="petra", loss=None):
    """Cut `model` (a Sequential) into stages: `boundaries` (the start index of every stage but the first),
    or `stages` = J pieces of about equal length. method="petra": a piece whose layers are all invertible
    becomes a ReversibleStage, any other a BufferedStage, the last a HeadStage (with `loss`, default
    cross-entropy); method="tape": TapeStages (the stored-activation baselines) and a HeadStage."""
    layers = list(model)
    n = len(layers)
    if boundaries is None:
        J = int(stages or 1)
        if not 1 <= J <= n:
            raise PetraError(f"split: cannot cut {n} layers into {J} stages")
        boundaries = [round(i * n / J) for i in range(1, J)]
    cuts = [0] + [int(b) for b in boundaries] + [n]
    if any(a >= b for a, b in zip(cuts, cuts[1:])):
        raise PetraError(f"split: boundaries {boundaries} must increase strictly within 1..{n - 1}")
    J = len(cuts) - 1
    out = []
    for j, (a, b) in enumerate(zip(cuts, cuts[1:])):
        piece = Sequential(*layers[a:b])
        if j == J - 1:
            out.append(HeadStage(j, piece, recipe, loss))
        elif method == "tape":
            out.append(TapeStage(j, piece, recipe))
        elif method == "petra":
            cls = ReversibleStage if all(is_invertible(m) for m in piece) else BufferedStage
            out.append(cls(j, piece, recipe))
        else:
            raise PetraError(f"split: method must be 'petra' or 'tape', got {method!r}")
    return out
