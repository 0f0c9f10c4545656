"""Optimisers and schedules: closed-form updates, PyTorch's torch.optim step for step (when installed),
parameter groups, zero_grad, weight-decay exemptions, state_dict round trips."""
import math

import numpy as np
import pytest

import tinymoon as tm
from tinymoon import nn, optim


def make_params(seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(rng.standard_normal((3, 4)).astype(dtype)), nn.Parameter(rng.standard_normal(4).astype(dtype))]


def grads(seed, shapes):
    rng = np.random.default_rng(100 + seed)
    return [rng.standard_normal(s) for s in shapes]


def set_grads(params, gs):
    for p, g in zip(params, gs):
        p.grad = tm.tensor(g.astype(p.dtype))


def test_sgd_closed_form():
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    g1, g2 = np.array([0.5, 1.0]), np.array([-1.0, 2.0])
    p.grad = tm.tensor(g1)
    opt.step()
    d1 = g1 + 0.01 * np.array([1.0, -2.0])
    x1 = np.array([1.0, -2.0]) - 0.1 * d1
    np.testing.assert_allclose(p.numpy(), x1, rtol=1e-15)
    p.grad = tm.tensor(g2)
    opt.step()
    b2 = 0.9 * d1 + (g2 + 0.01 * x1)
    np.testing.assert_allclose(p.numpy(), x1 - 0.1 * b2, rtol=1e-15)


def test_adam_closed_form_first_step():
    p = nn.Parameter(np.array([1.0, -2.0, 3.0]))
    opt = optim.Adam([p], lr=0.01)
    g = np.array([0.3, -4.0, 1e-3])
    p.grad = tm.tensor(g)
    opt.step()
    # first step: m_hat = g, v_hat = g^2  ->  p - lr g / (|g| + eps)
    np.testing.assert_allclose(p.numpy(), np.array([1.0, -2.0, 3.0]) - 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-12)
    assert opt.state[p]["step"] == 1


def test_adamw_decouples_decay():
    p = nn.Parameter(np.array([2.0]))
    opt = optim.AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = tm.tensor(np.array([0.0]))
    opt.step()
    np.testing.assert_allclose(p.numpy(), [2.0 * (1 - 0.05)])    # zero gradient: only the decay acts
    q = nn.Parameter(np.array([2.0]))
    opt = optim.Adam([q], lr=0.1, weight_decay=0.5)
    q.grad = tm.tensor(np.array([0.0]))
    opt.step()
    np.testing.assert_allclose(q.numpy(), [2.0 - 0.1 * 1.0 / (1 + 1e-8 / 1.0)], rtol=1e-7)   # L2 in the gradient


TORCH_CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.02, weight_decay=0.1, betas=(0.85, 0.95))),
]


@pytest.mark.parametrize("name,kw", TORCH_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(TORCH_CASES)])
def test_matches_torch(name, kw):
    torch = pytest.importorskip("torch")
    ps = make_params()
    tps = [torch.tensor(p.numpy().copy(), requires_grad=True) for p in ps]
    opt = getattr(optim, name)(ps, **kw)
    topt = getattr(torch.optim, name)(tps, **kw)
    for step in range(6):
        gs = grads(step, [p.shape for p in ps])
        set_grads(ps, gs)
        for tp, g in zip(tps, gs):
            tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_float32_stays_float32():
    ps = make_params(dtype="float32")
    opt = optim.Adam(ps, lr=1e-2, weight_decay=0.1)
    set_grads(ps, grads(0, [p.shape for p in ps]))
    arrays = [p.data for p in ps]
    opt.step()
    assert all(p.dtype == np.float32 and p.data is a for p, a in zip(ps, arrays))     # in place, no promotion
    assert all(v.dtype == np.float32 for s in opt.state.values() for v in s.values() if hasattr(v, "dtype"))


def test_param_groups_and_skipping():
    a, b = make_params()
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[1]["lr"] == 1.0
    b0 = b.numpy().copy()
    a.grad = tm.tensor(np.ones(a.shape))
    opt.step()                                                # b has no grad: untouched
    np.testing.assert_array_equal(b.numpy(), b0)
    with pytest.raises(ValueError):
        optim.SGD([{"params": [a]}, {"params": [a]}], lr=0.1)
    with pytest.raises(ValueError):
        optim.SGD([], lr=0.1)


def test_zero_grad():
    ps = make_params()
    opt = optim.SGD(ps, lr=0.1)
    set_grads(ps, grads(0, [p.shape for p in ps]))
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in ps)
    opt.zero_grad()
    assert all(p.grad is None for p in ps)


def test_no_decay_bias_and_norm():
    net = nn.Sequential(nn.Linear(4, 3, generator=0, dtype="float64"), nn.LayerNorm(3, dtype="float64"))
    opt = optim.SGD(net.parameters(), lr=0.1, weight_decay=0.5, no_decay_bias_and_norm=True)
    assert [len(g["params"]) for g in opt.param_groups] == [1, 3]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    for p in net.parameters():
        p.grad = tm.zeros(*p.shape, dtype="float64")
    w0, ln_w0 = net[0].weight.numpy().copy(), net[1].weight.numpy().copy()
    opt.step()
    np.testing.assert_allclose(net[0].weight.numpy(), w0 * (1 - 0.05))
    np.testing.assert_array_equal(net[1].weight.numpy(), ln_w0)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_state_dict_round_trip(name, tmp_path):
    kw = dict(lr=0.01, momentum=0.9) if name == "SGD" else dict(lr=0.01)
    ps, qs = make_params(0), make_params(0)
    opt, opt2 = getattr(optim, name)(ps, **kw), getattr(optim, name)(qs, lr=0.5)
    for step in range(3):
        set_grads(ps, grads(step, [p.shape for p in ps]))
        opt.step()
    for p, q in zip(ps, qs):
        q.data[...] = p.data
    tm.save(opt.state_dict(), tmp_path / "opt.npz")
    opt2.load_state_dict(tm.load(tmp_path / "opt.npz"))
    assert opt2.param_groups[0]["lr"] == 0.01
    for step in range(3, 5):
        gs = grads(step, [p.shape for p in ps])
        set_grads(ps, gs)
        set_grads(qs, gs)
        opt.step()
        opt2.step()
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_load_state_dict_errors():
    ps = make_params()
    opt = optim.Adam(ps, lr=0.01)
    set_grads(ps, grads(0, [p.shape for p in ps]))
    opt.step()
    sd = opt.state_dict()
    other = optim.Adam([nn.Parameter(np.zeros((2, 2)))], lr=0.01)
    with pytest.raises(tm.errors.CheckpointError, match="param_groups"):
        other.load_state_dict(sd)
    bad = {"state": {0: {**sd["state"][0], "exp_avg": np.zeros((5, 5))}, 1: sd["state"][1]},
           "param_groups": sd["param_groups"]}
    with pytest.raises(tm.errors.CheckpointError, match="state/0/exp_avg"):
        optim.Adam(make_params(), lr=0.01).load_state_dict(bad)


def lrs(sched, n):
    out = []
    for _ in range(n):
        out.append(sched.optimizer.param_groups[0]["lr"])
        sched.step()
    return out


def test_schedules_closed_form():
    opt = optim.SGD(make_params(), lr=1.0)
    np.testing.assert_allclose(lrs(optim.StepLR(opt, 3, gamma=0.5), 7), [1, 1, 1, .5, .5, .5, .25])
    opt = optim.SGD(make_params(), lr=1.0)
    np.testing.assert_allclose(lrs(optim.CosineAnnealingLR(opt, T_max=4, eta_min=0.1), 5),
                               [0.1 + 0.9 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(5)])
    opt = optim.SGD(make_params(), lr=1.0)
    np.testing.assert_allclose(lrs(optim.LinearWarmup(opt, 4, start_factor=0.2), 6), [.2, .4, .6, .8, 1, 1])
    opt = optim.SGD(make_params(), lr=1.0)
    after = optim.CosineAnnealingLR(opt, T_max=2)
    np.testing.assert_allclose(lrs(optim.LinearWarmup(opt, 2, start_factor=0.5, after=after), 5),
                               [.5, .75, 1.0, 0.5, 0.0], atol=1e-15)


def test_schedules_match_torch():
    torch = pytest.importorskip("torch")
    cases = [(optim.StepLR, torch.optim.lr_scheduler.StepLR, dict(step_size=3, gamma=0.3)),
             (optim.CosineAnnealingLR, torch.optim.lr_scheduler.CosineAnnealingLR, dict(T_max=7, eta_min=0.01))]
    for ours, theirs, kw in cases:
        opt = optim.SGD(make_params(), lr=0.5)
        topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.5)
        s, ts = ours(opt, **kw), theirs(topt, **kw)
        for _ in range(10):
            assert opt.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
            s.step()
            topt.step()
            ts.step()
    opt = optim.SGD(make_params(), lr=0.5)
    topt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.5)
    s = optim.LinearWarmup(opt, 5, start_factor=0.25)
    ts = torch.optim.lr_scheduler.LinearLR(topt, start_factor=0.25, total_iters=5)
    for _ in range(8):
        assert opt.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
        s.step()
        topt.step()
        ts.step()


def test_scheduler_state_dict(tmp_path):
    opt = optim.SGD(make_params(), lr=1.0)
    s = optim.LinearWarmup(opt, 3, after=optim.CosineAnnealingLR(opt, T_max=10))
    for _ in range(5):
        s.step()
    tm.save(s.state_dict(), tmp_path / "s.npz")
    opt2 = optim.SGD(make_params(), lr=1.0)
    s2 = optim.LinearWarmup(opt2, 3, after=optim.CosineAnnealingLR(opt2, T_max=10))
    s2.load_state_dict(tm.load(tmp_path / "s.npz"))
    assert s2.last_epoch == 5 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    s.step()
    s2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
