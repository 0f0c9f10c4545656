"""A stand-in for CuPy on machines without a GPU: the "fake device" the device-parametrised tests use.

What a real GPU run would catch that a CPU run cannot is mostly *plumbing*: a rule that calls NumPy on a
device array, mixes a host array into device arithmetic, reads a device scalar as a Python float without
asking, or keeps a residual on the wrong side. This module reproduces CuPy's behaviour at exactly those
boundaries, with the data kept in host memory:

- `fake_cupy.ndarray` is not a `numpy.ndarray`; `numpy.asarray(device_array)` raises TypeError (CuPy's
  "Implicit conversion to a NumPy array is not allowed"), and `.get()` is the explicit copy to the host;
- arithmetic, functions and assignments that mix a device array with a host `numpy.ndarray` raise
  TypeError, as CuPy does ("Unsupported type <class 'numpy.ndarray'>"); Python and NumPy scalars are fine;
- reductions and scalar indexing return 0-d device arrays, not NumPy scalars (CuPy never syncs silently);
- `cupy.cuda.runtime.getDeviceCount()`, `cupy.cuda.Device(i)`, `array.device.id`, the memory pool, DLPack;
- `ElementwiseKernel` cannot compile CUDA C here, so a kernel runs a Python body registered under its
  name (`register_kernel`) — the tests register the NumPy reference, so the plumbing around the kernel is
  exercised and the kernel's C source is left to the real-GPU tests (`pytest -m gpu`).

It checks where data lives, not numerics or speed; the real-GPU tests check those.
"""
from __future__ import annotations

import contextlib
import functools
import math
import sys
import types

import numpy as np

from . import cupy_api as api

_HOST_OK = {"asarray", "array", "asanyarray", "ascontiguousarray"}   # the explicit host -> device copies


class HostDeviceMixError(TypeError):
    pass


def _refuse(what):
    raise HostDeviceMixError(
        f"Unsupported type <class 'numpy.ndarray'>: {what} mixes a host NumPy array with device arrays "
        "(CuPy refuses this; move it with cupy.asarray or .get() first)")


def _unwrap(obj, where):
    """Device arrays -> their host data; host arrays -> refused; containers recursively."""
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, np.ndarray):
        _refuse(where)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o, where) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v, where) for k, v in obj.items()}
    return obj


def _wrap(obj):
    """Results of NumPy calls -> device arrays (scalars become 0-d arrays, as CuPy returns them)."""
    if isinstance(obj, np.ndarray):
        return ndarray(obj)
    if isinstance(obj, np.generic):
        return ndarray(np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


def _device_call(fn, where):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        return _wrap(fn(*_unwrap(args, where), **_unwrap(kwargs, where)))
    return call


class _Device:
    def __init__(self, id=0):
        self.id = int(id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass

    def __eq__(self, other):
        return isinstance(other, _Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)


class ndarray:
    """A device array: host data behind CuPy's boundary rules."""
    __array_priority__ = 1000

    def __init__(self, a):
        self._a = a

    # -- attributes that are not arrays
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    device = property(lambda self: _Device(0))
    T = property(lambda self: ndarray(self._a.T))
    real = property(lambda self: ndarray(self._a.real))
    imag = property(lambda self: ndarray(self._a.imag))

    @property
    def base(self):
        b = self._a.base
        return None if b is None else ndarray(b)

    # -- the explicit way back to the host
    def get(self, stream=None, order="C", out=None):
        return np.array(self._a, copy=True, order=order)

    def item(self):
        return self._a.item()

    def tolist(self):
        return self._a.tolist()

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct "
                        "a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        where = f"numpy.{ufunc.__name__}{'' if method == '__call__' else '.' + method}"
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs, where), **_unwrap(kwargs, where)))

    def __array_function__(self, func, types_, args, kwargs):
        return _wrap(func(*_unwrap(args, f"numpy.{func.__name__}"), **_unwrap(kwargs, f"numpy.{func.__name__}")))

    # -- Python protocol
    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a)

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return self._a.__index__()

    def __repr__(self):
        return "fake_cupy." + repr(self._a)

    def __getitem__(self, key):
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key, value):
        self._a[_index(key)] = _unwrap(value, "__setitem__")

    def __dlpack__(self, *args, **kwargs):
        return self._a.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA, device 0

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if casting is not None or subok is not None:
            raise TypeError("cupy.ndarray.astype does not take casting= or subok=")
        return ndarray(self._a.astype(dtype, order=order, copy=copy))

    def __getattr__(self, name):
        if name.startswith("_") or name not in api.NDARRAY:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r} (CuPy 14.2 has no such member)")
        attr = getattr(self._a, name)
        return _device_call(attr, f"ndarray.{name}") if callable(attr) else _wrap(attr)


def _index(key):
    """CuPy accepts device arrays, slices, ints and host integer/bool index arrays in indexing."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    return key


def _binary(name):
    def op(self, other):
        return _wrap(getattr(self._a, name)(_unwrap(other, f"ndarray.{name}")))
    op.__name__ = name
    return op


for _name in ("add", "radd", "sub", "rsub", "mul", "rmul", "truediv", "rtruediv", "floordiv", "rfloordiv",
              "mod", "rmod", "pow", "rpow", "matmul", "rmatmul", "and", "rand", "or", "ror", "xor", "rxor",
              "lshift", "rlshift", "rshift", "rrshift", "lt", "le", "gt", "ge", "eq", "ne",
              "iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "iand", "ior", "ixor", "ilshift",
              "irshift"):
    _dunder = f"__{_name}__"
    if _name.startswith("i"):
        def _inplace(self, other, _d=_dunder):
            getattr(self._a, _d)(_unwrap(other, f"ndarray.{_d}"))
            return self
        setattr(ndarray, _dunder, _inplace)
    else:
        setattr(ndarray, _dunder, _binary(_dunder))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_name}__", (lambda d: lambda self: ndarray(getattr(self._a, d)()))(f"__{_name}__"))
ndarray.__hash__ = None


# ---------------------------------------------------------------------------------- the module namespace
class _Namespace(types.ModuleType):
    """A module whose attributes are NumPy's, wrapped to take and give device arrays — only the names that
    CuPy 14.2 has (tests/cupy_api.py): a NumPy function CuPy lacks is an AttributeError here too."""

    def __init__(self, name, numpy_module, names):
        super().__init__(name)
        self._numpy, self._names = numpy_module, names

    def __getattr__(self, name):
        if name.startswith("_") or name not in self._names:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r} (CuPy 14.2 has no such name)")
        if name in _SPECIAL:
            return _SPECIAL[name]
        attr = getattr(self._numpy, name)
        if isinstance(attr, np.ufunc) or callable(attr) and not isinstance(attr, type):
            where = f"cupy.{name}"
            if name in _HOST_OK:
                def host_ok(a, *args, **kwargs):
                    if isinstance(a, np.ndarray):
                        a = ndarray(np.array(a, *args, **kwargs, copy=True))
                        return a
                    return _device_call(attr, where)(a, *args, **kwargs)
                wrapped = host_ok
            else:
                wrapped = _device_call(attr, where)
                if isinstance(attr, np.ufunc):
                    for method in ("at", "reduce", "accumulate", "outer", "reduceat"):
                        setattr(wrapped, method, _ufunc_method(attr, method))
            setattr(self, name, wrapped)
            return wrapped
        return attr


# CuPy's ufunc methods exist for few ufuncs (tests/cupy_api.py NOTES): the rest raise NotImplementedError.
_UFUNC_SUPPORT = {"reduce": {"add", "multiply"}, "accumulate": {"add", "multiply"}, "reduceat": {"add"},
                  "at": {"add", "subtract", "maximum", "minimum", "bitwise_and", "bitwise_or", "bitwise_xor"}}


def _ufunc_method(ufunc, method):
    def call(*args, **kwargs):
        if method in _UFUNC_SUPPORT and ufunc.__name__ not in _UFUNC_SUPPORT[method]:
            raise NotImplementedError(f"cupy.{ufunc.__name__}.{method} is not implemented in CuPy")
        return _wrap(getattr(ufunc, method)(*_unwrap(args, f"cupy.{ufunc.__name__}.{method}"),
                                            **_unwrap(kwargs, f"cupy.{ufunc.__name__}.{method}")))
    return call


def _packbits(a, axis=None, bitorder="big"):
    if axis is not None:
        raise NotImplementedError("cupy.packbits supports axis=None only")
    return _wrap(np.packbits(_unwrap(a, "cupy.packbits"), bitorder=bitorder))


def _unpackbits(a, axis=None, bitorder="big"):          # no `count` in CuPy
    if axis is not None:
        raise NotImplementedError("cupy.unpackbits supports axis=None only")
    if a.dtype != np.uint8:
        raise TypeError("cupy.unpackbits needs uint8 input")
    return _wrap(np.unpackbits(_unwrap(a, "cupy.unpackbits"), bitorder=bitorder))


def _searchsorted(a, v, side="left", sorter=None):
    if not isinstance(a, ndarray) or a.ndim != 1:
        raise ValueError("cupy.searchsorted: a must be a 1-D cupy array")
    if not isinstance(v, (ndarray, int, float, complex)) or isinstance(v, np.generic):
        raise NotImplementedError("cupy.searchsorted: v must be a cupy array or a Python scalar")
    return _wrap(np.searchsorted(a._a, _unwrap(v, "cupy.searchsorted"), side=side).astype(np.int64))


_SPECIAL = {"packbits": _packbits, "unpackbits": _unpackbits, "searchsorted": _searchsorted}

cupy = _Namespace("cupy", np, api.CUPY)
cupy.ndarray = ndarray
cupy.linalg = _Namespace("cupy.linalg", np.linalg, api.LINALG)
cupy.fft = _Namespace("cupy.fft", np.fft, api.FFT)
cupy.random = _Namespace("cupy.random", np.random, api.RANDOM)
cupy.lib = types.SimpleNamespace(
    stride_tricks=_Namespace("cupy.lib.stride_tricks", np.lib.stride_tricks, api.STRIDE_TRICKS))
cupy.asnumpy = lambda a, stream=None: a.get() if isinstance(a, ndarray) else np.asarray(a)
cupy.get_array_module = lambda *arrays: cupy if any(isinstance(a, ndarray) for a in arrays) else np
cupy.from_dlpack = lambda x: ndarray(np.from_dlpack(x._a if isinstance(x, ndarray) else x))


class _Pool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


_pool = _Pool()
cupy.get_default_memory_pool = lambda: _pool
cupy.cuda = types.SimpleNamespace(
    runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
    Device=_Device,
    Stream=types.SimpleNamespace(null=types.SimpleNamespace(synchronize=lambda: None)),
    is_available=lambda: True,
)

# ---------------------------------------------------------------------------------- kernels by name
_KERNEL_BODIES = {}


def register_kernel(name, body):
    """Run ElementwiseKernel `name` as body(*host input arrays) -> host output array(s)."""
    _KERNEL_BODIES[name] = body


class ElementwiseKernel:
    def __init__(self, in_params, out_params, operation, name="kernel", **kwargs):
        self.name = name

    def __call__(self, *args):
        if self.name not in _KERNEL_BODIES:
            raise NotImplementedError(f"fake_cupy cannot compile CUDA C; register a Python body for kernel "
                                      f"{self.name!r} with fake_cupy.register_kernel")
        return _wrap(_KERNEL_BODIES[self.name](*_unwrap(args, f"ElementwiseKernel {self.name}")))


cupy.ElementwiseKernel = ElementwiseKernel


# ---------------------------------------------------------------------------------- cupyx
def _scatter_add(a, slices, value):
    np.add.at(_unwrap(a, "cupyx.scatter_add"), _index(slices), _unwrap(value, "cupyx.scatter_add"))


_erf = np.vectorize(math.erf, otypes=[np.float64])
cupyx = types.ModuleType("cupyx")
cupyx.scatter_add = _scatter_add
cupyx.scipy = types.ModuleType("cupyx.scipy")
cupyx.scipy.special = types.ModuleType("cupyx.scipy.special")
cupyx.scipy.special.erf = lambda x: _wrap(_erf(_unwrap(x, "cupyx.scipy.special.erf")).astype(x.dtype))
_MODULES = {"cupy": cupy, "cupyx": cupyx, "cupyx.scipy": cupyx.scipy, "cupyx.scipy.special": cupyx.scipy.special}


@contextlib.contextmanager
def installed():
    """Make `import cupy` / `import cupyx...` give these modules (restoring what was there) inside the block."""
    saved = {name: sys.modules.get(name) for name in _MODULES}
    sys.modules.update(_MODULES)
    try:
        yield cupy
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
