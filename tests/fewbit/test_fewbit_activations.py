"""Values and exact derivatives of the registered activations: finite differences and PyTorch."""
import numpy as np
import pytest

from tinymoon.fewbit import FewBitError, activation, continuous_names, names, piecewise_names

# (name, params): defaults plus non-default parameters for every parametrised activation
CASES = [(n, {}) for n in names()] + [
    ("elu", {"alpha": 0.5}), ("elu", {"alpha": 2.0}), ("celu", {"alpha": 0.5}), ("celu", {"alpha": 3.0}),
    ("softplus", {"beta": 2.0, "threshold": 5.0}), ("softplus", {"beta": 0.5}),
    ("leaky_relu", {"negative_slope": 0.2}), ("hardtanh", {"min_val": -2.0, "max_val": 0.5}),
]
IDS = [n + "".join(f"-{k}={v}" for k, v in p.items()) for n, p in CASES]


def special_points(name, params):
    """Kinks and jumps of f' (and of f'' where f' has a corner), where tests take care."""
    act = activation(name)
    pts = set(act.jumps(**params)) | {0.0}
    if name == "hardswish":
        pts |= {-3.0, 3.0}
    return np.array(sorted(pts))


def grid_points(name, params, rng):
    x = np.concatenate([rng.uniform(-12, 12, 400), rng.normal(0, 2, 200), np.linspace(-30, 30, 61)])
    s = special_points(name, params)
    return x[np.min(np.abs(x[:, None] - s[None, :]), axis=1) > 1e-3]


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_derivative_matches_central_differences(name, params):
    act = activation(name)
    x = grid_points(name, params, np.random.default_rng(0))
    h = 1e-6
    fd = (act.value(x + h, **params) - act.value(x - h, **params)) / (2 * h)
    np.testing.assert_allclose(act.derivative(x, **params), fd, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", names())
def test_dtype_preserved_and_float64_default(name):
    act = activation(name)
    x32 = np.linspace(-5, 5, 11, dtype=np.float32)
    assert act.value(x32).dtype == np.float32
    assert act.derivative(x32).dtype == np.float32
    assert act.value([1, 2]).dtype == np.float64
    assert np.asarray(act.derivative(0.5)).dtype == np.float64


def torch_fn(name, params):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    table = {
        "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "elu": F.elu,
        "selu": F.selu, "celu": F.celu, "softplus": F.softplus, "mish": F.mish, "softsign": F.softsign,
        "logsigmoid": F.logsigmoid, "hardswish": F.hardswish, "tanhshrink": F.tanhshrink, "relu": F.relu,
        "leaky_relu": F.leaky_relu, "relu6": F.relu6, "hardtanh": F.hardtanh, "hardsigmoid": F.hardsigmoid,
    }
    return torch, (lambda t: table[name](t, **params))


@pytest.mark.torch
@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_value_and_derivative_match_torch(name, params):
    torch, fn = torch_fn(name, params)
    rng = np.random.default_rng(1)
    act = activation(name)
    # random points, far tails, and the exact kink / jump / threshold points (torch's subgradient there)
    extra = [0.0, -3.0, 3.0, 6.0, -1.0, 1.0, -2.0, 0.5, 20.0, 10.0, 2.5, -0.0]
    x = np.concatenate([rng.uniform(-12, 12, 500), [-60.0, -25.0, 25.0, 60.0], extra])
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = fn(t)
    (g,) = torch.autograd.grad(y.sum(), t)
    np.testing.assert_allclose(act.value(x, **params), y.detach().numpy(), rtol=1e-13, atol=1e-14)
    # torch's float64 hardsigmoid backward multiplies by float32(1/6) = 0.1666666716...; we keep 1/6 exactly
    rtol = 1e-7 if name == "hardsigmoid" else 1e-12
    np.testing.assert_allclose(act.derivative(x, **params), g.numpy(), rtol=rtol, atol=1e-14)


@pytest.mark.parametrize("name", piecewise_names())
def test_piecewise_breakpoints_slopes_and_mask(name):
    act = activation(name)
    assert act.piecewise_linear and act.code_bits == 1
    s, k = act.breakpoints(), act.slopes()
    assert len(k) == len(s) + 1 and np.all(np.diff(s) > 0)
    # one point strictly inside each region: derivative = slope there, and the value is linear there
    edges = np.concatenate([[s[0] - 5], s, [s[-1] + 5]])
    for a, b, slope in zip(edges[:-1], edges[1:], k):
        x = np.linspace(a, b, 7)[1:-1]
        np.testing.assert_array_equal(act.derivative(x), slope)
        np.testing.assert_allclose(np.diff(act.value(x)) / np.diff(x), slope, atol=1e-12)
    codes = act.code(np.linspace(-10, 10, 101))
    assert codes.dtype == np.uint8 and set(np.unique(codes)) <= {0, 1}
    assert set(act.code_levels()) == set(k)


def test_continuous_have_no_mask():
    with pytest.raises(FewBitError, match="not piecewise-linear.*get_table"):
        activation("gelu").breakpoints()


def test_unknown_name_lists_known():
    with pytest.raises(FewBitError) as e:
        activation("swishh")
    for n in continuous_names() + piecewise_names():
        assert n in str(e.value)


def test_bad_parameters():
    with pytest.raises(FewBitError, match="unknown parameter.*alpha=1.0"):
        activation("elu").value(1.0, beta=2)
    with pytest.raises(FewBitError, match="accepted parameters: none"):
        activation("gelu").value(1.0, approximate=1)
    with pytest.raises(FewBitError, match="alpha must be non-zero"):
        activation("celu").value(1.0, alpha=0)
    with pytest.raises(FewBitError, match="min_val < max_val"):
        activation("hardtanh").value(1.0, min_val=1, max_val=0)
    with pytest.raises(FewBitError, match="beta must be > 0"):
        activation("softplus").derivative(1.0, beta=-1)
    with pytest.raises(FewBitError, match="finite"):
        activation("elu").value(1.0, alpha=float("nan"))
