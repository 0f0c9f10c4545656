"""Tensor creation, attributes, conversions, devices, dtypes, DLPack, repr."""
import numpy as np
import pytest

import tinymoon as tm
from tinymoon.errors import DeviceError, DTypeError, ShapeError


def test_creation_and_attributes(device):
    x = tm.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)
    assert x.shape == (2, 2) and x.ndim == 2 and x.size == 4 and len(x) == 2
    assert x.dtype == np.float32 and x.device.startswith(device)
    assert x.numpy().tolist() == [[1, 2], [3, 4]]
    assert tm.tensor(3.5).item() == 3.5
    assert tm.tensor([1, 2]).dtype == np.int64
    assert tm.tensor([True]).dtype == bool
    assert tm.tensor(np.zeros(3, np.float64)).dtype == np.float64     # numpy arrays keep their dtype
    assert tm.zeros(2, 3, device=device).shape == (2, 3)
    assert tm.ones((2, 3), dtype="float64").dtype == np.float64
    assert tm.full((2,), 7.0).numpy().tolist() == [7, 7]
    assert tm.arange(5).numpy().tolist() == [0, 1, 2, 3, 4]
    assert tm.arange(0, 1, 0.5).dtype == np.float32


def test_tensor_copies_its_input():
    a = np.ones(3, np.float32)
    t = tm.tensor(a)
    a[0] = 5
    assert t.numpy()[0] == 1


def test_random_needs_explicit_seed_and_is_reproducible():
    a = tm.randn(3, 4, seed=0).numpy()
    b = tm.randn(3, 4, seed=np.random.default_rng(0)).numpy()
    np.testing.assert_array_equal(a, b)
    assert tm.rand(5, seed=1).numpy().min() >= 0
    assert not np.array_equal(tm.randn(3, seed=1).numpy(), tm.randn(3, seed=2).numpy())


def test_astype_detach_requires_grad():
    x = tm.randn(3, seed=0, requires_grad=True)
    y = x.astype("float64")
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    d = x.detach()
    assert not d.requires_grad and d._node is None and np.shares_memory(d.data, x.data)
    with pytest.raises(DTypeError, match="float"):
        tm.tensor([1, 2]).requires_grad_()


def test_unsupported_dtypes_and_devices_are_clear():
    with pytest.raises(DTypeError, match="float16"):
        tm.tensor([1.0], dtype="float16")
    with pytest.raises(DeviceError, match="unknown device"):
        tm.tensor([1.0], device="tpu")


def test_cuda_without_gpu_says_how_to_install():
    if tm.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match=r'zeros: .*pip install -e "\.\[gpu\]"'):
        tm.zeros(2, device="cuda")


def test_operators_and_comparisons(device):
    a = tm.tensor([1.0, -2.0, 3.0], device=device)
    b = tm.tensor([2.0, 2.0, 2.0], device=device)
    np.testing.assert_allclose((a + b).numpy(), [3, 0, 5])
    np.testing.assert_allclose((a - b).numpy(), [-1, -4, 1])
    np.testing.assert_allclose((a * b).numpy(), [2, -4, 6])
    np.testing.assert_allclose((a / b).numpy(), [0.5, -1, 1.5])
    np.testing.assert_allclose((b ** 2).numpy(), [4, 4, 4])
    np.testing.assert_allclose((2 ** b).numpy(), [4, 4, 4])
    np.testing.assert_allclose((-a).numpy(), [-1, 2, -3])
    np.testing.assert_allclose((1 - a).numpy(), [0, 3, -2])
    assert (a > 0).numpy().tolist() == [True, False, True]
    assert (a == b).dtype == bool and not (a > 0).requires_grad
    assert (a * 2).dtype == np.float32          # Python numbers take the tensor's dtype


def test_int_tensor_meets_float_tensor():
    i = tm.tensor([1, 2])
    f = tm.tensor([0.5, 0.5], dtype="float64")
    assert (i * f).dtype == np.float64


def test_dlpack_round_trip_shares_memory():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = tm.from_dlpack(a)
    assert np.shares_memory(t.data, a)
    back = np.from_dlpack(t)
    assert np.shares_memory(back, a)


def test_dlpack_with_torch():
    torch = pytest.importorskip("torch")
    a = torch.arange(6, dtype=torch.float32)
    t = tm.from_dlpack(a)
    a[0] = 42
    assert t.numpy()[0] == 42
    b = torch.from_dlpack(t)
    assert b[0].item() == 42


def test_repr_is_readable():
    x = tm.tensor([1.0, 2.0], requires_grad=True)
    assert repr(x) == "tensor([1., 2.], requires_grad=True)"
    y = x * 2
    assert "grad_fn=mul" in repr(y)
    assert "dtype=float64" in repr(tm.zeros(1, dtype="float64"))


def test_item_of_non_scalar_raises():
    with pytest.raises(ShapeError, match="one element"):
        tm.zeros(3).item()
