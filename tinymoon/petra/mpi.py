"""The MPI executor: the same schedule and the same per-stage arithmetic as the simulator, with stages on
different processes (mpi4py; one or more contiguous stages per rank), started with
`mpiexec -n R python -m tinymoon.petra train ...`.

Messages are NumPy arrays sent with non-blocking point-to-point calls (Isend/Irecv, uppercase: raw buffers,
no pickle). A message is a fixed-size int64 header — micro-batch, number of arrays, and each array's dtype
code and shape — followed by one send per array, so the receiver allocates exactly the right buffers.

Faults. No call ever blocks without a deadline: every wait is a polling loop that also tests a pre-posted
receive on an "abort" channel. A rank that raises sends the reason ("rank 2 failed at tick 5: ...") to every
other rank, waits (bounded) until they acknowledge that they printed it, and calls `MPI_Abort` so the launcher
ends everything. A rank that receives the reason prints it and acknowledges. A rank that dies silently is
caught by the deadline of whoever waits for it ("no message from rank 3 within 30 s: presumed dead"), which
then aborts the same way. So every rank stops, non-zero, naming the failing rank, within about `timeout`.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from .pipeline import load_stage, save_stage, stage_tick
from .stages import HeadStage, PetraError

__all__ = ["MPIExecutor", "Channel", "PeerFailed", "PeerTimeout", "placement"]

TAG_ABORT, TAG_ACK = 90, 91
TAG_F, TAG_B, TAG_GATHER = 10, 20, 30      # header tag; the arrays follow on tag + 1
HEADER = 64
_DTYPES = [np.dtype(d) for d in ("float32", "float64", "int64", "int32", "uint8", "float16", "bool")]
_ABORT_BYTES = 4096


class PeerFailed(PetraError):
    """Another rank failed; `rank` is the one that failed, `reason` what it said."""

    def __init__(self, rank, reason):
        super().__init__(reason)
        self.rank, self.reason = rank, reason


class PeerTimeout(PetraError):
    """No message from `rank` within the deadline."""

    def __init__(self, rank, message):
        super().__init__(message)
        self.rank = rank


def placement(stages, ranks):
    """Rank of each stage: contiguous blocks, as even as possible (ranks <= stages)."""
    if not 1 <= ranks <= stages:
        raise PetraError(f"placement: {ranks} ranks for {stages} stages; use between 1 and {stages} ranks")
    return [j * ranks // stages for j in range(stages)]


def _encode(m, arrays):
    h = np.zeros(HEADER, np.int64)
    h[0], h[1] = m, len(arrays)
    i = 2
    for a in arrays:
        if a is None:
            h[i] = -1
            i += 1
            continue
        if a.ndim > 8 or i + 2 + a.ndim > HEADER:
            shapes = [getattr(x, "shape", None) for x in arrays]
            raise PetraError(f"message too complex for the header: arrays of shapes {shapes}")
        h[i], h[i + 1] = _DTYPES.index(a.dtype), a.ndim
        h[i + 2:i + 2 + a.ndim] = a.shape
        i += 2 + a.ndim
    return h


def _decode(h):
    m, n, i, specs = int(h[0]), int(h[1]), 2, []
    for _ in range(n):
        code = int(h[i])
        if code < 0:
            specs.append(None)
            i += 1
            continue
        nd = int(h[i + 1])
        specs.append((_DTYPES[code], tuple(int(d) for d in h[i + 2:i + 2 + nd])))
        i += 2 + nd
    return m, specs


class Channel:
    """Point-to-point arrays with deadlines, plus the abort channel. Counts wait time and bytes."""

    def __init__(self, comm, timeout=60.0, poll=2e-4):
        from mpi4py import MPI
        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.timeout, self.poll = float(timeout), float(poll)
        self._abort_buf = bytearray(_ABORT_BYTES)
        self._abort_req = comm.Irecv([self._abort_buf, MPI.BYTE], source=MPI.ANY_SOURCE, tag=TAG_ABORT)
        self.pending = []                 # (request, buffer kept alive until sent)
        self.wait_s = 0.0                 # blocked in receives (idle + transfer)
        self.send_s = 0.0                 # posting sends
        self.xfer_s = 0.0                 # header-to-payload time of received messages (the transfer itself)
        self.bytes_sent = 0
        self.tick = None                  # the tick being run (for error messages)

    # ---- abort channel ---------------------------------------------------------------------------------
    def check_abort(self):
        status = self.MPI.Status()
        if self._abort_req.Test(status):
            src = status.Get_source()
            reason = bytes(self._abort_buf[:status.Get_count(self.MPI.BYTE)]).decode("utf-8", "replace")
            raise PeerFailed(src, reason)

    def broadcast_abort(self, reason):
        """Tell every other rank why we stop (non-blocking; they may be dead)."""
        data = bytearray(reason.encode("utf-8")[:_ABORT_BYTES])
        self._abort_msgs = [(self.comm.Isend([data, self.MPI.BYTE], dest=r, tag=TAG_ABORT), data)
                            for r in range(self.size) if r != self.rank]

    def wait_acks(self, grace):
        """Wait (at most `grace` seconds) until every other rank acknowledged our abort message."""
        bufs = {r: np.zeros(1, np.int64) for r in range(self.size) if r != self.rank}
        reqs = {r: self.comm.Irecv(b, source=r, tag=TAG_ACK) for r, b in bufs.items()}
        deadline = time.monotonic() + grace
        while reqs and time.monotonic() < deadline:
            for r in [r for r, q in reqs.items() if q.Test()]:
                del reqs[r]
            time.sleep(self.poll)
        return sorted(reqs)               # ranks that never answered

    def ack(self, rank):
        self._ack_buf = np.ones(1, np.int64)
        self._ack_req = self.comm.Isend(self._ack_buf, dest=rank, tag=TAG_ACK)
        deadline = time.monotonic() + 2.0
        while not self._ack_req.Test() and time.monotonic() < deadline:
            time.sleep(self.poll)

    # ---- waits -----------------------------------------------------------------------------------------
    def wait(self, req, peer, what):
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.timeout
        while not req.Test():
            self.check_abort()
            self._progress()
            if time.monotonic() > deadline:
                if peer < 0:
                    raise PeerTimeout(peer, f"rank {self.rank}: {what} not reached by every rank within "
                                            f"{self.timeout:g} s: a rank is dead or hung")
                raise PeerTimeout(peer, f"rank {self.rank}: no {what} from rank {peer} within {self.timeout:g} s: "
                                        f"rank {peer} presumed dead or hung")
            time.sleep(self.poll)
        self.wait_s += time.perf_counter() - t0

    def barrier(self, what, timeout):
        """A non-blocking barrier with a deadline (at start-up the ranks may be seconds apart: imports)."""
        saved, self.timeout = self.timeout, max(self.timeout, timeout)
        try:
            self.wait(self.comm.Ibarrier(), -1, what)
        finally:
            self.timeout = saved

    def _progress(self):
        if self.pending:
            self.pending = [(q, b) for q, b in self.pending if not q.Test()]

    # ---- messages --------------------------------------------------------------------------------------
    def send(self, dest, tag, m, arrays):
        t0 = time.perf_counter()
        arrays = [None if a is None else (a if a.flags.c_contiguous else a.copy()) for a in arrays]
        h = _encode(m, arrays)
        self.pending.append((self.comm.Isend(h, dest=dest, tag=tag), h))
        for a in arrays:
            if a is not None:
                self.pending.append((self.comm.Isend(a, dest=dest, tag=tag + 1), a))
                self.bytes_sent += a.nbytes
        self._progress()
        self.send_s += time.perf_counter() - t0

    def recv(self, source, tag, what):
        h = np.empty(HEADER, np.int64)
        self.wait(self.comm.Irecv(h, source=source, tag=tag), source, what)
        m, specs = _decode(h)
        t0 = time.perf_counter()
        out = []
        for spec in specs:
            if spec is None:
                out.append(None)
                continue
            a = np.empty(spec[1], spec[0])
            self.wait(self.comm.Irecv(a, source=source, tag=tag + 1), source, what)
            out.append(a)
        self.xfer_s += time.perf_counter() - t0
        return m, out

    def close(self):
        """After a clean run: withdraw the pending abort receive (MPI_Finalize wants no open requests)."""
        self.drain()
        self._abort_req.Cancel()
        self._abort_req.Wait()

    def drain(self):
        """Wait (with the deadline) until every send we posted has gone."""
        deadline = time.monotonic() + self.timeout
        while self.pending:
            self.check_abort()
            self._progress()
            if self.pending and time.monotonic() > deadline:
                raise PeerTimeout(-1, f"rank {self.rank}: sends not delivered within {self.timeout:g} s")
            time.sleep(self.poll)


class MPIExecutor:
    """Runs the stages placed on this rank. `stages` is the full list (every rank builds the whole model from
    the same seed, then works on its own stages); `ranks_of[j]` is the rank of stage j."""

    def __init__(self, stages, schedule, batches, channel=None, timeout=60.0, meta=None, inject=None):
        if channel is None:
            from mpi4py import MPI
            channel = Channel(MPI.COMM_WORLD, timeout)
        self.channel = channel
        self.comm = channel.comm
        self.rank, self.size = self.channel.rank, self.channel.size
        self.stages, self.schedule, self.batches = stages, schedule, batches
        self.ranks_of = placement(len(stages), self.size)
        self.local = [s for s in stages if self.ranks_of[s.index] == self.rank]
        self.tick = 0
        self.box = {}                      # (stage, "F" | "B") -> message for this tick, received or local
        self.meta = meta or {}
        self.inject = inject               # (rank, tick, mode) or None
        self.compute_s = self.loop_s = 0.0
        self.tick_times = []               # perf_counter at the end of every tick
        self.startup_timeout = 300.0       # every rank must reach the first tick within this

    # ---- routing ---------------------------------------------------------------------------------------
    def _inputs(self, t, st):
        """Make sure the messages stage st consumes at tick t are in self.box (receive the remote ones)."""
        j = st.index
        f_m, b_m = self.schedule.work(t, j)
        if f_m is not None and j > 0 and (j, "F") not in self.box:
            src = self.ranks_of[j - 1]
            if src == self.rank:
                raise PetraError(f"rank {self.rank}: local forward message for stage {j} at tick {t} missing")
            m, arrays = self.channel.recv(src, TAG_F, f"forward message for stage {j} at tick {t}")
            self.box[j, "F"] = (m, *arrays)
        if b_m is not None and not isinstance(st, HeadStage) and (j, "B") not in self.box:
            src = self.ranks_of[j + 1]
            if src == self.rank:
                raise PetraError(f"rank {self.rank}: local backward message for stage {j} at tick {t} missing")
            m, arrays = self.channel.recv(src, TAG_B, f"backward message for stage {j} at tick {t}")
            self.box[j, "B"] = (m, *arrays)

    def _route(self, j, f_out, b_out, box):
        if f_out is not None:
            if self.ranks_of[j + 1] == self.rank:
                box[j + 1, "F"] = f_out
            else:
                self.channel.send(self.ranks_of[j + 1], TAG_F, f_out[0], list(f_out[1:]))
        if b_out is not None:
            if self.ranks_of[j - 1] == self.rank:
                box[j - 1, "B"] = b_out
            else:
                self.channel.send(self.ranks_of[j - 1], TAG_B, b_out[0], list(b_out[1:]))

    def _fault(self, t):
        if self.inject is None:
            return
        rank, tick, mode = self.inject
        if rank == self.rank and tick == t:
            if mode == "exit":                      # die without a word (a crash, a kill -9)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(13)
            if mode == "hang":
                while True:
                    time.sleep(1)
            raise RuntimeError(f"injected fault (--inject-fault {rank}:{tick})")

    # ---- running ---------------------------------------------------------------------------------------
    def step(self):
        t = self.channel.tick = self.tick
        self._fault(t)
        for st in self.local:
            self._inputs(t, st)
        nxt = {}
        c0 = time.perf_counter()
        for st in self.local:
            j = st.index
            down = j > 0 and self.stages[j - 1].needs_output
            f_out, b_out = stage_tick(st, self.schedule, t, self.box.pop((j, "F"), None),
                                      self.box.pop((j, "B"), None), self.batches, send_output_down=down)
            self._route(j, f_out, b_out, nxt)
        self.compute_s += time.perf_counter() - c0
        self.box = nxt
        self.tick += 1
        self.tick_times.append(time.perf_counter())

    def rank_stats(self):
        c = self.channel
        return {"rank": self.rank, "loop_s": self.loop_s, "wait_s": c.wait_s, "compute_s": self.compute_s,
                "bytes_sent": c.bytes_sent, "send_s": c.send_s, "xfer_s": c.xfer_s}

    def run(self, until=None, checkpoint=None, checkpoint_every=None):
        end = self.schedule.ticks if until is None else min(until, self.schedule.ticks)
        self.channel.barrier("start-up barrier", self.startup_timeout)
        t0 = time.perf_counter()
        while self.tick < end:
            self.step()
            if checkpoint and checkpoint_every and self.tick % checkpoint_every == 0 and self.tick < end:
                self.save(checkpoint)
        if checkpoint and self.tick < self.schedule.ticks:
            self.save(checkpoint)
        if self.tick >= self.schedule.ticks:
            for st in self.local:
                st.flush()
        self.channel.drain()
        self.loop_s += time.perf_counter() - t0
        return self

    def save(self, directory):
        """Checkpoint this rank's stages at the start of tick self.tick (receiving that tick's messages
        first, so each stage file holds what the stage will consume)."""
        if self.tick < self.schedule.ticks:
            for st in self.local:
                self._inputs(self.tick, st)
        for st in self.local:
            save_stage(directory, st, self.tick, self.box.get((st.index, "F")), self.box.get((st.index, "B")),
                       self.meta)

    def resume(self, directory):
        ticks = set()
        for st in self.local:
            t, f, b = load_stage(directory, st, self.meta)
            ticks.add(t)
            if f is not None:
                self.box[st.index, "F"] = f
            if b is not None:
                self.box[st.index, "B"] = b
        if len(ticks) > 1:
            raise PetraError(f"rank {self.rank}: stage files in {directory} are from different ticks {sorted(ticks)}")
        self.tick = ticks.pop() if ticks else 0
        return self

    def gather(self):
        """Bring every stage's parameters and buffers (and the head's losses, and per-stage statistics) to
        rank 0, into rank 0's copies of the stages. Returns the per-stage statistics on rank 0, else None."""
        stats = {st.index: {**stage_stats(st), **self.rank_stats()} for st in self.local}
        if self.rank != 0:
            for st in self.local:
                arrays = [np.asarray(v) for v in st.layers.state_dict().values()]
                arrays.append(np.array(list(stats[st.index].values()), np.float64))
                if isinstance(st, HeadStage):
                    arrays.append(np.array(st.losses, np.float64).reshape(-1, 4))
                self.channel.send(0, TAG_GATHER, st.index, arrays)
            self.channel.drain()
            return None
        for st in self.stages:
            if self.ranks_of[st.index] == 0:
                continue
            j, arrays = self.channel.recv(self.ranks_of[st.index], TAG_GATHER, f"final state of stage {st.index}")
            own = self.stages[j]
            keys = list(own.layers.state_dict().keys())
            own.layers.load_state_dict(dict(zip(keys, arrays[:len(keys)])))
            stats[j] = dict(zip(STAT_KEYS, (float(v) for v in arrays[len(keys)])))
            if isinstance(own, HeadStage):
                own.losses = [(int(a), float(b), int(c), int(d)) for a, b, c, d in arrays[len(keys) + 1]]
        return [stats[j] for j in range(len(self.stages))]


STAT_KEYS = ("forward_s", "backward_s", "step_s", "cpu_s", "forwards", "backwards", "max_held_bytes",
             "backward_peak_bytes", "steps", "rank", "loop_s", "wait_s", "compute_s", "bytes_sent", "send_s", "xfer_s")


def stage_stats(st):
    return {"forward_s": st.time["forward"], "backward_s": st.time["backward"], "step_s": st.time["step"],
            "cpu_s": sum(st.cpu.values()),
            "forwards": st.counts["forward"], "backwards": st.counts["backward"], "max_held_bytes": st.max_held,
            "backward_peak_bytes": st.backward_peak, "steps": st.n_steps}
