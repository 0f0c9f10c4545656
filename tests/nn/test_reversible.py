"""RevBlock: forward is the additive coupling, inverse reconstructs the input to rounding, gradients check."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon import nn
from tinymoon.errors import ShapeError

from .helpers import check_input_grads, check_param_grads


def conv_block(c_in, c_out, seed):
    g = tm.generator(seed)
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, generator=g, dtype="float64"), nn.Tanh())


def test_forward_is_the_coupling():
    F = nn.Sequential(nn.Linear(3, 3, generator=0, dtype="float64"), nn.Tanh())
    G = nn.Sequential(nn.Linear(3, 3, generator=1, dtype="float64"), nn.ReLU())
    blk = nn.RevBlock(F, G)
    x = tm.randn(4, 6, seed=0, dtype="float64")
    a = x.numpy()
    x1, x2 = tm.tensor(a[:, :3]), tm.tensor(a[:, 3:])
    y1 = x1.numpy() + F(x2).numpy()
    y2 = x2.numpy() + G(tm.tensor(y1)).numpy()
    np.testing.assert_allclose(blk(x).numpy(), np.concatenate([y1, y2], 1), rtol=1e-14)
    assert blk.F is F and blk.G is G
    assert [n for n, _ in blk.named_parameters()] == ["F.0.weight", "F.0.bias", "G.0.weight", "G.0.bias"]


@pytest.mark.parametrize("channels", [4, 5])
def test_inverse_reconstructs_to_1e12(channels):
    c1, c2 = (channels + 1) // 2, channels // 2
    blk = nn.RevBlock(conv_block(c2, c1, 0), conv_block(c1, c2, 1))
    x = tm.randn(2, channels, 6, 6, seed=1, dtype="float64")
    y = blk(x)
    x_rec = blk.inverse(y)
    assert x_rec._node is None and not x_rec.requires_grad
    np.testing.assert_allclose(x_rec.numpy(), x.numpy(), rtol=0, atol=1e-12)


def test_inverse_on_another_axis():
    F = nn.Linear(4, 4, generator=0, dtype="float64")
    G = nn.Linear(4, 4, generator=1, dtype="float64")
    blk = nn.RevBlock(F, G, split_axis=-1)
    x = tm.randn(3, 2, 8, seed=2, dtype="float64")
    np.testing.assert_allclose(blk.inverse(blk(x)).numpy(), x.numpy(), atol=1e-12)


def test_grads():
    blk = nn.RevBlock(conv_block(2, 2, 0), conv_block(2, 2, 1))
    x = tm.randn(2, 4, 5, 5, seed=3, dtype="float64")
    check_input_grads(blk, x)
    assert check_param_grads(blk, x) == 4


def test_too_few_channels():
    blk = nn.RevBlock(nn.Identity(), nn.Identity())
    with pytest.raises(ShapeError):
        blk(tm.randn(2, 1, seed=0))
