"""Shipped tables, the disk cache, corruption, atomic writes."""
import os
import warnings

import numpy as np
import pytest

import tinymoon.fewbit.cache as cache
from tinymoon.fewbit import CacheWarning, FewBitError, continuous_names, get_table, solve


@pytest.fixture
def no_solve(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("solve() was called")
    monkeypatch.setattr(cache, "solve", boom)


def entries(path):
    return sorted(p.name for p in path.glob("*")) if path.exists() else []


def test_shipped_tables_equal_fresh_solves(_private_cache):
    shipped = cache.load_shipped(cache.SHIPPED_PATH)
    assert len(shipped) == len(continuous_names()) * 4
    assert cache.SHIPPED_PATH.stat().st_size < 16_000
    for name in continuous_names():
        for bits in (1, 2, 3, 4):
            t = get_table(name, bits)
            assert t == solve(name, bits, method="exact")
            assert t.name == name and t.bits == bits and t.domain == (-10.0, 10.0) and t.weight == "uniform"
    assert entries(_private_cache) == []                    # all served from the shipped file


def test_shipped_lookup_does_not_solve(no_solve):
    assert get_table("gelu", 3).bits == 3


def test_non_default_is_solved_then_cached(_private_cache, monkeypatch):
    t = get_table("elu", 2, alpha=0.5)
    files = entries(_private_cache)
    assert len(files) == 1 and files[0].startswith("elu-2bit-") and files[0].endswith(".npz")
    assert t == solve("elu", 2, alpha=0.5, method="exact")
    with monkeypatch.context() as m:
        m.setattr(cache, "solve", lambda *a, **k: pytest.fail("re-solved a cached table"))
        assert get_table("elu", 2, alpha=0.5) == t
        assert get_table("elu", 2, alpha=0.5).params == {"alpha": 0.5}
    # different settings are different entries
    get_table("gelu", 2, weight="gaussian")
    get_table("gelu", 5)
    assert len(entries(_private_cache)) == 3
    assert not [f for f in entries(_private_cache) if f.endswith(".tmp")]


def _only_entry(d):
    (p,) = list(d.glob("*.npz"))
    return p


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip-level-byte", "other-key", "empty"])
def test_corrupt_entry_is_detected_and_rebuilt(_private_cache, damage):
    good = get_table("tanh", 5)
    path = _only_entry(_private_cache)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all" * 10)
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "flip-level-byte":
        raw = good.levels.tobytes()
        i = data.index(raw) + 3                             # inside the stored levels (savez is uncompressed)
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:])
    elif damage == "other-key":
        get_table("tanh", 5, grid=1024)                     # a valid entry, for other settings ...
        other = [p for p in _private_cache.glob("*.npz") if p != path][0]
        os.replace(other, path)                             # ... put under this entry's name
    with pytest.warns(CacheWarning, match="corrupt cache entry"):
        t = get_table("tanh", 5)
    assert t == good
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # rebuilt: the next load is clean
        assert get_table("tanh", 5) == good


def test_write_is_atomic(_private_cache, monkeypatch):
    def failing_savez(fh, **arrays):
        fh.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.warns(CacheWarning, match="cannot write cache entry"):
        t = get_table("silu", 5)                            # still returns the solved table
    assert t.bits == 5
    assert entries(_private_cache) == []                    # neither a half-written entry nor a temp file


def test_unwritable_cache_dir_only_warns(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("TINYMOON_CACHE_DIR", str(blocker))  # <file>/fewbit cannot be created
    with pytest.warns(CacheWarning, match="TINYMOON_CACHE_DIR"):
        assert get_table("mish", 5).bits == 5


def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMOON_CACHE_DIR", str(tmp_path / "x"))
    assert cache.cache_dir() == tmp_path / "x" / "fewbit"
    monkeypatch.delenv("TINYMOON_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "tinymoon" / "fewbit"


def test_corrupt_shipped_file_falls_back(tmp_path, monkeypatch, _private_cache):
    bad = tmp_path / "defaults.npz"
    data = bytearray(cache.SHIPPED_PATH.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(cache, "SHIPPED_PATH", bad)
    monkeypatch.setattr(cache, "_shipped", None)
    with pytest.warns(CacheWarning, match="shipped tables .* unusable"):
        t = get_table("gelu", 2)
    assert t == solve("gelu", 2, method="exact")
    assert len(entries(_private_cache)) == 1


def test_loads_never_unpickle(_private_cache, monkeypatch):
    get_table("sigmoid", 5)
    path = _only_entry(_private_cache)
    np.save(path.with_suffix(".npy"), np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    os.replace(path.with_suffix(".npy"), path)               # an object array where an .npz was
    with pytest.warns(CacheWarning, match="corrupt cache entry"):
        assert get_table("sigmoid", 5).bits == 5


def test_get_table_errors():
    with pytest.raises(FewBitError, match="piecewise-linear.*code_levels"):
        get_table("relu", 1)
    with pytest.raises(FewBitError, match="known: celu"):
        get_table("nope", 1)
    with pytest.raises(FewBitError, match=r"1\.\.8"):
        get_table("gelu", 0)
    with pytest.raises(FewBitError, match="unknown parameter"):
        get_table("gelu", 2, alpha=1.0)
    with pytest.raises(FewBitError, match="call tinymoon.fewbit.solve"):
        get_table("gelu", 2, weight=lambda x: x * 0 + 1)


@pytest.mark.parametrize("meta", ["[1, 2]", '{"bogus": 1}', '{"domain": 5, "bits": 5}', "not json",
                                  '{"bits": [5]}'])
def test_malformed_metadata_is_a_corrupt_entry_rebuilt_once(_private_cache, meta):
    # a well-formed file with a valid checksum whose metadata is not a Table's: before, a raw TypeError on
    # every call until the file was deleted by hand
    good = get_table("tanh", 5)
    path = _only_entry(_private_cache)
    arrays = cache._read_npz_checked(path)
    arrays["meta"] = np.array(meta)
    cache.write_npz_atomic(path, arrays)
    with pytest.warns(CacheWarning, match="corrupt cache entry .*rebuilding it"):
        assert get_table("tanh", 5) == good
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # rebuilt: the next load is clean
        assert get_table("tanh", 5) == good


def test_an_oversized_cache_entry_is_corrupt_not_read(_private_cache, monkeypatch):
    good = get_table("tanh", 5)
    monkeypatch.setattr(cache, "MAX_FILE_BYTES", 16)       # every real entry is now "too large"
    with pytest.warns(CacheWarning, match="corrupt cache entry .*max_bytes=16"):
        assert get_table("tanh", 5) == good


@pytest.mark.parametrize("grid", [10 ** 9, 2 ** 16 + 1])
def test_grid_has_an_upper_bound(grid):
    from tinymoon.fewbit.solver import MAX_GRID
    assert MAX_GRID == 2 ** 16
    with pytest.raises(FewBitError, match=r"grid=\d+ cells is more than the solver allows \(65536"):
        solve("gelu", 3, grid=grid)
    with pytest.raises(FewBitError, match="use grid <= 65536"):
        get_table("gelu", 3, grid=grid)
