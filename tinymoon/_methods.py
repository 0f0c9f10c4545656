"""Binds tinymoon.functional and reverse mode onto Tensor as operators and methods (x + y, x.exp(),
x.sum(), x.to("cuda"), x.backward(), ...). Tensor (tensor.py) imports nothing of the engine; this module sits
above both and ties them together once, at import."""
from . import backend
from . import functional as F
from .autodiff.reverse import backward as _backward
from .backend import as_dtype
from .tensor import Tensor


def _to(self, device):
    """This tensor on `device` ('cpu', 'cuda', 'cuda:N'); differentiable (the cotangent moves back)."""
    return F.to_device(self, backend.normalize_device(device))


def _astype(self, dtype):
    """A cast; differentiable between float dtypes."""
    return F.astype(self, as_dtype(dtype))


def _backward_method(self, y_bar=None, retain_graph=False, create_graph=False):
    """Reverse mode: accumulate d<y_bar, self>/d(leaf) into each leaf's .grad. create_graph=True
    (differentiable gradients) raises MissingRuleError: higher order is not supported yet."""
    _backward(self, y_bar, retain_graph=retain_graph, create_graph=create_graph)


def _bind():
    T = Tensor
    T.__add__ = lambda a, b: F.add(a, b)
    T.__radd__ = lambda a, b: F.add(b, a)
    T.__sub__ = lambda a, b: F.sub(a, b)
    T.__rsub__ = lambda a, b: F.sub(b, a)
    T.__mul__ = lambda a, b: F.mul(a, b)
    T.__rmul__ = lambda a, b: F.mul(b, a)
    T.__truediv__ = lambda a, b: F.div(a, b)
    T.__rtruediv__ = lambda a, b: F.div(b, a)
    T.__pow__ = lambda a, b: F.pow(a, b)
    T.__rpow__ = lambda a, b: F.pow(b, a)
    T.__neg__ = lambda a: F.neg(a)
    T.__abs__ = lambda a: F.abs(a)
    T.__eq__ = lambda a, b: F.eq(a, b)
    T.__ne__ = lambda a, b: F.ne(a, b)
    T.__lt__ = lambda a, b: F.lt(a, b)
    T.__le__ = lambda a, b: F.le(a, b)
    T.__gt__ = lambda a, b: F.gt(a, b)
    T.__ge__ = lambda a, b: F.ge(a, b)
    T.__hash__ = lambda a: id(a)
    for name in ("exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu", "silu", "leaky_relu", "elu",
                 "softplus", "clip", "abs", "sum", "mean", "max", "min", "var", "logsumexp", "reshape", "view",
                 "clone", "transpose", "permute", "broadcast_to", "squeeze", "unsqueeze", "flatten", "matmul",
                 "softmax", "log_softmax", "expand_dims", "argmax", "argmin"):
        setattr(T, name, getattr(F, name))
    T.__matmul__ = lambda a, b: F.matmul(a, b)
    T.__rmatmul__ = lambda a, b: F.matmul(b, a)
    T.__getitem__ = lambda a, idx: F.getitem(a, idx)
    T.to, T.astype, T.backward = _to, _astype, _backward_method
    T.__iter__ = _iter
    T.__format__ = _format
    T.numel = lambda a: a.data.size          # PyTorch's names for size and ndim
    T.dim = lambda a: a.data.ndim


def _iter(t):
    """for row in t: the rows t[0], t[1], ... (on the tape, like any index); a, b = t unpacks them."""
    if t.data.ndim == 0:
        raise TypeError("iteration over a 0-d tensor (use .item() for its value)")
    for i in range(t.data.shape[0]):
        yield t[i]


def _format(t, spec):
    """format(t, ".3f") / f"{t:.3f}" for a one-element tensor (its value); format(t) is repr(t)."""
    if not spec:
        return repr(t)
    if t.data.size != 1:
        raise TypeError(f"format spec {spec!r} needs a one-element tensor, this one has shape {t.shape}; format "
                        "its values with numpy (np.array2string(t.numpy(), ...)) or one element at a time")
    return format(t.item(), spec)


_bind()
