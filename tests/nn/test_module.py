"""Module, Parameter, Sequential, ModuleList: registration, naming, modes, repr, state_dict and checkpoints."""
import os
from collections import OrderedDict

import numpy as np
import pytest

import tinymoon as tm
from tinymoon import nn
from tinymoon.errors import CheckpointError


def small_net(seed=0):
    g = tm.generator(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, generator=g), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(nn.MaxPool2d(2), nn.Flatten()),
        nn.Linear(4 * 4 * 4, 10, generator=g))


def test_parameter_is_a_tensor():
    p = nn.Parameter(np.ones(3))
    assert isinstance(p, tm.Tensor) and p.requires_grad and p.dtype == np.float64
    assert not nn.Parameter([1.0], requires_grad=False).requires_grad
    (p * 2).sum().backward()
    np.testing.assert_array_equal(p.grad.numpy(), [2, 2, 2])
    assert repr(p).startswith("Parameter containing:")


def test_named_parameters_children_modules():
    net = small_net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"]
    assert len(list(net.parameters())) == 6
    assert [n for n, _ in net.named_children()] == ["0", "1", "2", "3", "4"]
    assert sum(1 for _ in net.modules()) == 8
    assert net.num_parameters() == 4 * 9 + 4 + 4 + 4 + 64 * 10 + 10
    assert [n for n, _ in net.named_buffers()] == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]


def test_custom_module_and_sharing():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3, generator=0)
            self.b = self.a                                   # shared: listed once
            self.scale = nn.Parameter(np.ones(1, np.float32))
            self.register_buffer("count", np.zeros((), np.int64))

        def forward(self, x):
            return self.b(self.a(x)) * self.scale

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["scale", "a.weight", "a.bias"]
    assert list(net.state_dict()) == ["scale", "count", "a.weight", "a.bias"]
    y = net(tm.ones(2, 3))
    assert y.shape == (2, 3)
    net.a = nn.Identity()
    assert "b.weight" in [n for n, _ in net.named_parameters()]   # still reachable through b
    del net.b
    assert [n for n, _ in net.named_parameters()] == ["scale"]


def test_sequential_list_behaviour():
    net = small_net()
    assert len(net) == 5
    assert isinstance(net[0], nn.Conv2d) and isinstance(net[-1], nn.Linear)
    head = net[3:]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[1] is net[4]
    assert [type(m).__name__ for m in net] == ["Conv2d", "BatchNorm2d", "ReLU", "Sequential", "Linear"]
    with pytest.raises(IndexError):
        net[5]
    net.append(nn.Tanh())
    assert len(net) == 6
    x = tm.randn(2, 1, 8, 8, seed=0)
    assert net(x).shape == (2, 10)
    od = nn.Sequential(OrderedDict(fc=nn.Linear(2, 2, generator=0), act=nn.ReLU()))
    assert [n for n, _ in od.named_parameters()] == ["fc.weight", "fc.bias"]
    ml = nn.ModuleList([nn.Linear(2, 2, generator=i) for i in range(3)])
    assert len(ml) == 3 and len(list(ml.parameters())) == 6
    with pytest.raises(TypeError):
        nn.Sequential(nn.ReLU(), 3)


def test_train_eval_flags():
    net = small_net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_repr_is_nested():
    r = repr(small_net())
    assert "(0): Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))" in r
    assert "(3): Sequential(\n    (0): MaxPool2d(" in r
    assert r.endswith(")")


def test_state_dict_round_trip():
    a, b = small_net(0), small_net(1)
    a(tm.randn(4, 1, 8, 8, seed=0))                          # moves the running statistics
    sd = a.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                        "1.num_batches_tracked", "4.weight", "4.bias"]
    w_before = b[0].weight
    missing, unexpected = b.load_state_dict({k: v.copy() for k, v in sd.items()})
    assert missing == [] and unexpected == []
    assert b[0].weight is w_before                            # updated in place
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])
    x = tm.randn(2, 1, 8, 8, seed=3)
    a.eval(), b.eval()
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_load_state_dict_errors_name_the_key():
    net = small_net()
    sd = {k: v.copy() for k, v in net.state_dict().items()}
    bad = dict(sd)
    bad["4.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(CheckpointError, match="4.weight"):
        net.load_state_dict(bad)
    bad = dict(sd)
    bad["0.bias"] = sd["0.bias"].astype(np.float64)
    with pytest.raises(CheckpointError, match="0.bias"):
        net.load_state_dict(bad)
    bad = dict(sd)
    del bad["1.running_var"]
    bad["extra"] = np.zeros(1)
    with pytest.raises(CheckpointError, match="1.running_var") as e:
        net.load_state_dict(bad)
    assert "extra" in str(e.value)
    before = net[0].weight.numpy().copy()
    bad["0.weight"] = sd["0.weight"] + 1
    with pytest.raises(CheckpointError):
        net.load_state_dict(bad)
    np.testing.assert_array_equal(net[0].weight.numpy(), before)     # nothing changed on failure
    missing, unexpected = net.load_state_dict(bad, strict=False)
    assert missing == ["1.running_var"] and unexpected == ["extra"]
    np.testing.assert_array_equal(net[0].weight.numpy(), before + 1)


def test_checkpoint_round_trip_model_and_optimizer(tmp_path):
    net = small_net(0)
    opt = tm.optim.Adam(net.parameters(), lr=1e-2)
    x, y = tm.randn(8, 1, 8, 8, seed=1), tm.tensor(np.arange(8) % 10)
    for _ in range(3):
        opt.zero_grad()
        nn.CrossEntropyLoss()(net(x), y).backward()
        opt.step()
    path = tmp_path / "ckpt.npz"
    tm.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, path)
    ck = tm.load(path)
    assert ck["epoch"] == 3
    net2 = small_net(5)
    opt2 = tm.optim.Adam(net2.parameters(), lr=0.5)
    net2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["optimizer"])
    assert opt2.param_groups[0]["lr"] == 1e-2 and opt2.param_groups[0]["betas"] == (0.9, 0.999)
    # one more identical step on both: identical parameters
    for n_, o_ in ((net, opt), (net2, opt2)):
        o_.zero_grad()
        nn.CrossEntropyLoss()(n_(x), y).backward()
        o_.step()
    for (k, a), b in zip(net.state_dict().items(), net2.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_corrupted_checkpoint(tmp_path):
    net = small_net(0)
    path = tmp_path / "ckpt.npz"
    tm.save(net.state_dict(), path)
    data = bytearray(path.read_bytes())
    # flip bytes in the middle of the file (inside an array's data)
    mid = len(data) // 2
    data[mid:mid + 8] = bytes(b ^ 0xFF for b in data[mid:mid + 8])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        net.load_state_dict(tm.load(bad))
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(path.read_bytes()[: os.path.getsize(path) // 3])
    with pytest.raises(CheckpointError):
        tm.load(trunc)


def test_to_dtype():
    net = small_net().double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net[1].running_mean.dtype == np.float64 and net[1].num_batches_tracked.dtype == np.int64
    assert net(tm.randn(1, 1, 8, 8, seed=0, dtype="float64")).dtype == np.float64


def test_reassignment_keeps_order():
    net = small_net()
    net[0] = nn.Conv2d(1, 4, 3, padding=1, bias=False, generator=0)
    assert [n for n, _ in net.named_children()] == ["0", "1", "2", "3", "4"]
    assert [n for n, _ in net.named_parameters()][:2] == ["0.weight", "1.weight"]
    lin = nn.Linear(2, 2, generator=0)
    lin.bias = None
    assert list(lin.state_dict()) == ["weight"] and "bias=False" in repr(lin)
    with pytest.raises(TypeError):
        net[1].running_mean = [0.0] * 4                       # a buffer takes arrays only
