"""What one stage does in one tick, and its checkpoint — shared by the simulator and the MPI executor, so the
two execute the same arithmetic in the same order and end with the same parameters.

Messages (consumed one tick after they are produced):
    forward  j -> j+1:  (m, x_j, labels)       labels travel with the activations up to the loss
    backward j -> j-1:  (m, x̃_{j-1} or None, δ_j)   x̃ only when stage j-1 is reversible (it reconstructs from it)
"""
from __future__ import annotations

import os

import numpy as np

from ..serialization import load, save
from .stages import HeadStage, PetraError

__all__ = ["stage_tick", "save_stage", "load_stage", "resume_stages", "stage_file"]


def stage_tick(stage, schedule, t, fwd_in, bwd_in, batches=None, send_output_down=False):
    """Run stage `stage` at tick t. fwd_in / bwd_in: the messages it received (stage 0 reads its forward
    input from `batches`). Returns (forward message up or None, backward message down or None).

    Order: the backward of the old micro-batch (which frees its FIFO slot), then the forward of the new one,
    then the optimiser step if k gradients are accumulated — so both passes use the same θ_j^t (the paper's
    Eq. 5) and a buffered stage never holds more than 2(J-1-j) inputs."""
    j = stage.index
    f_m, b_m = schedule.work(t, j)
    fwd_out = bwd_out = None
    if b_m is not None and not isinstance(stage, HeadStage):
        if bwd_in is None or bwd_in[0] != b_m:
            raise PetraError(f"stage {j}, tick {t}: expected the backward of micro-batch {b_m}, got "
                             f"{None if bwd_in is None else bwd_in[0]}")
        _, y_tilde, y_bar = bwd_in
        x_tilde, x_bar = stage.backward(b_m, y_tilde, y_bar)
        if j > 0:
            bwd_out = (b_m, x_tilde if send_output_down else None, x_bar)
    if f_m is not None:
        if j == 0:
            x, labels = batches.get(f_m)
        else:
            if fwd_in is None or fwd_in[0] != f_m:
                raise PetraError(f"stage {j}, tick {t}: expected the forward of micro-batch {f_m}, got "
                                 f"{None if fwd_in is None else fwd_in[0]}")
            _, x, labels = fwd_in
        if isinstance(stage, HeadStage):
            x_tilde, x_bar = stage.forward_backward(f_m, x, labels)
            if j > 0:
                bwd_out = (f_m, x_tilde if send_output_down else None, x_bar)
        else:
            fwd_out = (f_m, stage.forward(f_m, x), labels)
    stage.maybe_step()                 # θ_j changes only after both used θ_j^t
    return fwd_out, bwd_out


def _msg_state(msg):
    if msg is None:
        return None
    return {"m": int(msg[0]), "arrays": [a for a in msg[1:]]}


def _msg_load(state):
    if state is None:
        return None
    return (int(state["m"]),) + tuple(None if a is None else np.asarray(a) for a in state["arrays"])


def stage_file(directory, j):
    return os.path.join(directory, f"stage-{j}.npz")


def save_stage(directory, stage, tick, fwd_in, bwd_in, meta):
    """Write stage j's whole state at the start of tick `tick` (with the messages it will consume at that
    tick) to <directory>/stage-<j>.npz, atomically (tm.save)."""
    os.makedirs(directory, exist_ok=True)
    save({"tick": int(tick), "meta": meta, "stage": stage.state_dict(),
          "inbox": {"fwd": _msg_state(fwd_in), "bwd": _msg_state(bwd_in)}}, stage_file(directory, stage.index))


def load_stage(directory, stage, meta=None):
    """Restore stage j from <directory>/stage-<j>.npz; returns (tick, fwd_in, bwd_in). `meta` (the run's
    configuration) must match what the checkpoint was written with."""
    ck = load(stage_file(directory, stage.index))
    if meta is not None:
        diff = {k: (ck["meta"].get(k), v) for k, v in meta.items() if ck["meta"].get(k) != v}
        if diff:
            raise PetraError(f"resume from {directory}: the run's configuration differs from the checkpoint's "
                             f"(checkpoint, now): {diff}")
    stage.load_state_dict(ck["stage"])
    return int(ck["tick"]), _msg_load(ck["inbox"]["fwd"]), _msg_load(ck["inbox"]["bwd"])


def resume_stages(directory, stages, meta, who="resume"):
    """Restore `stages` from <directory> (load_stage each) — the simulator restores them all, an MPI rank its
    own. Returns (tick, inbox): the one tick they were all saved at (0 when `stages` is empty) and the messages
    they will consume then, {(j, "F"): ..., (j, "B"): ...}. Stage files from different ticks are refused."""
    ticks, inbox = set(), {}
    for st in stages:
        t, f, b = load_stage(directory, st, meta)
        ticks.add(t)
        if f is not None:
            inbox[st.index, "F"] = f
        if b is not None:
            inbox[st.index, "B"] = b
    if len(ticks) > 1:
        raise PetraError(f"{who}: the stage files in {directory} are from different ticks {sorted(ticks)}")
    return (ticks.pop() if ticks else 0), inbox
