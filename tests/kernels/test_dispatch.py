import numpy as np
import pytest

import tinymoon.kernels as K
from tinymoon.kernels import dispatch


def test_available_impls_on_this_machine():
    impls = K.available_impls()
    assert impls[:2] == ["reference", "numba"]
    assert set(impls) <= set(dispatch.IMPLS)


def test_precedence_context_over_set_impl_over_env(monkeypatch):
    x = np.zeros(4, np.uint8)
    assert dispatch.choose("pack_bins", x) == "reference"  # small: reference by default
    monkeypatch.setenv("TINYMOON_KERNELS", "numba")
    assert dispatch.choose("pack_bins", x) == "numba"
    K.set_impl("reference")
    assert dispatch.choose("pack_bins", x) == "reference"
    with K.use("numba"):
        assert dispatch.choose("pack_bins", x) == "numba"
        with K.use(None):  # None inside use(): no context forcing, falls through to set_impl
            assert dispatch.choose("pack_bins", x) == "reference"
    assert dispatch.choose("pack_bins", x) == "reference"
    K.set_impl(None)
    assert dispatch.choose("pack_bins", x) == "numba"


def test_forced_impl_actually_runs(monkeypatch):
    calls = []
    real = dispatch.resolve

    def spy(op, impl):
        calls.append(impl)
        return real(op, impl)
    monkeypatch.setattr(dispatch, "resolve", spy)
    monkeypatch.setattr(dispatch, "_resolved", {})     # call() reads resolve's cache first: start it empty
    x = np.linspace(-1, 1, 10)
    for impl in ("reference", "numba"):
        with K.use(impl):
            K.act_forward("tanh", x)
            K.pack_bits(x > 0)
            K.matmul(x[None], x[:, None])
    assert calls == ["reference"] * 3 + ["numba"] * 3


def test_bad_names(monkeypatch):
    with pytest.raises(ValueError, match="unknown kernel implementation 'fast'"):
        K.set_impl("fast")
    with pytest.raises(ValueError, match="unknown kernel implementation"):
        with K.use("gpu"):
            pass
    monkeypatch.setenv("TINYMOON_KERNELS", "nope")
    with pytest.raises(ValueError, match="TINYMOON_KERNELS"):
        K.act_forward("relu", np.ones(3))


@pytest.mark.skipif(dispatch.cuda_available(), reason="checks the no-GPU error path")
def test_gpu_impls_without_gpu_raise_clearly():
    x = np.ones(3)
    with K.use("cuda"), pytest.raises(RuntimeError, match="no GPU here"):
        K.act_forward("relu", x)
    K.set_impl("cupy")
    with pytest.raises(RuntimeError, match="needs CuPy and a GPU"):
        K.matmul(x[None], x[:, None])


def test_every_op_resolves_for_host_impls():
    for op in dispatch.OPS:
        for impl in ("reference", "numba"):
            assert callable(dispatch.resolve(op, impl))


_LAYER_CHILD = """
import sys
if sys.argv[1] == "torch-first":
    import torch
    torch.ones(4).sum()
import numpy as np, numba
import tinymoon.kernels as K
K.relu_mask_forward(np.ones(1 << 20, np.float32))     # large enough for the parallel kernel: the first launch
print(numba.threading_layer())
"""


def _layer_of_child(order, **env):
    import os
    import subprocess
    import sys
    e = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY")}
    e.update(env)
    out = subprocess.run([sys.executable, "-c", _LAYER_CHILD, order], env=e, capture_output=True, text=True,
                         check=True)
    return out.stdout.split()[-1]


def test_threading_layer_rule():
    """OpenMP alone; workqueue when another OpenMP runtime (PyTorch's) was loaded first; the user's choice wins."""
    import importlib.util
    assert _layer_of_child("alone") in ("omp", "tbb")          # Numba's default order: tbb if installed, else omp
    assert _layer_of_child("alone", NUMBA_THREADING_LAYER="workqueue") == "workqueue"
    if importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed: the torch-first case needs it")
    assert _layer_of_child("torch-first") == "workqueue"
    assert _layer_of_child("torch-first", NUMBA_THREADING_LAYER="omp") == "omp"


def test_thresholds_follow_the_threading_layer(monkeypatch):
    """Plain parallel kernels: the NumPy reference below a size that grows with the layer's launch cost."""
    from numba import config
    for layer, scale in (("omp", 1), ("workqueue", dispatch.LAUNCH_SCALE["workqueue"])):
        monkeypatch.setattr(config, "THREADING_LAYER", layer)
        dispatch._rescale()
        impl, n = dispatch.CPU_CHOICE["pack_bins"]
        assert dispatch._cpu["pack_bins"] == (impl, n * scale)
        assert dispatch.choose("pack_bins", np.ones(n * scale, np.uint8)) == "numba"
        assert dispatch.choose("pack_bins", np.ones(n * scale - 1, np.uint8)) == "reference"
    monkeypatch.undo()
    dispatch._rescale()


def test_kernel_runs_serial_below_its_threshold_and_parallel_above(monkeypatch):
    from numba import prange

    from tinymoon.kernels import threads

    def double(a, b):
        for i in prange(a.size):
            b[i] = 2 * a[i]
    k = threads.Kernel(double, cache=False)
    small, big = np.ones(8), np.ones(threads.parallel_min_work())
    monkeypatch.setattr(threads.numba, "get_num_threads", lambda: 2)
    assert k.pick(small.size) == (k.serial, 1)
    run, n = k.pick(big.size)
    assert run is k.parallel and n == 2
    out = np.empty_like(big)
    k(big, out)
    assert (out == 2).all()
    monkeypatch.setattr(threads.numba, "get_num_threads", lambda: 1)     # one thread: never the pool
    assert k.pick(big.size)[0] is k.serial


def test_kernel_with_saves_ns_starts_the_pool_where_it_pays_its_measured_launch(monkeypatch):
    """saves_ns=s: the pool from launch_us()·1000/s elements (never below parallel_min_work()); launch_us() is
    a real measurement, positive and finite, made once per thread count."""
    from numba import prange

    from tinymoon.kernels import threads

    def double(a, b):
        for i in prange(a.size):
            b[i] = 2 * a[i]
    launch = threads.launch_us()
    assert 0 < launch < 1e5 and threads.launch_us() == launch
    before = threads.numba.get_num_threads()
    assert 0 < threads.launch_us(1) < 1e5 and threads.numba.get_num_threads() == before   # count restored
    k = threads.Kernel(double, cache=False, saves_ns=0.05)
    monkeypatch.setattr(threads, "launch_us", lambda threads=None: 40.0)   # 40 µs / 0.05 ns = 800 000 elements
    monkeypatch.setattr(threads.numba, "get_num_threads", lambda: 2)
    assert k.break_even() == pytest.approx(800_000)
    assert k.pick(799_999)[0] is k.serial and k.pick(800_000)[0] is k.parallel
    monkeypatch.setattr(threads, "launch_us", lambda threads=None: 0.001)  # never below the layer's threshold
    assert k.pick(threads.parallel_min_work() - 1)[0] is k.serial
    with pytest.raises(ValueError, match="saves_ns must be > 0"):
        threads.Kernel(double, saves_ns=0)


def test_wait_policy_is_set_at_import():
    """tinymoon.kernels sets OMP_WAIT_POLICY=PASSIVE when imported (unless the user chose one), so a PyTorch
    imported afterwards reads it too."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, tinymoon.kernels; print(os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, OMP_WAIT_POLICY="ACTIVE"), capture_output=True,
                         text=True, check=True)
    assert out.stdout.split()[-1] == "ACTIVE"
