"""Optimisers (SGD, Adam, AdamW) and learning-rate schedules (StepLR, CosineAnnealingLR, LinearWarmup).

The update formulas are PyTorch's (torch.optim), step for step, so a ported training script behaves the same.
Updates are in place on the parameters' arrays (`p.data`), under no_grad, without allocating where NumPy
lets us. Parameters whose `.grad` is None are skipped. Every update bumps the parameter's version, so a
graph recorded before the step and differentiated after it raises GradientError instead of computing its
gradient from the updated weights: step after backward, then run the next forward.

    opt = tm.optim.Adam(model.parameters(), lr=1e-3)
    for x, y in loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

Parameter groups: pass a list of dicts instead of parameters, each with its own options
(`[{"params": body.parameters()}, {"params": head.parameters(), "lr": 1e-2}]`); missing options take the
constructor's values. `state_dict()` / `load_state_dict()` round-trip the per-parameter state (momentum
buffers, Adam moments, step counts) and every group's hyper-parameters; save them with `tm.save`.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend
from .autodiff.state import no_grad
from .errors import CheckpointError
from .tensor import Tensor

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "LRScheduler", "StepLR", "CosineAnnealingLR", "LinearWarmup"]


def _grad_array(p):
    g = p.grad
    if g is None:
        return None
    return g.data if isinstance(g, Tensor) else g


class Optimizer:
    """Base class: param_groups (a list of dicts with 'params' and hyper-parameters), per-parameter `state`
    (a dict keyed by parameter), `zero_grad`, `step`, `state_dict` / `load_state_dict`."""

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}
        self.param_groups = []
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group):
        group = dict(group)
        ps = group["params"]
        ps = [ps] if isinstance(ps, Tensor) else list(ps)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in ps:
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameters must be Tensors, got {type(p).__name__}")
            if not p.requires_grad:
                raise ValueError(f"{type(self).__name__}: a parameter of shape {p.shape} does not require grad")
            if id(p) in seen:
                raise ValueError(f"{type(self).__name__}: a parameter of shape {p.shape} appears in two groups")
            seen.add(id(p))
        group["params"] = ps
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group):
        if group.get("lr", 0.0) < 0:
            raise ValueError(f"{type(self).__name__}: invalid learning rate {group['lr']}")

    def zero_grad(self, set_to_none=True):
        """Clear every parameter's gradient: None (the default, cheapest) or zeros in place."""
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad.data[...] = 0

    def step(self, params=None):
        """Update every parameter with a gradient — or only those in `params` (a subset, e.g. as Moonwalk's
        sweep finishes each layer: moonwalk.step). Each parameter's update depends on its own state alone, so
        stepping the subsets of a partition one by one equals one full step."""
        only = None if params is None else {id(p) for p in params}
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if only is not None and id(p) not in only:
                        continue
                    g = _grad_array(p)
                    if g is None:
                        continue
                    self._update(p, g, self.state.setdefault(p, {}), group)
                    p._bump_version()          # whatever _update wrote, it changed p in place

    def _update(self, p, g, state, group):
        raise NotImplementedError

    def _scratch(self, p):
        """A work array shaped like p, reused across steps (not part of the state)."""
        buf = self.__dict__.setdefault("_work", {}).get(id(p))
        if buf is None or buf.shape != p.shape or buf.dtype != p.dtype or type(buf) is not type(p.data):
            buf = self._work[id(p)] = p.xp.empty_like(p.data)
        return buf

    # ---- state_dict ----------------------------------------------------------------------------------
    def state_dict(self):
        """{'state': {index: {name: array or number}}, 'param_groups': [{options..., 'params': [indices]}]}:
        parameters are numbered in group order, as in PyTorch. Arrays are the optimiser's own (not copies)."""
        index, groups, k = {}, [], 0
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index[id(p)] = k
                ids.append(k)
                k += 1
            groups.append({**{n: v for n, v in group.items() if n != "params"}, "params": ids})
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index and s}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore the hyper-parameters and per-parameter state of `state_dict` (from `state_dict()` or
        `tm.load`). The groups must have the same sizes; every state array must match its parameter's
        shape (where it has one), dtype and is moved to its device. Raises CheckpointError naming the key."""
        try:
            groups, saved_state = state_dict["param_groups"], state_dict["state"]
        except (KeyError, TypeError):
            raise CheckpointError(f"{type(self).__name__}.load_state_dict: expected a dict with 'state' and "
                                  "'param_groups' (from Optimizer.state_dict())") from None
        if len(groups) != len(self.param_groups):
            raise CheckpointError(f"{type(self).__name__}.load_state_dict: the state_dict has {len(groups)} "
                                  f"parameter group(s), this optimiser {len(self.param_groups)}")
        params = {}
        for gi, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(own["params"]):
                raise CheckpointError(f"{type(self).__name__}.load_state_dict: key 'param_groups/{gi}/params': "
                                      f"{len(saved['params'])} parameters saved, {len(own['params'])} here")
            for i, p in zip(saved["params"], own["params"]):
                params[int(i)] = p
        new_state = {}
        for i, s in saved_state.items():
            i = int(i)
            if i not in params:
                raise CheckpointError(f"{type(self).__name__}.load_state_dict: key 'state/{i}' names no parameter")
            p = params[i]
            entry = {}
            for name, v in s.items():
                if isinstance(v, Tensor):
                    v = v.data
                if isinstance(v, np.ndarray) or backend.is_cupy_array(v):
                    if v.ndim > 0 and v.shape != p.shape:
                        raise CheckpointError(f"{type(self).__name__}.load_state_dict: key 'state/{i}/{name}': "
                                              f"shape {v.shape}, the parameter has shape {p.shape}")
                    if v.ndim > 0 and v.dtype != p.dtype:
                        raise CheckpointError(f"{type(self).__name__}.load_state_dict: key 'state/{i}/{name}': "
                                              f"dtype {v.dtype}, the parameter has dtype {p.dtype}")
                    if v.ndim == 0:
                        v = v.item()
                    else:
                        v = v.copy() if backend.device_of(v) == p.device else backend.to_device(
                            v if backend.device_of(v) == "cpu" else v.get(), p.device)
                elif isinstance(v, np.generic):
                    v = v.item()
                entry[name] = v
            new_state[p] = entry
        for saved, own in zip(groups, self.param_groups):
            for k, v in saved.items():
                if k != "params":
                    own[k] = tuple(v) if isinstance(v, list) and isinstance(own.get(k), tuple) else v
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        return "\n".join(lines + [")"])


def _split_no_decay(params, weight_decay):
    """Two groups: parameters with >= 2 dimensions (weights) decay; 1-D ones (biases, norm scales/shifts) not."""
    params = list(params)
    if params and isinstance(params[0], dict):
        raise ValueError("no_decay_bias_and_norm=True needs a plain list of parameters, not parameter groups")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay (PyTorch's update):

        g = grad + weight_decay * p
        b = g (first step), else b = momentum * b + (1 - dampening) * g      (when momentum != 0)
        g = g + momentum * b  (nesterov)   or   g = b
        p = p - lr * g

    no_decay_bias_and_norm=True: put every parameter with fewer than 2 dimensions (biases, LayerNorm and
    BatchNorm weights and biases) in a second group with weight_decay=0 (params must be a plain list).
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                 no_decay_bias_and_norm=False):
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: momentum ({momentum}) and weight_decay ({weight_decay}) must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening = 0")
        if no_decay_bias_and_norm:
            params = _split_no_decay(params, weight_decay)
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov))

    def _update(self, p, g, state, group):
        lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
        if wd:
            g = g + wd * p.data
        if mom:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= mom
                buf += (1 - group["dampening"]) * g
            if group["nesterov"]:
                g = g + mom * buf
            else:
                g = buf
        tmp = self._scratch(p)
        p.xp.multiply(g, lr, out=tmp)
        p.data -= tmp


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with L2 weight decay folded into the gradient (PyTorch's Adam):

        g = grad + weight_decay * p
        m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2;   t = t + 1
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    amsgrad=True keeps the running maximum of v and uses it in the denominator.
    """
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 no_decay_bias_and_norm=False):
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"{type(self).__name__}: betas must be in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: eps ({eps}) and weight_decay ({weight_decay}) must be >= 0")
        if no_decay_bias_and_norm:
            params = _split_no_decay(params, weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad))

    def _update(self, p, g, state, group):
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        xp = p.xp
        if wd:
            if self.decoupled:
                p.data *= 1 - lr * wd               # AdamW: p = p - lr wd p, apart from the gradient
            else:
                g = g + wd * p.data
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        tmp = self._scratch(p)                  # one reused buffer: no allocation per step
        xp.multiply(g, 1 - b1, out=tmp)         # m = b1 m + (1 - b1) g
        m *= b1
        m += tmp
        xp.multiply(g, g, out=tmp)              # v = b2 v + (1 - b2) g^2
        tmp *= 1 - b2
        v *= b2
        v += tmp
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"]
            xp.maximum(vmax, v, out=vmax)
            v = vmax
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        xp.sqrt(v, out=tmp)                     # denom = sqrt(v) / sqrt(1 - b2^t) + eps
        tmp /= math.sqrt(bc2)
        tmp += eps
        xp.divide(m, tmp, out=tmp)              # p -= lr / (1 - b1^t) * m / denom
        tmp *= lr / bc1
        p.data -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): p = p (1 - lr weight_decay), then the
    Adam step on the plain gradient. Default weight_decay 0.01, as in PyTorch."""
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 no_decay_bias_and_norm=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         no_decay_bias_and_norm=no_decay_bias_and_norm)


# ---- learning-rate schedules ---------------------------------------------------------------------------

class LRScheduler:
    """Sets each group's 'lr' from a closed-form function of the step count t (`lr_at(t)`).

    Construction sets t = 0 and writes lr_at(0); each `step()` advances t by one and writes lr_at(t) (call it
    once per epoch or once per batch, as you define t). The base learning rates are the groups' 'lr' at
    construction, remembered as 'initial_lr'."""

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, t):
        """The learning rates (one per group) at step t."""
        raise NotImplementedError

    def step(self):
        self.last_epoch += 1
        self._apply()

    def _apply(self):
        for g, lr in zip(self.optimizer.param_groups, self.lr_at(self.last_epoch)):
            g["lr"] = lr

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "after")}

    def load_state_dict(self, state_dict):
        for k, v in state_dict.items():
            setattr(self, k, list(v) if k == "base_lrs" else v)
        self._apply()


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (t // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        return [b * self.gamma ** (t // self.step_size) for b in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2 (t > T_max continues the cosine,
    as PyTorch's closed form does)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        if T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be >= 1, got {T_max}")
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        c = (1 + math.cos(math.pi * t / self.T_max)) / 2
        return [self.eta_min + (b - self.eta_min) * c for b in self.base_lrs]


class LinearWarmup(LRScheduler):
    """Linear warm-up over `warmup_steps`: lr = base_lr (s + (1 - s) t / warmup_steps) for t < warmup_steps,
    s = start_factor (like torch's LinearLR with end_factor 1). After warm-up: base_lr standalone, or the
    schedule `after` (built on the same optimiser, e.g. CosineAnnealingLR) shifted to start at t = warmup_steps:
    lr = after.lr_at(t - warmup_steps). Step only the LinearWarmup, never `after` itself."""

    def __init__(self, optimizer, warmup_steps, start_factor=0.1, after=None, last_epoch=-1):
        if warmup_steps < 0:
            raise ValueError(f"LinearWarmup: warmup_steps must be >= 0, got {warmup_steps}")
        if not 0.0 <= start_factor <= 1.0:
            raise ValueError(f"LinearWarmup: start_factor must be in [0, 1], got {start_factor}")
        if after is not None and after.optimizer is not optimizer:
            raise ValueError("LinearWarmup: `after` must schedule the same optimiser")
        self.warmup_steps, self.start_factor, self.after = int(warmup_steps), float(start_factor), after
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t):
        if t < self.warmup_steps:
            f = self.start_factor + (1 - self.start_factor) * t / self.warmup_steps
            return [b * f for b in self.base_lrs]
        if self.after is not None:
            return self.after.lr_at(t - self.warmup_steps)
        return list(self.base_lrs)

    def state_dict(self):
        d = super().state_dict()
        if self.after is not None:
            d["after"] = self.after.state_dict()
        return d

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        after = state_dict.pop("after", None)
        if after is not None and self.after is not None:
            self.after.load_state_dict(after)
        super().load_state_dict(state_dict)
