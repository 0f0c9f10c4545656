"""The three interpreters: reverse (backward, vjp, grad), forward (jvp), inverse (vijp)."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon.errors import DeviceError, DTypeError, GradientError, NotInvertibleError


def f(x):
    return (x.tanh() * x + 1.0).exp()


def test_backward_accumulates_into_leaves():
    x = tm.tensor([0.5, -1.0], dtype="float64", requires_grad=True)
    y = f(x)
    y.backward(np.ones(2))
    g1 = x.grad.numpy().copy()
    f(x).backward(np.ones(2))
    np.testing.assert_allclose(x.grad.numpy(), 2 * g1)


def test_vjp_grad_value_and_grad_agree():
    x = tm.tensor([0.3, -0.7, 1.1], dtype="float64")
    out, vjp_fn = tm.vjp(f, x)
    (g_vjp,) = vjp_fn(np.ones(3))
    g = tm.grad(lambda v: f(v).sum())(x)
    np.testing.assert_allclose(g_vjp.numpy(), g.numpy())
    val, g2 = tm.value_and_grad(lambda v: f(v).sum())(x)
    np.testing.assert_allclose(g2.numpy(), g.numpy())
    np.testing.assert_allclose(val.item(), f(x).numpy().sum())
    assert x.grad is None          # functional APIs never touch .grad


def test_grad_argnums_tuple():
    a = tm.tensor([1.0, 2.0], dtype="float64")
    b = tm.tensor([3.0, 4.0], dtype="float64")
    ga, gb = tm.grad(lambda x, y: (x * y).sum(), argnums=(0, 1))(a, b)
    np.testing.assert_allclose(ga.numpy(), b.numpy())
    np.testing.assert_allclose(gb.numpy(), a.numpy())


def test_jvp_matches_vjp_transpose():
    x = tm.tensor([0.3, -0.7, 1.1], dtype="float64")
    t = np.array([1.0, 0.0, 0.0])
    _, jt = tm.jvp(f, (x,), (t,))
    _, vjp_fn = tm.vjp(f, x)
    (row,) = vjp_fn(np.array([1.0, 0.0, 0.0]))
    assert np.isclose(jt.numpy()[0], row.numpy()[0])


def test_jvp_keeps_no_tape_and_no_residuals():
    before = tm.memory.saved_bytes()
    x = tm.randn(100, seed=0, dtype="float64")
    out, t = tm.jvp(f, (x,), (np.ones(100),))
    assert tm.memory.saved_bytes() == before
    assert out._node is None


def test_no_grad_records_nothing():
    x = tm.randn(3, seed=0, requires_grad=True)
    with tm.no_grad():
        y = f(x)
    assert not y.requires_grad and y._node is None
    assert tm.is_grad_enabled()


def test_backward_of_non_scalar_needs_a_cotangent():
    x = tm.randn(3, seed=0, requires_grad=True)
    with pytest.raises(GradientError, match="non-scalar"):
        f(x).backward()


def test_backward_twice_without_retain_graph_raises():
    x = tm.randn(3, seed=0, requires_grad=True)
    y = f(x)
    y.backward(np.ones(3))
    with pytest.raises(GradientError, match="retain_graph"):
        y.backward(np.ones(3))
    z = f(x)
    z.backward(np.ones(3), retain_graph=True)
    z.backward(np.ones(3))


def test_backward_without_requires_grad_raises():
    with pytest.raises(GradientError, match="does not require grad"):
        f(tm.randn(3, seed=0)).backward(np.ones(3))


def test_residuals_freed_after_backward():
    base = tm.memory.saved_bytes()
    x = tm.randn(1000, seed=0, requires_grad=True)
    y = f(x)
    assert tm.memory.saved_bytes() > base
    y.backward(np.ones(1000))
    assert tm.memory.saved_bytes() == base


def test_relu_keeps_one_bit_per_element():
    x = tm.randn(8000, seed=0, requires_grad=True)
    base = tm.memory.saved_bytes()
    y = x.relu()
    assert tm.memory.saved_bytes() - base == 1000
    del y


def test_measure_reports_peaks():
    x = tm.randn(10000, seed=0, requires_grad=True)
    with tm.memory.measure() as m:
        y = f(x)
        y.backward(np.ones(10000))
    assert m.peak_saved_bytes >= 3 * 40000 - 1
    assert m.peak_host_bytes > 0


def test_mixed_float_dtypes_raise():
    a = tm.zeros(2, dtype="float32")
    b = tm.zeros(2, dtype="float64")
    with pytest.raises(DTypeError, match="float32.*float64|astype"):
        a + b


def test_mixed_devices_raise():
    if not tm.cuda_available():
        pytest.skip("needs a GPU to put operands on two devices")
    with pytest.raises(DeviceError, match="different devices"):
        tm.zeros(2) + tm.zeros(2, device="cuda")


def test_vijp_chain_inverts_reverse_mode():
    x = tm.tensor([0.3, -0.7, 1.1], dtype="float64")
    out, vf = tm.vijp(lambda v: (v.tanh() * 2.0 + 1.0).exp(), x)
    u = np.array([0.1, 0.2, -0.3])
    _, vjp_fn = tm.vjp(lambda v: (v.tanh() * 2.0 + 1.0).exp(), x)
    x_bar = vjp_fn(u)[0]
    np.testing.assert_allclose(vf(x_bar).numpy(), u)


def test_vijp_fork_raises_naming_the_op():
    x = tm.tensor([0.3, -0.7], dtype="float64")
    with pytest.raises(NotInvertibleError, match="forks at mul"):
        tm.vijp(lambda v: v.tanh() * v, x)


def test_vijp_through_relu_needs_the_fragment():
    x = tm.tensor([0.5, -0.5, 2.0], dtype="float64")
    g = lambda v: (v.relu() + 1.0).exp()      # noqa: E731
    out, vf = tm.vijp(g, x)
    u = np.array([1.0, 2.0, 3.0])
    frags = vf.fragments(u)
    _, vjp_fn = tm.vjp(g, x)
    x_bar = vjp_fn(u)[0]
    with pytest.raises(NotInvertibleError, match="relu.*fragment"):
        vf(x_bar)
    np.testing.assert_allclose(vf(x_bar, frags).numpy(), u)
    assert frags[0].shape == (1,)             # one inactive unit: one stored number


def test_vijp_of_broadcast_data_path_is_explicit():
    x = tm.tensor([0.5], dtype="float64")
    c = tm.tensor([1.0, 2.0], dtype="float64")
    out, vf = tm.vijp(lambda v: v + c, x)
    with pytest.raises(NotInvertibleError, match="broadcast"):
        vf(np.ones(1))


def test_tape_does_not_keep_unsaved_activations_alive():
    """A node references parent nodes, not tensors: an activation no rule saved dies with its tensor."""
    import gc
    import weakref
    x = tm.randn(1000, seed=0, requires_grad=True)
    h = x * 2.0                      # mul keeps the constant 2.0 (for x's cotangent), not h
    ref = weakref.ref(h.data)
    out = h + 1.0                    # add keeps nothing
    del h
    gc.collect()
    assert ref() is None
    out.backward(np.ones(1000))
    np.testing.assert_allclose(x.grad.numpy(), 2.0)


def test_peak_saved_bytes_ignores_leaf_residuals_and_untaped_ops():
    x = tm.randn(1000, seed=0, dtype="float64")            # a leaf that needs no grad...
    w = tm.randn(1000, seed=1, dtype="float64", requires_grad=True)
    with tm.memory.measure() as m:
        y = x * w                                          # ...saved for w's cotangent: costs nothing extra
    assert m.peak_saved_bytes == 0
    with tm.memory.measure() as m:
        with tm.no_grad():
            (x.tanh() * 2.0).exp()                         # nothing taped: nothing counted, not even briefly
    assert m.peak_saved_bytes == 0
    del y


def test_bitmask_any_all_read_the_packed_bytes():
    from tinymoon.ops.masks import BitMask
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 17, 64, 100):
        for m in (np.ones(n, bool), np.zeros(n, bool), rng.random(n) < 0.5):
            b = BitMask.pack(m)
            assert b.any() == m.any() and b.all() == m.all()
        m = np.ones(n, bool)
        m[-1] = False
        assert not BitMask.pack(m).all()
