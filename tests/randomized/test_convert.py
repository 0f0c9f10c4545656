"""tm.randomized.convert: estimators on the Conv2d / Linear layers of an existing model."""
import numpy as np

import tinymoon as tm
import tinymoon.randomized as R
from tinymoon import nn


def small_cnn(seed=0):
    g = tm.generator(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, generator=g), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1,
                         generator=g), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 10, generator=g))


def grads(model, x, y):
    for p in model.parameters():
        p.grad = None
    loss = nn.CrossEntropyLoss()(model(x), y)
    loss.backward()
    return float(loss.numpy()), [p.grad.numpy().copy() for p in model.parameters()]


def test_convert_sets_estimators_and_is_reproducible():
    x, y = tm.randn(16, 1, 8, 8, seed=1), np.arange(16) % 10
    model = small_cnn()
    loss0, exact = grads(model, x, y)
    R.convert(model, probes=4, mode="multichannel", generator=3, exclude=("0",))
    assert getattr(model[0], "grad_estimator", None) is None
    assert isinstance(model[2].grad_estimator, R.TraceEstimator) and isinstance(model[5].grad_estimator,
                                                                                R.TraceEstimator)
    loss1, est = grads(model, x, y)
    assert loss1 == loss0                                           # the forward pass is unchanged
    np.testing.assert_allclose(est[0], exact[0], rtol=1e-5, atol=1e-6)   # excluded layer: exact
    np.testing.assert_allclose(est[1], exact[1], rtol=1e-5, atol=1e-6)   # biases are exact
    assert not np.allclose(est[2], exact[2])                        # sketched weight: an estimate
    R.convert(model, probes=4, mode="multichannel", generator=3, exclude=("0",))
    _, again = grads(model, x, y)
    for a, b in zip(est, again):
        np.testing.assert_array_equal(a, b)                         # same seed, same gradients
    for layer in (model[2], model[5]):
        R.set_estimator(layer, None)                                # back to the exact layers
    _, back = grads(model, x, y)
    for a, b in zip(back, exact):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_convert_with_object_and_factory():
    x, y = tm.randn(8, 1, 8, 8, seed=1), np.arange(8)
    model = small_cnn()
    R.convert(model, R.SparseVJP(budget=0.3, rule="optimal", generator=0), layer_types=nn.Conv2d)
    assert getattr(model[5], "grad_estimator", None) is None
    grads(model, x, y)
    R.convert(model, lambda name, layer: R.LowRankVJP(rank=2, generator=0) if name == "5" else None)
    assert model[2].grad_estimator is None and isinstance(model[5].grad_estimator, R.LowRankVJP)
    grads(model, x, y)


def test_training_with_sketched_gradients_learns():
    imgs, labels = tm.data.synthetic(n=256, shape=(1, 8, 8), seed=0)
    model = small_cnn(1)
    R.convert(model, probes=8, generator=0)
    opt = tm.optim.Adam(model.parameters(), lr=1e-2)
    loader = tm.data.DataLoader(imgs, labels, batch_size=32, shuffle=True, generator=0,
                                 normalize=(0.3, 0.3))
    losses = []
    for _ in range(5):
        for xb, yb in loader:
            opt.zero_grad()
            loss = nn.CrossEntropyLoss()(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(float(loss.numpy()))
    assert np.mean(losses[-8:]) < 0.25 * np.mean(losses[:8])
