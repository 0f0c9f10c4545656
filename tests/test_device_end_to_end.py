"""The GPU backend end to end: a model, its training step, Moonwalk, the few-bit activations, a checkpoint,
the memory counter — each run on the device and held to the same computation on the CPU.

`gpu_device` (tests/conftest.py) is a real GPU where CuPy sees one (marker `gpu`), and otherwise the fake
device of tests/fake_cupy.py: host memory behind CuPy's rules (no implicit host copies, no host/device
mixing), so a rule that reaches for NumPy on device data fails here even without a GPU.
"""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon import moonwalk as mw
from tinymoon import nn

from .conftest import load_example

D = "float64"
LOSS = nn.CrossEntropyLoss()


def _mlp(g, act=nn.ReLU):
    return nn.Sequential(nn.Linear(12, 16, generator=g, dtype=D), act(), nn.Dropout(0.25, generator=g),
                         nn.Linear(16, 16, generator=g, dtype=D), nn.LayerNorm(16, dtype=D), act(),
                         nn.Linear(16, 5, generator=g, dtype=D))


def _cnn(g):
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, generator=g, dtype=D), nn.BatchNorm2d(4, dtype=D),
                         nn.GELU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, stride=1, padding=1, groups=2,
                                                                generator=g, dtype=D),
                         nn.SiLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 5, generator=g, dtype=D))


def _batches(shape, steps, seed=3):
    r = np.random.default_rng(seed)
    return [(r.standard_normal(shape), r.integers(0, 5, shape[0])) for _ in range(steps)]


def _train(model, batches, device, opt_cls, **opt_kw):
    """A few optimiser steps on `device`; the losses, then the parameters back on the host."""
    model.to(device)
    opt = opt_cls(model.parameters(), **opt_kw)
    losses = []
    for x, y in batches:
        opt.zero_grad()
        loss = LOSS(model(tm.tensor(x, device=device)), tm.tensor(y, device=device))
        loss.backward()
        opt.step()
        assert loss.device == model[0].weight.device
        losses.append(loss.item())
    return losses, [p.numpy() for p in model.parameters()]


@pytest.mark.parametrize("make, shape, opt_cls, opt_kw", [
    (_mlp, (8, 12), tm.optim.Adam, {"lr": 1e-2}),
    (_cnn, (4, 2, 8, 8), tm.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}),
], ids=["mlp-adam", "cnn-sgd"])
def test_training_steps_match_the_cpu(gpu_device, make, shape, opt_cls, opt_kw):
    batches = _batches(shape, steps=3)
    cpu_losses, cpu_params = _train(make(tm.generator(0)), batches, "cpu", opt_cls, **opt_kw)
    dev_losses, dev_params = _train(make(tm.generator(0)), batches, gpu_device, opt_cls, **opt_kw)
    np.testing.assert_allclose(dev_losses, cpu_losses, rtol=1e-10)
    for a, b in zip(dev_params, cpu_params):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def _ortho_mlp(g, depth=4, width=8):
    layers = [nn.Linear(width, width, generator=g, dtype=D)]
    for _ in range(depth):
        layers += [nn.LeakyReLU(0.2), nn.Linear(width, width, generator=g, dtype=D)]
    layers += [nn.ReLU(), nn.Linear(width, 5, generator=g, dtype=D)]
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, generator=g)
    return model


def _branch(w, g):
    return nn.Sequential(nn.Linear(w, w, generator=g, dtype=D), nn.Tanh())


def _revnet(g, w=4, depth=3):
    return nn.Sequential(nn.Linear(2 * w, 2 * w, generator=g, dtype=D),
                         nn.Sequential(*[nn.RevBlock(_branch(w, g), _branch(w, g)) for _ in range(depth)]),
                         nn.Linear(2 * w, 5, generator=g, dtype=D))


def _grads(model, method, x, y, **kw):
    model.zero_grad()
    loss = method(model, LOSS, x, y, **kw)
    return loss.item(), [p.grad.numpy() for p in model.parameters()]


@pytest.mark.parametrize("make, kw", [(_ortho_mlp, {}), (_ortho_mlp, {"anchors": 2}), (_revnet, {})],
                         ids=["mlp", "mlp-anchors", "revnet"])
def test_moonwalk_on_the_device_matches_cpu_backprop(gpu_device, make, kw):
    r = np.random.default_rng(1)
    x, y = r.standard_normal((6, 8)), r.integers(0, 5, 6)
    ref_loss, ref = _grads(make(tm.generator(0)), mw.backprop, x, y)
    model = make(tm.generator(0)).to(gpu_device)
    loss, got = _grads(model, mw.backward, tm.tensor(x, device=gpu_device), tm.tensor(y, device=gpu_device), **kw)
    assert model[0].weight.grad.device.startswith("cuda")
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bits", [1, 3])
def test_fewbit_activations_on_the_device(gpu_device, bits):
    """A few-bit GELU model trains on the device; its saved bytes are the packed codes, as on the CPU."""
    def run(device):
        g = tm.generator(0)
        model = nn.Sequential(nn.Linear(12, 16, generator=g, dtype=D), nn.GELU(bits=bits),
                              nn.Linear(16, 16, generator=g, dtype=D), nn.SiLU(bits=bits),
                              nn.Linear(16, 5, generator=g, dtype=D))
        return _train(model, _batches((8, 12), steps=2), device, tm.optim.SGD, lr=0.1)
    (cpu_losses, cpu_params), (dev_losses, dev_params) = run("cpu"), run(gpu_device)
    np.testing.assert_allclose(dev_losses, cpu_losses, rtol=1e-10)
    for a, b in zip(dev_params, cpu_params):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_saved_bytes_are_counted_on_the_device(gpu_device):
    x = tm.tensor(np.random.default_rng(0).standard_normal((64, 32)), device=gpu_device, dtype="float32",
                  requires_grad=True)
    with tm.memory.measure() as exact:
        tm.gelu(x * 1.0).sum()
    with tm.memory.measure() as packed:
        nn.GELU(bits=2)(x * 1.0).sum()
    assert exact.peak_saved_bytes >= 64 * 32 * 4
    assert packed.peak_saved_bytes == 64 * 32 * 2 // 8


def test_checkpoint_round_trip_from_the_device(gpu_device, tmp_path):
    model = _cnn(tm.generator(0)).to(gpu_device)
    model(tm.tensor(np.random.default_rng(0).standard_normal((4, 2, 8, 8)), device=gpu_device))  # BN stats move
    tm.save(model.state_dict(), tmp_path / "m.npz")
    on_host = _cnn(tm.generator(1))
    on_host.load_state_dict(tm.load(tmp_path / "m.npz"))
    back = _cnn(tm.generator(2)).to(gpu_device)
    back.load_state_dict(tm.load(tmp_path / "m.npz", map_location=gpu_device))
    for (name, a), b, c in zip(model.state_dict().items(), on_host.state_dict().values(),
                               back.state_dict().values()):
        host = tm.backend.to_device(a, "cpu")
        np.testing.assert_array_equal(tm.backend.to_device(b, "cpu"), host, err_msg=name)
        assert tm.backend.device_of(c) == tm.backend.device_of(a), name
        np.testing.assert_array_equal(tm.backend.to_device(c, "cpu"), host, err_msg=name)


def test_mixing_devices_is_a_clear_error(gpu_device):
    a = tm.tensor(np.ones(3), device=gpu_device)
    with pytest.raises(tm.errors.DeviceError, match="different devices"):
        a + tm.tensor(np.ones(3))
    model = _cnn(tm.generator(0))          # left on the CPU
    with pytest.raises(tm.errors.DeviceError):
        model(tm.tensor(np.zeros((1, 2, 8, 8)), device=gpu_device))


@pytest.mark.parametrize("estimator", ["trace", "sparse"])
def test_randomized_estimators_on_the_device(gpu_device, estimator):
    """Same generator seed -> the same probes / samples -> the same estimated gradients as on the CPU."""
    from tinymoon import randomized

    def grads(device):
        model = _cnn(tm.generator(0))
        if estimator == "trace":
            randomized.convert(model, probes=3, mode="multichannel", generator=7)
        else:
            randomized.convert(model, randomized.SparseVJP(0.3, generator=tm.generator(7)))
        model.to(device)
        x, y = _batches((4, 2, 8, 8), steps=1)[0]
        LOSS(model(tm.tensor(x, device=device)), tm.tensor(y, device=device)).backward()
        return [p.grad.numpy() for p in model.parameters()]
    for a, b in zip(grads(gpu_device), grads("cpu")):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_the_examples_run_on_the_device(gpu_device, tmp_path, capsys):
    """`--device cuda`: the CNN example and the Moonwalk example, end to end on synthetic data."""
    hist = load_example("train_mnist").main(["--synthetic", "--limit", "300", "--model", "cnn", "--epochs", "1",
                                         "--batch-size", "50", "--no-progress", "--device", gpu_device,
                                         "--save", str(tmp_path / "c.npz")])
    assert hist["test_acc"][-1] > 0.5
    assert "on cuda" in capsys.readouterr().out
    load_example("moonwalk_mnist").main(["--synthetic", "--limit", "256", "--depth", "4", "--width", "16",
                                     "--method", "both", "--device", gpu_device])
    out = capsys.readouterr().out
    assert "moonwalk test accuracy" in out and "backprop test accuracy" in out
