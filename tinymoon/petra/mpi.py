"""The MPI executor: the same schedule and the same per-stage arithmetic as the simulator, with stages on
different processes (mpi4py; one or more contiguous stages per rank), started with
`mpiexec -n R python -m tinymoon.petra train ...`.

Messages are NumPy arrays sent with non-blocking point-to-point calls (Isend/Irecv, uppercase: raw buffers,
no pickle). A message is a fixed-size int64 header — micro-batch, number of arrays, and each array's dtype
code and shape — followed by one send per array, so the receiver allocates exactly the right buffers.

Faults (docs/petra.md, "Failure model"). No call ever blocks without a deadline: every wait is a polling
loop that also tests a pre-posted receive on an "abort" channel and exchanges heartbeats. Every rank sends
each other rank, every `timeout`/8 s (at most 0.5 s) while it waits, and at every tick, a heartbeat
carrying its rank, its tick, its phase and whom it is waiting for. A rank whose heartbeat has not been
heard for `timeout` seconds has hung or died: whoever waits names *it* — not the neighbour it happens to
wait for, which may itself be waiting — with the last tick each rank was seen at. A wait that outlasts
`timeout` while its peer is alive follows the waiting-for chain: a cycle is a deadlock (reported as such),
a rank that finished without sending is reported as such; otherwise the peer is working and the wait goes on.

A rank that raises (or detects a failure) sends the reason ("rank 2 failed at tick 5: ...") to every other
rank, waits (bounded) until they acknowledge that they printed it, and calls `MPI_Abort` so the launcher ends
everything. A rank that receives the reason prints it and acknowledges. A rank that dies outright, or stalls
inside MPI_Init / MPI_Finalize, is reported by its watchdog process (`watchdog.py`). So every rank stops,
non-zero, with the failing rank named, within about 2 `timeout`.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

from .pipeline import resume_stages, save_stage, stage_tick
from .stages import HeadStage, PetraError

__all__ = ["MPIExecutor", "Channel", "PeerFailed", "PeerTimeout", "placement"]

TAG_ABORT, TAG_ACK, TAG_HB = 90, 91, 92
TAG_F, TAG_B, TAG_GATHER = 10, 20, 30      # header tag; the arrays follow on tag + 1
HEADER = 64
_DTYPES = [np.dtype(d) for d in ("float32", "float64", "int64", "int32", "uint8", "float16", "bool")]
_ABORT_BYTES = 4096

# a heartbeat: (sender's rank, its tick (-1 before the first), its phase, the rank it waits for (-1: none,
# -2: a collective), a sequence number)
HB_LEN = 5
STARTING, RUNNING, FINISHING, FAILING = 0, 1, 2, 3
_PHASE_NAMES = {STARTING: "starting", RUNNING: "running", FINISHING: "finishing", FAILING: "stopping"}


class PeerFailed(PetraError):
    """Another rank failed; `rank` is the one that failed (or hung; -1: unknown), `reason` what was said
    about it, `sender` the rank that said it (to be acknowledged)."""

    def __init__(self, rank, reason, sender=None):
        super().__init__(reason)
        self.rank, self.reason, self.sender = rank, reason, rank if sender is None else sender


class PeerTimeout(PetraError):
    """Rank `rank` hung or died (no heartbeat within the deadline), or a wait on it cannot end."""

    def __init__(self, rank, message):
        super().__init__(message)
        self.rank = rank


FAULT_MODES = ("raise", "exit", "kill", "term", "hang")


def fire(rank, when, mode):
    """An injected fault (--inject-fault RANK:WHEN:MODE, for the tests of the failure model): raise an
    exception, exit without a word (`os._exit(13)`, like a crash), die by SIGKILL or SIGTERM, or hang."""
    if mode == "hang":
        while True:
            time.sleep(1)
    sys.stdout.flush()
    sys.stderr.flush()
    if mode == "exit":
        os._exit(13)
    if mode in ("kill", "term"):
        os.kill(os.getpid(), signal.SIGKILL if mode == "kill" else signal.SIGTERM)
        time.sleep(10)                    # the signal arrives at once
    raise RuntimeError(f"injected fault (--inject-fault {rank}:{when})")


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


class _Peer:
    __slots__ = ("tick", "phase", "waiting", "heard")

    def __init__(self, now):
        self.tick, self.phase, self.waiting, self.heard = -1, STARTING, -1, now


class Channel:
    """Point-to-point arrays with deadlines, heartbeats and the abort channel. Counts wait time and bytes.

    `link`: the watchdog's pipe (watchdog.Link), told the tick and the ticks last seen from the peers."""

    def __init__(self, comm, timeout=60.0, poll=2e-4, link=None):
        from mpi4py import MPI
        if not timeout > 0:
            raise PetraError(f"Channel: timeout must be > 0 seconds, got {timeout!r}")
        self.MPI, self.comm, self.link = MPI, comm, link
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.timeout, self.poll = float(timeout), float(poll)
        self.beat_every = min(0.5, self.timeout / 8)
        self._abort_buf = bytearray(_ABORT_BYTES)
        self._abort_req = comm.Irecv([self._abort_buf, MPI.BYTE], source=MPI.ANY_SOURCE, tag=TAG_ABORT)
        self.pending = []                 # (request, buffer kept alive until sent)
        self.wait_s = 0.0                 # blocked in receives (idle + transfer)
        self.send_s = 0.0                 # posting sends
        self.xfer_s = 0.0                 # header-to-payload time of received messages (the transfer itself)
        self.bytes_sent = 0
        self.tick = None                  # the tick being run (for error messages)
        self.phase, self.waiting = STARTING, -1
        now = time.monotonic()
        self.peers = {r: _Peer(now) for r in range(self.size) if r != self.rank}
        self._hb_in = {r: np.zeros(HB_LEN, np.int64) for r in self.peers}
        self._hb_req = {r: comm.Irecv(b, source=r, tag=TAG_HB) for r, b in self._hb_in.items()}
        self._hb_out = {}                 # rank -> (request, buffer) of the heartbeat in flight to it
        self._seq = 0
        self._next_beat = 0.0
        self.closed = False
        self.beat(check=False)

    # ---- heartbeats ------------------------------------------------------------------------------------
    def set_tick(self, t):
        self.tick, self.phase = t, RUNNING
        if self.link is not None:
            self.link.tick(t)
        self.beat(force=True)

    def beat(self, check=True, force=False):
        """Take in the peers' heartbeats, send ours when due, and (check) raise PeerTimeout naming a rank
        that has not been heard from for `timeout` seconds."""
        now = time.monotonic()
        for r, q in self._hb_req.items():
            if q.Test():
                b = self._hb_in[r]
                p = self.peers[r]
                p.tick, p.phase, p.waiting, p.heard = int(b[1]), int(b[2]), int(b[3]), now
                self._hb_req[r] = self.comm.Irecv(b, source=r, tag=TAG_HB)
        if force or now >= self._next_beat:
            self._next_beat = now + self.beat_every
            self._seq += 1
            for r in self.peers:
                out = self._hb_out.get(r)
                if out is not None and not out[0].Test():
                    continue              # the last one has not left yet: do not pile up
                b = np.array([self.rank, -1 if self.tick is None else self.tick, self.phase, self.waiting,
                              self._seq], np.int64)
                self._hb_out[r] = (self.comm.Isend(b, dest=r, tag=TAG_HB), b)
            if self.link is not None:
                self.link.seen({r: p.tick for r, p in self.peers.items()})
        if check:
            silent = [(now - p.heard, r) for r, p in self.peers.items() if now - p.heard > self.timeout]
            if silent:
                raise PeerTimeout(max(silent)[1], self._silent_message(max(silent)[1], now))

    def _where(self, r):
        p = self.peers[r]
        at = "start-up" if p.tick < 0 else f"tick {p.tick}"
        return f"{at} ({_PHASE_NAMES.get(p.phase, p.phase)})"

    def last_seen(self):
        """'rank 0 at tick 7 (running), ...' — what this rank last heard from every other rank."""
        mine = "start-up" if self.tick is None else f"tick {self.tick}"
        parts = [f"rank {self.rank} (this one) at {mine}"] + \
                [f"rank {r} at {self._where(r)}" for r in sorted(self.peers)]
        return "last seen: " + ", ".join(parts)

    def _silent_message(self, r, now):
        return (f"rank {r} presumed dead or hung: no heartbeat for {now - self.peers[r].heard:.1f} s "
                f"(--timeout {self.timeout:g} s), last heard from at {self._where(r)}; {self.last_seen()}")

    def _stuck(self, peer, what, waited):
        """A wait that outlasted the deadline while every rank is alive: a deadlock, a peer that finished
        without sending, or (None) a peer that is still working. No single rank is to blame (rank -1)."""
        if peer >= 0:
            if self.peers[peer].phase == FINISHING:
                return PeerTimeout(-1, f"{what} never came: rank {peer} finished without sending it (the ranks "
                                       f"disagree about the schedule: the same arguments on every rank?); "
                                       f"{self.last_seen()}")
            chain, r = [self.rank], peer
            while r >= 0 and r not in chain:
                chain.append(r)
                r = self.peers[r].waiting if r in self.peers else -1
            if r == self.rank:
                cycle = " -> ".join(f"rank {c}" for c in chain + [self.rank])
                return PeerTimeout(-1, f"deadlock after {waited:.1f} s waiting for {what}: {cycle}, each waiting "
                                       f"for the next, all alive (the ranks disagree about the schedule: the same "
                                       f"arguments on every rank?); {self.last_seen()}")
        else:
            waiting_for_us = [r for r, p in self.peers.items() if p.waiting == self.rank]
            if waiting_for_us:
                return PeerTimeout(-1, f"deadlock after {waited:.1f} s in {what}: rank {waiting_for_us[0]} "
                                       f"waits for a message from rank {self.rank} (the ranks disagree about the "
                                       f"schedule?); {self.last_seen()}")
        return None

    # ---- abort channel ---------------------------------------------------------------------------------
    def check_abort(self):
        status = self.MPI.Status()
        if self._abort_req.Test(status):
            src = status.Get_source()
            text = bytes(self._abort_buf[:status.Get_count(self.MPI.BYTE)]).decode("utf-8", "replace")
            culprit, _, reason = text.partition("|")
            try:
                culprit = int(culprit)
            except ValueError:
                culprit, reason = src, text
            raise PeerFailed(culprit, reason, src)

    def broadcast_abort(self, reason, culprit=None):
        """Tell every other rank why we stop, and who failed (non-blocking; they may be dead)."""
        self.phase = FAILING
        culprit = self.rank if culprit is None else culprit
        data = bytearray(f"{culprit}|{reason}".encode("utf-8")[:_ABORT_BYTES])
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
            self.beat(check=False)        # still alive: no one should take us for dead meanwhile
            time.sleep(self.poll)
        return sorted(reqs)               # ranks that never answered

    def ack(self, rank):
        self._ack_buf = np.ones(1, np.int64)
        self._ack_req = self.comm.Isend(self._ack_buf, dest=rank, tag=TAG_ACK)
        deadline = time.monotonic() + min(2.0, self.timeout)
        while not self._ack_req.Test() and time.monotonic() < deadline:
            time.sleep(self.poll)

    # ---- waits -----------------------------------------------------------------------------------------
    def wait(self, req, peer, what):
        """Until `req` completes. peer: the rank it depends on (-2: a collective)."""
        t0 = time.perf_counter()
        start = time.monotonic()
        deadline = start + self.timeout
        self.waiting = peer
        try:
            while not req.Test():
                self.check_abort()
                self._progress()
                self.beat()
                now = time.monotonic()
                if now > deadline:
                    stuck = self._stuck(peer, what, now - start)
                    if stuck is not None:
                        raise stuck
                    deadline = now + self.beat_every      # the peer works: look again soon
                time.sleep(self.poll)
        finally:
            self.waiting = -1
        self.wait_s += time.perf_counter() - t0

    def barrier(self, what):
        """A non-blocking barrier, watched like every other wait."""
        self.wait(self.comm.Ibarrier(), -2, what)

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

    def drain(self):
        """Wait (watched) until every send we posted has gone."""
        start = time.monotonic()
        while self.pending:
            self.check_abort()
            self._progress()
            self.beat()
            if self.pending and time.monotonic() - start > self.timeout:
                raise PeerTimeout(-1, f"sends not delivered within {self.timeout:g} s; {self.last_seen()}")
            time.sleep(self.poll)

    def finish(self):
        """The distributed part is over for this rank: deliver what we sent, wait (watched) until every
        rank gets here, withdraw the pending receives and finalise MPI. After this the rank is on its own
        (rank 0 evaluates and writes the report without holding anyone up)."""
        self.drain()
        self.phase = FINISHING
        self.beat(check=False, force=True)
        self.barrier("the final barrier (every rank done)")
        self.close()
        if self.link is not None:
            self.link.phase("finalize")
        self.MPI.Finalize()
        self.closed = True
        if self.link is not None:
            self.link.phase("done")        # MPI is over: what follows (rank 0's evaluation) has no deadline

    def close(self):
        """After a clean run: withdraw the pending receives (MPI_Finalize wants no open requests)."""
        for q in [self._abort_req, *self._hb_req.values()]:
            q.Cancel()
            q.Wait()
        deadline = time.monotonic() + min(2.0, self.timeout)
        for q, _ in self._hb_out.values():
            while not q.Test() and time.monotonic() < deadline:
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
        if self.inject is not None and self.inject[0] == self.rank and self.inject[1] == t:
            fire(*self.inject)

    # ---- running ---------------------------------------------------------------------------------------
    def step(self):
        t = self.tick
        self.channel.set_tick(t)
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
        self.channel.barrier("the start-up barrier (every rank ready for tick 0)")
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
        self.tick, inbox = resume_stages(directory, self.local, self.meta, f"rank {self.rank}")
        self.box.update(inbox)
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
