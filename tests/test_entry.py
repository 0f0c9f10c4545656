"""Where arrays enter: one dtype policy, foreign tensors through DLPack only, and tinymoon's own errors
(never a foreign exception) for the edge cases a careless user hits first."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon.errors import ArgumentError, DTypeError, ShapeError


# ---- the dtype policy ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float16, np.complex64, np.complex128, np.dtype("U3"), object])
def test_raw_arrays_of_refused_dtypes_do_not_pass_through_ops(dtype):
    a = np.ones(3, dtype=dtype)
    for fn in (tm.exp, tm.as_tensor, tm.tensor, lambda v: tm.ones(3) + v, lambda v: tm.sum(v)):
        with pytest.raises(DTypeError):
            fn(a)


@pytest.mark.parametrize("dtype", [np.uint8, np.bool_, np.int8, np.int32, np.int64])
def test_integer_and_bool_tensors_compute_float_math_in_float32(dtype):
    t = tm.tensor(np.array([[0, 1, 1], [1, 0, 1]], dtype=dtype))
    for fn in (tm.exp, tm.log, tm.sqrt, tm.tanh, tm.sigmoid, tm.gelu, tm.silu, tm.elu, tm.softplus, tm.mean,
               tm.var, tm.logsumexp, tm.softmax, tm.log_softmax, lambda v: v / v, lambda v: tm.div(v, 2)):
        with np.errstate(all="ignore"):
            assert fn(t).dtype == np.float32
    # integer math stays integer, and integers meeting a float tensor take its dtype
    if dtype != np.bool_:
        assert (t + t).dtype == t.dtype
    assert (t * tm.ones(3, dtype="float64")).dtype == np.float64


def test_python_complex_and_strings_are_refused():
    with pytest.raises(DTypeError):
        tm.tensor(1 + 2j)
    with pytest.raises(DTypeError):
        tm.tensor(["a", "b"])


@pytest.mark.parametrize("bad", ["abc", {"a": 1}, None, object(), {1, 2}])
def test_foreign_types_get_a_type_error_naming_them(bad):
    with pytest.raises(TypeError, match=type(bad).__name__):
        tm.as_tensor(bad)
    with pytest.raises(TypeError, match=type(bad).__name__):
        tm.exp(bad)


def test_array_subclass_enters_as_plain_ndarray():
    t = tm.as_tensor(np.ma.masked_array([[1.0, 2.0]]))
    assert type(t.data) is np.ndarray


# ---- foreign tensors (PyTorch as the example of a DLPack producer) -------------------------------------------

@pytest.fixture
def th():
    return pytest.importorskip("torch")


def test_as_tensor_of_a_torch_tensor_goes_through_dlpack(th):
    src = th.arange(6, dtype=th.float32).reshape(2, 3)
    t = tm.as_tensor(src)
    assert type(t.data) is np.ndarray and t.dtype == np.float32 and t.shape == (2, 3)
    src[0, 0] = 42.0                       # DLPack shares memory
    assert t.numpy()[0, 0] == 42.0
    assert type(tm.tensor(src).data) is np.ndarray
    np.testing.assert_allclose(tm.exp(src).numpy(), np.exp(src.numpy()))


def test_from_dlpack_applies_the_creation_policy(th):
    with pytest.raises(DTypeError, match="float16"):
        tm.from_dlpack(th.ones(3, dtype=th.float16))
    with pytest.raises(DTypeError, match="float16"):
        tm.as_tensor(th.ones(3, dtype=th.float16))
    with pytest.raises(DTypeError):
        tm.from_dlpack(th.ones(3, dtype=th.bfloat16))
    with pytest.raises(DTypeError, match="detach"):
        tm.as_tensor(th.ones(3, requires_grad=True))
    with pytest.raises(TypeError, match="list"):
        tm.from_dlpack([1.0, 2.0])


def test_mixing_a_torch_tensor_in_an_expression_is_a_clear_error(th):
    for expr in (lambda a, b: a + b, lambda a, b: b + a, lambda a, b: a * b, lambda a, b: tm.maximum(a, b),
                 lambda a, b: a @ b, lambda a, b: a < b):
        with pytest.raises(DTypeError, match="torch.Tensor.*from_dlpack"):
            expr(tm.ones(3), th.ones(3))


# ---- errors that used to escape as NumPy's ------------------------------------------------------------------

@pytest.mark.parametrize("op", [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b,
                                lambda a, b: a ** b, tm.maximum, tm.minimum, lambda a, b: a == b,
                                lambda a, b: a < b, lambda a, b: tm.where(a > 0, a, b)])
def test_broadcast_mismatch_is_a_shape_error_naming_the_shapes(op):
    with pytest.raises(ShapeError, match=r"\(2, 3\) and \(4,\)|\(2, 3\).*\(4,\)"):
        op(tm.ones(2, 3), tm.ones(4))


@pytest.mark.parametrize("seed", [-1, 1.5, True, "x", [-3]])
def test_bad_seeds(seed):
    with pytest.raises(ArgumentError, match="seed"):
        tm.randn(3, seed=seed)
    with pytest.raises(ArgumentError, match="seed"):
        tm.generator(seed)


def test_argmax_of_an_empty_tensor():
    for fn in (tm.argmax, tm.argmin):
        with pytest.raises(ShapeError, match="no element"):
            fn(tm.zeros(0))
        with pytest.raises(ShapeError, match="axis 0"):
            fn(tm.zeros(0, 3), axis=0)
        assert fn(tm.zeros(0, 3), axis=1).shape == (0,)     # empty result, but every row has elements


def test_batch_norm_of_one_sample():
    with pytest.raises(ShapeError, match="batch_norm"):
        tm.nn.BatchNorm2d(3)(tm.randn(1, 3, 1, 1, seed=0))


def test_gelu_of_a_0d_tensor():
    y = tm.gelu(tm.tensor(1.0, dtype="float64"))
    assert y.shape == () and abs(y.item() - 0.8413447460685429) < 1e-12


def test_zero_size_backward_conv2d_and_linear():
    x = tm.zeros(0, 1, 5, 5, dtype="float64", requires_grad=True)
    w = tm.randn(2, 1, 3, 3, seed=1, dtype="float64", requires_grad=True)
    b = tm.zeros(2, dtype="float64", requires_grad=True)
    tm.conv2d(x, w, b, padding=1).sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape and b.grad.shape == (2,)
    assert not w.grad.numpy().any() and not b.grad.numpy().any()
    for xs, ws in (((0, 4), (3, 4)), ((2, 0), (3, 0)), ((2, 4), (0, 4)), ((0, 5, 4), (3, 4))):
        x = tm.zeros(*xs, dtype="float64", requires_grad=True)
        w = tm.ones(*ws, dtype="float64", requires_grad=True)
        tm.linear(x, w).sum().backward()
        assert x.grad.shape == x.shape and w.grad.shape == w.shape and not w.grad.numpy().any()


def test_vijp_refuses_a_fragment_of_the_wrong_shape():
    x = tm.tensor(np.array([-1.0, 2.0, -3.0, 4.0]))
    f = lambda v: v.relu()                                  # noqa: E731
    _, vf = tm.vijp(f, x)
    u = np.array([1.0, 2.0, 3.0, 4.0])
    frags = vf.fragments(u)
    x_bar = tm.vjp(f, x)[1](u)[0]
    np.testing.assert_allclose(vf(x_bar, frags).numpy(), u)
    with pytest.raises(ShapeError, match="fragment of shape \\(1,\\), expected \\(2,\\)"):
        vf(x_bar, [np.array([7.0])])
    # an expanding linear layer and a layer norm refuse it too
    w = tm.randn(5, 3, seed=0, dtype="float64")
    for g in (lambda v: tm.linear(v, w), lambda v: tm.layer_norm(v, 3)):
        xx = tm.randn(2, 3, seed=1, dtype="float64")
        _, vf = tm.vijp(g, xx)
        out_shape = g(xx).shape
        uu = np.random.default_rng(0).standard_normal(out_shape)
        fr = vf.fragments(uu)
        with pytest.raises(ShapeError, match="fragment"):
            vf(tm.vjp(g, xx)[1](uu)[0], [np.ones(1)])
        np.testing.assert_allclose(vf(tm.vjp(g, xx)[1](uu)[0], fr).numpy(), uu, atol=1e-10)


def test_damaged_checkpoints_leave_no_file_open(tmp_path, recwarn):
    import gc
    import warnings
    from tinymoon.errors import CheckpointError
    path = tmp_path / "bad.npz"
    tm.save({"a": np.ones(3)}, path)
    whole = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("always", ResourceWarning)
        for content in (b"garbage", b"PK\x03\x04" + b"x" * 100, whole[: len(whole) // 2]):
            path.write_bytes(content)
            with pytest.raises(CheckpointError):
                tm.load(path)
        gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)]
