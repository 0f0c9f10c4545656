"""Higher-order derivatives: grad of grad, jvp of grad, tm.hvp, tm.hessian, backward(create_graph=True) — exact,
or MissingRuleError naming the op and the order (every op of the table: tests/ops/test_ops.py)."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon.backend import get_array_module
from tinymoon.errors import GradientError, MissingRuleError
from tinymoon.functional import namespace

X = np.array([0.5, -1.0, 2.0])
V = np.array([1.0, 0.5, -2.0])


def f(v):
    """f = sum(exp(v) v^2) + v0 v1 v2: ∇f = exp(v)(v^2 + 2v) + (v1 v2, v0 v2, v0 v1)."""
    return (tm.exp(v) * v * v).sum() + v[0] * v[1] * v[2]


def hess(x):
    h = np.diag(np.exp(x) * (x * x + 4 * x + 2))
    h += np.array([[0, x[2], x[1]], [x[2], 0, x[0]], [x[1], x[0], 0]])
    return h


def third(x, v):
    """d/dx <H(x) v, v>: the directional third derivative, by hand."""
    d = np.exp(x) * (x * x + 6 * x + 6) * v * v
    return d + 2 * np.array([v[1] * v[2], v[0] * v[2], v[0] * v[1]])


def test_the_combinations_are_exact():
    x = tm.tensor(X)
    h_v = hess(X) @ V
    ror = tm.grad(lambda u: (tm.grad(f)(u) * tm.tensor(V)).sum())(x)             # reverse-over-reverse
    np.testing.assert_allclose(ror.numpy(), h_v, rtol=1e-12)
    _, fwd = tm.jvp(tm.grad(f), (x,), (V,))                                        # forward-over-reverse
    np.testing.assert_allclose(fwd.numpy(), h_v, rtol=1e-12)
    np.testing.assert_allclose(tm.hvp(f, x, V).numpy(), h_v, rtol=1e-12)
    np.testing.assert_allclose(tm.hessian(f)(x).numpy(), hess(X), rtol=1e-12)
    # value_and_grad and vjp nested: the value and the cotangent are both differentiated
    vg = tm.grad(lambda u: tm.value_and_grad(f)(u)[0] + tm.value_and_grad(f)(u)[1].sum())(x)
    np.testing.assert_allclose(vg.numpy(), tm.grad(f)(x).numpy() + hess(X).sum(1), rtol=1e-12)
    _, t = tm.jvp(lambda u: tm.vjp(f, u)[1](tm.tensor(1.0))[0], (x,), (V,))
    np.testing.assert_allclose(t.numpy(), h_v, rtol=1e-12)
    # third order, two ways
    g3 = tm.grad(lambda u: (tm.grad(lambda w: (tm.grad(f)(w) * tm.tensor(V)).sum())(u) * tm.tensor(V)).sum())(x)
    np.testing.assert_allclose(g3.numpy(), third(X, V), rtol=1e-12)
    _, t3 = tm.jvp(tm.grad(lambda u: (tm.grad(f)(u) * tm.tensor(V)).sum()), (x,), (V,))
    np.testing.assert_allclose(t3.numpy(), hess_third_dir(X, V), rtol=1e-12)


def hess_third_dir(x, v):
    """(d/dε) H(x + εv) v: the same directional third derivative, as the forward-over-reverse-over-reverse
    product T[v, v, .] (T symmetric, so it equals third())."""
    return third(x, v)


def test_closures_are_distinct_variables():
    # d/dv [d/dw <w, v>] = d/dv sum(v) = 1: the inner w is not the outer v, even at the same value
    x = tm.tensor(X)
    g = tm.grad(lambda v: tm.grad(lambda w: (w * v).sum())(x).sum())(x)
    np.testing.assert_allclose(g.numpy(), np.ones(3))
    # the jvp variable reaching the inner function by a closure carries its tangent
    _, t = tm.jvp(lambda v: tm.grad(lambda w: (w * v * v).sum())(x), (x,), (V,))
    np.testing.assert_allclose(t.numpy(), 2 * X * V)


def test_backward_create_graph():
    x = tm.tensor(X, requires_grad=True)
    f(x).backward(create_graph=True)
    g = x.grad
    assert g.requires_grad and not g.is_leaf           # on the tape, like PyTorch's x.grad with a grad_fn
    x.grad = None
    (g * tm.tensor(V)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), hess(X) @ V, rtol=1e-12)


def test_create_graph_needs_the_inputs_of_derived_residuals():
    # logsumexp keeps softmax(x) for its vjp: differentiating that vjp needs x, which a first-order forward drops
    x = tm.tensor(X, requires_grad=True)
    with pytest.raises(MissingRuleError, match=r"logsumexp: no derivative of order 2 .*tm\.higher_order"):
        tm.logsumexp(x * x).backward(create_graph=True)
    x = tm.tensor(X, requires_grad=True)
    with tm.higher_order():
        y = tm.logsumexp(x * x)
    y.backward(create_graph=True)
    g = x.grad
    x.grad = None
    g.sum().backward()
    p = np.exp(X * X) / np.exp(X * X).sum()
    hessian = np.diag(2 * p) + 4 * np.outer(X, X) * (np.diag(p) - np.outer(p, p))
    np.testing.assert_allclose(x.grad.numpy(), hessian.sum(1), rtol=1e-12)


def test_first_order_tape_keeps_nothing_more():
    x = tm.tensor(X, requires_grad=True)
    y = tm.exp(x) * x
    assert y._node.higher is None and y._node.level == 0
    before = tm.memory.saved_bytes()
    with tm.higher_order():
        z = tm.exp(x) * x
    assert z._node.higher is not None
    assert tm.memory.saved_bytes() - before == X.nbytes * 2   # the same residuals (exp's y, mul's factor): counted once


def test_the_tensor_namespace():
    t = tm.tensor(X)
    assert get_array_module(t) is namespace and get_array_module(X, t) is namespace
    assert get_array_module(X) is np and get_array_module(np.float64(1.0)) is np
    # inside a rule running on tensors, converting a tensor to an array (which would lose its derivative) raises
    tm.Tensor._strict = True
    try:
        with pytest.raises(GradientError, match="converted to an array"):
            np.asarray(t)
    finally:
        tm.Tensor._strict = False


def test_order_one_primitive_refuses():
    from tinymoon.autodiff.apply import apply
    from tinymoon.ops.base import Primitive

    class KernelOnly(Primitive):
        """y = 2x whose vjp runs a kernel on arrays only: orders = 1 (the default)."""
        name = "kernel_only"

        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def jvp(ctx, x_dot):
            return 2 * x_dot

        @staticmethod
        def vjp(ctx, y_bar):
            return (2 * y_bar,)

    def g(v):
        return (apply(KernelOnly, v) * v).sum()
    np.testing.assert_allclose(tm.grad(g)(tm.tensor(X)).numpy(), 4 * X)
    with pytest.raises(MissingRuleError, match="kernel_only: no derivative of order 2"):
        tm.hvp(g, tm.tensor(X), V)
    with pytest.raises(MissingRuleError, match="kernel_only: no derivative of order 2"):
        tm.grad(lambda u: tm.grad(g)(u).sum())(tm.tensor(X))


def test_order_three_is_named():
    from tinymoon.autodiff.apply import apply
    from tinymoon.ops.base import Primitive, call

    class Double(Primitive):
        """y = 2x, its vjp written with itself (2 ȳ = Double(ȳ)), differentiable to order 2 only: its vjp run on
        tensors records a Double node of level 1, whose own rules a third derivative would ask for."""
        name = "double2"
        orders = 2

        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def jvp(ctx, x_dot):
            return call(Double, x_dot)

        @staticmethod
        def vjp(ctx, y_bar):
            return (call(Double, y_bar),)

    def g(v):
        return (apply(Double, v) * v * v).sum()          # 2 sum(v^3): H = 12 diag(v)
    x = tm.tensor(X)
    np.testing.assert_allclose(tm.hvp(g, x, V).numpy(), 12 * X * V)
    np.testing.assert_allclose(tm.grad(lambda u: tm.grad(g)(u).sum())(x).numpy(), 12 * X)
    with pytest.raises(MissingRuleError, match="double2: no derivative of order 3"):
        tm.grad(lambda u: tm.grad(lambda w: tm.grad(g)(w).sum())(u).sum())(x)


def test_newton_example_converges(capsys):
    from .conftest import load_example
    newton = load_example("newton")
    theta = newton.main(["--samples", "120", "--features", "6", "--steps", "9"])
    f, _ = newton.problem(120, 6, 3, 1e-2)
    assert np.linalg.norm(tm.grad(f)(theta).numpy()) < 1e-10          # quadratic convergence: a few steps
    assert "forward-over-reverse" in capsys.readouterr().out


ACT_PARAMS = {"elu": {"alpha": 0.7}, "celu": {"alpha": 2.0}, "softplus": {"beta": 2.0, "threshold": 5.0},
              "leaky_relu": {"negative_slope": 0.2}, "hardtanh": {"min_val": -2.0, "max_val": 0.5}}


def _activation_cases():
    from tinymoon.ops import activations as A
    return sorted(A.PRIMITIVES)


@pytest.mark.parametrize("name", _activation_cases())
def test_every_activation_of_the_table_twice(name):
    """f'' from the table's own f' run on tensors (GELU through the erf primitive); piecewise-linear ones: 0."""
    from tinymoon.autodiff.apply import apply
    from tinymoon.kernels.activations import ACTIVATIONS
    from tinymoon.ops import activations as A
    from tinymoon.testing import check_grads
    x = np.random.default_rng(0).uniform(-4, 4, 30)
    pts = np.array(list(ACTIVATIONS[name].jumps(**ACT_PARAMS.get(name, {}))) + [0.0, -3.0, 3.0, 6.0])
    x = x[np.min(np.abs(x[:, None] - pts[None, :]), axis=1) > 1e-2]
    check_grads(lambda t: apply(A.PRIMITIVES[name], t, **ACT_PARAMS.get(name, {})), [x], modes=("hvp",))


def test_residual_policies_refuse_a_second_derivative():
    import tinymoon.fewbit as fb
    import tinymoon.randomized as R
    x = tm.tensor(np.linspace(-2, 2, 6).reshape(2, 3))
    with pytest.raises(MissingRuleError, match="tanh: no derivative of order 2 with the Quantised residual"):
        tm.hvp(lambda v: fb.tanh(v, bits=3).sum(), x, np.ones((2, 3)))
    w = tm.tensor(np.ones((4, 3)))
    with pytest.raises(MissingRuleError, match="linear: no derivative of order 2 with the RowSketch residual"):
        tm.grad(lambda u: tm.grad(lambda m: R.sketched_linear(x, m, probes=2, seed=0).sum())(u).sum())(w)


def test_more_refusals_and_shapes():
    # a backward(create_graph=True) inside a tm.jvp on a tape recorded without higher order: the tangents the
    # differentiable backward would push were not kept — it says so instead of dropping them
    def inner(v):
        w = tm.tensor(X, requires_grad=True)
        (w * v * v).sum().backward(create_graph=True)
        return w.grad
    with pytest.raises(MissingRuleError, match="tangents that the forward did not keep"):
        tm.jvp(inner, (tm.tensor(X),), (V,))
    # the Hessian of a function of a matrix has the matrix's shape twice
    m = tm.tensor(np.arange(6.0).reshape(2, 3) / 6)
    h = tm.hessian(lambda a: (a * a * a).sum())(m)
    assert h.shape == (2, 3, 2, 3)
    np.testing.assert_allclose(h.numpy().reshape(6, 6), np.diag(6 * m.numpy().ravel()), atol=1e-14)


def test_a_device_move_refuses_a_second_derivative():
    from .conftest import fake_gpu
    from tinymoon import backend
    if backend.cuda_available():
        pytest.skip("a real GPU is present: fake_gpu() is for machines without one")
    with fake_gpu():
        x = tm.tensor(X)
        with pytest.raises(MissingRuleError, match="to_device: no derivative of order 2"):
            tm.hvp(lambda v: (v.to("cuda") ** 3).sum(), x, V)
