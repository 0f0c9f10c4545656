"""Tensor: an array value, plus an optional tangent (forward mode) and tape node (reverse mode).

The array lives in `.data` (NumPy on CPU, CuPy on GPU). Operators and methods call the tensor-level
functions in tinymoon.functional, which apply primitives through tinymoon.autodiff.apply.
"""
from __future__ import annotations

from operator import attrgetter

import numpy as np

from . import backend
from .backend import as_dtype, get_array_module
from .errors import DeviceError, DTypeError, GradientError, ShapeError


class Tensor:
    __slots__ = ("_data", "requires_grad", "grad", "_node", "tangent", "_version", "__weakref__")
    __array_priority__ = 1000     # numpy_array + tensor defers to Tensor.__radd__

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        t = tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        self._data, self.requires_grad, self.grad, self._node, self.tangent = t._data, t.requires_grad, None, None, None
        self._version = None

    @classmethod
    def _wrap(cls, array, requires_grad=False):
        """Fast constructor from an array the engine owns (no copy, no checks)."""
        t = object.__new__(cls)
        t._data, t.requires_grad, t.grad, t._node, t.tangent, t._version = array, requires_grad, None, None, None, None
        return t

    # ---- the value and its version -----------------------------------------------------------------
    # `_version` is None until a tape node saves this tensor's array as a residual; from then on it is a
    # one-element list [n] (shared with detach()ed aliases of the same array), and every in-place change
    # of the value adds 1 to n. The node records n when it saves the array, and the reverse sweep
    # refuses to use a residual whose tensor has moved on (autodiff/apply.py, reverse.py).
    def _set_data(self, array):
        # Assigning .data is a change of the value, and so is `t.data -= u` (it assigns the updated
        # array back): a residual saved from t no longer holds what the forward used.
        self._data = array
        v = self._version
        if v is not None:
            v[0] += 1

    data = property(attrgetter("_data"), _set_data, doc="The array (NumPy or CuPy). Assigning it (`t.data = a`, "
                    "`t.data -= u`) counts as an in-place change; writing into the array itself "
                    "(`t.data[...] = v`) does not: use `t[...] = v`.")

    def _bump_version(self):
        """Record an in-place change of the value (optimisers, load_state_dict, __setitem__ call this)."""
        v = self._version
        if v is not None:
            v[0] += 1

    @property
    def version(self):
        """How many in-place changes the value has had since a tape first saved it (0 before that)."""
        return 0 if self._version is None else self._version[0]

    def __setitem__(self, index, value):
        """`t[index] = value`, in place. Not differentiable: a tensor computed on the tape refuses it; a
        leaf accepts it, and a graph that saved the leaf's old value refuses to backpropagate through it."""
        if self._node is not None:
            raise GradientError(
                f"in-place assignment t[...] = v into a tensor computed by {self._node.prim.name} (shape "
                f"{self.shape}) would not be differentiated: build a new tensor instead (tm.where, "
                "concatenation), or assign into t.detach() if the tape should not see it")
        if isinstance(value, Tensor):
            value = value._data
        if hasattr(value, "dtype") and hasattr(value, "shape"):
            if backend.device_of(value) != backend.device_of(self._data):
                raise DeviceError(f"t[...] = v: t is on {self.device}, v on {backend.device_of(value)}; move v "
                                  "with .to(device) first")
            if value.dtype.kind == "f" and self._data.dtype.kind == "f" and value.dtype != self._data.dtype:
                raise DTypeError(f"t[...] = v: t is {self.dtype}, v is {value.dtype}; tinymoon never casts "
                                 "between float dtypes silently — cast v with .astype(...)")
        self._data[index] = value
        self._bump_version()

    # ---- attributes ------------------------------------------------------------------------------
    @property
    def shape(self):
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self):
        return self._data.ndim

    @property
    def size(self):
        return self._data.size

    @property
    def device(self):
        return backend.device_of(self._data)

    @property
    def xp(self):
        return get_array_module(self._data)

    @property
    def T(self):
        return self.transpose()

    @property
    def is_leaf(self):
        return self._node is None

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    # ---- conversions -----------------------------------------------------------------------------
    def numpy(self):
        """The value as a NumPy array (a copy from the GPU; the array itself on CPU)."""
        return backend.to_device(self.data, "cpu")

    def item(self):
        if self.data.size != 1:
            raise ShapeError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def to(self, device):
        """This tensor on `device` ('cpu', 'cuda', 'cuda:N'); differentiable (the cotangent moves back)."""
        from .functional import to_device
        return to_device(self, backend.normalize_device(device))

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def astype(self, dtype):
        """A cast; differentiable between float dtypes."""
        from .functional import astype
        return astype(self, as_dtype(dtype))

    def float(self):
        return self.astype("float32")

    def double(self):
        return self.astype("float64")

    def detach(self):
        """The same value, cut from the tape and from any tangent (shares memory, and the version counter:
        an in-place change through either is seen by a graph that saved the other)."""
        t = Tensor._wrap(self._data)
        v = self._version
        if v is None:
            v = self._version = [0]
        t._version = v
        return t

    def requires_grad_(self, flag=True):
        if flag and not backend.is_float(self.data.dtype):
            raise DTypeError(f"only float tensors can require gradients (this one is {self.dtype})")
        self.requires_grad = flag
        return self

    def zero_grad(self):
        self.grad = None

    def backward(self, y_bar=None, retain_graph=False):
        """Reverse mode: accumulate d<y_bar, self>/d(leaf) into each leaf's .grad."""
        from .autodiff.reverse import backward
        backward(self, y_bar, retain_graph=retain_graph)

    def __dlpack__(self, *args, **kwargs):
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __repr__(self):
        body = np.array2string(self.numpy(), precision=4, separator=", ", threshold=20, edgeitems=2,
                               prefix="tensor(")
        extras = []
        if self.dtype != backend.default_float:
            extras.append(f"dtype={self.dtype}")
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self._node is not None:
            extras.append(f"grad_fn={self._node.prim.name}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extras) + ")"

    def __bool__(self):
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor with {self.data.size} elements is ambiguous")
        return bool(self.data)

    def __hash__(self):
        return id(self)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())


# ---- creation ------------------------------------------------------------------------------------

def _infer_dtype(data):
    a = np.asarray(data)
    if a.dtype.kind == "f":
        return backend.float64 if a.dtype == np.float64 and isinstance(data, np.ndarray) else backend.default_float
    if a.dtype.kind in "iu":
        return a.dtype if isinstance(data, np.ndarray) else backend.int64
    return a.dtype


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor holding a copy of `data` (a list, scalar, NumPy/CuPy array or Tensor).

    Python floats become float32 (the default); NumPy arrays keep their dtype (float64 stays float64).
    """
    if isinstance(data, Tensor):
        data = data.data
    if device is None:
        device = backend.device_of(data)
    device = backend.normalize_device(device)
    if dtype is None:
        dtype = data.dtype if hasattr(data, "dtype") and not isinstance(data, np.generic) else _infer_dtype(data)
        if hasattr(data, "dtype"):
            dtype = as_dtype(dtype)
    else:
        dtype = as_dtype(dtype)
    if backend.is_cupy_array(data) or device != "cpu":
        arr = backend.to_device(np.asarray(data) if not backend.is_cupy_array(data) else data, device)
        arr = arr.astype(dtype, copy=True)
    else:
        arr = np.array(data, dtype=dtype, copy=True)
    t = Tensor._wrap(arr)
    if requires_grad:
        t.requires_grad_(True)
    return t


def as_tensor(x, dtype=None, device=None):
    """x itself if it is already a Tensor (of the dtype asked for), else a new Tensor."""
    if isinstance(x, Tensor) and (dtype is None or x.dtype == as_dtype(dtype)):
        return x
    if isinstance(x, Tensor):
        return x.astype(dtype)
    if hasattr(x, "shape") and hasattr(x, "dtype") and dtype is None and device is None:
        return Tensor._wrap(x)   # an array: wrap without copying
    return tensor(x, dtype=dtype, device=device)


def from_dlpack(x):
    """A tensor sharing memory with any DLPack producer (NumPy, CuPy, PyTorch arrays...)."""
    dev = getattr(x, "__dlpack_device__", lambda: (1, 0))()
    if dev[0] == 1:     # kDLCPU
        return Tensor._wrap(np.from_dlpack(x))
    return Tensor._wrap(backend.cupy_module().from_dlpack(x))


def _alloc(fn, shape, dtype, device):
    dtype = as_dtype(dtype)
    device = backend.normalize_device(device)
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    xp = np if device == "cpu" else backend.cupy_module()
    if device == "cpu":
        return Tensor._wrap(fn(xp, shape, dtype))
    with xp.cuda.Device(int(device.split(":")[1])):
        return Tensor._wrap(fn(xp, shape, dtype))


def zeros(*shape, dtype=None, device="cpu", requires_grad=False):
    return _alloc(lambda xp, s, d: xp.zeros(s, d), shape, dtype, device).requires_grad_(requires_grad)


def ones(*shape, dtype=None, device="cpu", requires_grad=False):
    return _alloc(lambda xp, s, d: xp.ones(s, d), shape, dtype, device).requires_grad_(requires_grad)


def full(shape, value, dtype=None, device="cpu", requires_grad=False):
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return _alloc(lambda xp, s, d: xp.full(s, value, d), (shape,), dtype, device).requires_grad_(requires_grad)


def zeros_like(t, dtype=None):
    return Tensor._wrap(t.xp.zeros_like(t.data, dtype=dtype))


def ones_like(t, dtype=None):
    return Tensor._wrap(t.xp.ones_like(t.data, dtype=dtype))


def arange(start, stop=None, step=1, dtype=None, device="cpu"):
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        dtype = backend.int64 if all(isinstance(v, int) for v in (start, stop, step)) else backend.default_float
    a = np.arange(start, stop, step, dtype=as_dtype(dtype))
    return Tensor._wrap(backend.to_device(a, backend.normalize_device(device)))


def generator(seed=None):
    """A numpy Generator from a seed, a Generator (returned as is) or None (fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _random(draw, shape, seed, dtype, device, requires_grad):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    a = draw(generator(seed), shape).astype(as_dtype(dtype))
    t = Tensor._wrap(backend.to_device(a, backend.normalize_device(device)))
    return t.requires_grad_(requires_grad)


def randn(*shape, seed=None, dtype=None, device="cpu", requires_grad=False):
    """Standard normal samples from an explicit seed or numpy Generator (never the global state)."""
    return _random(lambda g, s: g.standard_normal(s), shape, seed, dtype, device, requires_grad)


def rand(*shape, seed=None, dtype=None, device="cpu", requires_grad=False):
    """Uniform [0, 1) samples from an explicit seed or numpy Generator."""
    return _random(lambda g, s: g.random(s), shape, seed, dtype, device, requires_grad)
