"""conv2d forward against a naive loop reference over a grid of layouts; bad input; residuals by purpose."""
import itertools

import numpy as np
import pytest

import tinymoon as tm
from tinymoon import memory
from tinymoon.errors import ShapeError

from tests.ops.table_nn import conv2d_ref

GRID = list(itertools.product([1, 2], [0, 1, "same", ((1, 0), (0, 2))], [1, 2], [1, 2]))


@pytest.mark.parametrize("stride,padding,dilation,groups", GRID, ids=[f"s{s}-p{p}-d{d}-g{g}" for s, p, d, g in GRID])
def test_forward_matches_naive_loops(stride, padding, dilation, groups):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 4 // groups, 3, 2))
    b = rng.standard_normal(6)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    if padding == "same" and stride != 1:
        with pytest.raises(ShapeError, match="stride 1"):
            tm.conv2d(x, w, b, **kw)
        return
    y = tm.conv2d(x, w, b, **kw).numpy()
    np.testing.assert_allclose(y, conv2d_ref(x, w, b, **kw), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, "valid"), (1, "same"), (2, (2, 1))])
def test_circular_matches_naive_loops(stride, padding):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((1, 2, 5, 6)), rng.standard_normal((3, 2, 3, 2))
    kw = dict(stride=stride, padding=padding, padding_mode="circular")
    np.testing.assert_allclose(tm.conv2d(x, w, **kw).numpy(), conv2d_ref(x, w, **kw), rtol=1e-12, atol=1e-12)


def test_same_padding_puts_the_odd_extra_bottom_right():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((1, 1, 5, 5)), rng.standard_normal((1, 1, 2, 4))
    y = tm.conv2d(x, w, padding="same")
    assert y.shape == x.shape
    explicit = tm.conv2d(x, w, padding=((0, 1), (1, 2)))      # totals 1 and 3: extra at the bottom / right
    np.testing.assert_array_equal(y.numpy(), explicit.numpy())


def test_float32_stays_float32():
    x, w = tm.randn(1, 2, 5, 5, seed=0), tm.randn(3, 2, 3, 3, seed=1)
    assert tm.conv2d(x, w, padding=1).dtype == np.float32


@pytest.mark.parametrize("x_shape,w_shape,kw,match", [
    ((1, 4, 5, 5), (3, 5, 3, 3), {}, r"x \(1, 4, 5, 5\), weight \(3, 5, 3, 3\)"),
    ((1, 4, 5, 5), (3, 2, 3, 3), dict(groups=3), "groups=3 must divide"),
    ((1, 4, 5, 5), (4, 4, 7, 7), {}, "larger than the padded input"),
    ((1, 4, 5, 5), (4, 4, 3, 3), dict(dilation=3), "dilated 7x7"),
    ((1, 4, 5, 5), (4, 4, 3, 3), dict(padding="full"), "padding must be"),
    ((4, 5, 5), (4, 4, 3, 3), {}, r"\(N, C_in, H, W\)"),
    ((1, 4, 2, 2), (4, 4, 3, 3), dict(padding=3, padding_mode="circular"), "circular padding"),
])
def test_bad_input_names_the_shapes(x_shape, w_shape, kw, match):
    with pytest.raises(ShapeError, match=match):
        tm.conv2d(np.zeros(x_shape), np.zeros(w_shape), **kw)


def test_bias_shape_checked():
    with pytest.raises(ShapeError, match=r"bias must have shape \(3,\)"):
        tm.conv2d(np.zeros((1, 2, 4, 4)), np.zeros((3, 2, 3, 3)), np.zeros(2))


def test_residuals_by_purpose():
    """The weight is kept for the x cotangent, x for the weight cotangent: asking for one keeps only its own."""
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3))
    y = tm.conv2d(tm.tensor(x, requires_grad=True), tm.tensor(w), padding=1)
    kept = y._node.ctx.__dict__
    assert kept.get("w") is not None and "x" not in kept
    y = tm.conv2d(tm.tensor(x), tm.tensor(w, requires_grad=True), padding=1)
    kept = y._node.ctx.__dict__
    assert kept.get("x") is not None and "w" not in kept
    before = memory.saved_bytes()
    h = tm.tensor(x, requires_grad=True) * 2.0          # a non-leaf input: its residual is counted
    mid = memory.saved_bytes()
    y = tm.conv2d(h, tm.tensor(w, requires_grad=True), padding=1)
    assert memory.saved_bytes() - mid == x.nbytes     # the weight is a leaf (lives anyway): not counted
    del y, h
    assert memory.saved_bytes() <= before + 8
