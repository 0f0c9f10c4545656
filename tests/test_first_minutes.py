"""The first ten minutes: threads, the version, and the examples' command-line edges."""
import importlib.metadata
import importlib.util
import subprocess
import sys

import pytest

import tinymoon as tm
from tinymoon.errors import ArgumentError

from .conftest import load_example


def test_version_is_the_distributions():
    assert tm.__version__ == importlib.metadata.version("tinymoon-autodiff")


def test_set_num_threads_after_import():
    before = tm.get_num_threads()
    try:
        got = tm.set_num_threads(1)
        assert got["numba"] == 1 and got["blas"] in (1, None)
        import numba
        assert numba.get_num_threads() == 1
    finally:
        tm.set_num_threads(max(before["numba"], 1))
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ArgumentError, match="set_num_threads"):
            tm.set_num_threads(bad)


def test_set_num_threads_in_a_fresh_process_limits_blas():
    probe = ("import numpy, tinymoon as tm; tm.set_num_threads(1); "
             "from threadpoolctl import threadpool_info; "
             "print(sorted({i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("[1]", "[]")


@pytest.fixture(scope="module")
def train_mnist():
    return load_example("train_mnist")


def test_limit_zero_is_an_error(train_mnist, capsys):
    with pytest.raises(SystemExit):
        train_mnist.parse_args(["--limit", "0"])
    assert "--limit must be >= 1" in capsys.readouterr().err
    demo = load_example("demo")
    with pytest.raises(SystemExit):
        demo.main(["--limit", "0", "--synthetic"])
    assert "--limit must be >= 1" in capsys.readouterr().err


def test_plot_checks_matplotlib_before_training(train_mnist, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    monkeypatch.setattr(train_mnist, "train", lambda args: pytest.fail("trained before checking --plot"))
    with pytest.raises(SystemExit):
        train_mnist.main(["--synthetic", "--plot", "out.png"])
    assert "matplotlib" in capsys.readouterr().err


@pytest.mark.skipif(tm.cuda_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_one_line(train_mnist):
    script = load_example.__globals__["__file__"].replace("tests/conftest.py", "examples/train_mnist.py")
    out = subprocess.run([sys.executable, script, "--synthetic", "--device", "cuda"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--device cuda" in lines[0] and "not available" in lines[0], out.stderr
