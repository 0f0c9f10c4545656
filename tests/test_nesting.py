"""Nested differentiation is refused with a named error until higher order is supported (never zeros)."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon.errors import MissingRuleError

X = np.array([1.0, 2.0])
T = np.ones(2)


def cube(v):
    return (v * v * v).sum()


NESTED = {
    "grad of grad": lambda x: tm.grad(lambda v: tm.grad(cube)(v).sum())(x),
    "value_and_grad of grad": lambda x: tm.value_and_grad(lambda v: tm.grad(cube)(v).sum())(x),
    "vjp of grad": lambda x: tm.vjp(lambda v: tm.grad(cube)(v), x),
    "jvp of grad": lambda x: tm.jvp(tm.grad(cube), (x,), (T,)),
    "grad of jvp": lambda x: tm.grad(lambda v: tm.jvp(cube, (v,), (T,))[1])(x),
    "jvp of jvp": lambda x: tm.jvp(lambda v: tm.jvp(cube, (v,), (T,))[1], (x,), (T,)),
    "grad of a closure over the outer variable": lambda x: tm.grad(
        lambda v: tm.grad(lambda w: (w * v).sum())(tm.tensor(X)).sum())(x),
    "jvp of a grad closing over the jvp variable": lambda x: tm.jvp(
        lambda v: tm.grad(lambda w: (w * v).sum())(tm.tensor(X)), (x,), (T,)),
    "grad of vijp": lambda x: tm.grad(lambda v: tm.vijp(lambda w: w.tanh(), v)[0].sum())(x),
    "vijp of grad": lambda x: tm.vijp(lambda v: tm.grad(cube)(v), x),
}


@pytest.mark.parametrize("name", sorted(NESTED))
def test_nested_transforms_raise(name):
    with pytest.raises(MissingRuleError, match="higher-order differentiation is not supported"):
        NESTED[name](tm.tensor(X))


def test_backward_create_graph_raises():
    x = tm.tensor(X, requires_grad=True)
    with pytest.raises(MissingRuleError, match="create_graph"):
        cube(x).backward(create_graph=True)


def test_independent_inner_derivative_is_allowed():
    # an inner grad of a value unrelated to the outer variable is a true constant: allowed, exact
    g = tm.grad(lambda v: (v * tm.grad(lambda u: (u * u).sum())(tm.tensor(np.array([2.0])))).sum())(tm.tensor(X))
    np.testing.assert_allclose(g.numpy(), [4.0, 4.0])
    # first-order transforms stay untouched, parameters that require grad included
    w = tm.tensor(np.array([3.0]), requires_grad=True)
    np.testing.assert_allclose(tm.grad(lambda v: (v * w).sum())(tm.tensor(X)).numpy(), [3.0, 3.0])
    np.testing.assert_allclose(tm.grad(cube)(tm.tensor(X)).numpy(), 3 * X ** 2)
    _, t = tm.jvp(cube, (tm.tensor(X),), (T,))
    np.testing.assert_allclose(t.numpy(), (3 * X ** 2).sum())
