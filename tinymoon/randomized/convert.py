"""convert(model, ...): give existing Conv2d / Linear layers a gradient estimator, without touching tinymoon.nn.

A layer with `layer.grad_estimator = est` computes `est.conv2d(x, W, b, **conv_params)` / `est.linear(x, W, b)`
instead of the exact primitive. If the layer class's own forward already honours `grad_estimator`, setting the
attribute is all convert does; otherwise it also installs a small per-instance forward that does (setting the
attribute back to None restores the exact layer either way).
"""
from __future__ import annotations

import types

import numpy as np

from ..tensor import generator as _generator
from .trace import TraceEstimator


def _estimated_forward(self, x):
    est = getattr(self, "grad_estimator", None)
    from ..nn import Conv2d
    if est is None:
        return type(self).forward(self, x)
    if isinstance(self, Conv2d):
        return est.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                          dilation=self.dilation, groups=self.groups, padding_mode=self.padding_mode)
    return est.linear(x, self.weight, self.bias)


def _honours_estimator(layer):
    fwd = getattr(type(layer).forward, "__code__", None)
    return fwd is not None and "grad_estimator" in fwd.co_names


def set_estimator(layer, estimator):
    """Set (or, with None, clear) the gradient estimator of one Conv2d / Linear layer."""
    object.__setattr__(layer, "grad_estimator", estimator)
    if not _honours_estimator(layer) and "forward" not in layer.__dict__:
        object.__setattr__(layer, "forward", types.MethodType(_estimated_forward, layer))
    return layer


def convert(model, estimator=None, layer_types=None, exclude=(), **kwargs):
    """Give every layer of `model` that is an instance of `layer_types` (default: nn.Conv2d and nn.Linear) a
    gradient estimator, in place; returns the model.

    estimator: an estimator object (TraceEstimator, SparseVJP, LowRankVJP; shared by the layers, so one
    generator feeds them all in call order), or a factory `f(name, layer) -> estimator or None` (None leaves
    the layer exact), or None: a TraceEstimator(**kwargs) per layer, all drawing from ONE generator made from
    kwargs["generator"] (so layers of equal shape never get equal probes). exclude: dotted layer names to keep
    exact (e.g. the first conv, whose input is the data batch and costs no extra memory anyway).

        tm.randomized.convert(model, probes=16, mode="multichannel", generator=0)
    """
    from .. import nn
    layer_types = (nn.Conv2d, nn.Linear) if layer_types is None else tuple(np.atleast_1d(layer_types))
    if estimator is None:
        gen = _generator(kwargs.pop("generator", None))

        def estimator(name, layer):
            return TraceEstimator(generator=gen, **kwargs)
    elif kwargs:
        raise TypeError(f"convert: keyword arguments {sorted(kwargs)} are for the default TraceEstimator; pass "
                        "them to your estimator instead")
    factory = estimator if callable(estimator) and not hasattr(estimator, "conv2d") else None
    exclude = set(exclude)
    for name, layer in model.named_modules():
        if name in exclude or not isinstance(layer, layer_types):
            continue
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise TypeError(f"convert: {name} is a {type(layer).__name__}; estimators plug into Conv2d and Linear")
        est = factory(name, layer) if factory is not None else estimator
        set_estimator(layer, est)
    return model
