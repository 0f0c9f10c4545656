import numpy as np
import pytest

from tinymoon.kernels import blas, gemm


@pytest.mark.parametrize("sa, sb", [((5, 7), (7, 3)), ((2, 1, 17, 9), (3, 9, 18)), ((9,), (9, 4)), ((2, 4, 5), (5,)),
                                    ((6,), (6,)), ((64, 1568), (1568, 10)), ((300, 300), (300, 300))])
def test_matmul_is_numpy_matmul_and_restores_the_thread_count(sa, sb):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    controls = blas._controls()
    before = controls[1]() if controls else None
    got = gemm.matmul_reference(a, b)
    assert got.shape == np.matmul(a, b).shape
    np.testing.assert_allclose(got, np.matmul(a, b), rtol=1e-12, atol=1e-12)
    if controls:
        assert controls[1]() == before


def test_macs():
    assert blas.macs(np.ones((3, 4)), np.ones((4, 5))) == 60
    assert blas.macs(np.ones((2, 1, 3, 4)), np.ones((5, 4, 2))) == 2 * 5 * 3 * 4 * 2
    assert blas.macs(np.ones(4), np.ones(4)) == 4
    assert blas.macs(np.ones(4), np.ones((4, 3))) == 12


def test_small_products_run_on_one_thread(monkeypatch):
    calls = []
    monkeypatch.setattr(blas, "_controls", lambda: (calls.append, lambda: 2))
    blas.matmul(np.ones((128, 128)), np.ones((128, 128)))      # 2M multiply-adds: small, but threaded
    assert calls == [1, 2]                         # down to one thread, then back
    calls.clear()
    blas.matmul(np.ones((8, 8)), np.ones((8, 8)))              # OpenBLAS's own single-thread range
    assert calls == []                             # no toggle: it would only cost the two ctypes calls
    big = np.ones((256, 256))
    monkeypatch.setattr(blas, "SMALL_GEMM_MACS", 100)
    blas.matmul(big, big)
    assert calls == []                             # large: OpenBLAS as it is
