"""Initialisation: PyTorch's distributions (bounds and moments), reproducible from a generator."""
import math

import numpy as np
import pytest

from tinymoon import nn
from tinymoon.nn import init


def test_linear_default_matches_pytorch_bounds():
    layer = nn.Linear(400, 300, generator=0)
    bound = 1 / math.sqrt(400)                        # kaiming_uniform(a=sqrt(5)) and bias rule
    w, b = layer.weight.numpy(), layer.bias.numpy()
    assert w.dtype == np.float32 and np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert abs(np.abs(w).max() - bound) < 1e-3 * bound
    np.testing.assert_allclose(w.var(), bound ** 2 / 3, rtol=0.02)      # U(-b, b): variance b^2/3
    assert abs(w.mean()) < 4 * bound / math.sqrt(3 * w.size)


def test_conv_default_matches_pytorch_bounds():
    layer = nn.Conv2d(16, 32, 5, generator=0)
    fan_in = 16 * 25
    bound = 1 / math.sqrt(fan_in)
    w = layer.weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(layer.bias.numpy()).max() <= bound
    np.testing.assert_allclose(w.var(), bound ** 2 / 3, rtol=0.05)
    g = nn.Conv2d(8, 8, 3, groups=4, generator=0)     # fan_in counts the channels of one group
    assert np.abs(g.weight.numpy()).max() <= 1 / math.sqrt(2 * 9)


def test_reproducible_from_generator():
    a = nn.Linear(10, 5, generator=3).weight.numpy()
    b = nn.Linear(10, 5, generator=np.random.default_rng(3)).weight.numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, nn.Linear(10, 5, generator=4).weight.numpy())


def test_against_torch_bounds():
    torch = pytest.importorskip("torch")
    for shape in ((300, 200), (16, 8, 3, 3)):
        tw = torch.empty(shape)
        torch.nn.init.kaiming_uniform_(tw, a=math.sqrt(5))
        p = nn.Parameter(np.zeros(shape, np.float32))
        init.kaiming_uniform_(p, a=math.sqrt(5), generator=0)
        fan_in = int(np.prod(shape[1:]))
        assert abs(tw.abs().max().item() - 1 / math.sqrt(fan_in)) < 0.02 / math.sqrt(fan_in)
        np.testing.assert_allclose(p.numpy().std(), tw.std().item(), rtol=0.05)
        assert init.fan_in_and_fan_out(shape) == torch.nn.init._calculate_fan_in_and_fan_out(tw)
    for nl, prm in (("relu", None), ("tanh", None), ("leaky_relu", 0.2), ("linear", None), ("sigmoid", None)):
        assert init.calculate_gain(nl, prm) == pytest.approx(torch.nn.init.calculate_gain(nl, prm))


def test_init_moments():
    p = nn.Parameter(np.zeros((500, 400)))
    init.kaiming_normal_(p, nonlinearity="relu", generator=0)
    np.testing.assert_allclose(p.numpy().std(), math.sqrt(2 / 400), rtol=0.01)
    init.kaiming_uniform_(p, nonlinearity="relu", mode="fan_out", generator=0)
    bound = math.sqrt(2) * math.sqrt(3 / 500)
    assert np.abs(p.numpy()).max() <= bound
    np.testing.assert_allclose(p.numpy().std(), bound / math.sqrt(3), rtol=0.01)
    init.xavier_uniform_(p, gain=2.0, generator=0)
    bound = 2.0 * math.sqrt(6 / 900)
    assert np.abs(p.numpy()).max() <= bound
    np.testing.assert_allclose(p.numpy().var(), bound ** 2 / 3, rtol=0.02)
    init.xavier_normal_(p, generator=0)
    np.testing.assert_allclose(p.numpy().std(), math.sqrt(2 / 900), rtol=0.01)
    init.zeros_(p)
    assert not p.numpy().any()
    init.ones_(p)
    assert (p.numpy() == 1).all()


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (3, 2, 2, 2)])
def test_orthogonal(shape):
    p = nn.Parameter(np.zeros(shape))
    init.orthogonal_(p, gain=1.5, generator=0)
    m = p.numpy().reshape(shape[0], -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(gram, 1.5 ** 2 * np.eye(gram.shape[0]), atol=1e-12)


def test_norm_defaults():
    ln, bn = nn.LayerNorm(5), nn.BatchNorm2d(3)
    for m in (ln, bn):
        assert (m.weight.numpy() == 1).all() and (m.bias.numpy() == 0).all()
    assert (bn.running_mean == 0).all() and (bn.running_var == 1).all()
