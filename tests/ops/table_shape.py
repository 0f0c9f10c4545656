"""Op table rows: shape primitives (reshape, transpose, broadcast_to, squeeze, unsqueeze, flatten, getitem,
concatenate, stack, pad)."""
import numpy as np
from hypothesis import strategies as st

import tinymoon as tm

from .spec import OpSpec, shapes, values


def one(min_dims=1, max_dims=3, min_side=1, max_side=4):
    def draw_inputs(draw, dtype):
        return [values(draw, draw(shapes(min_dims, max_dims, min_side, max_side)), dtype)]
    return draw_inputs


def ones_inside(draw, dtype):
    """A shape with size-1 axes sprinkled in (for squeeze / broadcast_to)."""
    s = draw(st.lists(st.sampled_from([1, 1, 2, 3]), min_size=1, max_size=4))
    return [values(draw, tuple(s), dtype)]


def joinable(stacked, n=3):
    """n tensors that concatenate along axis 1 (or stack: one shape)."""
    def draw_inputs(draw, dtype):
        base = list(draw(shapes(min_dims=2, max_dims=3, max_side=3)))
        out = []
        for _ in range(n):
            s = list(base)
            if not stacked:
                s[1] = draw(st.integers(0 if out else 1, 3))
            out.append(values(draw, tuple(s), dtype))
        return out
    return draw_inputs


def _bcast_target(shape):
    return (2,) + tuple(3 if n == 1 else n for n in shape)


def _mask(shape):
    return np.arange(int(np.prod(shape))).reshape(shape) % 3 != 1


REPEATS = [0, 2, 0, 1, 2, 0]

ROWS = [
    OpSpec("reshape", lambda x: x.reshape(x.shape[::-1]), lambda x: x.reshape(x.shape[::-1]), one()),
    OpSpec("reshape_neg1", lambda x: tm.reshape(x, -1, x.shape[-1]), lambda x: x.reshape(-1, x.shape[-1]), one()),
    OpSpec("transpose", lambda x: x.transpose(), np.transpose, one()),
    OpSpec("permute", lambda x: x.permute(2, 0, 1), lambda x: np.transpose(x, (2, 0, 1)), one(3, 3)),
    OpSpec("broadcast_to", lambda x: tm.broadcast_to(x, _bcast_target(x.shape)),
           lambda x: np.broadcast_to(x, _bcast_target(x.shape)), ones_inside),
    OpSpec("squeeze", lambda x: x.squeeze(), np.squeeze, ones_inside),
    OpSpec("squeeze_axis", lambda x: tm.squeeze(tm.unsqueeze(x, 1), 1), lambda x: x, one()),
    OpSpec("unsqueeze", lambda x: x.unsqueeze(-1), lambda x: np.expand_dims(x, -1), one()),
    OpSpec("flatten", lambda x: x.flatten(1), lambda x: x.reshape(x.shape[0], -1), one(2, 4)),
    OpSpec("getitem_basic", lambda x: x[1:, ::-1], lambda x: x[1:, ::-1], one(2, 3, 2)),
    OpSpec("getitem_int_none_ellipsis", lambda x: x[-1, None, ..., ::2], lambda x: x[-1, None, ..., ::2], one(2, 3)),
    OpSpec("getitem_int_array", lambda x: x[[2, 0, 1]], lambda x: x[[2, 0, 1]], one(1, 3, 3)),
    OpSpec("getitem_repeated", lambda x: x[REPEATS], lambda x: x[REPEATS], one(1, 3, 3)),
    OpSpec("getitem_2d_repeated", lambda x: x[:, [1, 0, 1], [0, 0, 0]], lambda x: x[:, [1, 0, 1], [0, 0, 0]],
           one(3, 3, 2)),
    OpSpec("getitem_tensor_index", lambda x: x[tm.tensor([1, -1])], lambda x: x[[1, -1]], one(1, 3, 2)),
    OpSpec("getitem_bool", lambda x: x[_mask(x.shape)], lambda x: x[_mask(x.shape)], one()),
    OpSpec("concatenate", lambda a, b, c: tm.concatenate([a, b, c], axis=1),
           lambda a, b, c: np.concatenate([a, b, c], axis=1), joinable(False)),
    OpSpec("stack", lambda a, b, c: tm.stack([a, b, c], axis=-1), lambda a, b, c: np.stack([a, b, c], axis=-1),
           joinable(True)),
    OpSpec("pad", lambda x: tm.pad(x, [(1, 2)] + [(0, 1)] * (x.ndim - 1), value=0.5),
           lambda x: np.pad(x, [(1, 2)] + [(0, 1)] * (x.ndim - 1), constant_values=0.5), one()),
]
