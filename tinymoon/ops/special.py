"""Special functions the array modules lack: erf (for exact GELU) without SciPy.

On CPU a Numba ufunc wraps math.erf (full float64 accuracy); on GPU cupyx.scipy.special.erf.
"""
import math

import numpy as np

from ..backend import get_array_module

_erf_ufunc = None


def erf(x):
    xp = get_array_module(x)
    if xp is not np:
        from cupyx.scipy.special import erf as cupy_erf
        return cupy_erf(x)
    global _erf_ufunc
    if _erf_ufunc is None:
        from numba import vectorize

        @vectorize(["float32(float32)", "float64(float64)"], cache=True)
        def _erf(v):
            return math.erf(v)
        _erf_ufunc = _erf
    return _erf_ufunc(x)


SQRT_HALF = 0.7071067811865476
INV_SQRT_2PI = 0.3989422804014327
