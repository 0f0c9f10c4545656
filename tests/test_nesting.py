"""Nested transforms: every combination either computes the exact derivative or raises MissingRuleError naming
what is missing — never zeros. The exact combinations are in test_higher.py; these are the refused ones."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon.errors import MissingRuleError

X = np.array([1.0, 2.0])
T = np.ones(2)


def cube(v):
    return (v * v * v).sum()


REFUSED = {
    # forward and inverse mode nested in a transform would need tangents of tangents
    "grad of jvp": (lambda x: tm.grad(lambda v: tm.jvp(cube, (v,), (T,))[1])(x), "tm.jvp inside tm.grad"),
    "jvp of jvp": (lambda x: tm.jvp(lambda v: tm.jvp(cube, (v,), (T,))[1], (x,), (T,)), "tm.jvp inside tm.jvp"),
    "grad of vijp": (lambda x: tm.grad(lambda v: tm.vijp(lambda w: w.tanh(), v)[0].sum())(x),
                     "tm.vijp inside tm.grad"),
    "vijp of grad": (lambda x: tm.vijp(lambda v: tm.grad(cube)(v), x), "tm.grad inside tm.vijp"),
    "hvp inside grad": (lambda x: tm.grad(lambda v: tm.hvp(cube, v, T).sum())(x), "tm.jvp inside tm.grad"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_nestings_name_the_combination(name):
    fn, message = REFUSED[name]
    with pytest.raises(MissingRuleError, match=message):
        fn(tm.tensor(X))


def test_independent_inner_derivative_is_allowed():
    # an inner derivative of a value unrelated to the outer variable is a true constant: allowed, exact
    g = tm.grad(lambda v: (v * tm.grad(lambda u: (u * u).sum())(tm.tensor(np.array([2.0])))).sum())(tm.tensor(X))
    np.testing.assert_allclose(g.numpy(), [4.0, 4.0])
    # first-order transforms stay untouched, parameters that require grad included
    w = tm.tensor(np.array([3.0]), requires_grad=True)
    np.testing.assert_allclose(tm.grad(lambda v: (v * w).sum())(tm.tensor(X)).numpy(), [3.0, 3.0])
    np.testing.assert_allclose(tm.grad(cube)(tm.tensor(X)).numpy(), 3 * X ** 2)
    _, t = tm.jvp(cube, (tm.tensor(X),), (T,))
    np.testing.assert_allclose(t.numpy(), (3 * X ** 2).sum())
