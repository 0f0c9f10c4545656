"""The tick simulator: every stage in one process, one tick after another, messages in a dict.

Deterministic and exact: the same seed gives the same parameters as the MPI executor (both call
`pipeline.stage_tick`). `trace=True` records, per tick, what every stage did and what it holds (its input
FIFO, the messages in flight) — `Simulator.render_trace()` prints it.
"""
from __future__ import annotations

import time

from .pipeline import resume_stages, save_stage, stage_tick
from .stages import PetraError

__all__ = ["Simulator"]


class Simulator:
    def __init__(self, stages, schedule, batches, trace=False, meta=None):
        if len(stages) != schedule.stages:
            raise PetraError(f"Simulator: {len(stages)} stages but the schedule has {schedule.stages}")
        self.stages, self.schedule, self.batches = stages, schedule, batches
        self.tick = 0
        self.mailbox = {}              # (stage, "F" | "B") -> message consumed at self.tick
        self.trace = [] if trace else None
        self.meta = meta or {}
        self.tick_times = []           # perf_counter at the end of every tick (steady-state throughput)

    def step(self):
        """Run one tick of every stage."""
        t, box = self.tick, {}
        for st in self.stages:
            j = st.index
            down = j > 0 and self.stages[j - 1].needs_output
            f_out, b_out = stage_tick(st, self.schedule, t, self.mailbox.pop((j, "F"), None),
                                      self.mailbox.pop((j, "B"), None), self.batches, send_output_down=down)
            if f_out is not None:
                box[j + 1, "F"] = f_out
            if b_out is not None:
                box[j - 1, "B"] = b_out
        if self.mailbox:
            raise PetraError(f"tick {t}: messages nobody consumed: {sorted(self.mailbox)}")
        self.mailbox = box
        if self.trace is not None:
            self._record(t)
        self.tick += 1
        self.tick_times.append(time.perf_counter())

    def run(self, until=None, checkpoint=None, checkpoint_every=None, flush=True):
        """Run ticks up to `until` (default: the end of the schedule). `checkpoint` a directory: written
        every `checkpoint_every` ticks and when stopping at `until`. At the end, flush partial accumulations."""
        end = self.schedule.ticks if until is None else min(until, self.schedule.ticks)
        while self.tick < end:
            self.step()
            if checkpoint and checkpoint_every and self.tick % checkpoint_every == 0 and self.tick < end:
                self.save(checkpoint)
        if checkpoint and self.tick < self.schedule.ticks:
            self.save(checkpoint)
        if flush and self.tick >= self.schedule.ticks:
            for st in self.stages:
                st.flush()
        return self

    def save(self, directory):
        for st in self.stages:
            j = st.index
            save_stage(directory, st, self.tick, self.mailbox.get((j, "F")), self.mailbox.get((j, "B")), self.meta)

    def resume(self, directory):
        self.tick, self.mailbox = resume_stages(directory, self.stages, self.meta)
        return self

    # ---- tracing ---------------------------------------------------------------------------------------
    def _record(self, t):
        row = []
        for st in self.stages:
            f, b = self.schedule.work(t, st.index)
            row.append({"F": f, "B": b, "fifo": [m for m, _, _ in st.fifo], "held": st.fifo_bytes})
        flying = sorted(f"{'x' if k[1] == 'F' else 'δ'}{v[0]}->s{k[0]}" for k, v in self.mailbox.items())
        self.trace.append({"tick": t, "stages": row, "in_flight": flying})

    def render_trace(self):
        """One line per tick: each stage's work and FIFO (the micro-batches whose input it holds), then the
        messages on the wires at the end of the tick (x3->s2: activations of micro-batch 3 for stage 2;
        δ1->s0: (x̃, δ) of micro-batch 1 for stage 0)."""
        lines = []
        for rec in self.trace:
            cells = []
            for j, s in enumerate(rec["stages"]):
                work = (f"F{s['F']}" if s["F"] is not None else "") + (f"B{s['B']}" if s["B"] is not None else "")
                f = s["fifo"]
                hold = "" if not f else (str(f[0]) if len(f) == 1 else f"{f[0]}..{f[-1]}")
                cells.append(f"s{j}:{work or '-':<6} holds[{hold}]")
            wires = " ".join(rec["in_flight"])
            lines.append(f"t={rec['tick']:<3} " + " | ".join(cells) + (f" || wires: {wires}" if wires else ""))
        return "\n".join(lines)
