"""The rank's watchdog: the process the MPI launcher starts forks, and watches its child — the MPI rank.

Why a second process. Two kinds of failure cannot be reported from inside the rank that suffers them:
- it dies (`kill -9`, a segfault, `os._exit`, SIGTERM): nothing of it runs any more, and mpich's launcher then
  SIGKILLs every other rank at once, so no peer gets to say anything either;
- it is blocked inside MPI itself: `MPI_Init` (inside `from mpi4py import MPI`) waits, holding the GIL, for
  every rank to arrive — one rank stalled before it leaves the others there forever, with no Python thread
  able to run — and `MPI_Finalize` waits the same way.
The parent (the watchdog) runs no MPI and no model, only this loop, so it sees both: it reads the rank's
progress from a pipe (its phase, its tick, the ticks it last saw from its peers), and

- the rank exits or dies without having reported an error itself: the watchdog prints
  `petra rank 2: died at tick 5 (killed by SIGKILL), without reporting an error; last ticks seen by rank 2:
  rank 0 at tick 6, ...` and exits non-zero, which makes the launcher stop the job;
- the rank has not reached `MPI_Init` within `timeout` seconds of its start: `petra rank 2: stalled before MPI
  start-up ...`, then it kills the rank and exits (the stalled rank names itself);
- the rank has waited in `MPI_Init` or `MPI_Finalize` for longer than `timeout` (+ a grace at start-up, so
  that a stalled rank's own report comes first): it says so, naming the ranks of this host that never
  reached start-up (each watchdog notes its rank's phase in a small status file; see `_Status`), then kills
  its rank and exits.

Everything after `MPI_Init` and before `MPI_Finalize` is watched by the ranks themselves, over MPI
(heartbeats, `mpi.Channel`). The pipe protocol is one line per message: `phase <name>` (start, init, ready,
finalize, done), `tick <t>`, `seen <rank>:<tick> ...`, `reported` (the rank printed its own reason: stay
silent).
"""
from __future__ import annotations

import os
import select
import signal
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["launcher_rank_size", "supervise", "Link"]

_PHASES = ("start", "init", "ready", "finalize", "done")


def launcher_rank_size():
    """(rank, size) from the MPI launcher's environment (mpich/hydra, Open MPI, Slurm), or (None, None)."""
    for r, s in (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
                 ("SLURM_PROCID", "SLURM_NTASKS")):
        if r in os.environ and s in os.environ:
            try:
                return int(os.environ[r]), int(os.environ[s])
            except ValueError:
                pass
    return None, None


def _say(line):
    """One write per line, so that lines of different ranks do not interleave in the launcher's output."""
    try:
        os.write(2, (line.rstrip("\n") + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


class Link:
    """The rank's end of the pipe (a no-op without a watchdog)."""

    def __init__(self, fd=None):
        self.fd = fd
        self._seen = None

    def _send(self, line):
        if self.fd is None:
            return
        try:
            os.write(self.fd, (line + "\n").encode())
        except OSError:          # the watchdog is gone: nothing to tell
            self.fd = None

    def phase(self, name):
        self._send(f"phase {name}")

    def tick(self, t):
        self._send(f"tick {t}")

    def seen(self, ticks):
        """ticks: {rank: last tick seen from it}; sent only when it changed."""
        if ticks != self._seen:
            self._seen = dict(ticks)
            self._send("seen " + " ".join(f"{r}:{t}" for r, t in sorted(ticks.items())))

    def reported(self):
        self._send("reported")


class _Status:
    """A status file per rank of this host, in a directory shared by the ranks of one job: named after the
    launcher's local proxy (our parent process: mpich's hydra_pmi_proxy, Open MPI's orted) and its start
    time, so that another job never shares it. Lets a rank stuck in MPI_Init name the ranks that never got
    there. Best effort: without /proc, or when the ranks do not share a parent, it stays silent."""

    def __init__(self, rank, size):
        self.rank, self.size, self.dir = rank, size, None
        try:
            ppid = os.getppid()
            base = Path(tempfile.gettempdir()) / f"tinymoon-petra-{os.getuid()}"
            self.dir = base / f"{ppid}-{_start_time(ppid)}"
            self.dir.mkdir(parents=True, exist_ok=True)
            _clean_stale(base)
        except (OSError, AttributeError, ValueError):
            self.dir = None

    def write(self, phase):
        if self.dir is None:
            return
        try:
            tmp = self.dir / f".rank-{self.rank}.{os.getpid()}"
            tmp.write_text(f"{phase} {time.time():.3f}\n")
            os.replace(tmp, self.dir / f"rank-{self.rank}")
        except OSError:
            pass

    def missing(self):
        """{rank: phase or None} of the ranks not yet at MPI start-up: those of this host's directory that
        are still before it, and — when every rank runs on this host (mpich's MPI_LOCALNRANKS) — the ranks
        that left no file at all."""
        if self.dir is None:
            return None
        try:
            local = int(os.environ.get("MPI_LOCALNRANKS", "0")) == self.size
        except ValueError:
            local = False
        out = {}
        for r in range(self.size):
            try:
                phase = (self.dir / f"rank-{r}").read_text().split()[0]
            except (OSError, IndexError):
                phase = None
            if phase in ("start", "failed") or (phase is None and local):
                out[r] = phase
        return out

    def remove(self, failed=False):
        """Clean exit: remove our file. Failed: leave 'failed' in it (if we never got past start-up), so
        that the ranks still waiting in MPI_Init can say who it was."""
        if self.dir is None:
            return
        if failed:
            self.write("failed")
            return
        try:
            (self.dir / f"rank-{self.rank}").unlink()
        except OSError:
            pass
        try:
            self.dir.rmdir()              # the last rank out removes the directory
        except OSError:
            pass


def _start_time(pid):
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): with the pid, a
    name no later process can take."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


def _clean_stale(base):
    """Remove the status directories of jobs whose proxy process is gone."""
    for d in base.iterdir():
        try:
            pid, start = d.name.split("-")
            if _start_time(int(pid)) == start:
                continue
        except (OSError, ValueError):
            pass
        try:
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
        except OSError:
            pass


def _describe(status):
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}", 128 + sig
    code = os.WEXITSTATUS(status)
    return f"exit code {code}", code


def supervise(run, rank, size, timeout):
    """Fork. The child runs `run(Link)` (the MPI rank; its return value is its exit code); the parent
    watches it as the module docstring says and returns the exit code the launcher should see.
    Without os.fork (Windows) the rank runs in this process, unwatched."""
    if not hasattr(os, "fork"):
        return run(Link())
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                  # the rank: its exit code is run()'s return value
        os.close(r)
        # It leaves through the interpreter's normal exit (SystemExit travels up through our callers),
        # never os._exit: mpich finishes its part of MPI_Finalize in exit handlers, and a process that
        # skips them is taken by the launcher for one that crashed.
        raise SystemExit(run(Link(w)))
    os.close(w)
    return _watch(pid, r, rank, size, float(timeout))


def _watch(pid, fd, rank, size, timeout):
    status_file = _Status(rank, size)
    status_file.write("start")
    state = {"phase": "start", "since": time.monotonic(), "tick": None, "seen": {}, "reported": False}
    grace = min(2.0, 0.5 * timeout)             # at start-up: let a stalled rank name itself first
    stopping = []

    def on_signal(sig, frame):
        stopping.append(sig)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    buf, eof, clean = b"", False, False
    try:
        while True:
            if stopping:
                name = signal.Signals(stopping[0]).name
                _say(f"petra rank {rank}: received {name}; stopping the rank (pid {pid})")
                _kill(pid)
                return 128 + stopping[0]
            if not eof:
                ready, _, _ = select.select([fd], [], [], 0.05)
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        eof = True
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        _take(line.decode("utf-8", "replace"), state, status_file)
            else:
                time.sleep(0.02)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
                while not eof:                    # what it wrote just before exiting ('reported')
                    chunk = os.read(fd, 65536)
                    eof = not chunk
                    buf += chunk
                for line in buf.split(b"\n"):
                    _take(line.decode("utf-8", "replace"), state, status_file)
                what, code = _describe(status)
                if code == 0 or state["reported"]:
                    return code
                at = f" at tick {state['tick']}" if state["tick"] is not None else \
                    f" in phase '{state['phase']}'"
                _say(f"petra rank {rank}: died{at} ({what}), without reporting an error; "
                     f"{_seen_text(rank, state['seen'])}")
                return code if code else 1
            waited = time.monotonic() - state["since"]
            phase = state["phase"]
            if phase == "start" and waited > timeout:
                _say(f"petra rank {rank}: stalled before MPI start-up: MPI_Init not reached within "
                     f"{timeout:g} s of the rank's start (--timeout); stopping it")
            elif phase == "init" and waited > timeout + grace:
                missing = status_file.missing()
                how = {"start": "stalled before it", "failed": "failed or was stopped before it",
                       None: "no sign of life"}
                who = ("ranks that have not started it, on this host: " + ", ".join(
                    f"rank {r} ({how[p]})" for r, p in sorted(missing.items()))) if missing else \
                    "a rank has not started it (not one of this host's, or it could not say)"
                _say(f"petra rank {rank}: MPI start-up (MPI_Init) not complete after {waited:.1f} s: waiting "
                     f"for every rank to arrive; {who}; stopping")
            elif phase == "finalize" and waited > timeout:
                _say(f"petra rank {rank}: MPI shut-down (MPI_Finalize) not complete after {waited:.1f} s "
                     "although every rank had finished; stopping")
            else:
                continue
            _kill(pid)
            return 2
    finally:
        status_file.remove(failed=state["phase"] == "start" and not clean)
        try:
            os.close(fd)
        except OSError:
            pass


def _take(line, state, status_file):
    kind, _, rest = line.partition(" ")
    try:
        if kind == "phase" and rest in _PHASES:
            state["phase"], state["since"] = rest, time.monotonic()
            status_file.write(rest)
        elif kind == "tick":
            state["tick"] = int(rest)
        elif kind == "seen":
            state["seen"] = {int(a): int(b) for a, b in (p.split(":") for p in rest.split())}
        elif kind == "reported":
            state["reported"] = True
    except ValueError:            # a torn line: the next one will say it again
        pass


def _seen_text(rank, seen):
    if not seen:
        return f"rank {rank} had heard from no peer yet"
    return f"last ticks seen by rank {rank}: " + ", ".join(
        f"rank {r} at {'start-up' if t < 0 else f'tick {t}'}" for r, t in sorted(seen.items()))


def _kill(pid):
    """SIGKILL the rank and reap it (it may be blocked inside MPI: nothing gentler would be heard)."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (OSError, ChildProcessError):
        pass
