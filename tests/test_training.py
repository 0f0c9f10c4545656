"""End to end: a short deterministic training run on tm.data.synthetic (the loss must fall below a
threshold), reproducibility from the seed, and the example script on synthetic data."""

import numpy as np
import pytest

import tinymoon as tm
from tinymoon import nn

from .conftest import load_example


def train_synthetic(seed=0, steps=60, optimizer="adam"):
    images, labels = tm.data.synthetic(n=512, shape=(1, 12, 12), classes=4, seed=seed)
    loader = tm.data.DataLoader(images, labels, batch_size=32, shuffle=True, generator=seed)
    g = tm.generator(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, generator=g), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 32, generator=g), nn.ReLU(), nn.Linear(32, 4, generator=g))
    opt = (tm.optim.Adam(model.parameters(), lr=3e-3) if optimizer == "adam"
           else tm.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    while len(losses) < steps:
        for x, y in loader:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.item()))
            if len(losses) == steps:
                break
    return model, losses


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_loss_falls(optimizer):
    model, losses = train_synthetic(optimizer=optimizer)
    assert losses[0] > 1.0                                    # ~log(4) at the start
    assert np.mean(losses[-10:]) < 0.3, losses[-10:]              # from ~1.4 after 60 steps
    x, y = tm.data.synthetic(n=200, shape=(1, 12, 12), classes=4, seed=0, split="test")
    model.eval()
    with tm.no_grad():
        pred = model(tm.tensor(x.astype(np.float32) / 255)).data.argmax(1)
    assert (pred == y).mean() > 0.95


def test_deterministic():
    _, a = train_synthetic(seed=1, steps=20)
    _, b = train_synthetic(seed=1, steps=20)
    assert a == b


def test_example_script_on_synthetic(tmp_path, capsys):
    mod = load_example("train_mnist")
    ckpt = tmp_path / "c.npz"
    hist = mod.main(["--synthetic", "--limit", "600", "--model", "mlp", "--epochs", "2", "--batch-size", "50",
                     "--no-progress", "--save", str(ckpt)])
    assert len(hist["test_acc"]) == 2 and hist["test_acc"][-1] > 0.9
    out = capsys.readouterr().out
    assert "test accuracy" in out
    ck = tm.load(ckpt)
    model = mod.build_model("mlp", 5)
    model.load_state_dict(ck["model"])
    assert ck["args"]["model"] == "mlp"
