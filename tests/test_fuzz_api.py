"""A fuzzer over the public API: random shapes, dtypes and values into every public function, with a fixed
seed and a time budget of a few seconds. Every failure must be one of tinymoon's errors (never a NumPy,
Numba or Python exception escaping from the inside), and its message must name the function.

Inputs that the policy refuses (float16, complex, strings, None, foreign objects) are part of the mix, so the
sweep also checks where arrays enter; values include NaN, infinities, zeros and empty axes.
"""
import inspect
import os
import time
import warnings

import numpy as np
import pytest

import tinymoon as tm
from tinymoon.errors import TinymoonError

SEED, BUDGET_S, MAX_CALLS = 20261202, 5.0, 30000

# names a message may use for a function (aliases point at one implementation)
ALSO = {"mse_loss": ("mse",), "cat": ("concatenate",), "view": ("reshape",), "expand_dims": ("unsqueeze",),
        "permute": ("transpose",), "sub": ("sub", "add"), "as_tensor": ("tensor",),
        "max_pool2d": ("max_pool2d", "pool"), "avg_pool2d": ("avg_pool2d", "pool")}
# functions whose arguments are not tensors first
SKIP = {"to_device", "astype"}          # exercised below with their own argument kinds


def _array(rng):
    ndim = int(rng.integers(0, 4))
    shape = tuple(int(rng.choice([0, 1, 1, 2, 3, 4])) for _ in range(ndim))
    kind = rng.choice(["f4", "f4", "f8", "f8", "i8", "u1", "b1", "f2", "c8", "i4"])
    vals = rng.standard_normal(shape) * rng.choice([1, 3, 100])
    if vals.size and rng.random() < 0.3:
        vals.flat[int(rng.integers(vals.size))] = rng.choice([np.nan, np.inf, -np.inf, 0.0])
    with np.errstate(all="ignore"):
        a = vals.astype(kind) if kind != "b1" else vals > 0
    return a


def _value(rng, depth=0):
    r = rng.random()
    if r < 0.55:
        a = _array(rng)
        return tm.Tensor._wrap(a) if a.dtype.kind in "fiub" and a.dtype.itemsize != 2 and rng.random() < 0.7 else a
    if r < 0.7:
        return float(rng.standard_normal()) if rng.random() < 0.5 else int(rng.integers(-3, 4))
    if r < 0.8 and depth == 0:
        return [_value(rng, 1) for _ in range(int(rng.integers(0, 3)))]
    return [None, "x", (1, 2), object(), 1j, -1, True][int(rng.integers(7))]


def _keyword(rng, name):
    choices = {
        "axis": [None, 0, 1, -1, 2, 5, (0, 1), (0, 0), "a"], "dim": [0, -1, 3], "keepdims": [True, False],
        "keepdim": [True, False], "ddof": [0, 1, 5], "reduction": ["mean", "sum", "none", "bad"],
        "stride": [1, 2, 0, -1, (1, 2)], "padding": [0, 1, "same", "valid", -1, 9], "dilation": [1, 2, 0],
        "groups": [1, 2, 0], "kernel_size": [1, 2, 3, 0, (2, 2)], "negative_slope": [0.1, -1.0],
        "alpha": [1.0, 0.0], "beta": [1.0, 0.0], "p": [0.0, 0.5, 1.0, -0.1, 2.0], "training": [True, False],
        "eps": [1e-5, 0.0, -1.0], "momentum": [0.1, 2.0], "lo": [None, 0.0, 1.0], "hi": [None, 0.5],
        "normalized_shape": [1, 2, (2, 3), 0], "pad_width": [0, 1, (1, 2), ((1, 0),), -1],
        "value": [0.0, 1.0], "start_axis": [0, 1, 5], "end_axis": [-1, 0], "generator": [0, None, -1],
        "dtype": [None, "float32", "float64", "int64", "bool", "float16", "complex64", "nope", 3],
        "device": [None, "cpu", "cuda:7", "tpu", 0], "seed": [0, 1, -1, 2.5, None, "s"],
        "requires_grad": [True, False], "padding_mode": ["zeros", "circular", "reflect"],
        "start_dim": [0, 1], "end_dim": [-1], "copy": [True, False],
    }
    opts = choices.get(name)
    return opts[int(rng.integers(len(opts)))] if opts else _value(rng)


def _call(rng, name, fn):
    sig = inspect.signature(fn)
    args, kwargs = [], {}
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            args += [int(rng.integers(-1, 4)) for _ in range(int(rng.integers(0, 3)))]
        elif p.kind is p.VAR_KEYWORD:
            continue
        elif p.default is p.empty and p.kind is not p.KEYWORD_ONLY:
            if name in ("concatenate", "cat", "stack") and not args:
                args.append([_value(rng, 1) for _ in range(int(rng.integers(0, 3)))])
            elif p.name in ("p", "generator", "normalized_shape", "kernel_size", "axis", "pad_width"):
                args.append(_keyword(rng, p.name))
            else:
                args.append(_value(rng))
        elif rng.random() < 0.4 and not p.name.startswith("vijp") and p.name != "what":
            kwargs[p.name] = _keyword(rng, p.name)
    return fn(*args, **kwargs)


def _names():
    return [n for n in tm.functional.__all__ if n not in SKIP]


def _check(name, exc):
    if not isinstance(exc, TinymoonError):
        return f"{name}: {type(exc).__module__}.{type(exc).__name__}: {exc}"
    names = (name,) + ALSO.get(name, ())
    if not any(n in str(exc) for n in names):
        return f"{name}: the message does not name it: {type(exc).__name__}: {exc}"
    return None


def _sweep(seed, budget_s, max_calls):
    rng = np.random.default_rng(seed)
    names = _names() + ["tensor", "as_tensor", "from_dlpack", "randn", "zeros", "arange"]
    bad, calls, ok, t0 = [], 0, 0, time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # NaN/inf inputs: NumPy's RuntimeWarnings are expected
        while calls < max_calls and time.perf_counter() - t0 < budget_s:
            name = names[calls % len(names)]
            calls += 1
            fn = getattr(tm, name)
            try:
                with np.errstate(all="ignore"):
                    _call(rng, name, fn)
                ok += 1
            except Exception as e:   # noqa: BLE001 - the point is to look at every exception
                why = _check(name, e)
                if why and why not in bad:
                    bad.append(why)
    return bad, calls, ok


def test_public_api_raises_only_tinymoon_errors_naming_the_op():
    bad, calls, ok = _sweep(SEED, BUDGET_S, MAX_CALLS)
    assert calls >= 200, f"the sweep made only {calls} calls in {BUDGET_S} s"
    assert ok >= calls // 10, f"only {ok} of {calls} calls succeeded: the inputs are too often nonsense"
    assert not bad, f"{len(bad)} kinds of failure in {calls} calls:\n" + "\n".join(bad[:40])


@pytest.mark.skipif(not os.environ.get("TINYMOON_FUZZ_SECONDS"), reason="a long sweep: set TINYMOON_FUZZ_SECONDS")
def test_public_api_long_sweep():
    seconds = float(os.environ["TINYMOON_FUZZ_SECONDS"])
    bad, calls, _ = _sweep(SEED + int(seconds), seconds, 10 ** 9)
    assert not bad, f"{len(bad)} kinds of failure in {calls} calls:\n" + "\n".join(bad[:80])
