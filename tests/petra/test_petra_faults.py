"""PETRA's failure model with real `mpiexec` (docs/petra.md, "Failure model"): every failure — a rank that
raises, exits, is killed (SIGKILL, SIGTERM), hangs, stalls before or right after MPI start-up, or ranks that
disagree about the schedule — ends the whole job, non-zero, within a few `--timeout`s, with the failed rank
named exactly. Each run is short (`--timeout 2`, a tiny model) and bounded by `timeout`."""
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tinymoon.petra import watchdog

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 2        # --timeout of every run: detection takes about this long
LIMIT = 40         # wall seconds a faulty run may take at most (start-up of 4 ranks on 2 busy cores included)


def _mpi_or_skip():
    if shutil.which("mpiexec") is None:
        pytest.skip("mpiexec is not on PATH (install mpich or open-mpi to run the MPI executor tests)")
    import importlib.util
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed")


def _cmd(extra):
    return [sys.executable, "-m", "tinymoon.petra", "train", "--epochs", "4", "--timeout", str(TIMEOUT), "--quiet",
            *extra]


def _mpiexec(n, extra, mpmd=None):
    _mpi_or_skip()
    cmd = ["mpiexec", "-n", str(n), *_cmd(extra)]
    if mpmd is not None:
        cmd += [":", "-n", str(mpmd[0]), *_cmd(mpmd[1])]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONPATH=ROOT)
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=ROOT, env=env)
    took = time.monotonic() - t0
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert took < LIMIT, f"took {took:.1f} s:\n{out}"
    return out


@pytest.mark.mpi
@pytest.mark.parametrize("n, rank, tick, mode, what", [
    (2, 1, 5, "exit", "exit code 13"),
    (3, 2, 4, "kill", "killed by SIGKILL"),
    (4, 1, 6, "term", "killed by SIGTERM"),
])
def test_a_rank_that_dies_is_named_with_the_ticks_it_saw(n, rank, tick, mode, what):
    out = _mpiexec(n, ["--inject-fault", f"{rank}:{tick}:{mode}"])
    line = f"petra rank {rank}: died at tick {tick} ({what}), without reporting an error; last ticks seen by " \
           f"rank {rank}: "
    assert line in out, out
    seen = out.split(line, 1)[1].splitlines()[0]
    assert [int(r) for r in re.findall(r"rank (\d+) at tick", seen)] == [r for r in range(n) if r != rank], out
    assert "presumed dead" not in out, out          # nobody else is blamed


@pytest.mark.mpi
@pytest.mark.parametrize("hung", [3, 1])
def test_a_hang_is_blamed_on_the_hung_rank_only(hung):
    # rank 3 (the head) hangs: ranks 2, 1, 0 wait for it in a chain, each one alive; all must name rank 3
    out = _mpiexec(4, ["--inject-fault", f"{hung}:5:hang"])
    blamed = re.findall(r"rank (\d+) presumed dead or hung: no heartbeat for", out)
    assert blamed and set(blamed) == {str(hung)}, out
    assert "last heard from at tick 5 (running)" in out, out
    assert re.search(r"last seen: .*rank 0.* at tick \d+", out), out
    for r in set(range(4)) - {hung}:
        assert f"petra rank {r}:" in out, out         # every live rank says why it stops


@pytest.mark.mpi
def test_a_rank_stalled_before_mpi_init_is_named_and_nobody_waits_forever():
    out = _mpiexec(3, ["--inject-fault", "1:init:hang"])
    assert f"petra rank 1: stalled before MPI start-up: MPI_Init not reached within {TIMEOUT} s" in out, out
    for r in (0, 2):    # stuck inside MPI_Init (from mpi4py import MPI), their watchdogs say for whom
        if f"petra rank {r}: MPI start-up" in out:
            assert f"petra rank {r}: MPI start-up (MPI_Init) not complete" in out and "rank 1 (" in out, out


@pytest.mark.mpi
def test_a_rank_stalled_right_after_start_is_caught_within_the_timeout():
    out = _mpiexec(3, ["--inject-fault", "2:setup:hang"])        # after MPI_Init, before the start-up barrier
    assert re.search(r"rank 2 presumed dead or hung: no heartbeat for \d\.\d s \(--timeout 2 s\), last heard "
                     r"from at start-up", out), out


@pytest.mark.mpi
def test_ranks_that_disagree_about_the_schedule_are_a_reported_deadlock():
    out = _mpiexec(1, ["--epochs", "1"], mpmd=(1, ["--epochs", "2"]))
    assert re.search(r"petra rank \d: (deadlock after|.* never came: rank \d finished without sending)", out), out
    assert "the ranks disagree about the schedule" in out, out


# ---- the watchdog alone (no MPI) ----------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="the watchdog needs os.fork")
def test_watchdog_reports_a_child_that_never_reaches_mpi_init(capfd):
    def run(link):
        time.sleep(30)             # stalled before link.phase("init")
        return 0
    pid = os.fork()
    if pid == 0:                   # keep the test process clean: the watchdog runs in a throwaway child
        try:
            code = watchdog.supervise(run, rank=5, size=8, timeout=0.5)
        except SystemExit as e:    # the grandchild (the "rank") leaves through here
            code = e.code
        os._exit(code)
    t0 = time.monotonic()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2
    assert time.monotonic() - t0 < 10
    err = capfd.readouterr().err
    assert "petra rank 5: stalled before MPI start-up: MPI_Init not reached within 0.5 s" in err


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the watchdog needs os.fork")
@pytest.mark.parametrize("how", ["exit", "kill", "reported"])
def test_watchdog_names_a_dead_child_with_its_last_tick(capfd, how):
    import signal

    def run(link):
        link.phase("init")
        link.phase("ready")
        link.seen({0: 3, 2: 4})
        link.tick(4)
        if how == "reported":
            link.reported()
            return 2
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(13)
    pid = os.fork()
    if pid == 0:
        try:
            code = watchdog.supervise(run, rank=1, size=3, timeout=5)
        except SystemExit as e:
            code = e.code
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    err = capfd.readouterr().err
    code = os.waitstatus_to_exitcode(status)
    if how == "reported":
        assert code == 2 and "petra rank" not in err    # it said why itself: the watchdog stays silent
        return
    what = "killed by SIGKILL" if how == "kill" else "exit code 13"
    assert code != 0
    assert f"petra rank 1: died at tick 4 ({what}), without reporting an error; last ticks seen by rank 1: " \
           "rank 0 at tick 3, rank 2 at tick 4" in err, err


# ---- options that used to be silently replaced -------------------------------------------------------------

@pytest.mark.parametrize("bad, msg", [
    (["--stages", "0"], "--stages must be at least 1, got 0"),
    (["--stages", "-2"], "--stages must be at least 1, got -2"),
    (["--timeout", "0"], "--timeout must be > 0 seconds"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be at least 1"),
    (["--inject-fault", "1:soon"], "--inject-fault: expected RANK:WHEN[:MODE]"),
])
def test_bad_options_are_refused(bad, msg, capsys):
    from tinymoon.petra.train import main
    with pytest.raises(SystemExit) as info:
        main(bad)
    assert info.value.code == 2
    assert msg in capsys.readouterr().err


def test_zero_stages_is_an_error_not_the_default():
    from tinymoon.petra.stages import PetraError
    from tinymoon.petra.train import build, parser
    with pytest.raises(PetraError, match="--stages must be at least 1"):
        build(parser().parse_args(["--stages", "0"]))
    assert build(parser().parse_args(["--stages", "2"]))[2].stages == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the watchdog needs os.fork")
@pytest.mark.parametrize("after, code", [("done", 0), ("finalize", 2)])
def test_watchdog_bounds_mpi_finalize_but_not_what_follows(capfd, after, code):
    # after MPI_Finalize returns ("done") rank 0 evaluates and writes its report: no deadline there;
    # a rank still inside MPI_Finalize ("finalize") after the timeout is stopped
    def run(link):
        for phase in ("init", "ready", "finalize", after):
            link.phase(phase)
        time.sleep(1.5)
        return 0
    pid = os.fork()
    if pid == 0:
        try:
            rc = watchdog.supervise(run, rank=0, size=2, timeout=0.5)
        except SystemExit as e:
            rc = e.code
        os._exit(rc)
    _, status = os.waitpid(pid, 0)
    err = capfd.readouterr().err
    assert os.waitstatus_to_exitcode(status) == code, err
    assert ("MPI shut-down (MPI_Finalize) not complete" in err) == (after == "finalize"), err
