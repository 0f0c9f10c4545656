"""The PETRA schedule: which micro-batch each stage works on at each tick — the one definition both
executors (the simulator and the MPI executor) follow.

Stages are numbered j = 0..J-1 (stage 0 reads the data, stage J-1 holds the loss). Micro-batch m enters
stage 0 at tick s(m) and moves up one stage per tick, so its forward at stage j is at tick s(m) + j. The last
stage does forward, loss and backward in the same tick; the cotangent then moves down one stage per tick, so

    forward  of m at stage j:  tick s(m) + j
    backward of m at stage j:  tick s(m) + 2(J-1) - j        (2(J-1-j) ticks after its forward)

which is the paper's delay 2(J - j) with stages numbered from 1. Two entry rules:

- "petra" (decoupled): s(m) = m — a new micro-batch every tick, so at tick t stage j does the forward of
  t - j and the backward of t - 2(J-1) + j, both at once;
- "sync" (no delay, ordinary backprop order): s(m) = m (2J - 1) — micro-batch m+1 enters only after m's
  backward has left stage 0, so every backward sees the parameters its forward saw.

Within a tick a stage does its forward first, then its backward, then (every k backward passes) its optimiser
step; a message produced at tick t is consumed at tick t + 1.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Schedule"]

MODES = ("petra", "sync")


@dataclass(frozen=True)
class Schedule:
    stages: int            # J
    microbatches: int      # M, the number of micro-batches in the whole run
    mode: str = "petra"

    def __post_init__(self):
        if self.stages < 1 or self.microbatches < 0:
            raise ValueError(f"Schedule: need stages >= 1 and microbatches >= 0, got {self.stages}, "
                             f"{self.microbatches}")
        if self.mode not in MODES:
            raise ValueError(f"Schedule: mode must be one of {MODES}, got {self.mode!r}")

    @property
    def period(self):
        """Ticks between two entries: 1 (petra) or 2J - 1 (sync)."""
        return 1 if self.mode == "petra" else 2 * self.stages - 1

    def entry(self, m):
        """s(m): the tick micro-batch m enters stage 0."""
        return m * self.period

    def forward_tick(self, m, j):
        return self.entry(m) + j

    def backward_tick(self, m, j):
        return self.entry(m) + 2 * (self.stages - 1) - j

    def delay(self, j):
        """Ticks between a micro-batch's forward and its backward at stage j: 2(J-1-j)."""
        return 2 * (self.stages - 1 - j)

    @property
    def ticks(self):
        """Ticks in the whole run (fill, steady state, drain)."""
        if self.microbatches == 0:
            return 0
        return self.entry(self.microbatches - 1) + 2 * (self.stages - 1) + 1

    def _micro(self, offset):
        """The micro-batch m with s(m) = offset, or None."""
        if offset < 0 or offset % self.period:
            return None
        m = offset // self.period
        return m if m < self.microbatches else None

    def forward_at(self, t, j):
        """The micro-batch whose forward stage j runs at tick t, or None."""
        return self._micro(t - j)

    def backward_at(self, t, j):
        """The micro-batch whose backward stage j runs at tick t, or None."""
        return self._micro(t - 2 * (self.stages - 1) + j)

    def work(self, t, j):
        """(forward micro-batch or None, backward micro-batch or None) of stage j at tick t."""
        return self.forward_at(t, j), self.backward_at(t, j)

    def diagram(self, ticks=None, width=4):
        """A tick diagram: one row per stage (stage J-1 on top), one column per tick; 'F3' forward of
        micro-batch 3, 'B1' backward of micro-batch 1, 'F3B1' both, '.' idle."""
        ticks = self.ticks if ticks is None else min(ticks, self.ticks)
        cells = {}
        for j in range(self.stages):
            for t in range(ticks):
                f, b = self.work(t, j)
                s = (f"F{f}" if f is not None else "") + (f"B{b}" if b is not None else "")
                cells[j, t] = s or "."
        w = max([width] + [len(c) for c in cells.values()]) + 1
        lines = ["tick    " + "".join(str(t).ljust(w) for t in range(ticks))]
        for j in reversed(range(self.stages)):
            lines.append(f"stage {j} " + "".join(cells[j, t].ljust(w) for t in range(ticks)))
        return "\n".join(line.rstrip() for line in lines)
