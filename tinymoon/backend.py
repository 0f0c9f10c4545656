"""Array modules, devices and dtypes — nothing else.

The `xp` idiom: every rule asks `xp = get_array_module(x)` and then writes NumPy-style code that runs on
NumPy (CPU) or CuPy (GPU) unchanged. CuPy is imported lazily, so a CPU-only install never pays for it.
"""
from __future__ import annotations

import numpy as np

from .errors import DeviceError, DTypeError

_cupy = None            # the cupy module once imported, False when unavailable
_cupy_failure = ""      # why cupy could not be used


def _try_cupy():
    global _cupy, _cupy_failure
    if _cupy is None:
        try:
            import cupy  # noqa: F401
            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError("CuPy is installed but sees no CUDA device")
            _cupy = cupy
        except Exception as e:  # ImportError, CUDA driver errors...
            _cupy, _cupy_failure = False, f"{type(e).__name__}: {e}"
    return _cupy or None


def cuda_available() -> bool:
    """True when CuPy is installed and a CUDA GPU is visible."""
    return _try_cupy() is not None


def cupy_module():
    """The cupy module, or a DeviceError saying how to get it."""
    cp = _try_cupy()
    if cp is None:
        raise DeviceError(
            "device 'cuda' is not available (" + _cupy_failure + "). Install the GPU extra on a machine "
            "with an NVIDIA GPU and CUDA 12: pip install -e \".[gpu]\" (in a checkout of tinymoon)")
    return cp


def is_cupy_array(a) -> bool:
    return _cupy and isinstance(a, _cupy.ndarray)


def get_array_module(*arrays):
    """numpy or cupy, whichever owns the arrays (numpy for scalars and lists)."""
    for a in arrays:
        if _cupy and isinstance(a, _cupy.ndarray):
            return _cupy
    return np


# ---- devices ---------------------------------------------------------------------------------------

def normalize_device(device, what=None) -> str:
    """'cpu', 'cuda' -> 'cuda:0', 'cuda:N'. Raises DeviceError for anything else or an absent GPU (`what`
    names the function asking, in the error)."""
    if device is None:
        return "cpu"
    pre = f"{what}: " if what else ""
    if not isinstance(device, str):
        raise DeviceError(f"{what + ': ' if what else ''}device must be a string ('cpu', 'cuda' or 'cuda:N'), "
                          f"not {type(device).__name__}")
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        idx = 0 if device == "cuda" else device[5:]
        try:
            idx = int(idx)
        except ValueError:
            raise DeviceError(f"{pre}unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from None
        try:
            cp = cupy_module()
        except DeviceError as e:
            raise DeviceError(f"{pre}{e}") from None
        n = cp.cuda.runtime.getDeviceCount()
        if not 0 <= idx < n:
            raise DeviceError(f"{pre}device 'cuda:{idx}' does not exist: this machine has {n} GPU(s)")
        return f"cuda:{idx}"
    raise DeviceError(f"{pre}unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")


def device_of(a) -> str:
    if _cupy and isinstance(a, _cupy.ndarray):
        return f"cuda:{a.device.id}"
    return "cpu"


def to_host(a):
    """The array as a NumPy array (a copy from the GPU; the array itself, or np.asarray of it, on the host)."""
    return a.get() if is_cupy_array(a) else np.asarray(a)


def to_device(a, device: str):
    """Move (or keep) an array on `device` (already normalised)."""
    if device == "cpu":
        return to_host(a)
    cp = cupy_module()
    with cp.cuda.Device(int(device.split(":")[1])):
        return cp.asarray(a)


# ---- dtypes ----------------------------------------------------------------------------------------

float32, float64 = np.dtype("float32"), np.dtype("float64")
int32, int64 = np.dtype("int32"), np.dtype("int64")
uint8, bool_ = np.dtype("uint8"), np.dtype("bool")
default_float = float32

_ALIASES = {"float": float32, "float32": float32, "f4": float32, "float64": float64, "double": float64,
            "f8": float64, "int": int64, "int64": int64, "int32": int32, "long": int64, "uint8": uint8,
            "bool": bool_, "int8": np.dtype("int8"), "int16": np.dtype("int16")}


def as_dtype(dtype, what=None) -> np.dtype:
    """A numpy dtype from a name, a numpy dtype or a Python type; float16 and complex are refused. `what`
    names the function asking, in the error."""
    if dtype is None:
        return default_float
    if isinstance(dtype, str) and dtype in _ALIASES:
        return _ALIASES[dtype]
    pre = f"{what}: " if what else ""
    if not isinstance(dtype, (str, type, np.dtype)):
        raise DTypeError(f"{pre}dtype must be a name ('float32'), a numpy dtype or a type, not "
                         f"{type(dtype).__name__}")
    try:
        d = np.dtype(dtype)
    except (TypeError, ValueError):
        raise DTypeError(f"{pre}unknown dtype {dtype!r}: use float32, float64, an integer type or bool") from None
    if d.kind == "f" and d not in (float32, float64):
        raise DTypeError(f"{pre}dtype {d} is not supported: tinymoon computes in float32 or float64")
    if d.kind not in "fiub":
        raise DTypeError(f"{pre}dtype {d} is not supported: use float32, float64, an integer type or bool")
    return d


def is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"
