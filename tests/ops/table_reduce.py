"""Op table rows: reductions (sum, mean, max, min, logsumexp, var) over None / int / tuple axes."""
import numpy as np

import tinymoon as tm

from .spec import OpSpec, shapes, values


def one(min_dims=1, max_dims=3, min_side=1, max_side=4, distinct=False):
    def draw_inputs(draw, dtype):
        x = values(draw, draw(shapes(min_dims, max_dims, min_side, max_side)), dtype)
        if distinct:     # values at least 0.04 apart: no ties, so max/min stay differentiable under eps
            rank = np.argsort(np.argsort(x, axis=None)).reshape(x.shape)
            x = ((rank - x.size / 2) * 0.05).astype(dtype)
        return [x]
    return draw_inputs


def _logsumexp(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    y = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return y if keepdims else np.squeeze(y, axis=axis) if axis is not None else y.reshape(())


ROWS = []
for name, fn, ref, kw in [("sum", tm.sum, np.sum, {}), ("mean", tm.mean, np.mean, {}),
                          ("max", tm.max, np.max, dict(distinct=True)), ("min", tm.min, np.min, dict(distinct=True)),
                          ("logsumexp", tm.logsumexp, _logsumexp, {}),
                          ("var", tm.var, np.var, dict(min_side=2))]:
    ROWS += [
        OpSpec(f"{name}_all", lambda x, fn=fn: fn(x), lambda x, ref=ref: ref(x), one(**kw)),
        OpSpec(f"{name}_axis", lambda x, fn=fn: fn(x, axis=-1), lambda x, ref=ref: ref(x, axis=-1), one(**kw)),
        OpSpec(f"{name}_tuple_keepdims", lambda x, fn=fn: fn(x, axis=(0, -1), keepdims=True),
               lambda x, ref=ref: ref(x, axis=(0, -1), keepdims=True), one(min_dims=2, **kw)),
    ]
ROWS += [
    OpSpec("var_ddof1", lambda x: tm.var(x, axis=0, ddof=1), lambda x: np.var(x, axis=0, ddof=1), one(min_side=2)),
    OpSpec("sum_method", lambda x: x.sum(axis=1), lambda x: x.sum(axis=1), one(min_dims=2)),
]
