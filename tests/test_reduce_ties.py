"""Reductions: documented tie behaviour of max/min, the var vijp condition, argmax/argmin."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon.errors import NotInvertibleError
from tinymoon.testing import check_grads

X = np.array([[1.0, 3.0, 3.0, 0.0],
              [2.0, 2.0, 2.0, 2.0],
              [5.0, -1.0, 4.0, 5.0]])


@pytest.mark.parametrize("op, sign", [(tm.max, 1.0), (tm.min, -1.0)])
def test_ties_split_the_gradient_equally(op, sign):
    x = tm.tensor(sign * X, requires_grad=True)
    op(x, axis=1).sum().backward()
    expected = np.array([[0, 0.5, 0.5, 0], [0.25] * 4, [0.5, 0, 0, 0.5]])
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    # jvp: the mean of the tied elements' tangents (the adjoint of the split)
    t = np.arange(12.0).reshape(3, 4)
    _, y_dot = tm.jvp(lambda v: op(v, axis=1), (sign * X,), (t,))
    np.testing.assert_allclose(y_dot.numpy(), [(1 + 2) / 2, (4 + 5 + 6 + 7) / 4, (8 + 11) / 2])
    # all modes agree at the exact ties (finite differences excluded: max is not differentiable there)
    check_grads(lambda v: op(v, axis=1), [sign * X], modes=("vjp", "vijp"))
    check_grads(lambda v: op(v), [sign * X], modes=("vjp", "vijp"))


def test_max_vijp_recovers_from_tied_groups():
    out, vf = tm.vijp(lambda v: tm.max(v, axis=(0, 1), keepdims=True), X)
    x_bar = tm.vjp(lambda v: tm.max(v, axis=(0, 1), keepdims=True), X)[1](np.full((1, 1), 3.0))[0]
    np.testing.assert_allclose(x_bar.numpy()[2], [1.5, 0, 0, 1.5])
    np.testing.assert_allclose(vf(x_bar).numpy(), [[3.0]])


def test_var_of_constant_group_is_not_invertible():
    x = np.array([[0.1, 0.1, 0.1], [1.0, 2.0, 4.0]])
    out, vf = tm.vijp(lambda v: tm.var(v, axis=1), x)
    with pytest.raises(NotInvertibleError, match="var"):
        vf(np.zeros_like(x))
    check_grads(lambda v: tm.var(v, axis=1, ddof=1), [x[1:]])


def test_logsumexp_is_stable():
    x = np.array([1000.0, 1000.0, -1000.0])
    np.testing.assert_allclose(tm.logsumexp(x).numpy(), 1000 + np.log(2))
    np.testing.assert_allclose(tm.logsumexp(np.full(3, -np.inf)).numpy(), -np.inf)
    check_grads(tm.logsumexp, [np.array([[700.0, 701.0], [-5.0, 3.0]])])


@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin(name):
    x = tm.tensor(X)
    ref = getattr(np, name)
    for kw in [{}, {"axis": 1}, {"axis": -2, "keepdims": True}]:
        got = getattr(tm, name)(x, **kw)
        assert got.dtype.kind == "i" and not got.requires_grad
        np.testing.assert_array_equal(got.numpy(), ref(X, **kw))
    np.testing.assert_array_equal(getattr(x, name)(axis=0).numpy(), ref(X, axis=0))
