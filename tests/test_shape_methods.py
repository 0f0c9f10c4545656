"""Shape ops: getitem with repeated indices, broadcast_to fragments, and the Tensor method forms."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon.errors import NotInvertibleError, ShapeError


def test_getitem_repeated_indices_accumulate_and_need_a_fragment():
    x = tm.tensor(np.arange(4.0), requires_grad=True)
    idx = [0, 2, 0, 0, 3]
    x[idx].backward(np.array([1.0, 10.0, 100.0, 1000.0, 5.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [1101.0, 0, 10.0, 5.0])   # np.add.at semantics

    f = lambda v: v[tm.tensor(idx)]                      # noqa: E731  (a Tensor index)
    out, vf = tm.vijp(f, np.arange(4.0))
    u = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    frags = vf.fragments(u)
    assert frags[0].shape == (2,)                        # the 2 extra copies of element 0
    x_bar = tm.vjp(f, np.arange(4.0))[1](u)[0]
    np.testing.assert_allclose(vf(x_bar, frags).numpy(), u)
    with pytest.raises(NotInvertibleError, match="getitem"):
        vf(x_bar)
    # unique indices: no fragment, y_bar = x_bar[index]
    out, vf = tm.vijp(lambda v: v[[3, 1]], np.arange(4.0))
    assert vf.fragments(np.ones(2)) == [None]
    np.testing.assert_array_equal(vf(np.array([0, 7.0, 0, 9.0])).numpy(), [9.0, 7.0])


def test_broadcast_to_fragment_restores_every_copy():
    f = lambda v: tm.broadcast_to(v, (2, 3, 4))          # noqa: E731
    x = np.arange(3.0).reshape(3, 1)
    rng = np.random.default_rng(0)
    u = rng.standard_normal((2, 3, 4))
    out, vf = tm.vijp(f, x)
    frags = vf.fragments(u)
    assert frags[0].shape == (7, 3)                      # 8 copies of 3 elements: all but one recorded
    x_bar = tm.vjp(f, x)[1](u)[0]
    np.testing.assert_allclose(x_bar.numpy(), u.sum(axis=(0, 2))[:, None])
    np.testing.assert_allclose(vf(x_bar, frags).numpy(), u)
    with pytest.raises(NotInvertibleError, match="broadcast_to"):
        vf(x_bar)


def test_method_forms():
    a = np.arange(24.0).reshape(2, 3, 4)
    x = tm.tensor(a)
    assert x.reshape(6, 4).shape == (6, 4) and x.reshape((4, 6)).shape == (4, 6) and x.reshape(-1).shape == (24,)
    np.testing.assert_array_equal(x.transpose().numpy(), a.T)
    np.testing.assert_array_equal(x.T.numpy(), a.T)
    np.testing.assert_array_equal(x.transpose(1, 0, 2).numpy(), a.transpose(1, 0, 2))
    np.testing.assert_array_equal(x.permute((2, 0, 1)).numpy(), a.transpose(2, 0, 1))
    np.testing.assert_array_equal(x.sum(axis=1).numpy(), a.sum(axis=1))
    np.testing.assert_array_equal(x.mean(1, keepdims=True).numpy(), a.mean(1, keepdims=True))
    np.testing.assert_array_equal(x.max(axis=(0, 2)).numpy(), a.max(axis=(0, 2)))
    np.testing.assert_array_equal(x.min().numpy(), a.min())
    np.testing.assert_allclose(x.var(axis=0, ddof=1).numpy(), a.var(axis=0, ddof=1))
    np.testing.assert_allclose(x.logsumexp(axis=-1).numpy(), np.log(np.exp(a).sum(-1)))
    assert x.flatten().shape == (24,) and x.flatten(1).shape == (2, 12) and x.flatten(0, 1).shape == (6, 4)
    assert x.unsqueeze(0).shape == (1, 2, 3, 4) and x.expand_dims(-1).shape == (2, 3, 4, 1)
    assert x.unsqueeze(1).squeeze().shape == (2, 3, 4) and x.unsqueeze(1).squeeze(1).shape == (2, 3, 4)
    assert x.broadcast_to(5, 2, 3, 4).shape == (5, 2, 3, 4)
    np.testing.assert_array_equal(x[1, ..., ::-2].numpy(), a[1, ..., ::-2])
    np.testing.assert_array_equal(x[x > 10].numpy(), a[a > 10])
    np.testing.assert_array_equal((x @ x.transpose(0, 2, 1)).numpy(), a @ a.transpose(0, 2, 1))
    np.testing.assert_array_equal(x.matmul(np.ones(4)).numpy(), a @ np.ones(4))
    np.testing.assert_array_equal(tm.pad(x, 1, value=-1.0).numpy(), np.pad(a, 1, constant_values=-1.0))
    np.testing.assert_array_equal(tm.pad(x, ((0, 0), (1, 0), (2, 1))).numpy(), np.pad(a, ((0, 0), (1, 0), (2, 1))))
    with pytest.raises(ShapeError, match="squeeze"):
        x.squeeze(0)
    with pytest.raises(ShapeError, match="transpose"):
        x.transpose(0, 0, 1)
