"""Versioned tensors: an in-place change of a tensor whose array a tape saved makes that tape refuse to
differentiate (GradientError naming the op, the input and the fix) instead of computing a wrong gradient."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon.autodiff.reverse import allow_in_place
from tinymoon.errors import DTypeError, GradientError


def _mlp(seed=0):
    # the second layer's input requires grad, so its weight is saved for the input cotangent
    return tm.nn.Sequential(tm.nn.Linear(3, 5, generator=seed), tm.nn.Tanh(), tm.nn.Linear(5, 2, generator=seed + 1))


def _x():
    return tm.randn(4, 3, seed=7)


def _grads(model):
    return [p.grad.numpy().copy() for p in model.parameters()]


@pytest.mark.parametrize("make_opt", [lambda ps: tm.optim.SGD(ps, lr=0.1, momentum=0.9),
                                      lambda ps: tm.optim.Adam(ps, lr=0.1),
                                      lambda ps: tm.optim.AdamW(ps, lr=0.1)])
def test_optimiser_step_between_forward_and_backward_raises(make_opt):
    model = _mlp()
    opt = make_opt(model.parameters())
    loss = model(_x()).sum()
    loss.backward(retain_graph=True)      # gives every parameter a gradient, so step() changes them all
    opt.step()
    loss2 = model(_x()).sum()
    with pytest.raises(GradientError) as info:
        loss.backward()
    msg = str(info.value)
    assert "linear" in msg and "(2, 5)" in msg and "modified in place" in msg
    assert "step() (or load_state_dict" in msg and "after loss.backward()" in msg
    loss2.backward()                      # a forward run after the step is fine


def test_unmodified_graph_is_fine_and_gradients_match():
    model = _mlp()
    model(_x()).sum().backward()
    want = _grads(model)
    model.zero_grad()
    loss = model(_x()).sum()
    opt = tm.optim.SGD(model.parameters(), lr=0.1)
    loss.backward()
    assert all(np.array_equal(a, b) for a, b in zip(want, _grads(model)))
    opt.step()                            # step after backward: the normal loop
    model.zero_grad()
    model(_x()).sum().backward()


def test_setitem_after_use_raises():
    w = tm.randn(3, seed=1, requires_grad=True)
    y = (w * w).sum()
    w[...] = 0.0
    with pytest.raises(GradientError, match=r"mul: its input 0, a leaf tensor .* shape \(3,\) was modified"):
        y.backward()
    assert w.version == 1 and np.all(w.numpy() == 0)


def test_setitem_before_use_is_fine_and_seen():
    w = tm.randn(3, seed=1, requires_grad=True)
    w[1] = 5.0
    (w * w).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * w.numpy())


def test_retain_graph_second_backward_after_an_update_raises():
    model = _mlp()
    opt = tm.optim.SGD(model.parameters(), lr=0.1)
    loss = model(_x()).sum()
    loss.backward(retain_graph=True)
    first = _grads(model)
    opt.step()
    with pytest.raises(GradientError, match="modified in place"):
        loss.backward(retain_graph=True)

    # without an update in between, a retained graph gives the same gradient again
    model = _mlp()
    loss = model(_x()).sum()
    loss.backward(retain_graph=True)
    first = _grads(model)
    model.zero_grad()
    loss.backward()
    assert all(np.array_equal(a, b) for a, b in zip(_grads(model), first))


@pytest.mark.parametrize("change", ["assign", "augmented", "load_state_dict", "module_to_float64"])
def test_every_in_place_path_bumps_the_version(change):
    model = _mlp()
    w = model[2].weight
    loss = model(_x()).sum()
    v0 = w.version
    if change == "assign":
        w.data = w.data * 2
    elif change == "augmented":
        w.data -= 1.0
    elif change == "load_state_dict":
        model.load_state_dict({k: np.array(v) for k, v in model.state_dict().items()})
    else:
        model.to(dtype="float64")         # replaces every parameter's array
    assert w.version > v0
    with pytest.raises(GradientError):
        loss.backward()


def test_an_update_the_gradient_does_not_use_is_fine():
    # y = x @ W.T + b with x a constant: the backward needs x only (for W), never W or b themselves
    lin = tm.nn.Linear(3, 2, generator=0)
    x = _x()
    loss = lin(x).sum()
    with tm.no_grad():
        lin.weight[...] = 0.0
        lin.bias[...] = 1.0
    loss.backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), np.ones((2, 1)) * x.numpy().sum(0))


def test_saved_output_and_non_leaf_setitem():
    x = tm.randn(3, seed=0, requires_grad=True)
    y = x.exp()                           # exp saves its output
    with pytest.raises(GradientError, match="computed by exp"):
        y[0] = 1.0


def test_vjp_sees_changes_to_its_primals():
    w = tm.randn(3, seed=2)
    out, vjp_fn = tm.vjp(lambda a: (a * a).sum(), w)
    vjp_fn()
    w[...] = 1.0                          # tm.vjp's primal is an alias of w: the tape saved w's array
    with pytest.raises(GradientError, match="modified in place"):
        vjp_fn()


def test_detach_shares_the_version_counter():
    x = tm.randn(3, seed=0)
    d = x.detach().requires_grad_()
    y = (d * d).sum()
    x[...] = 0.0
    with pytest.raises(GradientError):
        y.backward()


def test_vijp_refuses_a_changed_residual():
    w = tm.randn(3, seed=3)
    out, vijp_fn = tm.vijp(lambda a: a * w, tm.randn(3, seed=4))
    vijp_fn(np.ones(3, np.float32))
    w[...] = 2.0
    with pytest.raises(GradientError, match="modified in place"):
        vijp_fn(np.ones(3, np.float32))


def test_allow_in_place_is_explicit():
    # delayed gradients without weight stashing (PETRA's TapeStage) mean to use the updated weights
    model = _mlp()
    loss = model(_x()).sum()
    allow_in_place(loss, list(model.parameters()))
    with tm.no_grad():
        model[2].weight[...] = 0.0
    loss.backward()
    assert model[0].weight.grad is not None and np.all(model[0].weight.grad.numpy() == 0)


def test_setitem_refuses_a_silent_float_cast():
    x = tm.zeros(3)
    with pytest.raises(DTypeError, match="float32.*float64"):
        x[...] = np.ones(3)
    x[...] = tm.ones(3)
    assert x.version == 0 and np.all(x.numpy() == 1)     # no tape saved x: no counter yet
