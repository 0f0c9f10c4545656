"""Checkpoints: `save(obj, path)` / `load(path)` for state_dicts, and `check_state_dict` for loading them.

What can be saved: nested dicts (str or int keys), lists and tuples of numpy arrays, tinymoon Tensors (saved
as arrays: `.numpy()`, moved to the host), CuPy arrays (moved to the host), numpy scalars, and Python ints,
floats, bools, strings and None. `load` returns the same structure with numpy arrays in place of arrays and
Tensors (a module's `load_state_dict` turns them back into its parameters' dtype and device); numpy scalars
come back as numpy scalars, tuples as tuples.

The format is one `.npz` file (a zip of `.npy` files, readable by `numpy.load(..., allow_pickle=False)`):

- every array under a flattened key `state/<k1>/<k2>/...` (each dict key URL-quoted, int dict keys as `#<n>`,
  list/tuple positions as `<n>`, an empty key as `%`);
- a JSON manifest under `__tinymoon_manifest__`, stored as a uint8 array of UTF-8 bytes:
  `{"format": "tinymoon-checkpoint", "version": 1, "tree": ..., "arrays": {key: {dtype, shape, sha256}}}` where
  `tree` mirrors the nested structure (scalars inline, floats as exact `float.hex` strings) and each array's
  SHA-256 covers its C-order bytes, so a flipped byte is caught even where the zip's CRC is not checked.

Saving is atomic: the file is written to a temporary file in the target directory, flushed, fsync'ed and
`os.replace`d onto `path` (written exactly as given: no suffix is appended), so a crash leaves either the old
checkpoint or the new one, never half of one. Loading never unpickles; object arrays are refused at save time.
Every problem with a file (truncated, bytes flipped, not an npz, a manifest that does not match) raises
`tinymoon.errors.CheckpointError` naming the file and, where there is one, the key.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import quote

import numpy as np

from . import backend
from .errors import CheckpointError

__all__ = ["save", "load", "check_state_dict", "FORMAT", "VERSION"]

FORMAT, VERSION = "tinymoon-checkpoint", 1
_MANIFEST_KEY = "__tinymoon_manifest__"
_ROOT = "state"


def _to_host_array(x):
    """A numpy array for an array-like leaf (numpy, tinymoon Tensor, CuPy), else None."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, np.generic):
        return None
    if backend.is_cupy_array(x):
        return x.get()
    if callable(getattr(x, "numpy", None)):        # tinymoon Tensor / Parameter (or any .numpy() array)
        return backend.to_device(x.numpy(), "cpu")
    return None


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).data if a.size else b"").hexdigest()


def _component(k) -> str:
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        return f"#{int(k)}"
    return quote(k, safe="._-") or "%"


def _encode(x, key, arrays, active):
    """(manifest node, with arrays collected into `arrays`) for the value x found at flattened `key`."""
    if x is None:
        return {"t": "none"}
    if isinstance(x, np.generic):   # before int/float: np.float64 is a float subclass, but stays numpy
        return _encode_array(np.asarray(x), key, arrays, scalar=True)
    if isinstance(x, bool):
        return {"t": "bool", "v": x}
    if isinstance(x, int):
        return {"t": "int", "v": x}
    if isinstance(x, float):
        return {"t": "float", "v": x.hex()}
    if isinstance(x, str):
        return {"t": "str", "v": x}
    if isinstance(x, (dict, list, tuple)):
        if id(x) in active:
            raise CheckpointError(f"save: {key!r} contains itself (a cycle); a checkpoint must be a tree")
        active.add(id(x))
        try:
            if isinstance(x, dict):
                items = []
                for k, v in x.items():
                    if isinstance(k, np.integer):
                        k = int(k)
                    if not isinstance(k, (str, int)) or isinstance(k, bool):
                        raise CheckpointError(f"save: dict key {k!r} at {key!r} is a {type(k).__name__}; "
                                              "checkpoint dict keys must be str or int")
                    items.append([k, _encode(v, f"{key}/{_component(k)}", arrays, active)])
                return {"t": "dict", "items": items}
            return {"t": type(x).__name__,
                    "items": [_encode(v, f"{key}/{i}", arrays, active) for i, v in enumerate(x)]}
        finally:
            active.discard(id(x))
    a = _to_host_array(x)
    if a is None:
        raise CheckpointError(f"save: cannot store a {type(x).__module__}.{type(x).__qualname__} at {key!r}; "
                              "a checkpoint holds dicts, lists, tuples, arrays/Tensors, numpy scalars, int, "
                              "float, bool, str and None")
    return _encode_array(a, key, arrays, scalar=False)


def _encode_array(a: np.ndarray, key, arrays, scalar):
    if a.dtype.hasobject:
        raise CheckpointError(f"save: the array at {key!r} has dtype {a.dtype} (Python objects), which would "
                              "need pickling; convert it to a numeric/str array or to plain Python values")
    arrays[key] = a
    node = {"t": "array", "key": key}
    if scalar:
        node["scalar"] = True
    return node


def _write_npz(f, arrays: dict) -> None:
    """The one place bytes go to the file (the atomic-write test replaces it with one that fails midway)."""
    np.savez(f, **arrays)



def atomic_write(path, write, mode=0o644) -> None:
    """Write a file so that `path` is always either the old file or the complete new one, never half of one:
    `write(f)` fills a temporary file in the same directory, which is fsynced, then renamed over `path`
    (os.replace is atomic on POSIX and Windows), and the directory is fsynced so the rename is durable.
    Used by every file tinymoon writes: checkpoints, the MNIST cache, few-bit tables."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)               # mkstemp creates 0600; checkpoints and caches are ordinary files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:                                  # make the rename itself durable (POSIX); harmless where unsupported
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass

def save(obj, path) -> None:
    """Write `obj` (a state_dict: nested dicts/lists/tuples of arrays, Tensors and scalars) to `path`
    atomically. Raises CheckpointError naming the key for anything that cannot be stored without pickling."""
    path = Path(os.fspath(path))
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(obj, _ROOT, arrays, set())
    manifest = {"format": FORMAT, "version": VERSION, "tree": tree,
                "arrays": {k: {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": _sha256(a)}
                           for k, a in arrays.items()}}
    payload = dict(arrays)
    payload[_MANIFEST_KEY] = np.frombuffer(json.dumps(manifest).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: _write_npz(f, payload))


# ---- load -------------------------------------------------------------------------------------------------

def _bad(path, what, key=None) -> CheckpointError:
    where = f" (key {key!r})" if key is not None else ""
    return CheckpointError(f"checkpoint {os.fspath(path)!r}{where}: {what}")


def _decode(node, path, arrays, put):
    if not isinstance(node, dict) or "t" not in node:
        raise _bad(path, f"manifest node {node!r} is malformed")
    t = node["t"]
    try:
        if t == "none":
            return None
        if t == "bool":
            if not isinstance(node["v"], bool):
                raise TypeError
            return node["v"]
        if t == "int":
            if not isinstance(node["v"], int) or isinstance(node["v"], bool):
                raise TypeError
            return node["v"]
        if t == "float":
            return float.fromhex(node["v"])
        if t == "str":
            if not isinstance(node["v"], str):
                raise TypeError
            return node["v"]
        if t == "dict":
            out = {}
            for k, v in node["items"]:
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise TypeError
                out[k] = _decode(v, path, arrays, put)
            return out
        if t in ("list", "tuple"):
            items = [_decode(v, path, arrays, put) for v in node["items"]]
            return items if t == "list" else tuple(items)
        if t == "array":
            key = node["key"]
            if key not in arrays:
                raise _bad(path, "the manifest names an array that the file does not hold", key)
            a = arrays[key]
            return a[()] if node.get("scalar") else put(a)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _bad(path, f"manifest node {str(node)[:200]} is malformed") from None
    raise _bad(path, f"manifest node of unknown type {t!r}")


def load(path, map_location=None):
    """Read a checkpoint written by `save`: the same nested structure, with numpy arrays where arrays and
    Tensors were (CuPy arrays on that device if `map_location` is 'cuda'/'cuda:N'; None or 'cpu': numpy).

    Never unpickles. Raises FileNotFoundError for a missing file and CheckpointError (naming the file and,
    where possible, the key) for any damaged or foreign file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    f = open(path, "rb")    # ours, not np.load's: np.load leaves its own handle open when it raises
    try:
        z = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        f.close()
        raise _bad(path, f"not a readable tinymoon checkpoint (an .npz file): {e}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        f.close()
        raise _bad(path, "is a single .npy array, not a tinymoon checkpoint (an .npz file)")
    with f, z:
        names = set(z.files)
        if _MANIFEST_KEY not in names:
            raise _bad(path, f"has no {_MANIFEST_KEY!r}: not a tinymoon checkpoint (a plain .npz?)")
        try:
            raw = z[_MANIFEST_KEY]
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise ValueError(f"stored as {raw.dtype} {raw.shape}, expected uint8 bytes")
            manifest = json.loads(raw.tobytes().decode("utf-8"))
        except Exception as e:
            raise _bad(path, f"its manifest is unreadable ({type(e).__name__}: {e})", _MANIFEST_KEY) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise _bad(path, f"its manifest does not describe a {FORMAT!r} file", _MANIFEST_KEY)
        version = manifest.get("version")
        if not isinstance(version, int) or version < 1:
            raise _bad(path, f"its manifest has an invalid version {version!r}", _MANIFEST_KEY)
        if version > VERSION:
            raise _bad(path, f"format version {version} is newer than this tinymoon reads ({VERSION}); "
                             "upgrade tinymoon", _MANIFEST_KEY)
        specs = manifest.get("arrays")
        if not isinstance(specs, dict) or "tree" not in manifest:
            raise _bad(path, "its manifest lacks 'arrays' or 'tree'", _MANIFEST_KEY)
        extra = sorted(names - set(specs) - {_MANIFEST_KEY})
        if extra:
            raise _bad(path, f"holds arrays that its manifest does not list: {extra[:5]}", extra[0])
        arrays = {}
        for key, spec in specs.items():
            if key not in names:
                raise _bad(path, "the array is listed in the manifest but missing from the file", key)
            try:
                a = z[key]
            except Exception as e:
                raise _bad(path, f"the array is unreadable ({type(e).__name__}: {e})", key) from None
            try:
                dtype, shape, digest = np.dtype(spec["dtype"]), tuple(spec["shape"]), spec["sha256"]
            except Exception:
                raise _bad(path, f"its manifest entry {spec!r} is malformed", key) from None
            if a.dtype != dtype or a.shape != shape:
                raise _bad(path, f"holds {a.dtype} {a.shape}, the manifest says {dtype} {shape}", key)
            if _sha256(a) != digest:
                raise _bad(path, "SHA-256 mismatch: the array's bytes are corrupt", key)
            arrays[key] = a
    if map_location is None or str(map_location) == "cpu":
        def put(a):
            return a
    else:
        from . import backend
        device = backend.normalize_device(map_location)

        def put(a):
            return backend.to_device(a, device)
    return _decode(manifest["tree"], path, arrays, put)


# ---- state_dict checks ------------------------------------------------------------------------------------

def _shape_dtype(x, name, side):
    if x is None or isinstance(x, (dict, list, tuple, str)):
        raise CheckpointError(f"state_dict key {name!r}: the {side} value is a {type(x).__name__}, not an array")
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        a = _to_host_array(x)
        a = np.asarray(x) if a is None else a
        if a.dtype.hasobject:
            raise CheckpointError(f"state_dict key {name!r}: the {side} value ({type(x).__name__}) is not an array")
        shape, dtype = a.shape, a.dtype
    return tuple(shape), np.dtype(dtype)


def check_state_dict(expected: dict, loaded: dict, strict: bool = True) -> None:
    """Check that `loaded` (name -> array, e.g. from `load`) fits `expected` (name -> array-like, e.g. a
    module's parameters): same keys (unless strict=False, which allows missing and unexpected keys), and for
    every shared key the same shape and dtype (tinymoon never converts silently). Raises one CheckpointError
    listing every problem, each naming its key, with both shapes/dtypes."""
    if not isinstance(expected, dict) or not isinstance(loaded, dict):
        raise CheckpointError(f"check_state_dict needs two dicts, got {type(expected).__name__} and "
                              f"{type(loaded).__name__}")
    problems = []
    if strict:
        problems += [f"missing key {k!r} (expected, not in the checkpoint)" for k in expected if k not in loaded]
        problems += [f"unexpected key {k!r} (in the checkpoint, not expected)" for k in loaded if k not in expected]
    for k, want in expected.items():
        if k not in loaded:
            continue
        ws, wd = _shape_dtype(want, k, "expected")
        gs, gd = _shape_dtype(loaded[k], k, "loaded")
        if ws != gs:
            problems.append(f"key {k!r}: shape mismatch: expected {ws}, checkpoint has {gs}")
        if wd != gd:
            problems.append(f"key {k!r}: dtype mismatch: expected {wd}, checkpoint has {gd}")
    if problems:
        raise CheckpointError("state_dict does not match: " + "; ".join(problems))
