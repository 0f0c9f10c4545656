"""How Moonwalk sees a model: a list of units x_i = f_i(x_{i-1}; θ_i), and what kind each one is.

The model (an nn.Sequential, possibly nested) is flattened: every entry that is not itself a Sequential is
one unit. Per unit, phase 1 needs h_{i-1} = h_i J_i and phase 2 needs h_i back from h_{i-1}. Three kinds:

- "chain": the data path through the unit is a chain of primitives (Linear, activations, Conv2d, pools,
  Flatten, any module that applies them one after another). Its vijp is the primitives' vijp rules in
  forward order (tinymoon.autodiff.inverse), with the fragments phase 1 recorded for them.
- "block": the module has its own `vijp(x, x_bar) -> (y, y_bar)` rule that also adds its parameters'
  cotangents to .grad (nn.RevBlock's closed form). The block owns its math; Moonwalk only calls it.
- "fork": any other unit whose data path forks (a plain residual block). It has no vijp, so phase 1 records
  the true cotangent at its output (a forced anchor) and phase 2 only needs its local parameter vjp.
"""
from __future__ import annotations

from ..nn.module import Module, Sequential

__all__ = ["flatten_units", "unit_params", "unit_kind", "frozen"]


def flatten_units(model):
    """The units of `model`: the entries of nested Sequentials, in order (a non-Sequential is one unit)."""
    if not isinstance(model, Module):
        raise TypeError(f"moonwalk: the model must be a tinymoon.nn Module, got {type(model).__name__}")
    for m in model.modules():
        if type(m).__name__ == "Dropout" and m.training and getattr(m, "p", 0) > 0:
            raise ValueError(
                "moonwalk: the model contains Dropout in training mode; Moonwalk (like checkpointing) runs the "
                "forward pass twice and a second Dropout mask would give a wrong gradient. Call model.eval() on "
                "the Dropout modules, or use backprop for this model.")
    units = []

    def walk(m):
        if isinstance(m, Sequential):
            for c in m:
                walk(c)
        else:
            units.append(m)
    walk(model)
    return units


def unit_params(unit, cache=None):
    """The parameters of `unit` that require grad (memoised in `cache`, a dict, within one gradient step:
    walking the module tree of every unit of a deep network twice per step is measurable)."""
    if cache is None:
        return [p for p in unit.parameters() if p.requires_grad]
    ps = cache.get(id(unit))
    if ps is None:
        ps = cache[id(unit)] = [p for p in unit.parameters() if p.requires_grad]
    return ps


def unit_kind(unit, tape):
    """'block' when the module defines its own vijp, else 'chain' or 'fork' from its phase-1 tape."""
    if callable(getattr(type(unit), "vijp", None)):
        return "block"
    return "chain" if tape.chain else "fork"


class frozen:
    """Context manager: the given parameters do not require grad inside (phase 1), so every rule saves only
    what the input cotangent needs (masks, a reference to the weight)."""

    def __init__(self, params):
        self.params = list(params)

    def __enter__(self):
        self.flags = [p.requires_grad for p in self.params]
        for p in self.params:
            p.requires_grad = False
        return self

    def __exit__(self, *exc):
        for p, f in zip(self.params, self.flags):
            p.requires_grad = f
        return False
