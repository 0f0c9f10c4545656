"""Numba CUDA kernels, run by the CUDA simulator in a subprocess.

The simulator must be switched on (NUMBA_ENABLE_CUDASIM=1) before numba.cuda is first imported, so the
checks live in cuda_sim_checks.py and run in a fresh interpreter.  Sizes are tiny: every simulated CUDA
thread is a Python thread.
"""
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent


@pytest.fixture(scope="module")
def sim_run():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env.pop("TINYMOON_KERNELS", None)
    proc = subprocess.run([sys.executable, str(HERE / "cuda_sim_checks.py")], env=env, capture_output=True,
                          text=True, timeout=300)
    return proc


def test_cuda_kernels_match_reference_in_simulator(sim_run):
    assert sim_run.returncode == 0, f"simulator checks failed:\n{sim_run.stdout}\n{sim_run.stderr}"
    assert "ALL OK" in sim_run.stdout
