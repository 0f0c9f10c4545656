"""Moonwalk against backprop: gradients (float64, 1e-9 relative), fragments, anchors, modes and baselines."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon import moonwalk as mw
from tinymoon import nn
from tinymoon.errors import NotInvertibleError

D = "float64"
LOSS = nn.CrossEntropyLoss()


def ortho_mlp(depth, width, act, din=None, dout=5, seed=0, dtype=D, gain=1.0):
    """depth hidden (width x width) layers with orthogonal weights: well conditioned at any depth."""
    g = tm.generator(seed)
    din = din or width
    layers = [nn.Linear(din, width, generator=g, dtype=dtype)]
    for _ in range(depth):
        layers += [act(), nn.Linear(width, width, generator=g, dtype=dtype)]
    layers += [act(), nn.Linear(width, dout, generator=g, dtype=dtype)]
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=gain, generator=g)
    return model


def data(shape, classes=5, seed=1, dtype=np.float64):
    r = np.random.default_rng(seed)
    return r.standard_normal(shape).astype(dtype), r.integers(0, classes, shape[0])


def grads_of(model, method, x, y, **kw):
    model.zero_grad()
    loss = method(model, LOSS, x, y, **kw)
    return loss, [p.grad.numpy().copy() for p in model.parameters()]


def rel_err(a, b):
    """Worst per-tensor relative error (max |a - b| / max |b|; an all-zero b must be matched exactly)."""
    worst = 0.0
    for u, v in zip(a, b):
        d, s = float(np.abs(u - v).max()), float(np.abs(v).max())
        worst = max(worst, 0.0 if d == 0 else (d / s if s > 0 else np.inf))
    return worst


def assert_matches_backprop(model, x, y, method=mw.backward, rtol=1e-9, **kw):
    l_ref, ref = grads_of(model, mw.backprop, x, y)
    loss, got = grads_of(model, method, x, y, **kw)
    assert float(loss.item()) == pytest.approx(float(l_ref.item()), rel=1e-12)
    err = rel_err(got, ref)
    assert err <= rtol, f"{method.__name__}: relative gradient error {err:.2e} > {rtol}"
    return err


# ---- MLPs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1, 8, 64])
def test_leaky_mlp_matches_backprop(depth):
    model = ortho_mlp(depth, 12, lambda: nn.LeakyReLU(0.5))
    x, y = data((4, 12))
    assert_matches_backprop(model, x, y)
    assert_matches_backprop(model, x, y, anchor_first=False)


def test_anchor_first_records_the_stem_cotangent():
    """Default: the stem's output cotangent is recorded (one activation), so h_0 is never computed."""
    model = ortho_mlp(4, 12, lambda: nn.LeakyReLU(0.5), din=30)
    x, y = data((4, 30))
    rec = mw.input_cotangent(model, LOSS, x, y)
    assert rec.h0 is None and rec.anchors == {0}
    assert rec.nbytes == 4 * 12 * 8                              # h_1 only
    assert mw.input_cotangent(model, LOSS, x, y, anchor_first=False).h0.shape == (4, 30)
    # a leading parameter-free unit (Flatten) belongs to the stem: the anchor is after the first Linear
    flat = nn.Sequential(nn.Flatten(), *list(model))
    x4 = x.reshape(4, 1, 5, 6)
    assert mw.input_cotangent(flat, LOSS, x4, y).anchors == {1}
    assert_matches_backprop(flat, x4, y)


@pytest.mark.parametrize("depth", [4, 64])
def test_relu_mlp_with_fragments(depth):
    model = ortho_mlp(depth, 12, nn.ReLU)
    x, y = data((4, 12))
    assert_matches_backprop(model, x, y)
    record = mw.input_cotangent(model, LOSS, x, y)
    assert record.nbytes > 0                       # ReLU's erased coordinates were recorded


def test_expanding_layers_with_fragments():
    g = tm.generator(3)
    model = nn.Sequential(nn.Linear(6, 10, generator=g, dtype=D), nn.LeakyReLU(0.5),
                          nn.Linear(10, 16, generator=g, dtype=D), nn.Tanh(),
                          nn.Linear(16, 8, generator=g, dtype=D), nn.LeakyReLU(0.5), nn.Linear(8, 3, generator=g, dtype=D))
    x, y = data((5, 6), classes=3)
    assert_matches_backprop(model, x, y)
    record = mw.input_cotangent(model, LOSS, x, y, anchor_first=False)
    assert ("frag", 0) in record.stash and ("frag", 2) in record.stash     # the two expanding layers
    assert_matches_backprop(model, x, y, anchor_first=False)


def test_missing_fragment_raises():
    model = ortho_mlp(3, 8, nn.ReLU)
    x, y = data((4, 8))
    record = mw.input_cotangent(model, LOSS, x, y, fragments=False)
    with pytest.raises(NotInvertibleError, match="relu"):
        mw.sweep(model, LOSS, x, y, record)


def test_fragments_restore_every_cotangent_exactly():
    """The sweep's h_i equal the true h_i (recorded as anchors at every unit) to rounding."""
    model = ortho_mlp(6, 10, nn.ReLU, din=7)
    x, y = data((4, 7))
    true = mw.input_cotangent(model, LOSS, x, y, anchors=1)
    restored = {}
    rec = mw.input_cotangent(model, LOSS, x, y, anchor_first=False)
    model.zero_grad()
    mw.sweep(model, LOSS, x, y, rec, on_step=lambda i, xi, hi: restored.__setitem__(i, hi.copy()))
    assert sorted(restored) == sorted(i for i in range(len(rec.units) - 1))
    for i, h in restored.items():
        np.testing.assert_allclose(h, true.stash.get(("anchor", i)), rtol=1e-11, atol=1e-14)
    # h_0 is the input gradient backprop computes
    xt = tm.tensor(x, requires_grad=True)
    LOSS(model(xt), y).backward()
    np.testing.assert_allclose(rec.h0, xt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_phase1_keeps_bits_not_activations():
    """Phase 1 of a leaky-ReLU MLP stores a bit per activation (no layer input); backprop stores floats."""
    width, batch, depth = 64, 32, 8
    model = ortho_mlp(depth, width, lambda: nn.LeakyReLU(0.1), dtype="float32")
    x, y = data((batch, width), dtype=np.float32)
    with tm.memory.measure() as m_mw:
        rec = mw.input_cotangent(model, LOSS, x, y, anchors=None)      # no error control: bits only
    with tm.memory.measure() as m_bp:
        LOSS(model(tm.tensor(x)), y).backward()
    masks = (depth + 1) * batch * width // 8
    stem = batch * width * 4                       # the stem's output cotangent (anchor_first)
    assert rec.nbytes == stem
    # + one weight: the engine counts a leaf residual for an instant before apply() uncounts it
    assert m_mw.peak_saved_bytes <= masks + stem + width * width * 4 + 1024
    assert m_bp.peak_saved_bytes >= depth * batch * width * 4


def test_accumulates_like_backward():
    model = ortho_mlp(3, 8, lambda: nn.LeakyReLU(0.5))
    x, y = data((4, 8))
    _, once = grads_of(model, mw.backward, x, y)
    mw.backward(model, LOSS, x, y)
    twice = [p.grad.numpy() for p in model.parameters()]
    for a, b in zip(twice, once):
        np.testing.assert_allclose(a, 2 * b, rtol=1e-12)


# ---- reversible networks and CNNs ------------------------------------------------------------------------

def _branch(w, g, scale=0.5):
    f = nn.Sequential(nn.Linear(w, w, generator=g, dtype=D), nn.ReLU(), nn.Linear(w, w, generator=g, dtype=D))
    for m in f:
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=scale, generator=g)
    return f


def revnet(depth, w=6, seed=0):
    g = tm.generator(seed)
    stem = nn.Linear(2 * w, 2 * w, generator=g, dtype=D)
    nn.init.orthogonal_(stem.weight, generator=g)
    blocks = [nn.RevBlock(_branch(w, g), _branch(w, g)) for _ in range(depth)]
    return nn.Sequential(stem, nn.Sequential(*blocks), nn.Linear(2 * w, 5, generator=g, dtype=D))


@pytest.mark.parametrize("depth", [2, 64])
def test_revnet_matches_backprop(depth):
    model = revnet(depth)
    x, y = data((4, 12))
    assert_matches_backprop(model, x, y)
    record = mw.input_cotangent(model, LOSS, x, y)
    assert not any(k[0] == "frag" for k in record.stash.items)   # RevBlocks are submersive whatever F and G are


def test_revblock_closed_form_against_backprop_per_block():
    """z̄ = x̄1; ȳ2 = x̄2 − z̄ J_F; ȳ1 = z̄ − ȳ2 J_G: the vijp undoes the block's vjp and gives θ̄_F, θ̄_G."""
    g = tm.generator(5)
    block = nn.RevBlock(_branch(4, g, 1.0), _branch(4, g, 1.0))
    x = np.random.default_rng(0).standard_normal((3, 8))
    y_bar = np.random.default_rng(1).standard_normal((3, 8))
    xt = tm.tensor(x, requires_grad=True)
    block.zero_grad()
    block(xt).backward(y_bar)
    ref = [p.grad.numpy().copy() for p in block.parameters()]
    block.zero_grad()
    y, y_rec = block.vijp(x, xt.grad.numpy())
    np.testing.assert_allclose(y_rec, y_bar, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(y, block(tm.tensor(x)).numpy(), rtol=1e-14)
    for a, b in zip([p.grad.numpy() for p in block.parameters()], ref):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_revnet_with_conv_branches():
    g = tm.generator(2)

    def br():
        return nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, generator=g, dtype=D), nn.LeakyReLU(0.2),
                             nn.Conv2d(2, 2, 1, generator=g, dtype=D))
    model = nn.Sequential(*[nn.RevBlock(br(), br()) for _ in range(4)], nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 2 * 2, 3, generator=g, dtype=D))
    x, y = data((3, 4, 4, 4), classes=3)
    assert_matches_backprop(model, x, y)
    assert_matches_backprop(model, x, y, method=mw.revbackprop, rtol=1e-11)


def test_cnn_patchify_circular_pooling():
    g = tm.generator(4)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 2, stride=2, generator=g, dtype=D), nn.LeakyReLU(0.5),                  # patchify
        nn.Conv2d(4, 4, 3, padding="same", padding_mode="circular", generator=g, dtype=D), nn.ReLU(),
        nn.Conv2d(4, 4, 1, generator=g, dtype=D), nn.LeakyReLU(0.5),                            # 1x1
        nn.AvgPool2d(2), nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular", generator=g, dtype=D),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 5, generator=g, dtype=D))
    x, y = data((3, 1, 16, 16))
    assert_matches_backprop(model, x, y)


def test_fork_unit_is_anchored():
    class Residual(nn.Module):
        def __init__(self, w, g):
            super().__init__()
            self.lin = nn.Linear(w, w, generator=g, dtype=D)

        def forward(self, x):
            return x + self.lin(x).tanh()
    g = tm.generator(7)
    model = nn.Sequential(nn.Linear(6, 6, generator=g, dtype=D), Residual(6, g), nn.LeakyReLU(0.5),
                          nn.Linear(6, 3, generator=g, dtype=D))
    x, y = data((4, 6), classes=3)
    assert_matches_backprop(model, x, y)
    assert mw.input_cotangent(model, LOSS, x, y).anchors == {0, 1}
    assert mw.input_cotangent(model, LOSS, x, y, anchor_first=False).anchors == {1}
    assert_matches_backprop(model, x, y, anchor_first=False)


# ---- pure forward, baselines ---------------------------------------------------------------------------

def test_pure_forward_matches_backprop():
    model = ortho_mlp(4, 6, lambda: nn.LeakyReLU(0.5))
    x, y = data((3, 6))
    assert_matches_backprop(model, x, y, mode="forward", chunk=4)
    relu = ortho_mlp(2, 6, nn.ReLU)
    with pytest.raises(NotInvertibleError):
        mw.backward(relu, LOSS, x, y, mode="forward")


def test_naive_forward_matches_backprop():
    model = ortho_mlp(2, 4, lambda: nn.LeakyReLU(0.5), dout=3)
    x, y = data((3, 4), classes=3)
    assert_matches_backprop(model, x, y, method=mw.naive_forward, rtol=1e-12)


@pytest.mark.parametrize("method", [mw.checkpointed_backward, mw.revbackprop])
def test_baselines_match_backprop(method):
    model = ortho_mlp(9, 8, nn.ReLU)
    x, y = data((4, 8))
    assert_matches_backprop(model, x, y, method=method, rtol=1e-13)
    model = revnet(5)
    x, y = data((4, 12))
    assert_matches_backprop(model, x, y, method=method, rtol=1e-11)


# ---- float32: anchors bound the error of the sweep -------------------------------------------------------

def test_anchors_reduce_float32_error():
    model64 = ortho_mlp(24, 32, lambda: nn.LeakyReLU(0.1), seed=3)
    x, y = data((16, 32))
    _, ref = grads_of(model64, mw.backprop, x, y)
    model32 = ortho_mlp(24, 32, lambda: nn.LeakyReLU(0.1), seed=3, dtype="float32")
    for p32, p64 in zip(model32.parameters(), model64.parameters()):
        p32.data[...] = p64.data
    x32 = x.astype(np.float32)
    errs = {}
    for a in (None, 4, "auto"):
        if a is None:                  # no error control: past tol the sweep warns (on_error="warn") or raises
            with pytest.warns(RuntimeWarning, match="lost accuracy"):
                _, got = grads_of(model32, mw.backward, x32, y, anchors=a, on_error="warn")
        else:
            _, got = grads_of(model32, mw.backward, x32, y, anchors=a)
        errs[a] = rel_err(got, ref)
    assert all(p.grad.dtype == np.float32 for p in model32.parameters())
    assert errs[None] > 1e-2                      # the unanchored sweep amplifies rounding error
    assert errs[4] < 1e-3 and errs["auto"] < 1e-3
    assert errs["auto"] < errs[None] / 100


def test_bad_arguments():
    model = ortho_mlp(1, 4, nn.ReLU)
    x, y = data((2, 4))
    with pytest.raises(ValueError):
        mw.backward(model, LOSS, x, y, mode="sideways")
    with pytest.raises(ValueError):
        mw.backward(model, LOSS, x, y, anchors=0)
    with pytest.raises(ValueError):
        mw.backward(model, LOSS, x, y, mode="forward", anchors=2)
    with pytest.raises(ValueError, match="Dropout"):
        mw.backward(nn.Sequential(nn.Dropout(0.5, generator=0), model), LOSS, x, y)


def test_layernorm_and_tanh_chain():
    """LayerNorm erases 2 scalars per sample (fragment); tanh and GELU divide by σ'."""
    g = tm.generator(9)
    model = nn.Sequential(nn.Linear(8, 8, generator=g, dtype=D), nn.LayerNorm(8, dtype=D), nn.Tanh(),
                          nn.Linear(8, 8, generator=g, dtype=D), nn.GELU(), nn.LayerNorm(8, dtype=D),
                          nn.Linear(8, 4, generator=g, dtype=D))
    x, y = data((5, 8), classes=4)
    assert_matches_backprop(model, x, y, rtol=1e-8)
    record = mw.input_cotangent(model, LOSS, x, y)
    assert ("frag", 1) in record.stash


def test_pure_forward_revnet():
    model = revnet(3, w=3)
    x, y = data((3, 6))
    assert_matches_backprop(model, x, y, mode="forward")


def test_float32_relu_gradients_stay_float32():
    model = ortho_mlp(3, 8, nn.ReLU, dtype="float32")
    x, y = data((4, 8), dtype=np.float32)
    mw.backward(model, LOSS, x, y)
    assert all(p.grad.dtype == np.float32 for p in model.parameters())


@pytest.mark.parametrize("depth", [32, 64])
def test_deep_circular_cnn(depth):
    """Circular 3x3 convolutions (near-identity kernels: well conditioned) between a patchify stem and
    pooling: the FFT vijp at every layer, exact to 1e-9 at depth 64."""
    g = tm.generator(11)
    r = np.random.default_rng(11)
    layers = [nn.Conv2d(1, 4, 2, stride=2, generator=g, dtype=D)]
    for _ in range(depth):
        conv = nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular", generator=g, dtype=D)
        w = 0.03 * r.standard_normal((4, 4, 3, 3))
        w[:, :, 1, 1] += np.eye(4)
        conv.weight.data[...] = w
        layers += [nn.LeakyReLU(0.8), conv]
    layers += [nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 3, generator=g, dtype=D)]
    model = nn.Sequential(*layers)
    x, y = data((2, 1, 8, 8), classes=3)
    assert_matches_backprop(model, x, y)
    assert_matches_backprop(model, x, y, anchor_first=False)      # the patchify stem inverted too


def test_custom_module_is_one_chain_unit():
    """A non-Sequential module whose data path is a chain (here Linear -> ReLU -> Linear, expanding) is one
    unit: its primitives' fragments are recorded together and restored in order."""
    class Block(nn.Module):
        def __init__(self, g):
            super().__init__()
            self.a = nn.Linear(6, 9, generator=g, dtype=D)
            self.b = nn.Linear(9, 6, generator=g, dtype=D)

        def forward(self, x):
            return self.b(self.a(x).relu())
    g = tm.generator(12)
    model = nn.Sequential(nn.Linear(6, 6, generator=g, dtype=D), Block(g), nn.LeakyReLU(0.5), Block(g),
                          nn.Linear(6, 3, generator=g, dtype=D))
    x, y = data((5, 6), classes=3)
    assert_matches_backprop(model, x, y)
    frags = mw.input_cotangent(model, LOSS, x, y).stash.get(("frag", 1))
    assert frags is not None and frags[0] is not None and frags[1] is not None    # expanding linear, relu
