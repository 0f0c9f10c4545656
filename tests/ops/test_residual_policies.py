"""Residual policies as types: every activation primitive of the table under its default policy (check_grads),
the policy objects counting their own bytes, and the algorithms' layers being the ordinary primitives."""
import math

import numpy as np
import pytest

import tinymoon as tm
import tinymoon.fewbit as fb
import tinymoon.randomized as R
from tinymoon.autodiff.apply import apply
from tinymoon.kernels.activations import ACTIVATIONS
from tinymoon.ops import activations as A
from tinymoon.ops.linalg import Linear
from tinymoon.ops.residuals import compiled_for
from tinymoon.testing import check_grads

PARAMS = {"elu": {"alpha": 0.7}, "celu": {"alpha": 2.0}, "softplus": {"beta": 2.0, "threshold": 5.0},
          "leaky_relu": {"negative_slope": 0.2}, "hardtanh": {"min_val": -2.0, "max_val": 0.5}}


def _away_from_kinks(name, x):
    pts = np.array(list(ACTIVATIONS[name].jumps(**PARAMS.get(name, {}))) + [0.0, -3.0, 3.0, 6.0])
    return x[np.min(np.abs(x[:, None] - pts[None, :]), axis=1) > 1e-2]


@pytest.mark.parametrize("name", sorted(A.PRIMITIVES))
def test_every_table_primitive_passes_check_grads(name):
    x = _away_from_kinks(name, np.random.default_rng(0).uniform(-4, 4, 40))
    prim = A.PRIMITIVES[name]
    check_grads(lambda t: apply(prim, t, **PARAMS.get(name, {})), [x])        # jvp vs FD, vjp, vijp (fragments)
    y = apply(prim, tm.tensor(x), **PARAMS.get(name, {})).numpy()
    want = ACTIVATIONS[name].value(x, **PARAMS.get(name, {}))                             # f is the table's:
    if compiled_for(ACTIVATIONS[name], x, PARAMS.get(name, {})):
        # a compiled body (the same pass at every size) calls libm where the table calls NumPy's ufuncs
        # (elu: expm1): within a few ulp in float64, not always the same bits
        np.testing.assert_array_max_ulp(y, want, maxulp=4)
    else:
        np.testing.assert_array_equal(y, want)                                            # the table itself


def test_default_residuals_count_their_bytes():
    h = tm.tensor(np.random.default_rng(1).normal(size=(3, 333)).astype(np.float32), requires_grad=True) * 1.0
    for fn, want in ((tm.tanh, h.data.nbytes), (tm.relu, math.ceil(999 / 8)),
                     (lambda t: tm.leaky_relu(t, 0.1), math.ceil(999 / 8)), (tm.softplus, h.data.nbytes),
                     (lambda t: apply(A.Mish, t), h.data.nbytes)):
        before = tm.memory.saved_bytes()
        y = fn(h)
        assert tm.memory.saved_bytes() - before == want
        del y
    leaf = tm.tensor(np.ones(10), requires_grad=True)
    before = tm.memory.saved_bytes()
    y = tm.softplus(leaf)                  # softplus keeps its input: a leaf's own array is not counted
    assert tm.memory.saved_bytes() == before
    y.sum().backward()
    np.testing.assert_allclose(leaf.grad.numpy(), 1 / (1 + np.exp(-1.0)))


def test_quantised_tanh_is_the_tanh_primitive():
    h = tm.randn(5, 7, seed=0, requires_grad=True) * 1.0
    exact, few = tm.tanh(h), fb.tanh(h, bits=3)
    assert exact._node.prim is few._node.prim is A.Tanh
    assert type(few._node.ctx.r).__name__ == "PackedBins" and few._node.ctx.r.nbytes == math.ceil(35 * 3 / 8)
    assert fb.relu6(h)._node.prim is A.ReLU6


def test_sketched_linear_is_the_linear_primitive_and_its_sketch_is_counted():
    x = tm.randn(40, 9, seed=1) * 1.0
    w = tm.randn(5, 9, seed=2, requires_grad=True)
    before = tm.memory.saved_bytes()
    y = R.sketched_linear(x, w, probes=4, seed=3)
    assert y._node.prim is Linear and isinstance(y._node.ctx.params["residual"], R.RowSketch)
    assert tm.memory.saved_bytes() - before == 4 * 9 * 4                       # X̄ = Zᵀx: r x in float32
    for est in (R.SparseVJP(0.25, "optimal", generator=0), R.LowRankVJP(2, generator=0)):
        before = tm.memory.saved_bytes()
        y2 = est.linear(x, w)
        kept = y2._node.ctx.x_kept
        assert y2._node.prim is Linear and tm.memory.saved_bytes() - before == kept.nbytes > 0
        assert kept.nbytes == sum(a.nbytes for a in kept.arrays.values())
        del y2, kept
    y.sum().backward()
    assert w.grad.shape == w.shape
