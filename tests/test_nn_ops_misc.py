"""NN ops beyond the op table: bad input, documented choices (ties, underflow, zero weights), residual sizes,
running statistics, dropout statistics."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon.errors import DTypeError, NotInvertibleError, ShapeError
from tinymoon.ops.softmax import LabelError
from tinymoon.testing import check_grads


def _vijp_roundtrip(f, x, seed=0):
    out, vf = tm.vijp(f, x)
    u = np.random.default_rng(seed).standard_normal(out.shape)
    frags = vf.fragments(u)
    _, vjp_fn = tm.vjp(f, x)
    x_bar = vjp_fn(u)[0].numpy()
    return u, x_bar, vf, frags


# ---------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("labels,err,match", [
    ([0, 1, 5], LabelError, r"\[0, 5\).*\[0, 5\]"),
    ([0, -1, 2], LabelError, r"\[-1, 2\]"),
    (np.array([0.0, 1.0, 2.0]), DTypeError, "integer class indices"),
    ([0, 1], ShapeError, r"expected labels of shape \(3,\)"),
    ([[0], [1], [2]], ShapeError, "do not fit"),
])
def test_cross_entropy_bad_labels(labels, err, match):
    with pytest.raises(err, match=match):
        tm.cross_entropy(np.zeros((3, 5)), np.asarray(labels))


def test_cross_entropy_bad_reduction_and_logits():
    with pytest.raises(ShapeError, match="reduction"):
        tm.cross_entropy(np.zeros((3, 5)), np.array([0, 1, 2]), reduction="avg")
    with pytest.raises(ShapeError, match=r"\(N, C\)"):
        tm.cross_entropy(np.zeros(5), np.array(1))


def test_cross_entropy_is_stable_and_labels_get_no_gradient():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    labels = np.array([2, 1])
    loss = tm.cross_entropy(logits, labels)
    np.testing.assert_allclose(loss.item(), (2000.0 + np.log(3)) / 2)
    x = tm.tensor(logits, requires_grad=True)
    tm.cross_entropy(x, tm.tensor(labels)).backward()
    assert np.all(np.isfinite(x.grad.numpy()))


def test_cross_entropy_vijp_raises_where_gradient_vanishes():
    logits = np.array([[800.0, 0.0]])          # p = onehot exactly: J = p - onehot = 0
    out, vf = tm.vijp(lambda v: tm.cross_entropy(v, np.array([0])), logits)
    with pytest.raises(NotInvertibleError, match="zero"):
        vf(np.zeros_like(logits))


def test_mse_errors_and_vijp_at_zero_residual():
    with pytest.raises(ShapeError, match="same shape"):
        tm.mse(np.zeros((2, 3)), np.zeros((3,)))
    with pytest.raises(ShapeError, match="reduction"):
        tm.mse(np.zeros(3), np.zeros(3), reduction="none")
    out, vf = tm.vijp(lambda v: tm.mse(v, np.ones(3)), np.ones(3))
    with pytest.raises(NotInvertibleError, match="zero"):
        vf(np.zeros(3))


def test_mse_vijp_along_target():
    rng = np.random.default_rng(0)
    p, t = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    check_grads(lambda t_, p_: tm.mse(p_, t_, reduction="sum"), [t, p])


# ---------------------------------------------------------------------------------------- softmax
def test_softmax_underflow_fragment():
    x = np.array([[0.0, -1000.0, 1.0], [2.0, 1.0, 0.0]])     # p underflows to exactly 0 at one entry
    u, x_bar, vf, frags = _vijp_roundtrip(tm.softmax, x)
    c, tail = frags[0]
    assert c.shape == (2, 1) and tail.shape == (1,)
    np.testing.assert_allclose(vf(x_bar, frags).numpy(), u, rtol=1e-12, atol=1e-12)
    with pytest.raises(NotInvertibleError, match="one scalar per row"):
        vf(x_bar)
    with pytest.raises(NotInvertibleError, match="underflowed"):
        vf(x_bar, [c])


def test_softmax_fragment_is_one_scalar_per_row():
    x = np.random.default_rng(0).standard_normal((4, 6))
    for f in (tm.softmax, tm.log_softmax):
        u, x_bar, vf, frags = _vijp_roundtrip(f, x)
        assert frags[0].shape == (4, 1)
        np.testing.assert_allclose(vf(x_bar, frags).numpy(), u, rtol=1e-12, atol=1e-12)


def test_softmax_stable_and_axis_checked():
    y = tm.softmax(np.array([1e4, 0.0, -1e4])).numpy()
    np.testing.assert_allclose(y, [1, 0, 0])
    np.testing.assert_allclose(tm.log_softmax(np.array([1e4, 0.0])).numpy(), [0, -1e4])
    with pytest.raises(ShapeError, match="axis 2"):
        tm.softmax(np.zeros((2, 2)), axis=2)


# ---------------------------------------------------------------------------------------- pooling
def test_max_pool_ties_go_to_the_first_element():
    x = tm.tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    tm.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], [[1, 0], [0, 0]])


@pytest.mark.parametrize("k,dtype", [(2, np.uint8), (16, np.uint8), (17, np.uint16)])
def test_max_pool_residual_is_the_smallest_index_type(k, dtype):
    y = tm.max_pool2d(tm.tensor(np.zeros((1, 1, k, k)), requires_grad=True), k)
    assert y._node.ctx.idx.dtype == dtype


def test_pool_errors():
    with pytest.raises(ShapeError, match="at most half"):
        tm.max_pool2d(np.zeros((1, 1, 4, 4)), 2, padding=2)
    with pytest.raises(ShapeError, match="larger than the padded input"):
        tm.avg_pool2d(np.zeros((1, 1, 2, 2)), 3)
    with pytest.raises(ShapeError, match=r"\(N, C, H, W\)"):
        tm.avg_pool2d(np.zeros((2, 2)), 2)
    for f in (tm.max_pool2d, tm.avg_pool2d):
        out, vf = tm.vijp(lambda v: f(v, 3, stride=2), np.random.default_rng(0).standard_normal((1, 1, 5, 5)))
        with pytest.raises(NotInvertibleError, match="overlapping"):
            vf(np.zeros((1, 1, 5, 5)))


def test_pool_vijp_with_gaps_between_windows():
    x = np.random.default_rng(0).standard_normal((1, 2, 7, 7))
    for f in (lambda v: tm.max_pool2d(v, 2, stride=3), lambda v: tm.avg_pool2d(v, 2, stride=3)):
        check_grads(f, [x])


# ---------------------------------------------------------------------------------------- normalisation
def test_layer_norm_zero_weight_has_no_vijp():
    x = np.random.default_rng(0).standard_normal((2, 4))
    w = np.array([1.0, 0.0, 2.0, 1.0])
    u, x_bar, vf, frags = _vijp_roundtrip(lambda v: tm.layer_norm(v, 4, w), x)
    assert frags[0].shape == (2, 2, 1)                 # 2 scalars per group
    with pytest.raises(NotInvertibleError, match="1 zero entr"):
        vf(x_bar, frags)


def test_layer_norm_shape_errors():
    with pytest.raises(ShapeError, match="trailing dims"):
        tm.layer_norm(np.zeros((2, 4)), 3)
    with pytest.raises(ShapeError, match="weight must have shape"):
        tm.layer_norm(np.zeros((2, 4)), 4, np.ones(3))


def test_batch_norm_running_stats_unbiased_update():
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 5)) * 2 + 1
    rm, rv = np.zeros(3), np.ones(3)
    tm.batch_norm(x, rm, rv, momentum=0.2)
    n = 4 * 2 * 5
    np.testing.assert_allclose(rm, 0.2 * x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(rv, 0.8 + 0.2 * x.var(axis=(0, 2, 3)) * n / (n - 1))
    y = tm.batch_norm(x, rm, rv, training=False).numpy()
    np.testing.assert_allclose(y, (x - rm.reshape(1, 3, 1, 1)) / np.sqrt(rv.reshape(1, 3, 1, 1) + 1e-5))


def test_batch_norm_errors_and_group_fragment():
    with pytest.raises(ShapeError, match="more than one value per channel"):
        tm.batch_norm(np.zeros((1, 3)), None, None)
    with pytest.raises(ShapeError, match=r"running_mean must have shape \(3,\)"):
        tm.batch_norm(np.zeros((2, 3)), np.zeros(2), np.ones(3))
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    u, x_bar, vf, frags = _vijp_roundtrip(lambda v: tm.batch_norm(v, None, None), x)
    assert frags[0].shape == (2, 1, 3, 1)                  # 2 scalars per channel
    with pytest.raises(NotInvertibleError, match="two scalars per normalised group"):
        vf(x_bar)
    with pytest.raises(NotInvertibleError, match="zero entr"):
        w = np.array([1.0, 0.0, 1.0])
        _, xb, vf2, _ = _vijp_roundtrip(lambda v: tm.batch_norm(v, np.zeros(3), np.ones(3), w, training=False), x)
        vf2(xb)


# ---------------------------------------------------------------------------------------- dropout
def test_dropout_statistics_and_residual_bits():
    x = np.ones((100, 100))
    y = tm.dropout(tm.tensor(x, requires_grad=True), 0.3, 0)
    kept = y.numpy() != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y.numpy()[kept], 1 / 0.7)
    assert y._node.ctx.nbytes == 10000 // 8             # a bit-packed mask, nothing else
    np.testing.assert_array_equal(tm.dropout(x, 0.3, 0).numpy(), y.numpy())     # a seed reproduces the mask
    g = np.random.default_rng(5)
    assert not np.array_equal(tm.dropout(x, 0.3, g).numpy(), tm.dropout(x, 0.3, g).numpy())


def test_dropout_edge_cases():
    x = tm.tensor(np.ones((3, 4)))
    assert tm.dropout(x, 0.5, 0, training=False) is x
    np.testing.assert_array_equal(tm.dropout(x, 1.0, 0).numpy(), 0)
    with pytest.raises(ShapeError, match=r"\[0, 1\]"):
        tm.dropout(x, 1.5, 0)
    with pytest.raises(TypeError, match="explicit numpy Generator"):
        tm.dropout(x, 0.5, None)
    u, x_bar, vf, frags = _vijp_roundtrip(lambda v: tm.dropout(v, 0.5, 3), np.ones((4, 4)))
    np.testing.assert_allclose(vf(x_bar, frags).numpy(), u)
