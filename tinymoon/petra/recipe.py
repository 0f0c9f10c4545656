"""The paper's training recipe as options: SGD with Nesterov momentum, averaged gradient accumulation over k
micro-batches, linear LR scaling (Goyal et al.: lr x micro_batch k / 256) with a linear warm-up, and no weight
decay on biases and normalisation parameters."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import optim

__all__ = ["Recipe"]


@dataclass
class Recipe:
    lr: float = 0.1               # base learning rate (before linear scaling)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0     # never applied to 1-D parameters (biases, norm scales and shifts)
    k: int = 1                    # gradient accumulation: an optimiser step every k micro-batches, averaged
    micro_batch: int = 64
    lr_scaling: bool = False      # lr = lr * micro_batch * k / 256
    warmup_steps: int = 0         # linear warm-up over this many optimiser steps, from lr / warmup_steps

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"Recipe: k (gradient accumulation) must be >= 1, got {self.k}")
        if self.nesterov and self.momentum <= 0:
            raise ValueError("Recipe: Nesterov momentum needs momentum > 0")

    @property
    def effective_lr(self):
        return self.lr * self.micro_batch * self.k / 256 if self.lr_scaling else self.lr

    def optimizer(self, params):
        """(optimiser, LR schedule or None) for one stage's parameters (or a whole model's)."""
        opt = optim.SGD(list(params), lr=self.effective_lr, momentum=self.momentum, nesterov=self.nesterov,
                        weight_decay=self.weight_decay, no_decay_bias_and_norm=True)
        sched = None
        if self.warmup_steps > 0:
            sched = optim.LinearWarmup(opt, self.warmup_steps, start_factor=1.0 / self.warmup_steps)
        return opt, sched

    def to_dict(self):
        return asdict(self)
