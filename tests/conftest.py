import contextlib
import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=15, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=8, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("intense", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


import pytest  # noqa: E402


def _cuda():
    from tinymoon import backend
    return backend.cuda_available()


def load_example(name):
    """examples/<name>.py as a module (the examples are scripts, not a package)."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _act_body(x, code, p, p2):
    """The fake device's body for kernels.cupy_impl's "tinymoon_act" ElementwiseKernel: the NumPy reference."""
    from kernels.pointwise import COMPILED, act_reference
    name, (_, pnames) = next((n, v) for n, v in COMPILED.items() if v[0] == int(code))
    return act_reference(name, x, **dict(zip(pnames, (float(p), float(p2)))))


@contextlib.contextmanager
def fake_gpu():
    """Pretend there is a GPU: CuPy is tests/fake_cupy.py (host memory behind CuPy's boundary rules)."""
    from tinymoon import backend

    from . import fake_cupy
    if backend.cuda_available():
        raise RuntimeError("fake_gpu() on a machine with a real GPU: use the 'cuda' parameter instead")
    fake_cupy.register_kernel("tinymoon_act", _act_body)
    saved = backend._cupy, backend._cupy_failure
    with fake_cupy.installed() as cp:
        backend._cupy = cp
        try:
            yield cp
        finally:
            backend._cupy, backend._cupy_failure = saved


def _on(param):
    if param == "cuda":
        if not _cuda():
            pytest.skip('no CUDA GPU with CuPy here (pip install -e ".[gpu]" on a GPU machine)')
        yield "cuda"
    elif param == "fake-cuda":
        if _cuda():
            pytest.skip("a real GPU is present: the 'cuda' case covers the device")
        with fake_gpu():
            yield "cuda"
    else:
        yield "cpu"


_GPU = pytest.param("cuda", marks=pytest.mark.gpu)


@pytest.fixture(params=["cpu", "fake-cuda", _GPU])
def device(request):
    """Run a test on every device. "cuda" is a real GPU and skips cleanly where CuPy or a GPU is missing;
    "fake-cuda" runs everywhere with tests/fake_cupy.py standing in for CuPy (device plumbing, not numerics)
    and is skipped where a real GPU is present. The test sees the device string 'cpu' or 'cuda'."""
    yield from _on(request.param)


@pytest.fixture(params=["fake-cuda", _GPU])
def gpu_device(request):
    """The device cases only (for tests that compare a device run against the CPU)."""
    yield from _on(request.param)
