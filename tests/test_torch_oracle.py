"""PyTorch as an independent oracle, in float64: values AND gradients of every op-table row that has a torch
equivalent (rows from every tests/ops/table_*.py), and conv2d over a grid of stride / padding / dilation /
groups / padding mode. Skipped when torch is not installed (`pip install torch` gives a CPU build)."""
import importlib
import itertools
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinymoon as tm

torch = pytest.importorskip("torch")
F = torch.nn.functional

from tests.ops.table_nn import ref_padding, running_stats  # noqa: E402
from tests.ops.table_shape import REPEATS, _bcast_target, _mask  # noqa: E402

ROWS = []
for _path in sorted((pathlib.Path(__file__).parent / "ops").glob("table_*.py")):
    ROWS += importlib.import_module(f"tests.ops.{_path.stem}").ROWS


def _pad_arg(pads):
    """numpy-style [(before, after), ...] per axis -> F.pad's flat list, last axis first."""
    return [v for pair in reversed(pads) for v in pair]


def _reduce(fn):
    return {
        "all": lambda x: fn(x, tuple(range(x.ndim)), False),
        "axis": lambda x: fn(x, -1, False),
        "tuple_keepdims": lambda x: fn(x, (0, -1), True),
    }


_REDUCERS = {
    "sum": lambda x, d, k: torch.sum(x, d, keepdim=k) if x.ndim else x,
    "mean": lambda x, d, k: torch.mean(x, d, keepdim=k) if x.ndim else x,
    "max": lambda x, d, k: torch.amax(x, d, keepdim=k) if x.ndim else x,
    "min": lambda x, d, k: torch.amin(x, d, keepdim=k) if x.ndim else x,
    "logsumexp": lambda x, d, k: torch.logsumexp(x, d, keepdim=k) if x.ndim else x,
    "var": lambda x, d, k: torch.var(x, d, correction=0, keepdim=k),
}


def _bn_eval(x, w, b):
    rm, rv = running_stats(x.shape[1], "float64")
    return F.batch_norm(x, torch.from_numpy(rm), torch.from_numpy(rv), w, b, training=False)


TORCH = {
    # elementwise and activations
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
    "maximum": torch.maximum, "minimum": torch.minimum, "neg": torch.neg, "exp": torch.exp, "log": torch.log,
    "sqrt": torch.sqrt, "abs": torch.abs, "clip": lambda x: torch.clamp(x, -1.0, 1.5),
    "where": lambda a, b: torch.where(a > 0, a, b), "tanh": torch.tanh, "sigmoid": torch.sigmoid,
    "relu": torch.relu, "leaky_relu": lambda x: F.leaky_relu(x, 0.1), "elu": lambda x: F.elu(x, 0.7),
    "gelu": F.gelu, "silu": F.silu, "softplus": lambda x: F.softplus(x, beta=2.0, threshold=20.0),
    # reductions
    **{f"{n}_{kind}": f for n, fn in _REDUCERS.items() for kind, f in _reduce(fn).items()},
    "var_ddof1": lambda x: torch.var(x, 0, correction=1), "sum_method": lambda x: x.sum(1),
    # shape
    "reshape": lambda x: x.reshape(tuple(x.shape)[::-1]), "reshape_neg1": lambda x: x.reshape(-1, x.shape[-1]),
    "transpose": lambda x: x.permute(*reversed(range(x.ndim))), "permute": lambda x: x.permute(2, 0, 1),
    "broadcast_to": lambda x: x.broadcast_to(_bcast_target(tuple(x.shape))), "squeeze": lambda x: x.squeeze(),
    "squeeze_axis": lambda x: x.unsqueeze(1).squeeze(1), "unsqueeze": lambda x: x.unsqueeze(-1),
    "flatten": lambda x: x.flatten(1), "getitem_basic": lambda x: x[1:].flip(1),
    "getitem_int_none_ellipsis": lambda x: x[-1, None, ..., ::2], "getitem_int_array": lambda x: x[[2, 0, 1]],
    "getitem_repeated": lambda x: x[REPEATS], "getitem_2d_repeated": lambda x: x[:, [1, 0, 1], [0, 0, 0]],
    "getitem_tensor_index": lambda x: x[torch.tensor([1, -1])],
    "getitem_bool": lambda x: x[torch.from_numpy(_mask(tuple(x.shape)))],
    "concatenate": lambda a, b, c: torch.cat([a, b, c], 1), "stack": lambda a, b, c: torch.stack([a, b, c], -1),
    "pad": lambda x: F.pad(x, _pad_arg([(1, 2)] + [(0, 1)] * (x.ndim - 1)), value=0.5),
    # linear algebra
    "matmul_broadcast": torch.matmul, "matmul_vijp": torch.matmul, "matmul_vijp_vector": torch.matmul,
    "linear": F.linear, "linear_bias": F.linear,
    # nn
    "conv2d_strided_groups": lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=2),
    "conv2d_dilated_asym_pad": lambda x, w: F.conv2d(F.pad(x, (2, 1, 1, 0)), w, stride=(1, 2), dilation=2),
    "conv2d_circular_strided": lambda x, w: F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), w, stride=2),
    "conv2d_1x1": F.conv2d, "conv2d_1x1_expanding": F.conv2d,
    "conv2d_patchify": lambda x, w, b: F.conv2d(x, w, b, stride=2),
    "conv2d_circular_same": lambda x, w: F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), w),
    "conv2d_same": lambda x, w, b: F.conv2d(x, w, b, padding=1),
    "conv2d_same_even": lambda x, w: F.conv2d(F.pad(x, (0, 1, 0, 1)), w),       # 'same', k=2: extra bottom/right
    "conv2d_same_dilated_groups": lambda x, w: F.conv2d(x, w, padding="same", dilation=2, groups=2),
    "max_pool2d": lambda x: F.max_pool2d(x, 2), "max_pool2d_padded": lambda x: F.max_pool2d(x, 3, padding=1),
    "max_pool2d_overlapping": lambda x: F.max_pool2d(x, 3, 1, 1), "avg_pool2d": lambda x: F.avg_pool2d(x, 2),
    "avg_pool2d_padded": lambda x: F.avg_pool2d(x, (3, 2), padding=(1, 1)),
    "avg_pool2d_overlapping": lambda x: F.avg_pool2d(x, 3, 2, 1),
    "softmax": lambda x: torch.softmax(x, -1), "softmax_axis0": lambda x: torch.softmax(x, 0),
    "log_softmax": lambda x: torch.log_softmax(x, -1),
    "cross_entropy": F.cross_entropy, "cross_entropy_sum": lambda x, t: F.cross_entropy(x, t, reduction="sum"),
    "cross_entropy_none_spatial": lambda x, t: F.cross_entropy(x, t, reduction="none"),
    "mse": F.mse_loss, "mse_sum": lambda p, t: F.mse_loss(p, t, reduction="sum"),
    "layer_norm": lambda x: F.layer_norm(x, x.shape[-1:]),
    "layer_norm_affine_2d": lambda x, w, b: F.layer_norm(x, w.shape, w, b),
    "batch_norm_train": lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
    "batch_norm_train_2d": lambda x: F.batch_norm(x, None, None, training=True),
    "batch_norm_eval": _bn_eval,
}
# rows with no torch counterpart: dropout (torch draws its own masks; tinymoon's come from a numpy Generator)


def _compare_row(spec, arrays):
    rng = np.random.default_rng(0)
    wrt = list(spec.wrt) if spec.wrt is not None else [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    tts = [torch.tensor(a, requires_grad=(i in wrt)) for i, a in enumerate(arrays)]
    expected = TORCH[spec.name](*tts)

    def f(*vs):
        full = [tm.tensor(a) for a in arrays]
        for i, v in zip(wrt, vs):
            full[i] = v
        return spec.fn(*full)

    out, vjp_fn = tm.vjp(f, *[arrays[i] for i in wrt])
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12,
                               err_msg=f"{spec.name}: value")
    if "vjp" not in spec.modes or not expected.requires_grad:
        return
    u = rng.standard_normal(tuple(expected.shape))
    got = vjp_fn(u)
    want = torch.autograd.grad(expected, [tts[i] for i in wrt], torch.from_numpy(u), allow_unused=True)
    for i, g, h in zip(wrt, got, want):
        h = np.zeros(arrays[i].shape) if h is None else h.numpy()
        np.testing.assert_allclose(g.numpy(), h, rtol=1e-9, atol=1e-11, err_msg=f"{spec.name}: gradient of input {i}")


@pytest.mark.parametrize("spec", ROWS, ids=[r.name for r in ROWS])
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_op_table_matches_torch(spec, data):
    if spec.name not in TORCH:
        pytest.skip(f"{spec.name}: no torch equivalent mapped")
    _compare_row(spec, spec.inputs(data.draw, "float64"))


CONV_GRID = list(itertools.product([1, 2], [0, 1, "same", ((1, 0), (0, 2))], [1, 2], [1, 2], ["zeros", "circular"]))


@pytest.mark.parametrize("stride,padding,dilation,groups,mode", CONV_GRID,
                         ids=[f"s{s}-p{p}-d{d}-g{g}-{m}" for s, p, d, g, m in CONV_GRID])
def test_conv2d_grid_matches_torch(stride, padding, dilation, groups, mode):
    if padding == "same" and stride != 1:
        pytest.skip("'same' needs stride 1")
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 4 // groups, 3, 2)), rng.standard_normal(6)
    (pt, pb), (pl, pr) = ref_padding(padding, (3, 2), (dilation, dilation))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    xpad = F.pad(tx, (pl, pr, pt, pb), mode="circular" if mode == "circular" else "constant")
    expected = F.conv2d(xpad, tw, tb, stride=stride, dilation=dilation, groups=groups)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=mode)
    out, vjp_fn = tm.vjp(lambda a, c, d: tm.conv2d(a, c, d, **kw), x, w, b)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    u = rng.standard_normal(tuple(expected.shape))
    want = torch.autograd.grad(expected, [tx, tw, tb], torch.from_numpy(u))
    for g, h, name in zip(vjp_fn(u), want, ("x", "weight", "bias")):
        np.testing.assert_allclose(g.numpy(), h.numpy(), rtol=1e-10, atol=1e-11, err_msg=name)


def test_batch_norm_running_stats_match_torch():
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 5)) * 3 + 1
    rm, rv = np.zeros(2), np.ones(2)
    trm, trv = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    for _ in range(2):
        tm.batch_norm(x, rm, rv, momentum=0.3)
        F.batch_norm(torch.from_numpy(x), trm, trv, training=True, momentum=0.3)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-12)
    np.testing.assert_allclose(tm.batch_norm(x, rm, rv, training=False).numpy(),
                               F.batch_norm(torch.from_numpy(x), trm, trv, training=False).numpy(), rtol=1e-12)


def test_max_pool_ties_match_torch():
    """At ties the first maximum in row-major window order gets the gradient, as torch's CPU kernel."""
    x = np.round(np.random.default_rng(0).standard_normal((1, 2, 6, 6)))      # many ties
    tx = torch.tensor(x, requires_grad=True)
    F.max_pool2d(tx, 2).sum().backward()
    t = tm.tensor(x, requires_grad=True)
    tm.max_pool2d(t, 2).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), tx.grad.numpy())
