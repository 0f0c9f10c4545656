"""tinymoon — a small tensor and autodiff engine with forward (jvp), reverse (vjp) and inverse (vijp)
modes, and the memory-saving gradient algorithms built on them.

    import tinymoon as tm
    x = tm.randn(3, 4, seed=0, requires_grad=True)
    (x.tanh() * x).sum().backward()
"""
__version__ = "0.1.0"      # the one place the version lives (pyproject.toml reads it)

from . import backend, errors, memory
from .autodiff.forward import jvp
from .autodiff.higher import hessian, hvp
from .autodiff.inverse import vijp
from .autodiff.reverse import grad, value_and_grad, vjp
from .autodiff.state import enable_grad, higher_order, is_grad_enabled, no_grad, set_grad_enabled
from .backend import cuda_available, float32, float64, int32, int64
from .functional import *  # noqa: F401,F403
from .tensor import (Tensor, arange, as_tensor, from_dlpack, full, generator, ones, ones_like, rand, randn,
                     tensor, zeros, zeros_like)
from . import _methods  # noqa: F401  (binds operators and methods onto Tensor)
from . import nn, data, optim  # noqa: E402  (training: modules, datasets, optimisers)
from .serialization import load, save  # noqa: E402  (checkpoints)
from .threads import get_num_threads, set_num_threads  # noqa: E402

_ALGORITHMS = ("moonwalk", "fewbit", "randomized", "petra")


def __getattr__(name):
    """tm.moonwalk, tm.fewbit, tm.randomized, tm.petra: imported on first use (they are not needed to
    build or train a model, and importing them eagerly would slow down `import tinymoon`)."""
    if name in _ALGORITHMS:
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'tinymoon' has no attribute {name!r}")

