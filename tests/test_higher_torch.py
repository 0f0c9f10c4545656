"""PyTorch as the oracle of second derivatives, in float64 to 1e-10: tm.hvp against torch.func.jvp of torch.func.grad
(PyTorch's forward-over-reverse HVP), tm.hessian against torch.autograd.functional.hessian, and tm.grad of
tm.grad against torch.autograd.grad(create_graph=True) — for elementwise math, reductions, matmul and linear,
conv2d, softmax and cross-entropy, layer norm and an MLP loss. Skipped cleanly without torch."""
import numpy as np
import pytest

import tinymoon as tm

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.torch

RNG = np.random.default_rng(7)
A = RNG.standard_normal((3, 4))
W1, B1 = RNG.standard_normal((5, 4)) / 2, RNG.standard_normal(5) / 2
W2, B2 = RNG.standard_normal((3, 5)) / 2, RNG.standard_normal(3) / 2
LABELS = np.array([2, 0, 1])
C = RNG.standard_normal((3, 4))
IMG = RNG.standard_normal((2, 2, 5, 5))


def _unpack(theta, shapes, lib):
    """Split a flat parameter vector into tensors of `shapes` (getitem + reshape on either library)."""
    out, k = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(theta[k:k + n].reshape(s))
        k += n
    return out


MLP_SHAPES = [(5, 4), (5,), (3, 5), (3,)]


def tm_mlp(theta):
    w1, b1, w2, b2 = _unpack(theta, MLP_SHAPES, tm)
    h = tm.tanh(tm.linear(tm.tensor(A), w1, b1))
    return tm.cross_entropy(tm.linear(h, w2, b2), tm.tensor(LABELS))


def torch_mlp(theta):
    w1, b1, w2, b2 = _unpack(theta, MLP_SHAPES, torch)
    h = torch.tanh(F.linear(torch.tensor(A), w1, b1))
    return F.cross_entropy(F.linear(h, w2, b2), torch.tensor(LABELS))


def _t(a):
    return torch.tensor(a)


# name: (tinymoon f, torch f, x) — each f scalar-valued of one float64 tensor x
CASES = {
    "elementwise": (lambda x: (tm.exp(x) * x * x / (1 + x * x) + tm.sqrt(x * x + 1) + tm.log(x * x + 2) - x ** 3).sum(),
                    lambda x: (torch.exp(x) * x * x / (1 + x * x) + torch.sqrt(x * x + 1) + torch.log(x * x + 2)
                               - x ** 3).sum(),
                    RNG.standard_normal(6)),
    "reductions": (lambda x: tm.logsumexp(x.reshape(2, 3), axis=1).sum() + tm.var(x) * tm.mean(x * x)
                   + tm.max(x * x),
                   lambda x: torch.logsumexp(x.reshape(2, 3), 1).sum() + torch.var(x, unbiased=False) * torch.mean(x * x)
                   + torch.max(x * x),
                   RNG.standard_normal(6)),
    "matmul_linear": (lambda x: ((x.reshape(4, 3) @ tm.tensor(A)) ** 2).sum()
                      + (tm.linear(tm.tensor(A), x.reshape(4, 3).T, x[:3] * x[3:6]) ** 2).sum(),
                      lambda x: ((x.reshape(4, 3) @ _t(A)) ** 2).sum()
                      + (F.linear(_t(A), x.reshape(4, 3).T, x[:3] * x[3:6]) ** 2).sum(),
                      RNG.standard_normal(12)),
    "conv2d": (lambda x: (tm.conv2d(tm.tensor(IMG) * x[:1], x[1:].reshape(3, 2, 2, 2), padding=1, stride=(1, 2)) ** 2).sum(),
               lambda x: (F.conv2d(_t(IMG) * x[:1], x[1:].reshape(3, 2, 2, 2), padding=1, stride=(1, 2)) ** 2).sum(),
               RNG.standard_normal(25) / 2),
    "softmax_cross_entropy": (lambda x: tm.cross_entropy(x.reshape(3, 4), tm.tensor(LABELS))
                              + (tm.softmax(x.reshape(3, 4), axis=0) * tm.tensor(C)).sum()
                              + (tm.log_softmax(x.reshape(3, 4)) * tm.tensor(C)).sum(),
                              lambda x: F.cross_entropy(x.reshape(3, 4), torch.tensor(LABELS))
                              + (torch.softmax(x.reshape(3, 4), 0) * _t(C)).sum()
                              + (torch.log_softmax(x.reshape(3, 4), 1) * _t(C)).sum(),
                              RNG.standard_normal(12)),
    "layer_norm": (lambda x: (tm.layer_norm(x[:12].reshape(3, 4), 4, x[12:16], x[16:]) * tm.tensor(C)).sum(),
                   lambda x: (F.layer_norm(x[:12].reshape(3, 4), (4,), x[12:16], x[16:]) * _t(C)).sum(),
                   RNG.standard_normal(20)),
    "mlp_loss": (tm_mlp, torch_mlp, RNG.standard_normal(sum(int(np.prod(s)) for s in MLP_SHAPES)) / 2),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hvp_and_hessian_match_pytorch(name):
    f, g, x = CASES[name]
    v = np.random.default_rng(1).standard_normal(x.shape)
    h_v = torch.func.jvp(torch.func.grad(g), (_t(x),), (_t(v),))[1].numpy()
    np.testing.assert_allclose(tm.hvp(f, tm.tensor(x), v).numpy(), h_v, rtol=1e-10, atol=1e-10)
    hess = torch.autograd.functional.hessian(g, _t(x)).numpy()
    np.testing.assert_allclose(tm.hessian(f)(tm.tensor(x)).numpy(), hess, rtol=1e-10, atol=1e-10)
    # reverse-over-reverse, and backward(create_graph=True) under tm.higher_order(), give the same numbers
    ror = tm.grad(lambda u: (tm.grad(f)(u) * tm.tensor(v)).sum())(tm.tensor(x))
    np.testing.assert_allclose(ror.numpy(), h_v, rtol=1e-10, atol=1e-10)
    xt = tm.tensor(x, requires_grad=True)
    with tm.higher_order():
        y = f(xt)
    y.backward(create_graph=True)
    gx = xt.grad
    xt.grad = None
    (gx * tm.tensor(v)).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), h_v, rtol=1e-10, atol=1e-10)


def test_third_order_matches_pytorch():
    f, g, x = CASES["mlp_loss"]
    v = np.random.default_rng(2).standard_normal(x.shape)

    def tm_dir(u):
        return (tm.grad(lambda w: (tm.grad(f)(w) * tm.tensor(v)).sum())(u) * tm.tensor(v)).sum()

    def torch_dir(u):
        return (torch.func.grad(lambda w: (torch.func.grad(g)(w) * _t(v)).sum())(u) * _t(v)).sum()
    np.testing.assert_allclose(tm.grad(tm_dir)(tm.tensor(x)).numpy(), torch.func.grad(torch_dir)(_t(x)).numpy(),
                               rtol=1e-10, atol=1e-10)
