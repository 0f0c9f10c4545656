"""Tensor: an array value, plus an optional tangent (forward mode) and tape node (reverse mode).

The array lives in `.data` (NumPy on CPU, CuPy on GPU). Operators and methods call the tensor-level
functions in tinymoon.functional, which apply primitives through tinymoon.autodiff.apply.
"""
from __future__ import annotations

from operator import attrgetter

import numpy as np

from . import backend
from .backend import as_dtype, get_array_module
from .errors import ArgumentError, DeviceError, DTypeError, GradientError, ShapeError, TinymoonError


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

    def watch_version(self):
        """Start counting in-place changes now (if nothing counts them yet) and return the count: for an
        algorithm that keeps something derived from this value across calls (Moonwalk's phase-1 record)."""
        if self._version is None:
            self._version = [0]
        return self._version[0]

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

    # to(device), astype(dtype), backward(...) and the operators are differentiable operations: they are
    # bound onto Tensor from tinymoon.functional and tinymoon.autodiff by _methods.py, which sit above this
    # module (tensor.py imports nothing of the engine).

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

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
            raise ShapeError(f"bool(): the truth value of a tensor with {self.data.size} elements is ambiguous; "
                             "reduce it first (.any(), .all(), or a comparison's .sum())")
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


# ---- where arrays enter: the one dtype policy ------------------------------------------------------------
#
# Every array that enters tinymoon from outside comes through tensor(), as_tensor() or from_dlpack(), and all
# three apply backend.as_dtype's policy: float32, float64, integers and bool; float16, bfloat16, complex,
# strings and objects are refused with a DTypeError (what creation has always refused, raw arrays handed to
# an op included). A foreign tensor (PyTorch, JAX, ...) enters through DLPack only, never stored as it is;
# any other foreign type is a TypeError naming it. Integer and bool tensors meeting float math are computed
# in the default float (float32) — see `floating` — never in NumPy's float16/float64 promotions.

_SCALARS = (bool, int, float, complex, np.generic)   # complex: refused by the dtype policy


def _entry_dtype(dtype, what):
    """backend.as_dtype's verdict on an incoming array's dtype, the entry point named in the error."""
    return as_dtype(dtype, what)


def _is_host_or_device_array(x):
    return isinstance(x, np.ndarray) or backend.is_cupy_array(x)


def _foreign_type_error(x, what):
    kind = type(x)
    return DTypeError(
        f"{what}: cannot make a tensor from {kind.__module__}.{kind.__qualname__}; give a NumPy/CuPy array, "
        "a (nested) list of numbers, a Python or NumPy scalar, or an object with __dlpack__ (PyTorch, JAX, "
        "...: converted by tm.from_dlpack)")


def _incoming(data, what):
    """data as something np.array / cupy can take: arrays and Python numbers as they are, a DLPack producer
    through from_dlpack, nested lists checked for their dtype; anything else a TypeError naming its type."""
    if _is_host_or_device_array(data) or isinstance(data, _SCALARS):
        return data
    if hasattr(data, "__dlpack__"):
        return from_dlpack(data).data
    if isinstance(data, (list, tuple, range)):
        try:
            a = np.asarray(data)
        except (ValueError, TypeError) as e:      # ragged nesting, numbers that do not convert
            raise ShapeError(f"{what}: the nested sequence is not a rectangular array of numbers ({e})") from None
        if a.dtype == object:
            raise DTypeError(f"{what}: the sequence holds objects that are not numbers "
                            f"(first element: {type(np.ravel(a)[0]).__name__ if a.size else '?'})")
        return data         # the list itself: its dtype is inferred as a Python list's (floats -> float32)
    raise _foreign_type_error(data, what)


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor holding a copy of `data` (a list, scalar, NumPy/CuPy array, Tensor, or any object with
    __dlpack__ such as a PyTorch tensor).

    Python floats become float32 (the default); NumPy arrays keep their dtype (float64 stays float64).
    float16, complex and other dtypes outside float32/float64/integers/bool raise DTypeError.
    """
    if isinstance(data, Tensor):
        data = data.data
    else:
        data = _incoming(data, "tensor")
    if device is None:
        device = backend.device_of(data)
    device = backend.normalize_device(device, "tensor")
    if dtype is None:
        dtype = data.dtype if hasattr(data, "dtype") and not isinstance(data, np.generic) else _infer_dtype(data)
    dtype = _entry_dtype(dtype, "tensor")
    if backend.is_cupy_array(data) or device != "cpu":
        arr = backend.to_device(np.asarray(data) if not backend.is_cupy_array(data) else data, device)
        arr = arr.astype(dtype, copy=True)
    else:
        try:
            arr = np.array(data, dtype=dtype, copy=True)
        except (OverflowError, ValueError, TypeError) as e:     # -3 as uint8, "x" as int64...
            raise DTypeError(f"tensor: cannot convert the data to {dtype} ({e})") from None
    return _grad_flag(Tensor._wrap(arr), requires_grad, "tensor")


def as_tensor(x, dtype=None, device=None, *, what=None):
    """x itself if it is already a Tensor (of the dtype asked for); a NumPy/CuPy array wrapped without a copy
    (its dtype checked); a DLPack producer (PyTorch, JAX...) through from_dlpack; else a new Tensor.
    `what` names the function converting its argument, in any error."""
    if isinstance(x, Tensor):
        if dtype is None or x.dtype == as_dtype(dtype, "as_tensor"):
            return x
        return x.astype(dtype)
    if what is None:
        return _as_tensor(x, dtype, device)
    try:
        return _as_tensor(x, dtype, device)
    except TinymoonError as e:
        raise _renamed(e, what) from None


def _renamed(e, what):
    """The same error, its message naming the function `what` whose argument failed to convert."""
    msg = str(e)
    for prefix in ("as_tensor: ", "tensor: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return type(e)(f"{what}: {msg}")


def _as_tensor(x, dtype, device):
    if dtype is None and device is None:
        if _is_host_or_device_array(x):
            if type(x) is not np.ndarray and not backend.is_cupy_array(x):
                x = np.asarray(x)        # a subclass (np.matrix, a masked array): plain ndarray semantics
            _entry_dtype(x.dtype, "as_tensor")
            return Tensor._wrap(x)       # an array: wrap without copying
        if hasattr(x, "__dlpack__") and not isinstance(x, np.generic):
            return from_dlpack(x)
    return tensor(x, dtype=dtype, device=device)


def floating(x, *, what=None):
    """as_tensor(x), with integer and bool tensors cast to the default float (float32): the entry of every
    function whose result is a float (exp, div, mean, softmax...). NumPy would pick float16 for (u)int8 and
    bool and float64 for int32/int64; tinymoon, like PyTorch, computes such math in float32."""
    x = as_tensor(x, what=what)
    if x.data.dtype.kind != "f":
        return Tensor._wrap(x.data.astype(backend.default_float))
    return x


def is_foreign_tensor(x):
    """A tensor of another library (it has __dlpack__, and is neither ours nor a NumPy/CuPy array)."""
    return (hasattr(x, "__dlpack__") and not isinstance(x, (Tensor, np.generic))
            and not _is_host_or_device_array(x))


def from_dlpack(x):
    """A tensor sharing memory with any DLPack producer (NumPy, CuPy, PyTorch, JAX arrays...). Its dtype must
    be one tinymoon computes in (float32, float64, integers, bool): float16 and complex raise DTypeError, as
    at creation."""
    if isinstance(x, Tensor):
        return x
    if not hasattr(x, "__dlpack__"):
        raise _foreign_type_error(x, "from_dlpack")
    name = f"{type(x).__module__}.{type(x).__qualname__}"
    dev = getattr(x, "__dlpack_device__", lambda: (1, 0))()
    try:
        if dev[0] == 1:     # kDLCPU
            a = np.from_dlpack(x)
        else:
            a = backend.cupy_module().from_dlpack(x)
    except (BufferError, TypeError, RuntimeError, ValueError) as e:
        # e.g. bfloat16 (NumPy has no such dtype), a PyTorch tensor that requires grad, a strided view
        raise DTypeError(f"from_dlpack: cannot import this {name} ({e}); detach it, make it contiguous, and "
                         "give it a dtype tinymoon computes in (float32, float64, an integer type or bool)") from None
    _entry_dtype(a.dtype, f"from_dlpack ({name})")
    return Tensor._wrap(a)


def _shape_of(what, shape):
    """The shape f(2, 3) or f((2, 3)) asks for: non-negative ints only."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_)) for n in shape):
        raise ShapeError(f"{what}: a shape is ints or one tuple of ints, got {shape!r}")
    if any(n < 0 for n in shape):
        raise ShapeError(f"{what}: negative size in shape {tuple(int(n) for n in shape)}")
    return tuple(int(n) for n in shape)


def _alloc(fn, shape, dtype, device, what):
    dtype = as_dtype(dtype, what)
    device = backend.normalize_device(device, what)
    shape = _shape_of(what, shape)
    xp = np if device == "cpu" else backend.cupy_module()
    if device == "cpu":
        return Tensor._wrap(fn(xp, shape, dtype))
    with xp.cuda.Device(int(device.split(":")[1])):
        return Tensor._wrap(fn(xp, shape, dtype))


def _grad_flag(t, requires_grad, what):
    if requires_grad and not backend.is_float(t.data.dtype):
        raise DTypeError(f"{what}: requires_grad=True needs a float dtype, got {t.dtype}")
    return t.requires_grad_(bool(requires_grad))


def zeros(*shape, dtype=None, device="cpu", requires_grad=False):
    return _grad_flag(_alloc(lambda xp, s, d: xp.zeros(s, d), shape, dtype, device, "zeros"), requires_grad, "zeros")


def ones(*shape, dtype=None, device="cpu", requires_grad=False):
    return _grad_flag(_alloc(lambda xp, s, d: xp.ones(s, d), shape, dtype, device, "ones"), requires_grad, "ones")


def full(shape, value, dtype=None, device="cpu", requires_grad=False):
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not isinstance(value, (bool, int, float, np.number)):
        raise ArgumentError(f"full: the fill value must be a number, got {type(value).__name__}")
    return _grad_flag(_alloc(lambda xp, s, d: xp.full(s, value, d), (shape,), dtype, device, "full"),
                      requires_grad, "full")


def zeros_like(t, dtype=None):
    t = as_tensor(t)
    return Tensor._wrap(t.xp.zeros_like(t.data, dtype=None if dtype is None else as_dtype(dtype, "zeros_like")))


def ones_like(t, dtype=None):
    t = as_tensor(t)
    return Tensor._wrap(t.xp.ones_like(t.data, dtype=None if dtype is None else as_dtype(dtype, "ones_like")))


def arange(start, stop=None, step=1, dtype=None, device="cpu"):
    for v in (start, stop, step):
        if (v is None and v is not stop) or (v is not None and (isinstance(v, (bool, np.bool_)) or not isinstance(
                v, (int, float, np.integer, np.floating)))):
            raise ArgumentError(f"arange: start, stop and step are real numbers, got {v!r}")
    if step == 0:
        raise ArgumentError("arange: step must not be 0")
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        dtype = backend.int64 if all(isinstance(v, int) for v in (start, stop, step)) else backend.default_float
    dtype = as_dtype(dtype, "arange")
    try:
        a = np.arange(start, stop, step, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as e:
        raise ArgumentError(f"arange({start}, {stop}, {step}) as {dtype}: {e}") from None
    return Tensor._wrap(backend.to_device(a, backend.normalize_device(device, "arange")))


def generator(seed=None):
    """A numpy Generator from a seed (a non-negative int, or a sequence of them), a Generator (returned as
    is) or None (fresh entropy)."""
    return _generator(seed, "generator")


def _generator(seed, what):
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)) or isinstance(seed, (float, np.floating)) or isinstance(seed, Tensor):
        raise ArgumentError(f"{what}: seed {seed!r} is not a seed; give a non-negative int, a numpy Generator or None")
    try:
        return np.random.default_rng(seed)
    except (ValueError, TypeError) as e:
        raise ArgumentError(f"{what}: seed {seed!r} is not a seed ({e}); give a non-negative int (or a sequence "
                            "of them), a numpy Generator or None") from None


def _random(draw, shape, seed, dtype, device, requires_grad, what):
    shape = _shape_of(what, shape)
    dtype, device = as_dtype(dtype, what), backend.normalize_device(device, what)
    a = draw(_generator(seed, what), shape).astype(dtype)
    return _grad_flag(Tensor._wrap(backend.to_device(a, device)), requires_grad, what)


def randn(*shape, seed=None, dtype=None, device="cpu", requires_grad=False):
    """Standard normal samples from an explicit seed or numpy Generator (never the global state)."""
    return _random(lambda g, s: g.standard_normal(s), shape, seed, dtype, device, requires_grad, "randn")


def rand(*shape, seed=None, dtype=None, device="cpu", requires_grad=False):
    """Uniform [0, 1) samples from an explicit seed or numpy Generator."""
    return _random(lambda g, s: g.random(s), shape, seed, dtype, device, requires_grad, "rand")
