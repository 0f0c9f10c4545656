import json
import math
import os

import numpy as np
import pytest

from tinymoon import serialization as S
from tinymoon.errors import CheckpointError, TinymoonError

try:
    from tinymoon.tensor import tensor
except Exception:  # the Tensor class may not have landed yet
    tensor = None


class FakeTensor:
    """Anything with .numpy() is array-like to the checkpoint writer."""

    def __init__(self, a):
        self._a = np.asarray(a)

    def numpy(self):
        return self._a.copy()


def nested_state():
    return {
        "model": {
            "fc1.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
            "fc1.bias": np.zeros(3, dtype=np.float32),
            "bn.running_mean": np.linspace(0, 1, 5),           # float64
            "emb": np.arange(6, dtype=np.int64).reshape(2, 3).T,  # non-contiguous
            "mask": np.array([True, False]),
            "empty": np.zeros((0, 3), dtype=np.float16),
        },
        "optimizer": {
            "state": {0: {"step": 3, "exp_avg": np.ones((3, 4), np.float32)}, 1: {"step": 3, "exp_avg": None}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False,
                              "params": [0, 1], "name": "adam"}],
        },
        "epoch": 7,
        "big": 2 ** 70,
        "neg_zero": -0.0,
        "specials": [math.inf, -math.inf],
        "np_scalars": {"f32": np.float32(1.5), "f64": np.float64(0.1), "i8": np.int8(-3), "b": np.bool_(True)},
        "strings": np.array(["a", "bc"]),
        "tricky keys": {"a/b": 1, "": 2, "%2F": 3, "#0": 4, 0: 5, "state": 6, "__tinymoon_manifest__": 7},
        "deep": [[[[{"x": np.float32(2)}]]]],
        "empty_containers": {"d": {}, "l": [], "t": ()},
    }


def assert_same(a, b, where="root"):
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k!r}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}/{i}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, float):
        assert a.hex() == b.hex(), where
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a == b, where
    else:
        assert a == b, where


@pytest.fixture
def ckpt(tmp_path):
    return tmp_path / "model.ckpt"


# ---- round trips ------------------------------------------------------------------------------------------

def test_round_trip_nested(ckpt):
    state = nested_state()
    S.save(state, ckpt)
    assert_same(state, S.load(ckpt))
    assert S.load(ckpt, map_location="cpu")["epoch"] == 7
    assert_same(S.load(str(ckpt))["model"], state["model"])
    assert os.listdir(ckpt.parent) == ["model.ckpt"]       # path used as given, no temp file left


def test_nan_and_bare_values(tmp_path):
    for i, obj in enumerate([float("nan"), np.arange(3), None, "text", [1, [2, (3,)]], np.float64("nan")]):
        p = tmp_path / f"{i}.npz"
        S.save(obj, p)
        got = S.load(p)
        if isinstance(obj, float) or isinstance(obj, np.floating):
            assert type(got) is type(obj) and math.isnan(got)
        else:
            assert_same(obj, got)


def test_tensors_saved_as_arrays(ckpt):
    S.save({"w": FakeTensor(np.eye(2, dtype=np.float32))}, ckpt)
    w = S.load(ckpt)["w"]
    assert type(w) is np.ndarray and w.dtype == np.float32
    np.testing.assert_array_equal(w, np.eye(2))


@pytest.mark.skipif(tensor is None, reason="tinymoon.tensor not available yet")
def test_tinymoon_tensor_round_trip(ckpt):
    t = tensor(np.arange(6, dtype=np.float64).reshape(2, 3), requires_grad=True)
    S.save({"w": t, "b": tensor(np.ones(3, np.float32))}, ckpt)
    got = S.load(ckpt)
    assert type(got["w"]) is np.ndarray and got["w"].dtype == np.float64
    np.testing.assert_array_equal(got["w"], t.numpy())
    assert got["b"].dtype == np.float32


def test_file_is_a_plain_npz_with_manifest(ckpt):
    S.save({"a": {"b": np.ones(2)}, 3: [np.zeros(1)]}, ckpt)
    with np.load(ckpt, allow_pickle=False) as z:
        assert set(z.files) == {"state/a/b", "state/#3/0", "__tinymoon_manifest__"}
        m = json.loads(z["__tinymoon_manifest__"].tobytes())
    assert m["format"] == "tinymoon-checkpoint" and m["version"] == S.VERSION
    assert m["arrays"]["state/a/b"]["shape"] == [2] and len(m["arrays"]["state/a/b"]["sha256"]) == 64


def test_overwrite_replaces(ckpt):
    S.save({"v": 1}, ckpt)
    S.save({"v": 2}, ckpt)
    assert S.load(ckpt) == {"v": 2}


# ---- refused at save --------------------------------------------------------------------------------------

def test_object_array_refused_naming_key(ckpt):
    with pytest.raises(CheckpointError, match=r"state/opt/#0/bad.*object"):
        S.save({"opt": {0: {"bad": np.array([1, "x", None], dtype=object)}}}, ckpt)
    assert not ckpt.exists() and os.listdir(ckpt.parent) == []


@pytest.mark.parametrize("obj, match", [
    ({"x": {1, 2}}, r"state/x"),
    ({"x": object()}, r"state/x"),
    ({(1, 2): np.ones(1)}, r"dict key"),
    ({True: 1}, r"dict key"),
])
def test_unsupported_values_refused(ckpt, obj, match):
    with pytest.raises(CheckpointError, match=match):
        S.save(obj, ckpt)


def test_cycle_refused(ckpt):
    d = {"a": []}
    d["a"].append(d)
    with pytest.raises(CheckpointError, match="cycle"):
        S.save(d, ckpt)


# ---- atomic write -----------------------------------------------------------------------------------------

def test_crash_midway_keeps_old_checkpoint(ckpt, monkeypatch):
    old = {"w": np.arange(4.0), "step": 1}
    S.save(old, ckpt)
    before = ckpt.read_bytes()

    def crashing_writer(f, arrays):
        f.write(b"PK\x03\x04 half a zip")   # some bytes reach the temporary file...
        f.flush()
        raise RuntimeError("disk on fire")  # ...then the process "dies"

    monkeypatch.setattr(S, "_write_npz", crashing_writer)
    with pytest.raises(RuntimeError, match="disk on fire"):
        S.save({"w": np.zeros(4), "step": 2}, ckpt)
    assert ckpt.read_bytes() == before
    assert_same(S.load(ckpt), old)
    assert os.listdir(ckpt.parent) == ["model.ckpt"]       # no temporary file left behind


def test_crash_on_first_save_leaves_nothing(ckpt, monkeypatch):
    def crashing_writer(f, arrays):
        np.savez(f, **arrays)
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "_write_npz", crashing_writer)
    with pytest.raises(KeyboardInterrupt):
        S.save({"w": np.ones(3)}, ckpt)
    assert os.listdir(ckpt.parent) == []


# ---- corrupt files ----------------------------------------------------------------------------------------

def _write_raw_npz(path, arrays, manifest=None):
    if manifest is not None:
        arrays = dict(arrays)
        arrays["__tinymoon_manifest__"] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _manifest_of(path):
    with np.load(path) as z:
        return json.loads(z["__tinymoon_manifest__"].tobytes()), {k: z[k] for k in z.files}


def test_truncated(ckpt):
    S.save(nested_state(), ckpt)
    data = ckpt.read_bytes()
    for cut in (0, 10, len(data) // 3, len(data) // 2, len(data) - 30):
        ckpt.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=str(ckpt.name)):
            S.load(ckpt)


def test_flipped_bytes_in_array_data(ckpt):
    w = np.arange(1000, dtype=np.float64)
    S.save({"layer.weight": w, "other": np.ones(3)}, ckpt)
    data = bytearray(ckpt.read_bytes())
    pos = data.find(w[500:502].tobytes())
    assert pos > 0
    data[pos + 3] ^= 0x40
    ckpt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.ckpt.*state/layer\.weight"):
        S.load(ckpt)


def test_sha256_catches_a_changed_array(ckpt):
    # a well-formed zip (CRCs fine) whose array no longer matches its manifest hash
    S.save({"w": np.arange(5.0)}, ckpt)
    manifest, arrays = _manifest_of(ckpt)
    del arrays["__tinymoon_manifest__"]
    arrays["state/w"] = arrays["state/w"] + 1
    _write_raw_npz(ckpt, arrays, manifest)
    with pytest.raises(CheckpointError, match=r"state/w.*SHA-256"):
        S.load(ckpt)


def test_flipped_bytes_anywhere_never_pass_silently(ckpt):
    state = {"a": np.arange(50, dtype=np.float32), "b": {"c": np.ones((4, 4)), "n": 3}}
    S.save(state, ckpt)
    data = ckpt.read_bytes()
    rng = np.random.default_rng(0)
    for pos in rng.choice(len(data), size=60, replace=False):
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        ckpt.write_bytes(bytes(bad))
        try:
            got = S.load(ckpt)
        except CheckpointError as e:
            assert "model.ckpt" in str(e)
            continue
        assert_same(got, state)    # a flip in zip slack (e.g. a timestamp) may be harmless, never wrong


def test_not_an_npz(ckpt, tmp_path):
    ckpt.write_bytes(b"hello, this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="model.ckpt"):
        S.load(ckpt)
    npy = tmp_path / "x.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(CheckpointError, match="single .npy"):
        S.load(npy)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.ones(2))
    with pytest.raises(CheckpointError, match="not a tinymoon checkpoint"):
        S.load(plain)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError):
        S.load(empty)


def test_pickle_is_never_unpickled(tmp_path):
    import pickle
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    p = tmp_path / "evil.ckpt"
    p.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        S.load(p)
    assert not marker.exists()
    # an object array smuggled into an npz is refused too
    with open(p, "wb") as f:
        np.savez(f, __tinymoon_manifest__=np.array([Evil()], dtype=object))
    with pytest.raises(CheckpointError, match="__tinymoon_manifest__"):
        S.load(p)
    assert not marker.exists()


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        S.load(tmp_path / "nope.ckpt")


@pytest.mark.parametrize("mutate, match", [
    (lambda m, a: a.__setitem__("__tinymoon_manifest__", np.frombuffer(b"{not json", np.uint8)), "manifest"),
    (lambda m, a: a.__setitem__("__tinymoon_manifest__", np.array([1.0, 2.0])), "manifest"),
    (lambda m, a: m.__setitem__("format", "something-else"), "does not describe"),
    (lambda m, a: m.__setitem__("version", 99), "newer"),
    (lambda m, a: m.__setitem__("version", "1"), "version"),
    (lambda m, a: m.pop("arrays"), "lacks"),
    (lambda m, a: a.pop("state/w"), r"state/w.*missing"),
    (lambda m, a: a.__setitem__("state/extra", np.ones(1)), r"state/extra"),
    (lambda m, a: m["arrays"]["state/w"].__setitem__("dtype", "<f4"), r"state/w.*float32"),
    (lambda m, a: m["arrays"]["state/w"].__setitem__("shape", [2, 2]), r"state/w.*\(2, 2\)"),
    (lambda m, a: m["arrays"]["state/w"].pop("sha256"), r"state/w.*malformed"),
    (lambda m, a: m["tree"].__setitem__("t", "set"), "unknown type"),
    (lambda m, a: m["tree"]["items"][0].__setitem__(1, {"t": "int", "v": "seven"}), "malformed"),
    (lambda m, a: m["tree"]["items"][0].__setitem__(1, {"t": "array", "key": "state/zzz"}), r"state/zzz"),
    (lambda m, a: m["tree"]["items"][0].__setitem__(1, {"t": "float", "v": "zzz"}), "malformed"),
    (lambda m, a: m["tree"]["items"][0].__setitem__(1, [1, 2]), "malformed"),
])
def test_wrong_manifest(ckpt, mutate, match):
    S.save({"w": np.arange(4.0), "n": 1}, ckpt)
    manifest, arrays = _manifest_of(ckpt)
    del arrays["__tinymoon_manifest__"]
    mutate(manifest, arrays)
    if "__tinymoon_manifest__" in arrays:   # the mutation replaced the manifest itself
        _write_raw_npz(ckpt, arrays)
    else:
        _write_raw_npz(ckpt, arrays, manifest)
    with pytest.raises(CheckpointError, match=match) as info:
        S.load(ckpt)
    assert "model.ckpt" in str(info.value)
    assert isinstance(info.value, TinymoonError)


# ---- check_state_dict -------------------------------------------------------------------------------------

def test_check_state_dict_ok():
    exp = {"w": np.zeros((2, 3), np.float32), "b": FakeTensor(np.zeros(3, np.float32))}
    S.check_state_dict(exp, {"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)})
    S.check_state_dict({"w": exp["w"]}, {"w": exp["w"], "x": np.ones(1)}, strict=False)


@pytest.mark.skipif(tensor is None, reason="tinymoon.tensor not available yet")
def test_check_state_dict_with_tensors():
    S.check_state_dict({"w": tensor(np.zeros((2, 2), np.float32))}, {"w": np.zeros((2, 2), np.float32)})
    with pytest.raises(CheckpointError, match="float64"):
        S.check_state_dict({"w": tensor(np.zeros((2, 2), np.float32))}, {"w": np.zeros((2, 2))})


@pytest.mark.parametrize("loaded, match", [
    ({"w": np.zeros((2, 3), np.float32)}, r"missing key 'b'"),
    ({"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32), "c": np.zeros(1)}, r"unexpected key 'c'"),
    ({"w": np.zeros((3, 2), np.float32), "b": np.zeros(3, np.float32)}, r"'w'.*shape.*\(2, 3\).*\(3, 2\)"),
    ({"w": np.zeros((2, 3), np.float64), "b": np.zeros(3, np.float32)}, r"'w'.*dtype.*float32.*float64"),
    ({"w": np.zeros((2, 3), np.float32), "b": {"nested": 1}}, r"'b'.*not an array"),
])
def test_check_state_dict_mismatches(loaded, match):
    exp = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}
    with pytest.raises(CheckpointError, match=match):
        S.check_state_dict(exp, loaded)


def test_check_state_dict_reports_everything():
    exp = {"a": np.zeros(1), "b": np.zeros(2), "c": np.zeros(3, np.float32)}
    with pytest.raises(CheckpointError) as info:
        S.check_state_dict(exp, {"b": np.zeros(5), "c": np.zeros(3), "d": np.zeros(1)})
    msg = str(info.value)
    for piece in ("missing key 'a'", "unexpected key 'd'", "'b': shape", "'c': dtype"):
        assert piece in msg


def test_check_after_round_trip(ckpt):
    model = {"fc.weight": np.ones((4, 2), np.float32), "fc.bias": np.zeros(4, np.float32)}
    S.save(model, ckpt)
    S.check_state_dict(model, S.load(ckpt))
