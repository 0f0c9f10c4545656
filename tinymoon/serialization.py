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
checkpoint or the new one, never half of one. The temporary is named `.<name>.<host>-<pid>-<random>.tmp`
(host: a short hash of the host name), so a later save or load of the same path removes the ones left by
killed processes: only its own kind, only for that path, only where the writing process (same host, that
pid) is no longer alive. A file that exists keeps its permission bits; a new one gets the umask's default.

Loading never unpickles; arrays that would need it (object dtypes) and arrays the format cannot describe
(structured dtypes) are refused at save time. Loading is bounded: every member's `.npy` header is read first
and must agree with the manifest (dtype, shape, and the member's size in the zip, which must be stored, not
compressed) before a byte of its data is read, and the arrays are read one at a time, straight into their
final buffers. So memory never exceeds the file's own size (or `max_bytes`, when given, for the arrays in
all), whatever a hostile manifest or zip directory claims.
Every problem with a file (truncated, bytes flipped, not an npz, a manifest that does not match) raises
`tinymoon.errors.CheckpointError` naming the file and, where there is one, the key.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import stat
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


def _dtype_problem(dt: np.dtype):
    """Why an array of dtype `dt` cannot be stored (None if it can): the manifest names a dtype by its
    `dtype.str`, which must describe it completely."""
    if dt.hasobject:
        return f"dtype {dt} (Python objects), which would need pickling"
    if dt.names is not None or dt.subdtype is not None:
        return f"the structured dtype {dt}, which the format does not describe (its dtype.str is {dt.str!r})"
    try:
        if np.dtype(dt.str) != dt:
            return f"dtype {dt}, which its dtype.str {dt.str!r} does not describe"
    except TypeError:
        return f"dtype {dt}, which its dtype.str {dt.str!r} does not describe"
    return None


def _encode_array(a: np.ndarray, key, arrays, scalar):
    problem = _dtype_problem(a.dtype)
    if problem is not None:
        raise CheckpointError(f"save: the array at {key!r} has {problem}; convert it to a numeric/str array "
                              "(one array per field of a structured array) or to plain Python values")
    arrays[key] = a
    node = {"t": "array", "key": key}
    if scalar:
        node["scalar"] = True
    return node


def _write_npz(f, arrays: dict) -> None:
    """The one place bytes go to the file (the atomic-write test replaces it with one that fails midway)."""
    np.savez(f, **arrays)



_TMP_SUFFIX = ".tmp"


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _temp_pattern(name: str):
    """Our temporaries for target file `name`: .<name>.<host>-<pid>-<random>.tmp"""
    return re.compile(re.escape(f".{name}.") + r"([0-9a-f]{8})-([0-9]+)-[0-9a-f]{8}" + re.escape(_TMP_SUFFIX) + "$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True                       # someone else's live process (or we cannot tell): not stale
    return True


def remove_stale_temporaries(path) -> list:
    """Delete the temporaries that atomic writes of `path` left behind when their process was killed
    (SIGKILL, power loss): ours by name, for this path only, written on this host by a pid that no longer
    runs. A live writer's temporary is never touched. Returns the paths removed (errors are ignored)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    pattern, host, removed = _temp_pattern(path.name), _host_tag(), []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for n in names:
        m = pattern.match(n)
        if m is None or m.group(1) != host or _alive(int(m.group(2))):
            continue
        try:
            os.unlink(directory / n)
            removed.append(directory / n)
        except OSError:
            pass
    return removed


def atomic_write(path, write, mode=None) -> None:
    """Write a file so that `path` is always either the old file or the complete new one, never half of one:
    `write(f)` fills a temporary file in the same directory, which is fsynced, then renamed over `path`
    (os.replace is atomic on POSIX and Windows), and the directory is fsynced so the rename is durable.
    Used by every file tinymoon writes: checkpoints, the MNIST cache, few-bit tables.

    Permissions: `mode` if given; else an existing file's own mode bits (a 0600 checkpoint stays 0600),
    else the umask's default for a new file (as `open(path, "w")` would create it). Stale temporaries of
    killed writers of the same path are removed first (`remove_stale_temporaries`)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            mode = None                   # a new file: 0o666 minus the umask, applied by os.open below
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = directory / f".{path.name}.{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}{_TMP_SUFFIX}"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:           # 32 random bits collided: draw again
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
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


_CHUNK = 1 << 20           # bytes read at a time: zipfile allocates a temporary of the size asked for


def _npy_header(f, where, bad):
    """(shape, fortran_order, dtype, header bytes) of an .npy stream, reading nothing past the header."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version} is not one that numpy.savez writes here")
    except Exception as e:
        raise bad(f"its .npy header is unreadable ({type(e).__name__}: {e})", where) from None
    return tuple(shape), bool(fortran), dtype, f.tell()


def _read_member(z, info, dtype, shape, where, bad, allow_compressed):
    """The array of zip member `info`, checked against the expected dtype/shape before its data is read,
    then read in chunks straight into its buffer (a member that holds more or fewer bytes is refused)."""
    if info.compress_type != zipfile.ZIP_STORED and not allow_compressed:
        raise bad("the member is compressed; tinymoon checkpoints store arrays uncompressed, and a compressed "
                  "member could expand far beyond the file's size, so it is refused before decompressing", where)
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    try:
        with z.open(info) as f:
            hshape, fortran, hdtype, header = _npy_header(f, where, bad)
            if hdtype != dtype or hshape != shape:
                raise bad(f"holds {hdtype} {hshape}, the manifest says {dtype} {shape}", where)
            if info.compress_type == zipfile.ZIP_STORED and info.file_size != header + nbytes:
                raise bad(f"the member holds {info.file_size - header} bytes of data, a {dtype} array of shape "
                          f"{shape} has {nbytes}", where)
            a = np.empty(shape[::-1] if fortran else shape, dtype)
            view = memoryview(a.reshape(-1).view(np.uint8)) if nbytes else memoryview(b"")
            pos = 0
            while pos < nbytes:
                n = f.readinto(view[pos:pos + _CHUNK])
                if not n:
                    raise bad(f"truncated: {pos} of {nbytes} data bytes", where)
                pos += n
            if f.read(1):
                raise bad(f"the member holds more than the {nbytes} data bytes of a {dtype} array of shape "
                          f"{shape}", where)
    except CheckpointError:
        raise
    except Exception as e:     # zlib errors, a bad CRC (zipfile.BadZipFile), truncation (EOFError), ...
        raise bad(f"the array is unreadable ({type(e).__name__}: {e})", where) from None
    return a.T if fortran else a


def _open_zip(path, bad):
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise bad("is a single .npy array, not a tinymoon checkpoint (an .npz file)") from None
        raise bad(f"not a readable tinymoon checkpoint (an .npz file): {e}") from None
    return z


def read_npz(path, *, max_bytes=None, allow_compressed=False, specs=None, bad=None):
    """{name: array} of an .npz file, bounded: every member's header is checked before its data is read.

    specs: {name: (dtype, shape)} the members must match (a tinymoon manifest), or None to take each
    member's own header (then `max_bytes`, the cap on the arrays' total size, is what bounds a compressed
    member). Raises `bad(what, key)` (default: CheckpointError naming the file) for anything wrong."""
    if bad is None:
        def bad(what, key=None):
            return _bad(path, what, key)
    with _open_zip(path, bad) as z:
        infos = {}
        for info in z.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if name in infos:
                raise bad("the zip lists this member twice", name)
            infos[name] = info
        if specs is None:
            specs = {}
            for name, info in infos.items():
                with z.open(info) as f:
                    shape, _, dtype, _ = _npy_header(f, name, bad)
                specs[name] = (dtype, shape)
        total = 0
        for name, (dtype, shape) in specs.items():
            problem = _dtype_problem(dtype)
            if problem is not None:
                raise bad(f"an array of {problem} cannot be loaded", name)
            count = 1
            for d in shape:
                count *= d
            total += count * dtype.itemsize
        if max_bytes is not None and total > max_bytes:
            raise bad(f"its arrays would take {total} bytes, more than the limit max_bytes={max_bytes}")
        out = {}
        for name, (dtype, shape) in specs.items():
            if name not in infos:
                raise bad("the array is listed in the manifest but missing from the file", name)
            out[name] = _read_member(z, infos[name], dtype, shape, name, bad, allow_compressed)
        return out


def _manifest_specs(path, specs):
    """{key: (dtype, shape, sha256)} from the manifest's 'arrays', every entry checked for form first."""
    out = {}
    for key, spec in specs.items():
        try:
            dtype, shape, digest = np.dtype(spec["dtype"]), tuple(spec["shape"]), spec["sha256"]
            if not isinstance(spec["dtype"], str) or not isinstance(digest, str):
                raise TypeError
            if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
                raise ValueError
        except Exception:
            raise _bad(path, f"its manifest entry {str(spec)[:200]} is malformed", key) from None
        out[key] = (dtype, shape, digest)
    return out


def load(path, map_location=None, max_bytes=None):
    """Read a checkpoint written by `save`: the same nested structure, with numpy arrays where arrays and
    Tensors were (CuPy arrays on that device if `map_location` is 'cuda'/'cuda:N'; None or 'cpu': numpy).

    Never unpickles, and never allocates more than the file holds: each array's header and size are checked
    against the manifest before its data is read, one array at a time. `max_bytes` caps the arrays' total
    size (checked from the manifest, before anything is read). Raises FileNotFoundError for a missing file
    and CheckpointError (naming the file and, where possible, the key) for any damaged or foreign file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    remove_stale_temporaries(path)

    def bad(what, key=None):
        return _bad(path, what, key)
    with _open_zip(path, bad) as z:
        names = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename for i in z.infolist()}
        info = z.NameToInfo.get(_MANIFEST_KEY + ".npy")
        if info is None:
            raise bad(f"has no {_MANIFEST_KEY!r}: not a tinymoon checkpoint (a plain .npz?)")
        try:
            raw = _read_member(z, info, *_manifest_header(z, info, bad), _MANIFEST_KEY, bad, False)
            manifest = json.loads(raw.tobytes().decode("utf-8"))
        except Exception as e:
            raise bad(f"its manifest is unreadable ({type(e).__name__}: {e})", _MANIFEST_KEY) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise bad(f"its manifest does not describe a {FORMAT!r} file", _MANIFEST_KEY)
    version = manifest.get("version")
    if not isinstance(version, int) or version < 1:
        raise bad(f"its manifest has an invalid version {version!r}", _MANIFEST_KEY)
    if version > VERSION:
        raise bad(f"format version {version} is newer than this tinymoon reads ({VERSION}); upgrade tinymoon",
                  _MANIFEST_KEY)
    specs = manifest.get("arrays")
    if not isinstance(specs, dict) or "tree" not in manifest:
        raise bad("its manifest lacks 'arrays' or 'tree'", _MANIFEST_KEY)
    extra = sorted(names - set(specs) - {_MANIFEST_KEY})
    if extra:
        raise bad(f"holds arrays that its manifest does not list: {extra[:5]}", extra[0])
    specs = _manifest_specs(path, specs)
    arrays = read_npz(path, max_bytes=max_bytes, specs={k: (d, s) for k, (d, s, _) in specs.items()}, bad=bad)
    for key, (_, _, digest) in specs.items():
        if _sha256(arrays[key]) != digest:
            raise bad("SHA-256 mismatch: the array's bytes are corrupt", key)
    if map_location is None or str(map_location) == "cpu":
        def put(a):
            return a
    else:
        device = backend.normalize_device(map_location)

        def put(a):
            return backend.to_device(a, device)
    try:
        return _decode(manifest["tree"], path, arrays, put)
    except RecursionError:
        raise bad("its manifest tree is nested too deeply", _MANIFEST_KEY) from None


def _manifest_header(z, info, bad):
    """(dtype, shape) of the manifest member: 1-D uint8, no longer than the member itself."""
    with z.open(info) as f:
        shape, _, dtype, _ = _npy_header(f, _MANIFEST_KEY, bad)
    if dtype != np.uint8 or len(shape) != 1:
        raise ValueError(f"stored as {dtype} {shape}, expected uint8 bytes")
    return dtype, shape


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
