"""Module, Parameter, Sequential, ModuleList: the containers every network is built from.

A Module owns three kinds of state, each registered by plain attribute assignment:
- parameters (`Parameter`, a Tensor that requires grad) — what optimisers update;
- sub-modules (`Module`) — the tree walked by `named_parameters`, `state_dict`, `train`/`eval`, `repr`;
- buffers (raw NumPy/CuPy arrays, `register_buffer`) — state that is saved but not trained (BatchNorm's
  running statistics, updated in place by the functional op).

`Sequential` is the layer list that Moonwalk and PETRA walk: `model[i]`, `len(model)`, `for layer in model`.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import backend
from ..backend import as_dtype
from ..errors import CheckpointError
from ..tensor import Tensor

__all__ = ["Parameter", "Module", "Sequential", "ModuleList"]


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable: requires_grad=True unless asked otherwise.

    `Parameter(data)` copies `data` (a Tensor, array or list); `isinstance(p, Tensor)` is True, so every
    tinymoon function takes it as it is. Optimisers update `p.data` in place, under no_grad.
    """
    __slots__ = ()

    def __init__(self, data, requires_grad=True, dtype=None, device=None):
        super().__init__(data, dtype=dtype, device=device, requires_grad=False)
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def wrap(cls, array, requires_grad=True):
        """A Parameter around `array` itself (no copy)."""
        p = cls._wrap(array, requires_grad=False)
        if requires_grad:
            p.requires_grad_(True)
        return p

    def __repr__(self):
        return "Parameter containing:\n" + Tensor.__repr__(self.detach()) + \
            ("" if self.requires_grad else " (requires_grad=False)")


def _host(a):
    return backend.to_device(a, "cpu")


class Module:
    """Base class of every layer and network. Subclasses set parameters/sub-modules as attributes in
    `__init__` (after `super().__init__()`) and define `forward`; calling the module calls `forward`."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    # ---- registration -------------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        params, mods, bufs = self._parameters, self._modules, self._buffers
        # registration keeps its place in the order when a name is reassigned with the same kind of thing
        if isinstance(value, Parameter) or (value is None and name in params):
            mods.pop(name, None), bufs.pop(name, None)
            params[name] = value
        elif isinstance(value, Module) or (value is None and name in mods):
            params.pop(name, None), bufs.pop(name, None)
            mods[name] = value
        elif name in self.__dict__.get("_buffer_names", ()):
            if value is not None and not _is_array(value):
                raise TypeError(f"{type(self).__name__}.{name} is a buffer: assign a NumPy/CuPy array or None")
            params.pop(name, None), mods.pop(name, None)
            if value is None:
                bufs.pop(name, None)
            else:
                bufs[name] = value
        else:
            for d in (params, mods, bufs):
                d.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for d in (self._parameters, self._modules, self._buffers):
            d.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Register `param` (a Parameter, or None for an absent one such as a disabled bias)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected a Parameter or None, got {type(param).__name__}")
        setattr(self, name, param)

    def register_buffer(self, name, array):
        """Register a raw array (NumPy/CuPy) as saved, non-trained state; None for an absent one."""
        if array is not None and not _is_array(array):
            raise TypeError(f"register_buffer({name!r}): expected a NumPy/CuPy array, got {type(array).__name__}")
        self.__dict__.setdefault("_buffer_names", set()).add(name)
        for d in (self._parameters, self._modules):
            d.pop(name, None)
        if array is not None:
            self._buffers[name] = array
        object.__setattr__(self, name, array)

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}): expected a Module, got {type(module).__name__}")
        self._modules[str(name)] = module
        object.__setattr__(self, str(name), module)

    # ---- calling ----------------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- walking the tree -----------------------------------------------------------------------------
    def named_children(self):
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module and every descendant, each once, parents first."""
        seen = set()

        def walk(mod, pre):
            if id(mod) in seen:
                return
            seen.add(id(mod))
            yield pre, mod
            for n, c in mod.named_children():
                yield from walk(c, f"{pre}.{n}" if pre else n)
        yield from walk(self, prefix)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, Parameter) pairs, e.g. ('0.weight', ...); a shared parameter is listed once."""
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mp, m in mods:
            for n, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mp}.{n}" if mp else n), p

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix=""):
        for mp, m in self.named_modules(prefix):
            for n, b in m._buffers.items():
                if b is not None:
                    yield (f"{mp}.{n}" if mp else n), b

    def buffers(self):
        for _, b in self.named_buffers():
            yield b

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    # ---- modes ------------------------------------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (BatchNorm uses batch statistics, Dropout drops) for this module and its descendants."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode: BatchNorm uses its running statistics, Dropout is the identity."""
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.data[...] = 0

    def requires_grad_(self, flag=True):
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    # ---- device / dtype ---------------------------------------------------------------------------------
    def to(self, device=None, dtype=None):
        """Move (and/or cast) every parameter and float buffer in place; returns self. Gradients are dropped."""
        dev = None if device is None else backend.normalize_device(device)
        dt = None if dtype is None else as_dtype(dtype)

        def convert(a, is_float_state):
            if dev is not None and backend.device_of(a) != dev:
                a = backend.to_device(a, dev)
            if dt is not None and is_float_state and a.dtype != dt:
                a = a.astype(dt)
            return a
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    p.data = convert(p.data, True)
                    p.grad = None
            for n, b in list(m._buffers.items()):
                if b is not None:
                    nb = convert(b, backend.is_float(b.dtype))
                    if nb is not b:
                        m._buffers[n] = nb
                        object.__setattr__(m, n, nb)
        return self

    def double(self):
        return self.to(dtype="float64")

    def float(self):
        return self.to(dtype="float32")

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    # ---- state_dict ---------------------------------------------------------------------------------------
    def state_dict(self):
        """An OrderedDict dotted name -> array (parameters, then buffers, per module, parents first).

        The arrays are the module's own (not copies): save them with `tm.save`, or copy them if you mean to
        keep a snapshot while training goes on."""
        out = OrderedDict()
        for mp, m in self.named_modules():
            for n, p in m._parameters.items():
                if p is not None:
                    out[f"{mp}.{n}" if mp else n] = p.data
            for n, b in m._buffers.items():
                if b is not None:
                    out[f"{mp}.{n}" if mp else n] = b
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy the arrays of `state_dict` (name -> NumPy/CuPy array or Tensor, e.g. from `tm.load`) into this
        module's parameters and buffers, in place (optimisers keep pointing at the same arrays).

        Every key is checked first (`tinymoon.serialization.check_state_dict`): missing or unexpected keys
        (when strict), and any shape or dtype mismatch, raise a CheckpointError naming the key; nothing is
        changed unless everything fits. Returns (missing_keys, unexpected_keys)."""
        from ..serialization import check_state_dict
        if not isinstance(state_dict, dict):
            raise CheckpointError(f"load_state_dict: expected a dict of arrays, got {type(state_dict).__name__}")
        own = self.state_dict()
        loaded = {}
        for k, v in state_dict.items():
            if isinstance(v, Tensor):
                v = v.data
            elif not _is_array(v):
                v = np.asarray(v)
            loaded[k] = v
        check_state_dict(own, loaded, strict=strict)
        targets = {}
        for mp, m in self.named_modules():
            for n, p in m._parameters.items():
                if p is not None:
                    targets[f"{mp}.{n}" if mp else n] = p
            for n, b in m._buffers.items():
                if b is not None:
                    targets[f"{mp}.{n}" if mp else n] = b
        for k, target in targets.items():
            if k not in loaded:
                continue
            src = loaded[k]
            dst = target.data if isinstance(target, Tensor) else target
            if backend.device_of(src) != backend.device_of(dst):
                src = backend.to_device(_host(src) if backend.device_of(dst) != "cpu" else src,
                                        backend.device_of(dst))
            dst[...] = src
            if isinstance(target, Tensor):
                target._bump_version()    # an in-place change: a graph that saved the old value refuses it
        missing = [k for k in own if k not in loaded]
        unexpected = [k for k in loaded if k not in own]
        return missing, unexpected

    # ---- repr -----------------------------------------------------------------------------------------
    def extra_repr(self):
        """The part between the parentheses of this module's own line (e.g. 'in=784, out=10')."""
        return ""

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines += extra.split("\n")
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"({name}): {sub}")
        if not self._modules:
            return f"{type(self).__name__}({extra})"
        return type(self).__name__ + "(\n  " + "\n  ".join(lines) + "\n)"


def _is_array(a):
    return isinstance(a, np.ndarray) or backend.is_cupy_array(a)


class Sequential(Module):
    """Layers applied in order: `Sequential(l1, l2, ...)` or `Sequential(OrderedDict(name=layer, ...))`.

    It is a list: `model[i]` (a layer), `model[a:b]` (a Sequential), `len(model)`, `for layer in model`,
    `model.append(layer)`. Nested Sequentials are allowed (a block of layers is one entry).
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (dict, OrderedDict)):
            for n, m in layers[0].items():
                self.add_module(n, m)
        else:
            for i, m in enumerate(layers):
                if not isinstance(m, Module):
                    raise TypeError(f"Sequential: entry {i} is a {type(m).__name__}, not a Module")
                self.add_module(str(i), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def _index(self, i):
        n = len(self._modules)
        if not -n <= i < n:
            raise IndexError(f"{type(self).__name__} index {i} out of range for {n} layers")
        return i % n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return type(self)(OrderedDict(list(self._modules.items())[i]))
        return list(self._modules.values())[self._index(i)]

    def __setitem__(self, i, module):
        key = list(self._modules.keys())[self._index(i)]
        setattr(self, key, module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}.append: expected a Module, got {type(module).__name__}")
        self.add_module(str(len(self._modules)), module)
        return self


class ModuleList(Module):
    """A list of modules whose parameters are registered (no forward: you decide how to call them)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList.append: expected a Module, got {type(module).__name__}")
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i):
        mods = list(self._modules.values())
        if isinstance(i, slice):
            return ModuleList(mods[i])
        return mods[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
