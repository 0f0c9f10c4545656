"""Every layer: forward against a NumPy (or PyTorch) reference, input gradients through check_grads (float64),
parameter gradients against finite differences; BatchNorm train vs eval; Dropout with a generator."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon import nn

from .helpers import check_input_grads, check_param_grads

F64 = "float64"


def rand(*shape, seed=0):
    return tm.tensor(np.random.default_rng(seed).standard_normal(shape))


def test_linear_forward_and_grads():
    layer = nn.Linear(5, 3, generator=0, dtype=F64)
    x = rand(4, 5)
    ref = x.numpy() @ layer.weight.numpy().T + layer.bias.numpy()
    np.testing.assert_allclose(layer(x).numpy(), ref, rtol=1e-12)
    check_input_grads(layer, x)
    assert check_param_grads(layer, x) == 2
    nobias = nn.Linear(5, 3, bias=False, generator=0, dtype=F64)
    assert nobias.bias is None and [n for n, _ in nobias.named_parameters()] == ["weight"]
    np.testing.assert_allclose(nobias(x).numpy(), x.numpy() @ nobias.weight.numpy().T, rtol=1e-12)


def test_linear_leading_axes():
    layer = nn.Linear(5, 3, generator=0, dtype=F64)
    x = rand(2, 4, 5)
    np.testing.assert_allclose(layer(x).numpy(), x.numpy() @ layer.weight.numpy().T + layer.bias.numpy(),
                               rtol=1e-12)


CONV_CASES = [
    dict(),
    dict(stride=2, padding=1),
    dict(padding="same", dilation=2),
    dict(groups=2, bias=False),
    dict(padding=(1, 2), stride=(1, 2)),
    dict(padding=1, padding_mode="circular"),
]


@pytest.mark.parametrize("kw", CONV_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "plain")
def test_conv2d_grads(kw):
    layer = nn.Conv2d(4, 4, 3, generator=1, dtype=F64, **kw)
    x = rand(2, 4, 6, 7, seed=2)
    check_input_grads(layer, x)
    check_param_grads(layer, x)


@pytest.mark.parametrize("kw", CONV_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "plain")
def test_conv2d_matches_torch(kw):
    torch = pytest.importorskip("torch")
    layer = nn.Conv2d(4, 4, 3, generator=1, dtype=F64, **kw)
    x = rand(2, 4, 6, 7, seed=2)
    (t, b), (l, r) = layer.padding
    xt = torch.tensor(x.numpy())
    if layer.padding_mode != "zeros":
        xt = torch.nn.functional.pad(xt, (l, r, t, b), mode=layer.padding_mode)
    else:
        xt = torch.nn.functional.pad(xt, (l, r, t, b))
    ref = torch.nn.functional.conv2d(xt, torch.tensor(layer.weight.numpy()),
                                     None if layer.bias is None else torch.tensor(layer.bias.numpy()),
                                     stride=layer.stride, dilation=layer.dilation, groups=layer.groups)
    np.testing.assert_allclose(layer(x).numpy(), ref.numpy(), rtol=1e-10, atol=1e-12)


def test_conv2d_same_keeps_size():
    for k, d in ((3, 1), (4, 1), (3, 2), (2, 3)):
        layer = nn.Conv2d(1, 2, k, padding="same", dilation=d, generator=0)
        assert layer(tm.zeros(1, 1, 9, 8)).shape == (1, 2, 9, 8)
    with pytest.raises(ValueError):
        nn.Conv2d(1, 2, 3, stride=2, padding="same")
    with pytest.raises(ValueError):
        nn.Conv2d(3, 2, 3, groups=2)


def _pool_ref(x, k, s, op):
    n, c, h, w = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    out = np.empty((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = op(x[:, :, i * s:i * s + k, j * s:j * s + k], axis=(2, 3))
    return out


@pytest.mark.parametrize("cls,op", [(nn.MaxPool2d, np.max), (nn.AvgPool2d, np.mean)])
@pytest.mark.parametrize("k,s", [(2, None), (3, 2)])
def test_pools(cls, op, k, s):
    layer = cls(k, stride=s)
    x = rand(2, 3, 7, 6, seed=3)
    np.testing.assert_allclose(layer(x).numpy(), _pool_ref(x.numpy(), k, s or k, op), rtol=1e-12)
    check_input_grads(layer, x)


def test_flatten_identity():
    x = rand(2, 3, 4, 5)
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, 1)(x).shape == (6, 4, 5)
    assert nn.Flatten(2)(x).shape == (2, 3, 20)
    check_input_grads(nn.Flatten(), x)
    assert nn.Identity()(x) is x


def test_layernorm():
    layer = nn.LayerNorm(6, dtype=F64)
    layer.weight.data[...] = np.linspace(0.5, 2, 6)
    layer.bias.data[...] = np.linspace(-1, 1, 6)
    x = rand(3, 4, 6, seed=4)
    a = x.numpy()
    ref = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-5) * layer.weight.numpy() \
        + layer.bias.numpy()
    np.testing.assert_allclose(layer(x).numpy(), ref, rtol=1e-10, atol=1e-12)
    check_input_grads(layer, x)
    assert check_param_grads(layer, x) == 2
    two = nn.LayerNorm((4, 6), dtype=F64)
    check_input_grads(two, x)
    assert nn.LayerNorm(6, elementwise_affine=False).weight is None


def test_batchnorm_train_vs_eval():
    bn = nn.BatchNorm2d(3, dtype=F64, momentum=0.1)
    bn.weight.data[...] = [1.0, 2.0, 0.5]
    bn.bias.data[...] = [0.0, -1.0, 1.0]
    x = rand(4, 3, 5, 5, seed=5) * 2.0 + 3.0
    a = x.numpy()
    mean, var = a.mean((0, 2, 3)), a.var((0, 2, 3))
    y = bn(x).numpy()
    shape = (1, 3, 1, 1)
    ref = (a - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-5) * bn.weight.numpy().reshape(shape) \
        + bn.bias.numpy().reshape(shape)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)
    n = a.size / 3
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var * n / (n - 1), rtol=1e-12)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    y_eval = bn(x).numpy()
    ref_eval = (a - rm.reshape(shape)) / np.sqrt(rv.reshape(shape) + 1e-5) * bn.weight.numpy().reshape(shape) \
        + bn.bias.numpy().reshape(shape)
    np.testing.assert_allclose(y_eval, ref_eval, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(bn.running_mean, rm)       # eval does not touch the running statistics
    assert int(bn.num_batches_tracked) == 1
    assert not np.allclose(y, y_eval)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_grads(training):
    bn = nn.BatchNorm2d(3, dtype=F64)
    bn.running_mean[...] = [0.1, -0.2, 0.3]
    bn.running_var[...] = [1.5, 0.5, 2.0]
    bn.train(training)
    x = rand(3, 3, 4, 4, seed=6)
    check_input_grads(bn, x)
    assert check_param_grads(bn, x) == 2


def test_batchnorm_matches_torch():
    torch = pytest.importorskip("torch")
    bn = nn.BatchNorm2d(3, dtype=F64)
    tb = torch.nn.BatchNorm2d(3, dtype=torch.float64)
    for _ in range(3):
        x = rand(4, 3, 5, 5, seed=_)
        np.testing.assert_allclose(bn(x).numpy(), tb(torch.tensor(x.numpy())).detach().numpy(), rtol=1e-9,
                                   atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, tb.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, tb.running_var.numpy(), rtol=1e-12)
    bn.eval(), tb.eval()
    x = rand(2, 3, 5, 5, seed=9)
    np.testing.assert_allclose(bn(x).numpy(), tb(torch.tensor(x.numpy())).detach().numpy(), rtol=1e-9, atol=1e-12)


def test_dropout():
    x = tm.ones(1000, dtype=F64)
    d = nn.Dropout(0.3, generator=0)
    y = d(x).numpy()
    assert set(np.unique(y)) <= {0.0, 1 / 0.7}
    assert abs((y == 0).mean() - 0.3) < 0.05
    y2 = nn.Dropout(0.3, generator=0)(x).numpy()
    np.testing.assert_array_equal(y, y2)                      # same seed, same mask
    assert not np.array_equal(y, d(x).numpy())                # the generator advances
    d.eval()
    assert d(x) is x

    def fresh(v):                                             # one mask for every call of check_grads
        d.generator = tm.generator(1)
        return d(v)
    d.train()
    check_input_grads(fresh, rand(4, 5))


ACTIVATIONS = [
    (nn.ReLU(), lambda a: np.maximum(a, 0)),
    (nn.LeakyReLU(0.2), lambda a: np.where(a > 0, a, 0.2 * a)),
    (nn.ELU(0.7), lambda a: np.where(a > 0, a, 0.7 * (np.exp(a) - 1))),
    (nn.GELU(), None),
    (nn.SiLU(), lambda a: a / (1 + np.exp(-a))),
    (nn.Tanh(), np.tanh),
    (nn.Sigmoid(), lambda a: 1 / (1 + np.exp(-a))),
    (nn.Softplus(beta=2.0), lambda a: np.log1p(np.exp(2 * a)) / 2),
]


@pytest.mark.parametrize("layer,ref", ACTIVATIONS, ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "")
def test_activations(layer, ref):
    x = rand(3, 7, seed=7)
    x = tm.tensor(np.where(np.abs(x.numpy()) < 1e-2, 0.5, x.numpy()))   # away from kinks
    if ref is not None:
        np.testing.assert_allclose(layer(x).numpy(), ref(x.numpy()), rtol=1e-10, atol=1e-12)
    check_input_grads(layer, x)


def test_activation_seam():
    act = nn.ReLU(bits=2)
    assert act.bits == 2 and act.fn_name == "relu"
    x = rand(3, 4)
    act._fn = lambda v: v * 2.0                               # what a few-bit converter does
    np.testing.assert_allclose(act(x).numpy(), 2 * x.numpy())
    assert "bits=2" in repr(act)
    assert nn.LeakyReLU(0.1).fn_params() == {"negative_slope": 0.1}
    with pytest.raises(ValueError):
        nn.ReLU(bits=0)


def test_softmax_modules():
    x = rand(3, 5)
    a = x.numpy()
    e = np.exp(a - a.max(-1, keepdims=True))
    np.testing.assert_allclose(nn.Softmax()(x).numpy(), e / e.sum(-1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(nn.LogSoftmax()(x).numpy(), np.log(e / e.sum(-1, keepdims=True)), rtol=1e-10)


def test_losses():
    logits = rand(6, 4, seed=8)
    labels = tm.tensor(np.array([0, 1, 2, 3, 1, 0]))
    a = logits.numpy()
    lse = np.log(np.exp(a).sum(1))
    per = lse - a[np.arange(6), labels.numpy()]
    np.testing.assert_allclose(nn.CrossEntropyLoss()(logits, labels).numpy(), per.mean(), rtol=1e-12)
    np.testing.assert_allclose(nn.CrossEntropyLoss("sum")(logits, labels).numpy(), per.sum(), rtol=1e-12)
    np.testing.assert_allclose(nn.CrossEntropyLoss("none")(logits, labels).numpy(), per, rtol=1e-12)
    check_input_grads(lambda v: nn.CrossEntropyLoss()(v, labels), logits)
    target = rand(6, 4, seed=9)
    np.testing.assert_allclose(nn.MSELoss()(logits, target).numpy(), ((a - target.numpy()) ** 2).mean(), rtol=1e-12)
    np.testing.assert_allclose(nn.MSELoss("sum")(logits, target).numpy(), ((a - target.numpy()) ** 2).sum(),
                               rtol=1e-12)
    check_input_grads(lambda v: nn.MSELoss()(v, target), logits)
    with pytest.raises(ValueError):
        nn.MSELoss("avg")
