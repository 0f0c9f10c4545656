"""The table (kernels/activations.py) is the spec: every compiled body is held to it (table_checks.py), and
the table itself to PyTorch and to finite differences (tests/fewbit/test_fewbit_activations.py runs those
for every entry)."""
import numpy as np
import pytest

import tinymoon.kernels as K
from tinymoon.kernels import activations as T, fewbit as F, pointwise as P
from table_checks import check_matches_table, inputs, act_params


@pytest.mark.parametrize("n", [1, 7, 1001, 20011])          # odd sizes, below and above the Numba threshold
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(K.COMPILED))
def test_numba_bodies_match_the_table(name, dtype, n):
    x = inputs(n, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        y, d = P.act_numba(name, x, **act_params(name))
    check_matches_table(name, x, y, d)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_mask_and_fewbit_bodies_match_the_table(dtype):
    x = inputs(1001, dtype)
    relu, leaky = T.ACTIVATIONS["relu"], T.ACTIVATIONS["leaky_relu"]
    for slope, formula, p in ((0.0, relu, {}), (0.1, leaky, {"negative_slope": 0.1})):
        want = formula.forward(x, p)[0]
        for f in (P.relu_mask_forward_reference, P.relu_mask_forward_numba):
            y, packed = f(x, slope)
            assert np.array_equal(y.view(np.uint8), want.view(np.uint8))            # bit for bit, NaN included
            assert np.array_equal(packed, np.packbits(relu.code_fn(np, x), bitorder="little"))
    borders = np.array([-1.0, 0.0, 2.0])
    for name in sorted(K.COMPILED):
        with np.errstate(invalid="ignore", over="ignore"):
            y, _ = F.fewbit_forward_numba(name, x, borders, 2, **act_params(name))
            d = P.act_reference(name, x, **act_params(name))[1]                     # (the kernel has no f')
        check_matches_table(name, x, y, d)


def test_every_entry_computes_in_the_input_dtype_and_on_any_xp():
    x32 = inputs(300, np.float32)
    for name, formula in T.ACTIVATIONS.items():
        with np.errstate(invalid="ignore", over="ignore"):
            y, d = formula.forward(x32, formula.resolve())
            y64, d64 = formula.forward(x32.astype(np.float64), formula.resolve())
        assert y.dtype == d.dtype == np.float32, name
        fin = np.isfinite(y64) & np.isfinite(d64)
        np.testing.assert_allclose(y[fin], y64[fin], rtol=2e-6, atol=2e-6, err_msg=name)
        np.testing.assert_allclose(d[fin], d64[fin], rtol=1e-5, atol=2e-6, err_msg=name)


def test_piecewise_entries_take_f_prime_from_their_exact_mask():
    x = inputs(500, np.float64)
    for name in T.piecewise_names():
        formula = T.ACTIVATIONS[name]
        lo, hi = formula.code_levels()
        want = np.where(formula.code(x), hi, lo)
        assert np.array_equal(formula.derivative(x), want), name


def test_compiled_names_and_parameters():
    assert set(K.COMPILED) <= set(K.ACTIVATIONS)
    with pytest.raises(ValueError, match="without a compiled body"):
        K.act_forward("mish", np.ones(3))
    x = np.array([-1.0, 0.5])
    assert np.array_equal(K.act_forward("leaky_relu", x, slope=0.2)[0],                # the kernels' name
                          K.act_forward("leaky_relu", x, negative_slope=0.2)[0])       # the table's
    with pytest.raises(ValueError, match="beta must be > 0"):
        K.act_forward("softplus", x, beta=-1.0)
