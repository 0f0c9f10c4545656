"""PETRA: the schedule, the stages, the simulator against backprop, checkpoints, and (in subprocesses under
mpiexec) the MPI executor against the simulator and the fault protocol."""
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import tinymoon as tm
import tinymoon.nn as nn
from tinymoon.petra.baselines import delayed_gradients, pipelined_backprop, train_backprop
from tinymoon.petra.batches import MicroBatches
from tinymoon.petra.models import revnet_mnist, tiny_mlp
from tinymoon.petra.recipe import Recipe
from tinymoon.petra.schedule import Schedule
from tinymoon.petra.simulator import Simulator
from tinymoon.petra.stages import BufferedStage, HeadStage, PetraError, ReversibleStage, split

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _mlp(**kw):
    return tiny_mlp(dtype="float64", **kw)


def _batches(n=256, mb=8, seed=1):
    x, y = tm.data.synthetic(n, shape=(1, 4, 4), classes=4, seed=0)
    return MicroBatches(x, y, mb, seed=seed, dtype="float64")


def _params(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def _max_diff(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


# ---- schedule ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["petra", "sync"])
@pytest.mark.parametrize("J", [1, 2, 4])
def test_schedule_every_microbatch_once_with_the_paper_delay(J, mode):
    M = 12
    s = Schedule(J, M, mode)
    for j in range(J):
        fw = [s.forward_at(t, j) for t in range(s.ticks)]
        bw = [s.backward_at(t, j) for t in range(s.ticks)]
        assert [m for m in fw if m is not None] == list(range(M))
        assert [m for m in bw if m is not None] == list(range(M))
        for m in range(M):
            assert fw.index(m) == s.entry(m) + j
            assert bw.index(m) - fw.index(m) == 2 * (J - 1 - j)      # back 2(J-j) ticks later (1-based j)
            if j + 1 < J:
                assert s.forward_tick(m, j + 1) == s.forward_tick(m, j) + 1
                assert s.backward_tick(m, j) == s.backward_tick(m, j + 1) + 1
    if mode == "petra":   # at tick t stage j: forward of t - j, backward of t - 2(J-1) + j
        t = 2 * (J - 1) + 1
        for j in range(J):
            assert s.work(t, j) == (t - j, t - 2 * (J - 1) + j)
    else:                 # sync: a micro-batch's backward is done before the next one enters
        for m in range(M - 1):
            assert s.backward_tick(m, 0) < s.forward_tick(m + 1, 0)


def test_diagram_shows_last_stage_forward_and_backward_in_one_tick():
    d = Schedule(4, 3).diagram().splitlines()
    assert d[1].startswith("stage 3") and "F0B0" in d[1]
    assert d[-1].startswith("stage 0") and d[-1].split()[2] == "F0"


# ---- stages -----------------------------------------------------------------------------------------------

def _conv_revblock(seed=0):
    return revnet_mnist(width=4, blocks=1, seed=seed, dtype="float64")[1]


@pytest.mark.parametrize("make", [lambda: _mlp(blocks=1, seed=2)[1], _conv_revblock], ids=["linear", "conv_bn"])
def test_reversible_stage_reconstructs_its_input_and_gives_backprop_gradients(make):
    block = make()
    shape = (6, 8) if isinstance(block.F[0], nn.Linear) else (3, 4, 6, 6)
    rng = np.random.default_rng(0)
    x, y_bar = rng.standard_normal(shape), rng.standard_normal(shape)
    st = ReversibleStage(1, nn.Sequential(block), Recipe(k=10))
    buffers = [b.copy() for b in block.buffers()]
    y = st.forward(0, x)
    assert st.fifo_bytes == 0 and st.max_held == 0                  # stores nothing
    buffers = [b.copy() for b in block.buffers()]                    # (the forward updated BN's statistics)
    x_rec, x_bar = st.backward(0, y, y_bar)
    np.testing.assert_allclose(x_rec, x, rtol=0, atol=1e-13)        # x̃ = F⁻¹(F(x)) to round-off
    for b, old in zip(block.buffers(), buffers):                     # backward left the running stats alone
        np.testing.assert_array_equal(b, old)
    grads = {id(p): p.grad.data.copy() for p in block.parameters()}
    # reference: the tape of the same block at x
    for p in block.parameters():
        p.grad = None
    xt = tm.tensor(x, requires_grad=True)
    block(xt).backward(y_bar)
    np.testing.assert_allclose(x_bar, xt.grad.data, rtol=1e-10, atol=1e-12)
    for p in block.parameters():
        np.testing.assert_allclose(grads[id(p)], p.grad.data, rtol=1e-10, atol=1e-12)


def test_split_kinds_and_fifo_depth():
    model = _mlp(blocks=2, seed=0)
    st = split(model, 4, recipe=Recipe())
    assert [type(s) for s in st] == [BufferedStage, ReversibleStage, ReversibleStage, HeadStage]
    Simulator(st, Schedule(4, 12), _batches()).run()
    assert st[0].max_held == 2 * 3 * 8 * 16 * 8                    # 2(J-1) inputs of 8x16 float64
    assert [s.max_held for s in st[1:]] == [0, 0, 0]
    with pytest.raises(PetraError):
        split(model, 9)
    with pytest.raises(PetraError):
        ReversibleStage(0, nn.Sequential(nn.Linear(2, 2)))


# ---- against backprop -------------------------------------------------------------------------------------

RECIPE = dict(lr=0.1, k=2, warmup_steps=3, weight_decay=1e-3)


def test_sync_petra_and_one_stage_equal_backprop_in_float64():
    b, M = _batches(), 20
    ref = _mlp(seed=3)
    train_backprop(ref, b, Recipe(**RECIPE), M)
    want = _params(ref)
    sync = _mlp(seed=3)
    Simulator(split(sync, 4, recipe=Recipe(**RECIPE)), Schedule(4, M, "sync"), b).run()
    assert _max_diff(want, _params(sync)) < 1e-12                  # reconstruction round-off only
    one = _mlp(seed=3)
    Simulator(split(one, 1, recipe=Recipe(**RECIPE)), Schedule(1, M), b).run()
    assert _max_diff(want, _params(one)) == 0.0
    piped = _mlp(seed=3)                                       # backprop run stage by stage (tapes)
    pipelined_backprop(piped, b, Recipe(**RECIPE), M, stages=4).run()
    assert _max_diff(want, _params(piped)) == 0.0


def test_decoupled_petra_differs_but_trains():
    b, M = _batches(512), 64
    model = _mlp(seed=3)
    st = split(model, 4, recipe=Recipe(lr=0.1))
    Simulator(st, Schedule(4, M), b).run()
    losses = [v for _, v, _, _ in st[-1].losses]
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])
    ref = _mlp(seed=3)
    train_backprop(ref, b, Recipe(lr=0.1), M)
    assert _max_diff(_params(ref), _params(model)) > 1e-6          # the delay is real


def test_delayed_gradients_store_their_tapes():
    b = _batches()
    sim = delayed_gradients(_mlp(seed=1), b, Recipe(), 12, stages=4).run()
    held = [s.max_held for s in sim.stages]
    assert held[0] > held[1] > held[2] > 0 and held[3] == 0
    sim_p = Simulator(split(_mlp(seed=1), 4, recipe=Recipe()), Schedule(4, 12), b).run()
    assert sim_p.stages[1].max_held == 0 and sim_p.stages[0].max_held < held[0]


# ---- checkpoints ------------------------------------------------------------------------------------------

def test_checkpoint_resume_is_identical(tmp_path):
    b, M = _batches(), 24
    rc = Recipe(lr=0.1, k=3, warmup_steps=2)
    full = _mlp(seed=4)
    Simulator(split(full, 4, recipe=rc), Schedule(4, M), b).run()
    first = _mlp(seed=4)
    Simulator(split(first, 4, recipe=rc), Schedule(4, M), b).run(until=11, checkpoint=str(tmp_path))
    resumed = _mlp(seed=99)                                     # other init: everything comes from the files
    sim = Simulator(split(resumed, 4, recipe=rc), Schedule(4, M), b).resume(str(tmp_path))
    assert sim.tick == 11
    sim.run()
    assert _max_diff(_params(full), _params(resumed)) == 0.0


# ---- MPI (subprocesses) -----------------------------------------------------------------------------------

def _mpi_or_skip():
    if shutil.which("mpiexec") is None:
        pytest.skip("mpiexec is not on PATH (install mpich or open-mpi to run the MPI executor tests)")
    import importlib.util
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed")


ARGS = ["train", "--dtype", "float64", "--epochs", "2", "--k", "3", "--warmup-epochs", "0.5", "--quiet"]


def _petra(args, n=None, timeout=90):
    cmd = [sys.executable, "-m", "tinymoon.petra", *args]
    if n is not None:
        cmd = ["mpiexec", "-n", str(n)] + cmd
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONPATH=ROOT)
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    return r, time.monotonic() - t0


def test_mpi_executor_equals_simulator_and_resumes_a_simulator_checkpoint(tmp_path):
    _mpi_or_skip()
    sim_out, mpi_out, res_out, ck = (str(tmp_path / n) for n in ("sim.npz", "mpi.npz", "res.npz", "ck"))
    r, _ = _petra(ARGS + ["--executor", "sim", "--out", sim_out])
    assert r.returncode == 0, r.stderr
    r, _ = _petra(ARGS + ["--executor", "sim", "--checkpoint", ck, "--stop-at-tick", "11"])
    assert r.returncode == 0, r.stderr
    r, _ = _petra(ARGS + ["--out", mpi_out], n=4)
    assert r.returncode == 0, r.stdout + r.stderr
    r, _ = _petra(ARGS + ["--out", res_out, "--checkpoint", ck, "--resume"], n=2)   # 2 stages per rank
    assert r.returncode == 0, r.stdout + r.stderr
    want = tm.load(sim_out)
    for path in (mpi_out, res_out):
        got = tm.load(path)
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{path}: {k}")


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_injected_fault_stops_every_rank_and_names_the_failing_rank(mode):
    _mpi_or_skip()
    r, took = _petra(["train", "--epochs", "4", "--timeout", "4", "--inject-fault", f"2:5:{mode}"], n=4, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert took < 40, f"took {took:.1f} s"
    if mode == "raise":
        assert "petra rank 2: rank 2 failed at tick 5: RuntimeError: injected fault" in out, out
        for rank in (0, 1, 3):
            assert f"petra rank {rank}: stopping because rank 2 failed" in out, out
    else:       # a silent hang: whoever waits for rank 2 names it, and every other rank stops too
        assert "rank 2 presumed dead or hung" in out, out
        assert out.count("petra rank") >= 3, out


def test_command_line_help():
    r = subprocess.run([sys.executable, "-m", "tinymoon.petra", "train", "--help"], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0 and "--inject-fault" in r.stdout
