"""Which implementation runs a kernel: "reference" (NumPy), "numba" (Numba CPU), "cuda" (Numba CUDA),
"cupy" (CuPy / cuBLAS).

Precedence, first that applies:
  1. `with kernels.use(name):`     (per thread / async task: a contextvar)
  2. `kernels.set_impl(name)`      (process-wide; `set_impl(None)` clears it)
  3. env TINYMOON_KERNELS=name     (looked up at every call, so tests can monkeypatch it)
  4. the default rule: CuPy arrays -> "cupy"; other device arrays -> "cuda"; host arrays -> CPU_CHOICE.

A forced implementation that cannot run on the given arrays raises (ValueError for wrong arrays,
RuntimeError for a missing GPU/library) and says why; it never silently falls back.

Implementations are named "module:function" strings and imported on first use, so numba.cuda and cupy are
imported only when asked for (the CUDA simulator must be switched on before numba.cuda is imported).
"""
import contextlib
import contextvars
import importlib
import os
import sys

import numpy as np

IMPLS = ("reference", "numba", "cuda", "cupy")
ENV_VAR = "TINYMOON_KERNELS"
# `ENV_VAR in os.environ` costs ~1.5 µs (Mapping machinery + key encoding), paid by every small op; the
# encoded key looked up in the environment's own dict is the same test for ~50 ns (CPython keeps it there).
_ENV_DATA = getattr(os.environ, "_data", None)
_ENV_KEY = os.environ.encodekey(ENV_VAR) if hasattr(os.environ, "encodekey") else None


def _env_set():
    if _ENV_DATA is not None and _ENV_KEY is not None:
        return _ENV_KEY in _ENV_DATA
    return ENV_VAR in os.environ

OPS = ("matmul", "conv2d_forward", "conv2d_grad_input", "conv2d_grad_weight", "max_pool2d_forward",
       "max_pool2d_backward", "max_pool2d_gather", "avg_pool2d_forward", "avg_pool2d_backward", "pack_bits",
       "unpack_bits", "pack_bins", "unpack_bins", "act_forward", "relu_mask_forward", "masked_grad",
       "fewbit_forward", "fewbit_backward")

# module per implementation, and the function name pattern inside it
_MODULES = {"reference": None, "numba": None, "cuda": "cuda", "cupy": "cupy_impl"}
_FAMILY = {"matmul": "gemm", "conv2d_forward": "conv", "conv2d_grad_input": "conv",
           "conv2d_grad_weight": "conv", "max_pool2d_forward": "pool", "max_pool2d_backward": "pool",
           "max_pool2d_gather": "pool", "avg_pool2d_forward": "pool", "avg_pool2d_backward": "pool",
           "pack_bits": "bitpack", "unpack_bits": "bitpack",
           "pack_bins": "bitpack", "unpack_bins": "bitpack", "act_forward": "pointwise",
           "relu_mask_forward": "pointwise", "masked_grad": "pointwise", "fewbit_forward": "fewbit",
           "fewbit_backward": "fewbit"}
_FUNC = {"act_forward": "act"}  # act_forward's implementations are called act_<impl>

# Default on host arrays: op -> (implementation, minimum element count; below it "reference").
# Backed by `python -m tinymoon.bench kernels` (docs/kernels.md), 2-core CPU:
#  - matmul: BLAS always wins (3.6-6x over the Numba blocked kernel); Numba is for reading and checking.
#  - conv2d: the Numba implementation (direct kernels, or im2col + BLAS for wide layers: conv.direct_wins)
#    beats the reference's strided im2col + batched GEMMs on every layer measured, and the reference beats
#    nothing at small sizes either (its NumPy passes cost tens of µs).  Pooling: the one-pass Numba kernels.
#    Both are threads.Kernel: serial below the pool's break-even work, parallel above, so no threshold here.
#  - relu mask / masked_grad: threads.Kernel too (a serial call costs ~0.2 µs, less than NumPy's passes).
#  - act_forward: a threads.Kernel (serial, vectorised, below the pool's break-even); faster than NumPy's
#    passes at every size for the compiled bodies (gelu 5.2 vs 14.5 µs at 16 elements, 12.6 vs 62 at 2048,
#    measured with the parallel compilation on one thread, which the serial loop now matches; tanh, whose
#    value both take from np.tanh, 3.5 vs 2.5 µs at 16 for an f' from x that keeps its digits).
#  - pack_bins: plain parallel kernels, which win (1.5-7.6x) once the array amortises
#    the pool's launch; that launch costs ~4x more under the workqueue layer than under OpenMP, so the
#    threshold is scaled by LAUNCH_SCALE (see _rescale).  Plain masks: np.packbits/unpackbits (SIMD) win.
CPU_CHOICE = {
    "matmul": ("reference", 0),
    "conv2d_forward": ("numba", 0),
    "conv2d_grad_input": ("numba", 0),
    "conv2d_grad_weight": ("numba", 0),
    "max_pool2d_forward": ("numba", 0),
    "max_pool2d_backward": ("numba", 0),
    "max_pool2d_gather": ("numba", 0),
    "avg_pool2d_forward": ("numba", 0),
    "avg_pool2d_backward": ("numba", 0),
    "pack_bits": ("reference", 0),
    "unpack_bits": ("reference", 0),
    "pack_bins": ("numba", 1 << 12),
    "unpack_bins": ("numba", 1 << 12),
    "act_forward": ("numba", 0),
    "relu_mask_forward": ("numba", 0),
    "masked_grad": ("numba", 0),
    "fewbit_forward": ("numba", 0),      # threads.Kernel (serial when small): faster than the reference at
    "fewbit_backward": ("numba", 0),     # every size (64 elements: 9 vs 15 µs forward, 4.7 vs 6.2 backward)
}
# measured launch cost relative to OpenMP's (`bench kernels --sections launch`): the thresholds above are
# OpenMP's and scale by this once the layer is known
LAUNCH_SCALE = {"workqueue": 4}
_cpu = dict(CPU_CHOICE)          # CPU_CHOICE as it applies to this process's threading layer


def _rescale():
    from numba import config
    k = LAUNCH_SCALE.get(config.THREADING_LAYER, 1)
    _cpu.clear()
    _cpu.update({op: (impl, n * k) for op, (impl, n) in CPU_CHOICE.items()})


_context = contextvars.ContextVar("tinymoon_kernels_impl", default=None)
_global = None


def _check_name(name, source):
    if name not in IMPLS:
        raise ValueError(f"{source}: unknown kernel implementation {name!r}; expected one of {list(IMPLS)}")
    return name


def set_impl(name):
    """Force an implementation process-wide (None: back to env var / defaults)."""
    global _global
    _global = None if name is None else _check_name(name, "set_impl")


@contextlib.contextmanager
def use(name):
    """`with use("reference"): ...` forces an implementation inside the block (None: no forcing)."""
    token = _context.set(None if name is None else _check_name(name, "use"))
    try:
        yield
    finally:
        _context.reset(token)


def forced():
    """The forced implementation name, or None."""
    name = _context.get() or _global
    if name:
        return name
    env = os.environ.get(ENV_VAR, "").strip()
    return _check_name(env, f"environment variable {ENV_VAR}") if env else None


# ------------------------------------------------------------------------------------------ environment
def cuda_simulator():
    """True when Numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1): 'cuda' kernels run on host arrays."""
    from numba import config
    return bool(config.ENABLE_CUDASIM)


def cuda_available():
    try:
        from numba import cuda
        return cuda_simulator() or bool(cuda.is_available())
    except Exception:  # a broken CUDA driver install must not break CPU users
        return False


def cupy_available():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def available_impls():
    """Implementations that can run in this process."""
    return [n for n, ok in (("reference", True), ("numba", True), ("cuda", cuda_available()),
                            ("cupy", cupy_available())) if ok]


def array_kind(a):
    """'host' (NumPy / Python scalar), 'cupy', or 'device' (anything else exposing __cuda_array_interface__)."""
    if isinstance(a, (np.ndarray, np.generic, int, float, bool)):
        return "host"
    cupy = sys.modules.get("cupy")          # imported by whoever made the array; never imported here
    if cupy is not None and isinstance(a, cupy.ndarray):
        return "cupy"
    if hasattr(a, "__cuda_array_interface__"):
        return "device"
    return "host"


def _size(arrays):
    return max((int(getattr(a, "size", 1)) for a in arrays), default=0)


def choose(op, *arrays):
    """The implementation name that will run `op` on these arrays (raises if a forced one cannot)."""
    if _context.get() is None and _global is None and not _env_set():
        # the common case, kept cheap (it runs for every small op): host arrays, nothing forced
        if len(arrays) == 1 and type(arrays[0]) is np.ndarray:
            impl, min_size = _cpu[op]
            return impl if arrays[0].size >= min_size else "reference"
        if all(type(a) is np.ndarray for a in arrays):
            impl, min_size = _cpu[op]
            return impl if min_size == 0 or _size(arrays) >= min_size else "reference"
    kinds = {array_kind(a) for a in arrays}
    name = forced()
    if name is None:
        if "cupy" in kinds:
            return "cupy"
        if "device" in kinds:
            return "cuda"
        impl, min_size = _cpu[op]
        return impl if _size(arrays) >= min_size else "reference"
    on_device = kinds & {"cupy", "device"}
    if name in ("reference", "numba") and on_device:
        raise ValueError(f"{op}: the {name!r} implementation runs on host NumPy arrays, got device arrays; "
                         f"use 'cupy' or 'cuda', or copy to the host first")
    if name == "cuda":
        if not cuda_available():
            raise RuntimeError(f"{op}: the 'cuda' implementation needs a CUDA GPU (or NUMBA_ENABLE_CUDASIM=1); "
                               f"no GPU here")
        if "host" in kinds and not cuda_simulator():
            raise ValueError(f"{op}: the 'cuda' implementation needs device arrays (CuPy), got NumPy arrays; "
                             f"move them with cupy.asarray")
    if name == "cupy":
        if not cupy_available():
            raise RuntimeError(f"{op}: the 'cupy' implementation needs CuPy and a GPU; none here")
        if "host" in kinds:
            raise ValueError(f"{op}: the 'cupy' implementation needs CuPy arrays, got NumPy arrays; "
                             f"move them with cupy.asarray")
    return name


_resolved = {}


OMP_POLICY_SET_HERE = False     # True once this module has set OMP_WAIT_POLICY itself


def _foreign_openmp_loaded():
    """Is another OpenMP runtime (PyTorch's bundled libgomp, Intel's libiomp, LLVM's libomp) mapped into this
    process already?  Linux: /proc/self/maps; elsewhere: is PyTorch imported (the case we measured)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return "torch" in sys.modules
    return any(lib in maps for lib in ("libgomp", "libiomp", "libomp"))


def _choose_threading_layer():
    """Just before Numba starts its thread pool (its first parallel launch): a pool that will not fight.

    Measured on 2 cores (`python -m tinymoon.bench kernels --sections threading`, docs/kernels.md):
    - Numba's OpenMP layer keeps idle workers spinning, and they starve the OpenBLAS threads of the next
      GEMM (a conv forward+backward went from 72 ms to 1.95 s): OMP_WAIT_POLICY=PASSIVE (set here unless
      the user chose a policy) makes them sleep.
    - A second OpenMP runtime already running when Numba's starts (PyTorch, imported and used first) is not
      cured by that: an MLP step whose ReLUs run the fused Numba kernel took 40 ms instead of 15 ms.  Then
      we take the "workqueue" layer, a pthread pool that sleeps on a condition variable (15 ms).  It is
      ~10% slower than OpenMP on memory-bound kernels otherwise, so it is not the default.  It cannot take
      concurrent launches from several threads; ours cannot happen, as these kernels hold the GIL.
    A user's NUMBA_THREADING_LAYER always wins."""
    _quiet_openmp()
    if "NUMBA_THREADING_LAYER" not in os.environ:
        from numba import config
        from numba.np.ufunc import parallel
        if not getattr(parallel, "_is_initialized", False) and config.THREADING_LAYER == "default" \
                and _foreign_openmp_loaded():
            config.THREADING_LAYER = "workqueue"
    _rescale()


def _quiet_openmp():
    """OMP_WAIT_POLICY=PASSIVE unless the user chose a policy.  An OpenMP runtime reads it once, when it
    loads: Numba's at its first parallel launch, PyTorch's libgomp at `import torch`.  So it is set when
    tinymoon.kernels is imported (below) — a process that imports tinymoon before torch gets idle workers
    that sleep in *both* runtimes, and a benchmark against PyTorch in one process measures the same thing
    every run — and again before Numba's first launch, in case someone removed it in between."""
    global OMP_POLICY_SET_HERE
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        OMP_POLICY_SET_HERE = True


# Was another OpenMP runtime loaded before us (then its wait policy is whatever it read at its load)?
FOREIGN_OPENMP_AT_IMPORT = _foreign_openmp_loaded()
_quiet_openmp()
_rescale()


def resolve(op, impl):
    """The function implementing `op` in `impl` (imported on first use, then cached)."""
    fn = _resolved.get((op, impl))
    if fn is None:
        if impl == "numba":
            _choose_threading_layer()
        module = _MODULES[impl] or _FAMILY[op]
        mod = importlib.import_module(f"{__package__}.{module}")
        fn = _resolved[(op, impl)] = getattr(mod, f"{_FUNC.get(op, op)}_{impl}")
    return fn


def call(op, arrays, *args, **kwargs):
    """Run `op` with the implementation chosen for `arrays` (the arrays that decide placement and size)."""
    impl = choose(op, *arrays)
    fn = _resolved.get((op, impl))          # resolve()'s cache, read here: this runs for every small op
    return (fn or resolve(op, impl))(*args, **kwargs)


def unforced():
    """True when nothing forces an implementation (no use(), set_impl() or TINYMOON_KERNELS): what the
    kernels' host fast paths check before taking the default without asking choose()."""
    return _context.get() is None and _global is None and not _env_set()
