"""Checkpoints against hostile files and killed writers: bounded loads (nothing is read or decompressed
before its header and size agree with the manifest; memory never exceeds what the file holds), stale
temporaries of killed saves removed safely, file modes kept, structured arrays refused at save."""
import json
import os
import signal
import stat
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from tinymoon import serialization as S
from tinymoon.errors import CheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 1 << 20


def _npy_header(dtype, shape):
    """The bytes np.save writes before an array's data (version 1.0)."""
    import io
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                             "fortran_order": False, "shape": tuple(shape)})
    return f.getvalue()


def _forge(path, members, manifest_arrays, compress=zipfile.ZIP_STORED):
    """A zip with a tinymoon manifest listing `manifest_arrays` {key: (dtype, shape)} (sha256 of nothing)
    and `members` {key: (header (dtype, shape), number of data bytes)} filled with zeros, streamed."""
    manifest = {"format": S.FORMAT, "version": S.VERSION,
                "tree": {"t": "dict", "items": [[k.split("/", 1)[1], {"t": "array", "key": k}]
                                                for k in manifest_arrays]},
                "arrays": {k: {"dtype": np.dtype(d).str, "shape": list(s), "sha256": "0" * 64}
                           for k, (d, s) in manifest_arrays.items()}}
    raw = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as z:
        with z.open("__tinymoon_manifest__.npy", "w") as f:
            f.write(_npy_header(np.uint8, (len(raw),)))
            f.write(raw)
        for key, ((dtype, shape), nbytes) in members.items():
            info = zipfile.ZipInfo(key + ".npy")
            info.compress_type = compress
            with z.open(info, "w", force_zip64=True) as f:
                f.write(_npy_header(dtype, shape))
                zeros = bytes(min(nbytes, 4 * MB))
                left = nbytes
                while left > 0:
                    f.write(zeros[:left])
                    left -= len(zeros)


def _peak_load(path, **kw):
    tracemalloc.start()
    try:
        try:
            return S.load(path, **kw), tracemalloc.get_traced_memory()[1]
        except CheckpointError as e:
            return e, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_compressed_member_is_refused_before_decompressing(tmp_path):
    # 200 MB of zeros in a ~200 kB file, its manifest honest about the size: a zip bomb
    p = tmp_path / "bomb.ckpt"
    shape = (25 * MB // 8 * 8,)
    _forge(p, {"state/w": (("<f8", shape), shape[0] * 8)}, {"state/w": ("<f8", shape)},
           compress=zipfile.ZIP_DEFLATED)
    assert p.stat().st_size < 2 * MB
    err, peak = _peak_load(p)
    assert isinstance(err, CheckpointError) and "state/w" in str(err) and "compressed" in str(err)
    assert peak < 4 * MB, f"{peak / MB:.1f} MB allocated"


def test_a_member_larger_than_its_manifest_says_is_refused_unread(tmp_path):
    # the manifest and the header declare 1 element; the member holds 30 MB
    p = tmp_path / "big.ckpt"
    _forge(p, {"state/w": (("<f8", (1,)), 30 * MB)}, {"state/w": ("<f8", (1,))})
    err, peak = _peak_load(p)
    assert isinstance(err, CheckpointError) and "state/w" in str(err) and "bytes of data" in str(err)
    assert peak < 4 * MB, f"{peak / MB:.1f} MB allocated"


def test_a_header_that_disagrees_with_the_manifest_is_refused_unread(tmp_path):
    p = tmp_path / "lie.ckpt"
    _forge(p, {"state/w": (("<f8", (4 * MB,)), 32 * MB)}, {"state/w": ("<f8", (1,))})
    err, peak = _peak_load(p)
    assert isinstance(err, CheckpointError) and "the manifest says float64 (1,)" in str(err)
    assert peak < 4 * MB


def test_a_declared_size_the_file_does_not_hold_allocates_nothing(tmp_path):
    # manifest and header agree on 8 GB; the file is tiny: refused before np.empty(8 GB)
    p = tmp_path / "huge.ckpt"
    _forge(p, {"state/w": (("<f8", (MB * 1024,)), 16)}, {"state/w": ("<f8", (MB * 1024,))})
    err, peak = _peak_load(p)
    assert isinstance(err, CheckpointError) and "state/w" in str(err)
    assert peak < 4 * MB


def test_max_bytes_is_checked_before_anything_is_read(tmp_path):
    p = tmp_path / "ok.ckpt"
    S.save({"a": np.ones(1000), "b": np.zeros((10, 10), np.float32)}, p)
    with pytest.raises(CheckpointError, match=r"8400 bytes, more than the limit max_bytes=8000"):
        S.load(p, max_bytes=8000)
    assert S.load(p, max_bytes=8400)["a"].shape == (1000,)


def test_members_are_streamed_one_at_a_time(tmp_path):
    p = tmp_path / "two.ckpt"
    state = {"a": np.arange(2 * MB, dtype=np.float32), "b": np.ones((MB, 2), np.float32)}   # 8 MB each
    S.save(state, p)
    got, peak = _peak_load(p)
    np.testing.assert_array_equal(got["a"], state["a"])
    np.testing.assert_array_equal(got["b"], state["b"])
    assert peak < 16 * MB + 3 * MB, f"{peak / MB:.1f} MB for 16 MB of arrays"


def test_fortran_ordered_and_empty_arrays_round_trip(tmp_path):
    p = tmp_path / "f.ckpt"
    state = {"f": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "e": np.zeros((0, 5)), "s": np.float32(2)}
    S.save(state, p)
    got = S.load(p)
    np.testing.assert_array_equal(got["f"], state["f"])
    assert got["e"].shape == (0, 5) and got["s"] == np.float32(2)


def test_structured_arrays_are_refused_at_save(tmp_path):
    rec = np.zeros(3, dtype=[("x", "<f4"), ("y", "<i8")])
    with pytest.raises(CheckpointError, match=r"'state/opt/r'.*structured dtype"):
        S.save({"opt": {"r": rec}}, tmp_path / "s.ckpt")
    assert not (tmp_path / "s.ckpt").exists()
    sub = np.zeros(2, dtype=("<f4", (3,)))
    S.save({"sub": sub}, tmp_path / "t.ckpt")        # a sub-array dtype is a plain (2, 3) float32 array
    assert S.load(tmp_path / "t.ckpt")["sub"].shape == (2, 3)


@pytest.mark.parametrize("dtype, match", [("<f8,<i4", "structured dtype"), ("|O", "Python objects"),
                                          (7, "malformed")])
def test_a_manifest_dtype_that_cannot_be_loaded_is_refused_unread(tmp_path, dtype, match):
    p = tmp_path / "dt.ckpt"
    m = {"format": S.FORMAT, "version": S.VERSION, "tree": {"t": "array", "key": "state"},
         "arrays": {"state": {"dtype": dtype, "shape": [2], "sha256": "0" * 64}}}
    body = json.dumps(m).encode()
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("__tinymoon_manifest__.npy", _npy_header(np.uint8, (len(body),)) + body)
        z.writestr("state.npy", _npy_header("<f8", (2,)) + bytes(16))
    with pytest.raises(CheckpointError, match=f"'state'.*{match}"):
        S.load(p)


# ---- modes ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_an_existing_files_mode_is_kept(tmp_path):
    p = tmp_path / "secret.ckpt"
    S.save({"w": np.ones(2)}, p)
    os.chmod(p, 0o600)
    S.save({"w": np.zeros(2)}, p)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    os.chmod(p, 0o640)
    S.save({"w": np.ones(2)}, p)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_new_file_gets_the_umask_default(tmp_path):
    old = os.umask(0o027)
    try:
        S.save({"w": np.ones(2)}, tmp_path / "a.ckpt")
        assert stat.S_IMODE(os.stat(tmp_path / "a.ckpt").st_mode) == 0o640
        os.umask(0o077)
        S.save({"w": np.ones(2)}, tmp_path / "b.ckpt")
        assert stat.S_IMODE(os.stat(tmp_path / "b.ckpt").st_mode) == 0o600
    finally:
        os.umask(old)


# ---- stale temporaries ------------------------------------------------------------------------------------

def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _temp(path, pid, host=None):
    name = f".{path.name}.{host or S._host_tag()}-{pid}-0123abcd.tmp"
    (path.parent / name).write_bytes(b"half a checkpoint")
    return path.parent / name


def test_only_stale_temporaries_of_the_same_path_are_removed(tmp_path):
    ck = tmp_path / "model.ckpt"
    dead = _temp(ck, _dead_pid())
    alive = _temp(ck, os.getppid())                                  # a live process (our parent)
    mine = _temp(ck, os.getpid())                                    # this process: maybe a save in flight
    other_host = _temp(ck, _dead_pid(), host="ffffffff")              # another machine on a shared disk
    other_file = _temp(tmp_path / "other.ckpt", _dead_pid())
    foreign = tmp_path / ".model.ckpt.abc123xy.tmp"                  # not our naming (an old mkstemp name)
    foreign.write_bytes(b"?")
    S.save({"w": np.ones(2)}, ck)
    left = set(os.listdir(tmp_path))
    assert dead.name not in left
    assert {alive.name, mine.name, other_host.name, other_file.name, foreign.name, "model.ckpt"} == left
    dead2 = _temp(ck, _dead_pid())
    S.load(ck)                                                      # a load cleans up too
    assert not dead2.exists()


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_a_save_killed_midway_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    ck = tmp_path / "model.ckpt"
    code = f"""
import sys, time, numpy as np
from tinymoon import serialization as S
def slow(f, arrays):
    f.write(b"PK" * 100000)
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
S._write_npz = slow
S.save({{"w": np.ones(10)}}, {str(ck)!r})
"""
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "writing"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    temps = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(temps) == 1 and f"-{p.pid}-" in temps[0]
    S.save({"w": np.zeros(3)}, ck)
    assert os.listdir(tmp_path) == ["model.ckpt"]
    np.testing.assert_array_equal(S.load(ck)["w"], np.zeros(3))
