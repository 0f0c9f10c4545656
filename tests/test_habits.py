"""Habits from Python, NumPy and PyTorch that should just work: protocols and thin aliases."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon import nn
from tinymoon.errors import ArgumentError


def test_iteration_unpacking_and_index_errors():
    x = tm.randn(3, 2, seed=0, dtype="float64", requires_grad=True)
    rows = list(x)
    assert len(rows) == 3 and all(r.shape == (2,) for r in rows)
    np.testing.assert_array_equal(np.stack([r.numpy() for r in x]), x.numpy())
    a, b, c = x
    (a.sum() * 2 + c.sum()).backward()                  # rows stay on the tape
    np.testing.assert_array_equal(x.grad.numpy(), [[2, 2], [0, 0], [1, 1]])
    with pytest.raises(IndexError):
        x[3]
    with pytest.raises(IndexError):
        x[0, -3]
    with pytest.raises(TypeError, match="0-d"):
        iter(tm.tensor(1.0)).__next__()
    assert [int(v) for v in tm.arange(4)] == [0, 1, 2, 3]


def test_format_of_scalars():
    t = tm.tensor(3.14159)
    assert format(t, ".3f") == "3.142" and f"{t:8.2f}" == "    3.14" and f"{tm.tensor([2.5]):.1e}" == "2.5e+00"
    assert format(t) == repr(t)
    with pytest.raises(TypeError, match="one-element"):
        format(tm.ones(3), ".2f")


def test_dim_and_keepdim_beside_axis_and_keepdims():
    x = tm.randn(2, 3, 4, seed=0, dtype="float64")
    for name in ("sum", "mean", "max", "min", "logsumexp", "var"):
        fn = getattr(tm, name)
        np.testing.assert_allclose(fn(x, dim=1, keepdim=True).numpy(), fn(x, axis=1, keepdims=True).numpy())
        np.testing.assert_allclose(getattr(x, name)(dim=(0, 2)).numpy(), fn(x, axis=(0, 2)).numpy())
    assert x.argmax(dim=2).shape == (2, 3) and tm.argmin(x, dim=0, keepdim=True).shape == (1, 3, 4)
    np.testing.assert_allclose(x.softmax(dim=0).numpy(), tm.softmax(x, axis=0).numpy())
    np.testing.assert_allclose(tm.log_softmax(x, dim=1).numpy(), tm.log_softmax(x, axis=1).numpy())
    assert x.unsqueeze(dim=1).shape == (2, 1, 3, 4) and x.unsqueeze(dim=1).squeeze(dim=1).shape == x.shape
    assert x.flatten(start_dim=1).shape == (2, 12)
    with pytest.raises(ArgumentError, match="not both"):
        tm.sum(x, axis=0, dim=1)


def test_torch_names_view_clone_numel_cat_stack():
    x = tm.randn(2, 3, seed=0, dtype="float64", requires_grad=True)
    assert x.view(3, 2).shape == (3, 2) and x.view(-1).shape == (6,)
    assert x.numel() == 6 and x.dim() == 2
    y = x.clone()
    assert y.data is not x.data and np.shares_memory(y.data, x.data) is False
    (y * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 3.0))
    assert tm.cat([x, x], dim=1).shape == (2, 6) and tm.cat is tm.concatenate
    assert tm.stack([x, x], dim=1).shape == (2, 2, 3)
    with pytest.raises(ArgumentError, match="list or tuple"):
        tm.cat(x)
    from tinymoon.testing import check_grads
    check_grads(tm.clone, [np.linspace(-1, 1, 5)])


def test_no_grad_and_set_grad_enabled():
    x = tm.ones(2, requires_grad=True)
    with tm.no_grad():
        assert not (x * 2).requires_grad
    with tm.set_grad_enabled(False):
        assert not tm.is_grad_enabled()
        with tm.set_grad_enabled(True):
            assert (x * 2).requires_grad
        assert not tm.is_grad_enabled()
    assert tm.is_grad_enabled()
    tm.set_grad_enabled(False)
    try:
        assert not (x * 2).requires_grad
    finally:
        tm.set_grad_enabled(True)

    @tm.no_grad()
    def infer(v):
        return v * 2
    assert not infer(x).requires_grad


def test_clip_grad_norm_and_value():
    model = nn.Sequential(nn.Linear(4, 3, generator=0, dtype="float64"), nn.Tanh(),
                          nn.Linear(3, 2, generator=1, dtype="float64"))
    model(tm.randn(5, 4, seed=2, dtype="float64")).sum().backward()
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    norm = np.sqrt(sum((g ** 2).sum() for g in grads))
    total = nn.utils.clip_grad_norm_(model.parameters(), max_norm=norm / 4)
    assert abs(total.item() - norm) < 1e-12
    clipped = np.sqrt(sum((p.grad.numpy() ** 2).sum() for p in model.parameters()))
    assert abs(clipped - norm / 4) < 1e-5
    for g, p in zip(grads, model.parameters()):                  # the direction is kept
        np.testing.assert_allclose(p.grad.numpy(), g / 4, rtol=1e-5)
    nn.utils.clip_grad_norm_(model.parameters(), max_norm=10 * norm)     # below the bound: untouched
    np.testing.assert_allclose(model[0].weight.grad.numpy(), grads[0] / 4, rtol=1e-5)
    inf_norm = nn.utils.clip_grad_norm_(model.parameters(), 1e9, norm_type=float("inf"))
    assert abs(inf_norm.item() - max(np.abs(p.grad.numpy()).max() for p in model.parameters())) < 1e-12
    nn.utils.clip_grad_value_(model.parameters(), 1e-3)
    assert all(np.abs(p.grad.numpy()).max() <= 1e-3 for p in model.parameters())
    with pytest.raises(ArgumentError):
        nn.utils.clip_grad_norm_(model.parameters(), -1.0)


def test_nn_functional_is_importable_under_pytorchs_name():
    import tinymoon.nn.functional as F
    from tinymoon.nn.functional import conv2d, cross_entropy, relu  # noqa: F401
    assert F.relu is tm.relu and F.mse_loss is tm.mse_loss and nn.functional is F
    assert set(tm.functional.__all__) <= set(dir(F))
