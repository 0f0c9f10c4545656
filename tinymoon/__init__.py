"""tinymoon — a small tensor and autodiff engine with forward (jvp), reverse (vjp) and inverse (vijp)
modes, and the memory-saving gradient algorithms built on them.

    import tinymoon as tm
    x = tm.randn(3, 4, seed=0, requires_grad=True)
    (x.tanh() * x).sum().backward()
"""
from . import backend, errors, memory
from .autodiff.forward import jvp
from .autodiff.inverse import vijp
from .autodiff.reverse import grad, value_and_grad, vjp
from .autodiff.state import enable_grad, is_grad_enabled, no_grad
from .backend import cuda_available, float32, float64, int32, int64
from .functional import *  # noqa: F401,F403
from .functional import abs, pow  # noqa: A004
from .tensor import (Tensor, arange, as_tensor, from_dlpack, full, generator, ones, ones_like, rand, randn,
                     tensor, zeros, zeros_like)
from . import _methods  # noqa: F401  (binds operators and methods onto Tensor)
# `from .functional import *` also exported the submodule functional.nn as `nn`: import tinymoon.nn explicitly
# (a plain `from . import nn` would find that attribute and stop there).
import importlib as _importlib  # noqa: E402
nn = _importlib.import_module(".nn", __name__)
from . import data, optim  # noqa: E402  (training: optimisers, datasets)
from .serialization import load, save  # noqa: E402  (checkpoints)

__version__ = "0.1.0"
