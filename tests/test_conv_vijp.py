"""conv2d inverse mode: each supported case, its stated accuracy, and the errors of the others."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon.errors import NotInvertibleError
from tinymoon.testing import check_grads

from tests.ops.table_nn import well_conditioned_kernel


class _Draw:
    """A stand-in for hypothesis' `draw` with a fixed seed (well_conditioned_kernel draws one integer)."""
    def __init__(self, seed):
        self.seed = seed

    def __call__(self, strategy):
        return self.seed


def kernel(c_out, c_in, k, seed=0, dtype="float64", groups=1):
    return well_conditioned_kernel(_Draw(seed), c_out, c_in // groups, k, k, dtype, groups)


def roundtrip(f, x, seed=1):
    """(y_bar, recovered y_bar, vijp chain link ctx) for a random y_bar through f's vjp and vijp."""
    out, vf = tm.vijp(f, x)
    u = np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype)
    frags = vf.fragments(u)
    _, vjp_fn = tm.vjp(f, x)
    x_bar = vjp_fn(u)[0].numpy()
    return u, vf(x_bar, frags).numpy(), vf, frags


def test_circular_fft_vijp_exact_float64():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 9))
    w = rng.standard_normal((3, 4, 3, 3))                 # a plain random kernel, C_out < C_in
    u, rec, _, frags = roundtrip(lambda v: tm.conv2d(v, w, padding="same", padding_mode="circular"), x)
    assert frags == [None]                                # submersive: no fragment
    np.testing.assert_allclose(rec, u, rtol=0, atol=1e-10 * np.abs(u).max())


def test_circular_fft_vijp_even_kernel_dilated_groups():
    x = np.random.default_rng(1).standard_normal((1, 4, 6, 7))
    w = kernel(4, 4, 2, groups=2)
    f = lambda v: tm.conv2d(v, w, padding="same", padding_mode="circular", dilation=(2, 1), groups=2)  # noqa: E731
    u, rec, _, _ = roundtrip(f, x)
    np.testing.assert_allclose(rec, u, rtol=0, atol=1e-10 * np.abs(u).max())


def test_circular_rank_deficient_raises_with_condition_number():
    w = np.zeros((1, 1, 1, 2))
    w[0, 0, 0] = [1.0, -1.0]                              # a difference filter: K(0) = 0
    out, vf = tm.vijp(lambda v: tm.conv2d(v, w, padding="same", padding_mode="circular"), np.ones((1, 1, 4, 4)))
    with pytest.raises(NotInvertibleError, match="condition number"):
        vf(np.zeros((1, 1, 4, 4)))


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_cg_converges_to_stated_tolerance(dtype, tol):
    """Random well-conditioned kernels: CG stops at the stated relative residual of the normal equations, and
    the recovered y_bar is accurate to a small multiple of it."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((2, 4, 9, 8)).astype(dtype)
        w = kernel(3, 4, 3, seed=seed, dtype=dtype)
        f = lambda v: tm.conv2d(v, w, padding=1)   # noqa: E731
        u, rec, vf, _ = roundtrip(f, x, seed)
        info = vf.links[0].node.ctx.cg_info
        assert info["tol"] == tol and info["residual"] <= tol and info["iterations"] < 100
        np.testing.assert_allclose(rec, u, rtol=0, atol=100 * tol * np.abs(u).max())


def test_cg_plain_random_kernel_and_tolerance_parameter():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 7, 7))
    w = rng.standard_normal((2, 3, 3, 3))
    f = lambda v: tm.conv2d(v, w, padding=1, vijp_tol=1e-12)   # noqa: E731
    u, rec, vf, _ = roundtrip(f, x)
    info = vf.links[0].node.ctx.cg_info
    assert info["tol"] == 1e-12 and info["residual"] <= 1e-12
    np.testing.assert_allclose(rec, u, rtol=0, atol=1e-8 * np.abs(u).max())


def test_cg_not_converged_raises_with_residual():
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 8))
    w = np.random.default_rng(1).standard_normal((4, 4, 3, 3))
    out, vf = tm.vijp(lambda v: tm.conv2d(v, w, padding=1, vijp_maxiter=1), x)
    with pytest.raises(NotInvertibleError, match=r"residual \d\.\d+e[-+]\d+ after 1 iterations"):
        vf(np.random.default_rng(2).standard_normal(x.shape))


def test_cg_singular_operator_is_detected():
    """C_out <= C_in but J lacks full row rank (dilated taps that only meet padding in a 3-wide image): a
    consistent system would converge to a wrong y_bar, so the certificate solve must refuse."""
    w = kernel(1, 1, 2)
    f = lambda v: tm.conv2d(v, w, padding="same", dilation=(1, 2))    # noqa: E731
    x = np.random.default_rng(0).standard_normal((1, 1, 3, 3))
    out, vf = tm.vijp(f, x)
    _, vjp_fn = tm.vjp(f, x)
    with pytest.raises(NotInvertibleError, match="singular"):
        vf(vjp_fn(np.ones(out.shape))[0])


def test_1x1_expanding_fragment_is_per_pixel_channels():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((5, 3, 1, 1))
    f = lambda v: tm.conv2d(v, w)    # noqa: E731
    u, rec, vf, frags = roundtrip(f, x)
    assert frags[0].shape == (2, 2, 4, 5)                 # C_out - C_in = 2 numbers per pixel
    np.testing.assert_allclose(rec, u, rtol=1e-10, atol=1e-10)
    with pytest.raises(NotInvertibleError, match="2 output channel"):
        vf(np.zeros_like(x))
    check_grads(f, [x])


def test_1x1_contracting_is_submersive():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 4, 3, 3)), rng.standard_normal((3, 4, 1, 1))
    u, rec, _, frags = roundtrip(lambda v: tm.conv2d(v, w), x)
    assert frags == [None]
    np.testing.assert_allclose(rec, u, rtol=1e-10, atol=1e-10)


def test_patchify_with_uncovered_border():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 3, 7, 5)), rng.standard_normal((10, 3, 2, 2))   # 7, 5 not divisible by 2
    b = rng.standard_normal(10)
    u, rec, _, frags = roundtrip(lambda v: tm.conv2d(v, w, b, stride=2), x)
    assert frags == [None]                                # 10 <= 3 * 2 * 2
    np.testing.assert_allclose(rec, u, rtol=1e-10, atol=1e-10)


def test_patchify_expanding_needs_a_fragment():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 1, 4, 4)), rng.standard_normal((6, 1, 2, 2))
    f = lambda v: tm.conv2d(v, w, stride=2)   # noqa: E731
    u, rec, _, frags = roundtrip(f, x)
    assert frags[0].shape == (1, 2, 2, 2)
    np.testing.assert_allclose(rec, u, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("w_shape,kw,match", [
    ((3, 3, 3, 3), dict(stride=2), "windows overlap"),
    ((3, 3, 3, 3), dict(stride=2, padding=1), "windows overlap"),
    ((5, 3, 3, 3), dict(padding=1), "C_out > C_in"),
    ((3, 3, 2, 2), dict(stride=2, padding=1), "windows overlap"),
])
def test_unsupported_layouts_raise_and_list_the_supported_ones(w_shape, kw, match):
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 6))
    w = np.random.default_rng(1).standard_normal(w_shape)
    out, vf = tm.vijp(lambda v: tm.conv2d(v, w, **kw), x)
    with pytest.raises(NotInvertibleError, match=match) as e:
        vf(np.zeros_like(x))
    assert "Supported:" in str(e.value) and "patchify" in str(e.value)


def test_vijp_along_a_chain_of_layers():
    """conv 1x1 (expanding) -> leaky_relu -> conv 'same' (CG) -> avg_pool: fragments along the way."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 6, 6))
    w1 = rng.standard_normal((3, 2, 1, 1))
    w2 = kernel(3, 3, 3, seed=4)

    def f(v):
        return tm.avg_pool2d(tm.conv2d(tm.leaky_relu(tm.conv2d(v, w1), 0.5), w2, padding=1), 2)
    check_grads(f, [x], modes=("vijp",))


def test_vijp_solvers_count_in_saved_bytes():
    """The factorisations a conv vijp caches on its context are residuals too: counted, then released."""
    import tinymoon as tm
    rng = np.random.default_rng(0)
    w = tm.tensor(rng.standard_normal((4, 4, 3, 3)) * 0.1 + np.eye(4)[:, :, None, None] * np.pad(
        np.ones((1, 1)), 1)[None, None])
    x = rng.standard_normal((2, 4, 6, 6))
    out, vf = tm.vijp(lambda v: tm.conv2d(v, w, padding="same", padding_mode="circular"), x)
    before = tm.memory.saved_bytes()
    vf(rng.standard_normal((2, 4, 6, 6)))
    grown = tm.memory.saved_bytes() - before
    assert grown >= 6 * 4 * 4 * 4 * 16                 # at least the per-frequency right inverses (complex128)
    del vf, out
    import gc
    gc.collect()
    assert tm.memory.saved_bytes() <= before
