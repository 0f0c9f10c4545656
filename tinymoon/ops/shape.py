"""Shape primitives: reshape (and squeeze, unsqueeze, flatten), transpose, broadcast_to, getitem,
concatenate, stack, pad.

They move, copy or drop coordinates without arithmetic, so every Jacobian is a 0/1 matrix:
- reshape / transpose are permutations: vijp always exists (the inverse permutation);
- broadcast_to copies, getitem with repeated indices copies: the vjp *sums* the copies, so all copies
  but one are erased — that is the fragment;
- getitem without repeats, concatenate / stack (along the data-path input) and pad select: the vjp
  drops the cotangent of the other inputs / of the padded border — that is the fragment.
Forward results are views where NumPy gives views (no copy).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..errors import OutOfBoundsError, ShapeError
from .base import Primitive, check_fragment


def sum_to(g, shape):
    """Sum g down to `shape` (the adjoint of broadcasting `shape` up to g.shape): the engine un-broadcasts
    every cotangent with it, once, and the rules that broadcast on their own use it too."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    if lead < 0:
        raise ShapeError(f"a cotangent of shape {g.shape} cannot be summed down to the input shape {shape}")
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def normalize_axis(op, axis, ndim):
    """axis in [-ndim, ndim) -> [0, ndim), or a ShapeError naming the op."""
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{op}: axis {axis} is out of range for a tensor with {ndim} dimension(s)")
    return axis % ndim


# ---- reshape and its relatives -----------------------------------------------------------------------

class Reshape(Primitive):
    """y = x.reshape(shape). The Jacobian is the identity on the flat data: every rule reshapes.
    vijp: always exists (y_bar = x_bar.reshape(out_shape))."""
    name = "reshape"

    @classmethod
    def target(cls, in_shape, shape=None):
        """The output shape for an input of `in_shape` (subclasses: squeeze, unsqueeze, flatten)."""
        shape = tuple(int(s) for s in shape)
        size = int(np.prod(in_shape))
        if shape.count(-1) > 1 or any(s < -1 for s in shape):
            raise ShapeError(f"reshape: invalid target shape {shape} (at most one -1, no other negative sizes)")
        if -1 in shape:
            rest = int(np.prod([s for s in shape if s != -1]))
            if rest == 0 or size % rest:
                raise ShapeError(f"reshape: cannot reshape shape {tuple(in_shape)} ({size} elements) into {shape}")
            shape = tuple(size // rest if s == -1 else s for s in shape)
        if int(np.prod(shape)) != size:
            raise ShapeError(f"reshape: cannot reshape shape {tuple(in_shape)} ({size} elements) into {shape}")
        return shape

    @classmethod
    def forward(cls, ctx, x, **params):
        ctx.in_shape = x.shape
        ctx.out_shape = cls.target(x.shape, **params)
        return x.reshape(ctx.out_shape)

    @staticmethod
    def jvp(ctx, x_dot):
        return x_dot.reshape(ctx.out_shape)

    @staticmethod
    def vjp(ctx, y_bar):
        return (y_bar.reshape(ctx.in_shape),)

    @staticmethod
    def vijp(ctx, x_bar, fragment):
        return x_bar.reshape(ctx.out_shape)     # J is a relabelling: always invertible


class Copy(Primitive):
    """y = x in new memory (Tensor.clone): the identity map, so every rule passes its argument through."""
    name = "copy"

    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def jvp(ctx, x_dot):
        return x_dot

    @staticmethod
    def vjp(ctx, y_bar):
        return (y_bar,)

    @staticmethod
    def vijp(ctx, x_bar, fragment):
        return x_bar


class Squeeze(Reshape):
    """Drop size-1 axes (all of them when axis is None)."""
    name = "squeeze"

    @classmethod
    def target(cls, in_shape, axis=None):
        if axis is None:
            return tuple(n for n in in_shape if n != 1)
        axis = axis if isinstance(axis, (tuple, list)) else (axis,)
        axes = {normalize_axis("squeeze", a, len(in_shape)) for a in axis}
        for a in sorted(axes):
            if in_shape[a] != 1:
                raise ShapeError(f"squeeze: axis {a} of shape {tuple(in_shape)} has size {in_shape[a]}, not 1")
        return tuple(n for i, n in enumerate(in_shape) if i not in axes)


class Unsqueeze(Reshape):
    """Insert size-1 axes at `axis` (positions in the output, like numpy.expand_dims)."""
    name = "unsqueeze"

    @classmethod
    def target(cls, in_shape, axis=0):
        axes = axis if isinstance(axis, (tuple, list)) else (axis,)
        nd = len(in_shape) + len(axes)
        pos = sorted(normalize_axis("unsqueeze", a, nd) for a in axes)
        if len(set(pos)) != len(pos):
            raise ShapeError(f"unsqueeze: repeated axis in {axis}")
        out, it = [], iter(in_shape)
        for i in range(nd):
            out.append(1 if i in pos else next(it))
        return tuple(out)


class Flatten(Reshape):
    """Merge axes start_axis..end_axis (inclusive) into one; a 0-d input becomes shape (1,)."""
    name = "flatten"

    @classmethod
    def target(cls, in_shape, start_axis=0, end_axis=-1):
        if len(in_shape) == 0:
            return (1,)
        s = normalize_axis("flatten", start_axis, len(in_shape))
        e = normalize_axis("flatten", end_axis, len(in_shape))
        if s > e:
            raise ShapeError(f"flatten: start_axis {start_axis} comes after end_axis {end_axis} for shape "
                             f"{tuple(in_shape)}")
        return tuple(in_shape[:s]) + (int(np.prod(in_shape[s:e + 1])),) + tuple(in_shape[e + 1:])


# ---- transpose -----------------------------------------------------------------------------------------

class Transpose(Primitive):
    """y = x.transpose(axes): a permutation of coordinates. vijp: always exists (permute x_bar)."""
    name = "transpose"

    @staticmethod
    def forward(ctx, x, axes=None):
        nd = x.ndim
        axes = tuple(range(nd))[::-1] if axes is None else tuple(normalize_axis("transpose", a, nd) for a in axes)
        if sorted(axes) != list(range(nd)):
            raise ShapeError(f"transpose: axes {axes} are not a permutation of the {nd} axes of shape {x.shape}")
        ctx.axes = axes
        ctx.inverse = tuple(int(i) for i in np.argsort(axes))
        return x.transpose(axes)

    @staticmethod
    def jvp(ctx, x_dot):
        return x_dot.transpose(ctx.axes)

    @staticmethod
    def vjp(ctx, y_bar):
        return (y_bar.transpose(ctx.inverse),)

    @staticmethod
    def vijp(ctx, x_bar, fragment):
        return x_bar.transpose(ctx.axes)


# ---- broadcast_to ------------------------------------------------------------------------------------

class BroadcastTo(Primitive):
    """y = broadcast_to(x, shape): C copies of x. The vjp sums the copies (x_bar = sum_c y_bar_c), so it
    erases everything of y_bar but its sum over copies.

    fragment: the copies 1..C-1 of y_bar (shape (C-1, x.size)); vijp: copy 0 = x_bar - sum(fragment).
    vijp exists without a fragment only when C = 1 (nothing is actually copied).
    """
    name = "broadcast_to"
    submersive = False

    @staticmethod
    def forward(ctx, x, shape=None):
        xp = get_array_module(x)
        shape = tuple(int(s) for s in shape)
        try:
            y = xp.broadcast_to(x, shape)
        except ValueError:
            raise ShapeError(f"broadcast_to: cannot broadcast shape {x.shape} to {shape}") from None
        ctx.in_shape, ctx.out_shape = x.shape, shape
        lead = len(shape) - x.ndim
        # the axes along which y holds copies: new leading axes, and size-1 axes that grew
        ctx.copy_axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(x.shape)
                                                   if n == 1 and shape[lead + i] != 1)
        ctx.copies = int(np.prod([shape[a] for a in ctx.copy_axes]))
        return y

    @staticmethod
    def jvp(ctx, x_dot):
        return get_array_module(x_dot).broadcast_to(x_dot, ctx.out_shape)

    @staticmethod
    def vjp(ctx, y_bar):
        return (sum_to(y_bar, ctx.in_shape),)    # x_bar = sum over copies

    @staticmethod
    def _by_copy(ctx, y_bar):
        """y_bar as (C, x.size): row c is copy c."""
        xp = get_array_module(y_bar)
        k = len(ctx.copy_axes)
        return xp.moveaxis(y_bar, ctx.copy_axes, tuple(range(k))).reshape(ctx.copies, -1)

    @classmethod
    def fragment(cls, ctx, y_bar):
        if ctx.copies <= 1:
            return None
        return cls._by_copy(ctx, y_bar)[1:]

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # y_bar copy 0 = x_bar - sum of the other copies; copies 1..C-1 = fragment.
        if ctx.copies <= 1:
            return x_bar.reshape(ctx.out_shape)
        if fragment is None:
            raise cls.missing_fragment(f"all but one of the {ctx.copies} broadcast copies of the cotangent")
        xp = get_array_module(x_bar)
        first = x_bar.reshape(1, -1) - fragment.sum(axis=0, keepdims=True)
        g = xp.concatenate([first, fragment], axis=0)
        k = len(ctx.copy_axes)
        moved = tuple(ctx.out_shape[a] for a in ctx.copy_axes) + tuple(
            n for i, n in enumerate(ctx.out_shape) if i not in ctx.copy_axes)
        return xp.moveaxis(g.reshape(moved), tuple(range(k)), ctx.copy_axes)


# ---- getitem -------------------------------------------------------------------------------------------

def _has_int_array(index):
    """True when the index holds an integer array (the only kind of index that can repeat an element)."""
    return any(hasattr(i, "dtype") and not isinstance(i, np.generic) and i.dtype.kind in "iu" for i in index)


def _scatter_add(xp, target, index, values):
    """target[index] += values, accumulating repeated indices (numpy.add.at semantics)."""
    if xp is np:
        np.add.at(target, index, values)
    else:  # CuPy
        import cupyx
        cupyx.scatter_add(target, index, values)


class Getitem(Primitive):
    """y = x[index]: basic slicing (ints, slices incl. negative steps, None, Ellipsis) and advanced
    (integer-array, boolean) indexing, with NumPy's semantics.

    vjp: scatter y_bar into zeros of x's shape, adding repeated indices (numpy.add.at).
    vijp: y_bar = x_bar[index] where every selected element is selected once (always, for basic and
    boolean indexing). With repeated integer indices the vjp sums the copies of an element, so the extra
    copies (all but the first occurrence) of y_bar are the fragment; y_bar at the first occurrence is
    x_bar minus the extra copies.
    """
    name = "getitem"
    submersive = False

    @staticmethod
    def forward(ctx, x, index=()):
        ctx.in_shape = x.shape
        try:
            y = x[index]
        except IndexError as e:
            raise OutOfBoundsError(f"getitem: index {index!r} does not fit shape {x.shape}: {e}") from None
        ctx.out_shape = y.shape
        ctx.int_arrays = _has_int_array(index)
        return y

    @staticmethod
    def jvp(ctx, x_dot):
        return x_dot[ctx.params["index"]]

    @staticmethod
    def vjp(ctx, y_bar):
        xp = get_array_module(y_bar)
        x_bar = xp.zeros(ctx.in_shape, dtype=y_bar.dtype)
        if ctx.int_arrays:
            _scatter_add(xp, x_bar, ctx.params["index"], y_bar)
        else:
            x_bar[ctx.params["index"]] = y_bar       # no element is selected twice
        return (x_bar,)

    @staticmethod
    def _repeats(ctx, xp):
        """(flat, extra): flat[j] = the flat position in x of output element j; extra[j] = output element j
        repeats an earlier one (same position). Computed once per context."""
        if getattr(ctx, "flat", None) is None:
            size = int(np.prod(ctx.in_shape))
            flat = xp.arange(size).reshape(ctx.in_shape)[ctx.params["index"]].reshape(-1)
            order = xp.argsort(flat, kind="stable")
            s = flat[order]
            extra = xp.zeros(flat.shape, dtype=bool)
            extra[order[1:]] = s[1:] == s[:-1]       # stable sort: the first occurrence leads its run
            ctx.save(flat=flat, extra=extra)
        return ctx.flat, ctx.extra

    @classmethod
    def fragment(cls, ctx, y_bar):
        if not ctx.int_arrays:
            return None
        _, extra = cls._repeats(ctx, get_array_module(y_bar))
        if not extra.any():
            return None
        return y_bar.reshape(-1)[extra]

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # unique indices: y_bar = x_bar[index]; repeats: extra copies from the fragment, and
        # y_bar[first] = x_bar[pos] - sum of the extra copies of pos.
        if not ctx.int_arrays:
            return x_bar[ctx.params["index"]]
        xp = get_array_module(x_bar)
        flat, extra = cls._repeats(ctx, xp)
        y_bar = x_bar.reshape(-1)[flat]
        n_extra = int(extra.sum())
        if n_extra:
            if fragment is None:
                raise cls.missing_fragment(f"{n_extra} repeated selection(s) of the same element (integer indices "
                                           "with repeats: the vjp sums their cotangents)")
            check_fragment(cls.name, fragment, (n_extra,))
            y_bar[extra] = fragment
            extra_sum = xp.zeros(x_bar.size, dtype=x_bar.dtype)
            _scatter_add(xp, extra_sum, flat[extra], fragment)
            keep = ~extra
            y_bar[keep] -= extra_sum[flat[keep]]
        return y_bar.reshape(ctx.out_shape)


# ---- concatenate and stack -------------------------------------------------------------------------------

class Concatenate(Primitive):
    """y = concatenate(xs, axis). vjp: the slices of y_bar. vijp along the data-path input ctx.wrt:
    its slice is x_bar; the other inputs' slices of y_bar (erased from the data path: they are the
    constants' cotangents) are the fragment. Exists without a fragment only when the others are empty."""
    name = "concatenate"
    submersive = False

    @staticmethod
    def forward(ctx, *xs, axis=0):
        xp = get_array_module(*xs)
        if not xs:
            raise ShapeError("concatenate: needs at least one tensor")
        nd = xs[0].ndim
        if nd == 0:
            raise ShapeError("concatenate: zero-dimensional tensors cannot be concatenated (use stack)")
        axis = normalize_axis("concatenate", axis, nd)
        for x in xs:
            if x.ndim != nd or x.shape[:axis] + x.shape[axis + 1:] != xs[0].shape[:axis] + xs[0].shape[axis + 1:]:
                raise ShapeError(f"concatenate: shapes {[tuple(t.shape) for t in xs]} do not fit along axis {axis} "
                                 "(all other dimensions must match)")
        ctx.axis = axis
        ctx.shapes = [x.shape for x in xs]
        ctx.bounds = np.cumsum([0] + [x.shape[axis] for x in xs]).tolist()
        y = xp.concatenate(xs, axis=axis)
        ctx.dtype, ctx.out_shape = y.dtype, y.shape
        return y

    @classmethod
    def _piece(cls, ctx, y_bar, start, stop):
        return y_bar[(slice(None),) * ctx.axis + (slice(start, stop),)]

    @classmethod
    def jvp(cls, ctx, *x_dots):
        xp = get_array_module(*[d for d in x_dots if d is not None])
        return xp.concatenate([d if d is not None else xp.zeros(s, ctx.dtype) for d, s in zip(x_dots, ctx.shapes)],
                              axis=ctx.axis)

    @classmethod
    def _slice_for(cls, ctx, y_bar, i):
        return cls._piece(ctx, y_bar, ctx.bounds[i], ctx.bounds[i + 1])

    @classmethod
    def vjp(cls, ctx, y_bar):
        return tuple(cls._slice_for(ctx, y_bar, i) if need else None for i, need in enumerate(ctx.needs))

    @classmethod
    def _others(cls, ctx):
        """(length along axis of the others before wrt, total length of the others)."""
        b, i = ctx.bounds, ctx.wrt
        return b[i], b[-1] - (b[i + 1] - b[i])

    @classmethod
    def fragment(cls, ctx, y_bar):
        before, total = cls._others(ctx)
        if total == 0 or y_bar.size == 0:
            return None
        xp = get_array_module(y_bar)
        b, i = ctx.bounds, ctx.wrt
        return xp.concatenate([cls._piece(ctx, y_bar, 0, b[i]), cls._piece(ctx, y_bar, b[i + 1], b[-1])], axis=ctx.axis)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # y_bar = [fragment before | x_bar | fragment after] along axis
        before, total = cls._others(ctx)
        xp = get_array_module(x_bar)
        if total == 0:
            return cls._wrt_part(ctx, x_bar).reshape(ctx.out_shape)
        if fragment is None and x_bar.size == 0:
            return xp.zeros(ctx.out_shape, dtype=x_bar.dtype)     # nothing to erase in an empty tensor
        if fragment is None:
            raise cls.missing_fragment(f"the cotangent slices of the {len(ctx.shapes) - 1} other input(s)")
        return xp.concatenate([cls._piece(ctx, fragment, 0, before), cls._wrt_part(ctx, x_bar),
                               cls._piece(ctx, fragment, before, None)], axis=ctx.axis)

    @staticmethod
    def _wrt_part(ctx, x_bar):
        return x_bar


class Stack(Concatenate):
    """y = stack(xs, axis): concatenate along a new axis. Same rules as concatenate, one slot per input."""
    name = "stack"

    @staticmethod
    def forward(ctx, *xs, axis=0):
        xp = get_array_module(*xs)
        if not xs:
            raise ShapeError("stack: needs at least one tensor")
        if any(x.shape != xs[0].shape for x in xs):
            raise ShapeError(f"stack: all tensors must have the same shape, got {[tuple(t.shape) for t in xs]}")
        ctx.axis = normalize_axis("stack", axis, xs[0].ndim + 1)
        ctx.shapes = [x.shape for x in xs]
        ctx.bounds = list(range(len(xs) + 1))
        y = xp.stack(xs, axis=axis)
        ctx.dtype, ctx.out_shape = y.dtype, y.shape
        return y

    @classmethod
    def jvp(cls, ctx, *x_dots):
        xp = get_array_module(*[d for d in x_dots if d is not None])
        return xp.stack([d if d is not None else xp.zeros(s, ctx.dtype) for d, s in zip(x_dots, ctx.shapes)],
                        axis=ctx.axis)

    @classmethod
    def _slice_for(cls, ctx, y_bar, i):
        return y_bar[(slice(None),) * ctx.axis + (i,)]

    @staticmethod
    def _wrt_part(ctx, x_bar):
        return get_array_module(x_bar).expand_dims(x_bar, ctx.axis)


# ---- pad -----------------------------------------------------------------------------------------------

def normalize_pad_width(pad_width, ndim):
    """numpy.pad's pad_width forms (int, (b, a), ((b0, a0), ...)) -> a tuple of (before, after) pairs."""
    try:
        pw = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (ndim, 2))
    except ValueError:
        raise ShapeError(f"pad: pad_width {pad_width!r} does not fit a tensor with {ndim} dimension(s) "
                         "(use an int, (before, after), or one (before, after) pair per axis)") from None
    if (pw < 0).any():
        raise ShapeError(f"pad: pad_width {pad_width!r} has negative entries; use getitem to crop")
    return tuple((int(b), int(a)) for b, a in pw)


class Pad(Primitive):
    """y = x padded with the constant `value`. vjp: y_bar on the interior. The border's cotangent is
    erased: fragment = y_bar on the border (a compact 1-D array); vijp: interior = x_bar, border =
    fragment. Exists without a fragment only when nothing is padded."""
    name = "pad"
    submersive = False

    @staticmethod
    def forward(ctx, x, pad_width=0, value=0.0):
        xp = get_array_module(x)
        pw = normalize_pad_width(pad_width, x.ndim)
        ctx.pw = pw
        ctx.inner = tuple(slice(b, b + n) for (b, _), n in zip(pw, x.shape))
        y = xp.pad(x, pw, mode="constant", constant_values=value)
        ctx.out_shape = y.shape
        return y

    @staticmethod
    def jvp(ctx, x_dot):
        return get_array_module(x_dot).pad(x_dot, ctx.pw, mode="constant", constant_values=0)

    @staticmethod
    def vjp(ctx, y_bar):
        return (y_bar[ctx.inner],)

    @staticmethod
    def _border(ctx, xp):
        border = xp.ones(ctx.out_shape, dtype=bool)
        border[ctx.inner] = False
        return border

    @classmethod
    def fragment(cls, ctx, y_bar):
        if not any(b or a for b, a in ctx.pw):
            return None
        return y_bar[cls._border(ctx, get_array_module(y_bar))]

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        # interior: y_bar = x_bar; border: the fragment
        xp = get_array_module(x_bar)
        if not any(b or a for b, a in ctx.pw):
            return x_bar.copy()
        if fragment is None:
            raise cls.missing_fragment("the cotangent of the padded border")
        y_bar = xp.empty(ctx.out_shape, dtype=x_bar.dtype)
        border = cls._border(ctx, xp)
        check_fragment(cls.name, fragment, y_bar[border].shape)
        y_bar[border] = fragment
        y_bar[ctx.inner] = x_bar
        return y_bar
