"""Loss modules: CrossEntropyLoss (logits and integer labels) and MSELoss."""
from __future__ import annotations

from .. import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(name, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class CrossEntropyLoss(Module):
    """-log softmax(logits)[label], from logits (N, C) and integer labels (N,); reduction 'mean' (over N),
    'sum' or 'none' (one loss per sample)."""

    def __init__(self, reduction="mean"):
        super().__init__()
        _check_reduction("CrossEntropyLoss", reduction)
        self.reduction = reduction

    def forward(self, logits, labels):
        return F.cross_entropy(logits, labels, reduction=self.reduction)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class MSELoss(Module):
    """(pred - target)^2, reduced by 'mean' (over every element), 'sum' or 'none'."""

    def __init__(self, reduction="mean"):
        super().__init__()
        _check_reduction("MSELoss", reduction)
        self.reduction = reduction

    def forward(self, pred, target):
        return F.mse(pred, target, reduction=self.reduction)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"
