"""Unbiased sparse and low-rank sketches of VJPs (Bakong et al., arXiv 2602.14701; Oktay et al., RAD, ICLR 2021).

Diagonal (mask) sketch. S = diag(m_i / p_i), m_i ~ Bernoulli(p_i) independent: E[S v] = v, and
    E‖S v − v‖² = Σ_i v_i² (1/p_i − 1).
Under an expected budget Σ_i p_i = κ the minimiser (Lagrange: v_i²/p_i² = λ where p_i < 1) is
    p_i = min(1, |v_i| / τ),   τ chosen so that Σ_i min(1, |v_i|/τ) = κ        ("optimal" rule)
found exactly by water-filling (`waterfill`); the "uniform" rule p_i = κ/n adds (n/κ − 1)‖v‖².

Low-rank sketch. P = Σ_i σ_i u_i v_iᵀ (thin SVD); Q = Σ_i (m_i σ_i / p_i) u_i v_iᵀ is unbiased for any
marginals p_i, and because the u_i v_iᵀ are Frobenius-orthonormal, E‖Q − P‖_F² = Σ_i σ_i² (1/p_i − 1) whatever the
joint law of the m_i. So the same rule on singular values (p_i = min(1, σ_i/τ), Σ p_i = rank) is optimal, and
systematic sampling (one uniform u, keep i when an integer u + j falls in (Σ_{l<i} p_l, Σ_{l≤i} p_l]) keeps
EXACTLY `rank` terms: the stored factors have a fixed size.

Where the sketch acts (both unbiased, because everything after it is linear in what is sketched):
- on the cotangent: `sparse_cotangent(y, ...)` / `lowrank_cotangent(y, ...)` are the identity in forward; in
  backward ȳ is replaced by S ȳ (paper C's randomised VJP). Everything upstream sees the sketched cotangent.
  In a dense-array engine this saves no flops by itself; it is the variance model of sparse backward passes.
- on the stored activation of a linear/conv layer (RAD): the layer keeps x̂ = S x (kept values, and a 1-bit
  mask when p depends on the data; with uniform p the mask is regenerated from the seed) or the low-rank
  factors of x, and estimates w̄ = ȳ (*) x̂. The input cotangent stays exact (it needs only w). This is
  what saves memory: `SparseVJP.linear / .conv2d`, `LowRankVJP.linear / .conv2d`.
Rows: sketches act per sample (each row of the leading axis gets the budget) unless per_sample=False.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..autodiff.apply import apply
from ..backend import get_array_module, to_host
from ..errors import MissingRuleError, ShapeError
from ..ops import conv as _conv
from ..ops import linalg as _linalg
from ..ops.base import Primitive
from ..ops.masks import BitMask
from ..tensor import as_tensor, generator as _generator
from .policy import SketchPolicy
from .probes import new_seed

RULES = ("uniform", "optimal")


# ------------------------------------------------------------------------------------- probabilities
def waterfill(v, budget):
    """p_i = min(1, v_i / τ) per row of v (..., n), v >= 0, with τ such that Σ_i p_i = budget (an expected count,
    0 < budget <= n). Rows with fewer than `budget` nonzeros get p = 1 on them (and 0 on the zeros).

    Sorted descending v_(0) >= v_(1) >= ..., capping the top k gives τ_k = Σ_{i>=k} v_(i) / (budget − k); the
    answer is the smallest k with v_(k) <= τ_k (then v_(k−1) > τ_k follows from the failure at k − 1). At the
    last k < budget, budget − k <= 1 so τ_k >= Σ_{i>=k} v_(i) >= v_(k): a k always exists.
    """
    v = np.asarray(v, dtype=np.float64)
    n = v.shape[-1]
    if not 0 < budget <= n:
        raise ValueError(f"waterfill: budget must lie in (0, n] = (0, {n}], got {budget}")
    vs = -np.sort(-v, axis=-1)
    tail = np.cumsum(vs[..., ::-1], axis=-1)[..., ::-1]          # tail[k] = Σ_{i>=k} v_(i)
    room = budget - np.arange(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau_k = np.where(room > 0, tail / np.where(room > 0, room, 1), np.inf)
    ok = (room > 0) & (vs <= tau_k)
    k = np.argmax(ok, axis=-1)
    tau = np.take_along_axis(tau_k, k[..., None], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(v > 0, np.minimum(1.0, v / np.where(tau > 0, tau, 1.0)), 0.0)
    p = np.where((tau <= 0) & (v > 0), 1.0, p)
    return p


def probabilities(v, budget, rule):
    """Keep probabilities per row of v (rows, n) for a budget FRACTION (the expected kept share of each row)."""
    n = v.shape[-1]
    if not 0 < budget <= 1:
        raise ValueError(f"sparse sketch: budget is the kept fraction, in (0, 1]; got {budget}")
    if rule == "uniform":
        return np.full(v.shape, float(budget))
    if rule == "optimal":
        return waterfill(np.abs(v), budget * n)
    raise ValueError(f"sparse sketch: rule must be one of {RULES}, got {rule!r}")


def sketch_variance(v, p):
    """E‖S v − v‖² = Σ v_i² (1/p_i − 1) of the diagonal sketch (entries with p_i = 0 must have v_i = 0)."""
    v = np.asarray(v, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, v * v * (1.0 / np.where(p > 0, p, 1.0) - 1.0), np.where(v != 0, np.inf, 0.0))
    return float(t.sum())


def systematic_sample(p, u):
    """Indices i kept by systematic sampling with marginals p (1-D, each <= 1) and one uniform u in [0, 1):
    i is kept when an integer j + u falls in (c_{i−1}, c_i], c the cumulative sum. Keeps round(Σ p) items."""
    c = np.concatenate([[0.0], np.cumsum(p)])
    hits = np.floor(c - u)
    return np.nonzero(hits[1:] > hits[:-1])[0]


def lowrank_factors(m, rank, rule, rng):
    """Unbiased rank-`rank` sketch of the matrix m (rows x cols): (A, B) with E[A @ B] = m, A (rows, k),
    B (k, cols), k = rank (fewer when m has fewer nonzero singular values). Also returns (σ, p)."""
    xp = get_array_module(m)
    u, s, vt = xp.linalg.svd(m, full_matrices=False)
    s_host = to_host(s).astype(np.float64, copy=False)
    q = len(s_host)
    k = min(int(rank), q)
    if rule == "uniform":
        p = np.full(q, k / q)
    elif rule == "optimal":
        p = waterfill(s_host, k) if s_host.any() else np.zeros(q)
    else:
        raise ValueError(f"low-rank sketch: rule must be one of {RULES}, got {rule!r}")
    keep = systematic_sample(p, rng.random()) if p.any() else np.zeros(0, dtype=np.int64)
    keep = keep[p[keep] > 0]
    scale = xp.asarray((s_host[keep] / p[keep]).astype(m.dtype))
    idx = xp.asarray(keep)
    return u[:, idx] * scale, vt[idx], (s_host, p)


def lowrank_variance(s, p):
    """E‖Q − P‖_F² = Σ σ_i² (1/p_i − 1) of the low-rank sketch."""
    return sketch_variance(s, p)


# ------------------------------------------------------------------------- sketch of a whole array by rows
def _rows(shape, per_sample):
    n = int(np.prod(shape))
    if per_sample and len(shape) > 1:
        return shape[0], n // shape[0]
    return 1, n


def _mask_and_p(v_host, budget, rule, seed, per_sample):
    """(mask, p) for array v (host float), Bernoulli(p) from `seed`."""
    rows = _rows(v_host.shape, per_sample)
    v2 = v_host.reshape(rows)
    p = probabilities(v2, budget, rule)
    u = np.random.default_rng(seed).random(rows)
    return (u < p).reshape(v_host.shape), p.reshape(v_host.shape)




def sparsify(v, budget, rule, seed, per_sample=True):
    """S v: entries kept with probability p_i and divided by p_i (Bernoulli from `seed`)."""
    xp = get_array_module(v)
    mask, p = _mask_and_p(to_host(v).astype(np.float64, copy=False), budget, rule, seed, per_sample)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(mask, 1.0 / np.where(p > 0, p, 1.0), 0.0).astype(v.dtype)
    return v * xp.asarray(scale)


class SparseCotangent(Primitive):
    """Identity in forward; in reverse ȳ ↦ S ȳ (unbiased diagonal sketch, p from `rule` and `budget`).
    jvp: the identity (exact). No vijp: the dropped entries of ȳ are gone."""
    name = "sparse_cotangent"

    @staticmethod
    def forward(ctx, x, budget=0.1, rule="uniform", seed=0, per_sample=True):
        probabilities(np.zeros((1, 1)), budget, rule)      # validate early
        return x.view() if hasattr(x, "view") else x

    @staticmethod
    def jvp(ctx, x_dot):
        return x_dot

    @staticmethod
    def vjp(ctx, y_bar):
        p = ctx.params
        return (sparsify(y_bar, p["budget"], p["rule"], p["seed"], p["per_sample"]),)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        raise MissingRuleError(f"{cls.name}: a randomly sparsified cotangent cannot be inverted (the dropped "
                               "entries are lost); use reverse mode")


class LowRankCotangent(Primitive):
    """Identity in forward; in reverse ȳ (viewed as rows x rest) ↦ its unbiased rank-`rank` sketch."""
    name = "lowrank_cotangent"

    @staticmethod
    def forward(ctx, x, rank=4, rule="optimal", seed=0):
        if x.ndim < 2:
            raise ShapeError(f"{LowRankCotangent.name}: needs at least 2-D (rows, ...), got shape {x.shape}")
        return x.view() if hasattr(x, "view") else x

    @staticmethod
    def jvp(ctx, x_dot):
        return x_dot

    @staticmethod
    def vjp(ctx, y_bar):
        p = ctx.params
        a, b, _ = lowrank_factors(y_bar.reshape(y_bar.shape[0], -1), p["rank"], p["rule"],
                                  np.random.default_rng(p["seed"]))
        return ((a @ b).reshape(y_bar.shape),)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        raise MissingRuleError(f"{cls.name}: a randomly truncated cotangent cannot be inverted; use reverse mode")


# ---------------------------------------------------- layers that store a sampled / low-rank activation
class SampledInput(SketchPolicy):
    """Sketched policy of Linear and Conv2d: keep an unbiased sparse (RAD sampling: kind="sparse", budget = the
    kept fraction) or low-rank (kind="lowrank", budget = the rank) sketch x̂ of the input instead of x, and
    estimate w̄ with the exact rule on x̂ (ŵ = ȳ (*) x̂, W̄ ≈ ȳᵀ x̂). Low-rank views x as (rows, in) for Linear,
    (B·C, H·W) for Conv2d."""

    def __init__(self, kind="sparse", budget=0.1, rule="uniform", seed=0, per_sample=True, keep_input=False):
        super().__init__(keep_input)
        self.kind, self.budget, self.rule, self.seed, self.per_sample = kind, budget, rule, int(seed), per_sample

    def keep(self, x, layer):
        xp = get_array_module(x)
        if self.kind == "sparse":
            mask, p = _mask_and_p(to_host(x).astype(np.float64, copy=False), self.budget, self.rule, self.seed,
                                  self.per_sample)
            vals = x[xp.asarray(mask)] / xp.asarray(p[mask].astype(x.dtype))       # the kept x_i / p_i
            if self.rule == "uniform":
                return self._holding(x, values=vals)           # the mask is regenerated from the seed (p is fixed)
            return self._holding(x, values=vals, mask=BitMask.pack(xp.asarray(mask)))    # p depends on x: keep it
        m = x.reshape((x.shape[0] * x.shape[1], -1) if layer == "conv2d" else (-1, x.shape[-1]))
        a, b, _ = lowrank_factors(m, self.budget, self.rule, np.random.default_rng(self.seed))
        return self._holding(x, factor_a=a, factor_b=b)

    def expand(self):
        """x̂, of x's shape."""
        k, x_shape = self.arrays, self.x_shape
        if self.kind == "lowrank":
            return (k["factor_a"] @ k["factor_b"]).reshape(x_shape)
        xp = get_array_module(k["values"])
        if self.rule == "uniform":
            rows = _rows(x_shape, self.per_sample)
            mask = xp.asarray((np.random.default_rng(self.seed).random(rows) < self.budget).reshape(x_shape))
        else:
            mask = k["mask"].unpack().reshape(x_shape)
        x_hat = xp.zeros(x_shape, dtype=self.dtype)
        x_hat[mask] = k["values"]
        return x_hat

    def linear_weight_cotangent(self, g):
        return _linalg._matmul(g.T, self.expand().reshape(-1, self.x_shape[-1]))            # W̄ ≈ ȳᵀ x̂

    def conv_weight_cotangent(self, y_bar, ctx):
        cfg, x_hat = ctx.cfg, self.expand()
        pad = cfg["pad"]
        if ctx.params["padding_mode"] == "circular":
            x_hat, pad = _conv._circular_pad(x_hat, pad), ((0, 0), (0, 0))
        return kernels.conv2d_grad_weight(x_hat, y_bar, ctx.w_shape, cfg["stride"], pad, cfg["dilation"],
                                          cfg["groups"])                   # ŵ = ȳ (*) x̂


# ---------------------------------------------------------------------------------------- functional forms
def _tensors(*ts):
    ts = [as_tensor(t) for t in ts if t is not None]
    return ts, any(t.tangent is not None for t in ts)


def sparse_cotangent(x, budget=0.1, rule="uniform", seed=0, per_sample=True):
    """The identity, whose cotangent is replaced by an unbiased sparse sketch S ȳ in reverse mode."""
    return apply(SparseCotangent, as_tensor(x), budget=float(budget), rule=rule, seed=int(seed),
                 per_sample=bool(per_sample))


def lowrank_cotangent(x, rank=4, rule="optimal", seed=0):
    """The identity, whose cotangent (rows x rest) is replaced by an unbiased rank-`rank` sketch."""
    return apply(LowRankCotangent, as_tensor(x), rank=int(rank), rule=rule, seed=int(seed))


def sampled_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", *,
                   kind="sparse", budget=0.1, rule="uniform", seed=0, per_sample=True, vijp_tol=None,
                   vijp_maxiter=None):
    """conv2d whose weight gradient uses an unbiased sparse (kind="sparse", budget = kept fraction) or low-rank
    (kind="lowrank", budget = rank) sketch of the stored input."""
    ts, tangent = _tensors(x, weight, bias)
    return apply(_conv.Conv2d, *ts, stride=stride, padding=padding, dilation=dilation, groups=groups,
                 padding_mode=padding_mode, vijp_tol=vijp_tol, vijp_maxiter=vijp_maxiter,
                 residual=SampledInput(kind, budget, rule, seed, bool(per_sample), keep_input=tangent))


def sampled_linear(x, weight, bias=None, *, kind="sparse", budget=0.1, rule="uniform", seed=0, per_sample=True):
    """linear whose weight gradient uses an unbiased sparse or low-rank sketch of the stored input."""
    ts, tangent = _tensors(x, weight, bias)
    return apply(_linalg.Linear, *ts, residual=SampledInput(kind, budget, rule, seed, bool(per_sample),
                                                             keep_input=tangent))


class _Estimator:
    def __init__(self, generator):
        self.generator = _generator(generator)

    def _seed(self):
        return new_seed(self.generator)


class SparseVJP(_Estimator):
    """Unbiased sparse sketches: keep each entry with probability p_i, rescale by 1/p_i.

        est = SparseVJP(budget=0.1, rule="optimal", generator=0)
        y = est.linear(x, W, b)        # the layer stores ~10% of its input (+ a 1-bit mask for "optimal")
        h = est.cotangent(h)           # identity; its cotangent is sparsified in backward

    budget: the expected kept fraction per sample (per_sample=True) or of the whole array. rule: "uniform"
    (p = budget) or "optimal" (p_i = min(1, |v_i|/τ), Σ p_i = budget·n: minimum E‖Sv − v‖²).
    """

    def __init__(self, budget=0.1, rule="uniform", generator=None, per_sample=True):
        super().__init__(generator)
        probabilities(np.zeros((1, 1)), budget, rule)          # validate
        self.budget, self.rule, self.per_sample = float(budget), rule, bool(per_sample)

    def cotangent(self, x):
        return sparse_cotangent(x, self.budget, self.rule, self._seed(), self.per_sample)

    def linear(self, x, weight, bias=None):
        return sampled_linear(x, weight, bias, kind="sparse", budget=self.budget, rule=self.rule,
                              seed=self._seed(), per_sample=self.per_sample)

    def conv2d(self, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", **kw):
        return sampled_conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode, kind="sparse",
                              budget=self.budget, rule=self.rule, seed=self._seed(), per_sample=self.per_sample,
                              **kw)

    def __repr__(self):
        return f"SparseVJP(budget={self.budget}, rule={self.rule!r})"


class LowRankVJP(_Estimator):
    """Unbiased rank-limited sketches: Q = Σ_i (m_i σ_i / p_i) u_i v_iᵀ with exactly `rank` terms kept
    (systematic sampling), p_i = rank/q ("uniform") or min(1, σ_i/τ) with Σ p_i = rank ("optimal").

    .cotangent(y): ȳ (rows x rest) sketched in backward. .linear / .conv2d: the layer stores the factors of
    its input ((M, in) for linear, (B·C, H·W) for conv) instead of the input: rank·(rows + cols) numbers.
    """

    def __init__(self, rank=4, rule="optimal", generator=None):
        super().__init__(generator)
        if int(rank) < 1:
            raise ValueError(f"LowRankVJP: rank must be >= 1, got {rank}")
        if rule not in RULES:
            raise ValueError(f"LowRankVJP: rule must be one of {RULES}, got {rule!r}")
        self.rank, self.rule = int(rank), rule

    def cotangent(self, x):
        return lowrank_cotangent(x, self.rank, self.rule, self._seed())

    def linear(self, x, weight, bias=None):
        return sampled_linear(x, weight, bias, kind="lowrank", budget=self.rank, rule=self.rule, seed=self._seed())

    def conv2d(self, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", **kw):
        return sampled_conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode, kind="lowrank",
                              budget=self.rank, rule=self.rule, seed=self._seed(), **kw)

    def __repr__(self):
        return f"LowRankVJP(rank={self.rank}, rule={self.rule!r})"
