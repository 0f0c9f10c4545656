"""Every primitive, one table: forward against NumPy, gradients through check_grads, inputs untouched.

Rows come from the tests/ops/table_*.py modules (each defines ROWS, a list of OpSpec).
"""
import importlib
import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tinymoon as tm
from tinymoon.errors import MissingRuleError
from tinymoon.testing import check_grads

ROWS = []
for path in sorted(pathlib.Path(__file__).parent.glob("table_*.py")):
    ROWS += importlib.import_module(f"tests.ops.{path.stem}").ROWS


def _ids(rows):
    return [r.name for r in rows]


@pytest.mark.parametrize("spec", ROWS, ids=_ids(ROWS))
@given(data=st.data())
def test_forward_matches_numpy_and_inputs_not_mutated(spec, data):
    for dtype in spec.dtypes:
        arrays = spec.inputs(data.draw, dtype)
        before = [np.array(a, copy=True) for a in arrays]
        out = spec.fn(*[tm.tensor(a) for a in arrays])
        expected = spec.ref(*arrays)
        tol = (spec.f32_rtol, spec.f32_atol) if dtype == "float32" else (1e-10, 1e-12)
        np.testing.assert_allclose(out.numpy(), expected, rtol=tol[0], atol=tol[1], err_msg=spec.name)
        if np.asarray(expected).dtype.kind == "f":
            assert out.dtype == np.dtype(dtype), f"{spec.name}: output dtype {out.dtype}, expected {dtype}"
        for a, b in zip(arrays, before):
            np.testing.assert_array_equal(a, b, err_msg=f"{spec.name} mutated its input")


@pytest.mark.parametrize("spec", ROWS, ids=_ids(ROWS))
@given(data=st.data())
def test_gradients(spec, data):
    arrays = spec.inputs(data.draw, "float64")
    check_grads(spec.fn, arrays, modes=spec.modes, rtol=spec.rtol, atol=spec.atol,
                wrt=None if spec.wrt is None else list(spec.wrt))


SECOND = [r for r in ROWS if r.orders >= 2]
FIRST_ONLY = [r for r in ROWS if r.orders == 1]


@pytest.mark.parametrize("spec", SECOND, ids=_ids(SECOND))
@settings(max_examples=8)
@given(data=st.data())
def test_second_order(spec, data):
    """Hessian-vector products forward-over-reverse and reverse-over-reverse against finite differences of the
    gradient, and the symmetry of the Hessian (check_grads' "hvp" mode)."""
    arrays = spec.inputs(data.draw, "float64")
    check_grads(spec.fn, arrays, modes=("hvp",), rtol=spec.rtol, atol=spec.atol,
                wrt=None if spec.wrt is None else list(spec.wrt))


@pytest.mark.parametrize("spec", FIRST_ONLY, ids=_ids(FIRST_ONLY))
@settings(max_examples=2)
@given(data=st.data())
def test_second_order_refused(spec, data):
    """An op without higher-order rules raises MissingRuleError naming itself and the order, never zeros."""
    arrays = spec.inputs(data.draw, "float64")
    with pytest.raises(MissingRuleError, match="order 2"):
        check_grads(spec.fn, arrays, modes=("hvp",), wrt=None if spec.wrt is None else list(spec.wrt))


@pytest.mark.parametrize("spec", ROWS, ids=_ids(ROWS))
@given(data=st.data())
def test_backward_leaves_grads_unaliased(spec, data):
    """Leaf gradients are fresh arrays: they never alias inputs, the seed, or each other."""
    arrays = spec.inputs(data.draw, "float64")
    ts = [tm.tensor(a, requires_grad=(a.dtype.kind == "f" and (spec.wrt is None or i in spec.wrt)))
          for i, a in enumerate(arrays)]
    if "vjp" not in spec.modes:
        return
    out = spec.fn(*ts)
    seed = np.ones(out.shape)
    out.backward(seed)
    grads = [t.grad.data for t in ts if t.grad is not None]
    for i, g in enumerate(grads):
        assert not np.shares_memory(g, seed)
        for a in arrays:
            assert not np.shares_memory(g, a)
        for h in grads[i + 1:]:
            assert not np.shares_memory(g, h)


@pytest.mark.parametrize("spec", [r for r in ROWS if "vijp" in r.modes and "float32" in r.dtypes],
                         ids=_ids([r for r in ROWS if "vijp" in r.modes and "float32" in r.dtypes]))
@given(data=st.data())
def test_vijp_keeps_the_dtype(spec, data):
    """Inverse mode in float32 stays float32 (a boolean derivative mask must not promote to float64)."""
    arrays = spec.inputs(data.draw, "float32")
    rest = [tm.tensor(a) for a in arrays[1:]]
    f = lambda x: spec.fn(x, *rest)        # noqa: E731
    out, vf = tm.vijp(f, tm.tensor(arrays[0]))
    u = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
    frags = vf.fragments(u)
    _, vjp_fn = tm.vjp(f, tm.tensor(arrays[0]))
    y = vf(vjp_fn(u)[0], frags)
    assert y.dtype == np.float32, f"{spec.name}: vijp returned {y.dtype}"


@pytest.mark.parametrize("spec", ROWS, ids=_ids(ROWS))
@settings(max_examples=3, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_rule_on_the_device(spec, data, gpu_device):
    """The same gradient identities with every array on the device (a fake GPU, or a real one), and the
    forward value there equal to the CPU's: no rule may reach for NumPy on device data."""
    device = gpu_device
    arrays = spec.inputs(data.draw, "float64")
    modes = spec.modes + (("hvp",) if spec.orders >= 2 else ())    # rules running on tensors of device arrays too
    check_grads(spec.fn, arrays, modes=modes, rtol=spec.rtol, atol=spec.atol,
                wrt=None if spec.wrt is None else list(spec.wrt), device=device)
    out = spec.fn(*[tm.tensor(a, device=device) for a in arrays])
    assert out.device.startswith("cuda")
    np.testing.assert_allclose(out.numpy(), spec.fn(*[tm.tensor(a) for a in arrays]).numpy(), rtol=1e-12,
                               atol=1e-12, err_msg=spec.name)
