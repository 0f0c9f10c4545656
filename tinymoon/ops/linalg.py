"""Linear algebra: matmul (numpy.matmul semantics) and the fused dense layer linear(x, W, b) = x Wᵀ + b.

Row-vector convention: y = a @ b, so the vjp is a_bar = y_bar bᵀ, b_bar = aᵀ y_bar (summed over
broadcast batch dimensions).

Inverse mode along a (the left operand), b of shape (n, m) a fixed 2-D matrix (a 1-D b is m = 1): we need
the y_bar with y_bar bᵀ = a_bar, one row at a time.
- m = n: square, the common hidden layer. Few rows (<= n): an LU solve of the rows themselves, with a
  condition check from two probe columns; many rows: one float64 LU inverse per context (exact 1-norm
  condition check) applied as a float64 GEMM. Both err by ~eps relative, not eps·cond.
- m < n, b of full column rank m: y_bar = a_bar b (bᵀb)⁻¹. bᵀb is factorised ONCE per context (Cholesky,
  numpy.linalg.cholesky) into the cached right inverse P = b (bᵀb)⁻¹, so each row costs one O(nm) product.
  Numerically rank-deficient b (cond(b) >~ 1/max(10 eps, sqrt(eps64)), read off the Cholesky diagonal)
  raises NotInvertibleError. The factorisations run in float64 internally (results in the cotangents' dtype).
- m > n (expanding): the vjp erases m - n dimensions of every row of y_bar. A column-pivoted QR of b
  (Businger–Golub) picks n well-conditioned columns K of b (b[:, K] invertible); the other m - n
  coordinates S of y_bar are the fragment, and y_bar[K] = (a_bar - y_bar[S] b[:, S]ᵀ) b[:, K]⁻ᵀ.
  A b of numerical rank < n (|R_nn| <= tol |R_11|, the same tol) raises NotInvertibleError.
- batched b (more than 2-D): NotInvertibleError; inverse mode along b: MissingRuleError.
"""
from __future__ import annotations

import math
import weakref

import numpy as np

from ..backend import get_array_module, to_host
from ..errors import MissingRuleError, NotInvertibleError, ShapeError
from .base import Primitive, add_terms, check_fragment, on_tensors
from .pivoted_qr import pivoted_qr
from .shape import sum_to

_kernels = None


def _matmul(a, b):
    """tinymoon.kernels.matmul (BLAS on the host, cuBLAS via CuPy); imported lazily (it loads Numba); on tensors,
    the matmul primitive.
    Operands of two float widths only meet here when cotangents are carried wider than the model (Moonwalk's
    cotangent_dtype): the narrower one is widened first, so BLAS runs on one dtype."""
    if type(a) is not np.ndarray or type(b) is not np.ndarray:
        xp = get_array_module(a, b)
        if on_tensors(xp):
            return xp.matmul(a, b)          # on tensors (a differentiable backward): the matmul primitive
    global _kernels
    if _kernels is None:
        from .. import kernels as k
        _kernels = k.matmul
    if a.dtype is b.dtype:
        return _kernels(a, b)
    if a.dtype != b.dtype:
        wide = np.result_type(a.dtype, b.dtype)
        a, b = a.astype(wide, copy=False), b.astype(wide, copy=False)
    return _kernels(a, b)


def _swap(a):
    return a.swapaxes(-1, -2)


# ---- the right inverse shared by matmul and linear -----------------------------------------------------

# A square solve on `rows` right-hand sides: LU on the rows themselves (getrf + getrs) is cheaper while
# rows <= SOLVE_ROWS x n; beyond that one explicit inverse and a GEMM win (measured on a 2-core CPU with
# NumPy's OpenBLAS, n = 128..512: the crossover sits at rows = 1 to 1.5 n).
SOLVE_ROWS = 1.0
# The probe vectors of the solve path's condition check (fixed, so a vijp is deterministic).
_PROBES = 2


# float32 cotangents through a square b with cond₂(b) at most this (estimated) take a float32 inverse and GEMM.
F32_APPLY_COND = 16.0


def _cond2_estimate(b, inv, steps=2):
    """σ_max(b)·σ_max(b⁻¹) by a few steps of block power iteration from two fixed start vectors: an estimate
    from below of cond₂(b), close at the moderate conditions it decides between (O(n²) work, not O(n³)).
    First a cheaper bound from below: ‖b‖_F ‖b⁻¹‖_F / n = rms(σ)·rms(1/σ) <= cond₂(b); a matrix it already
    puts past F32_APPLY_COND (most of PyTorch's default inits) needs no power steps."""
    xp = get_array_module(b)
    rms = float(xp.sqrt((b * b).sum() * (inv * inv).sum())) / b.shape[0]
    if rms > F32_APPLY_COND:
        return rms
    start = xp.asarray(np.random.default_rng(1).standard_normal((b.shape[0], 2)))

    def sigma_max(a):
        u = start
        for _ in range(steps):
            u = _swap(a) @ (a @ u)                   # (aᵀa)^k v: its top eigenvector dominates
            u = u / xp.sqrt((u * u).sum(0))
        return float(xp.sqrt(((a @ u) ** 2).sum(0)).max())
    return sigma_max(b) * sigma_max(inv)


class RightInverse:
    """Solves y_bar bᵀ = a_bar for y_bar, b (n x m) fixed; built once per context (see the module doc).

    `dtype` is the cotangents' dtype: what the solve returns, and (with b's) what it computes in. A float32
    model may carry float64 cotangents (Moonwalk's cotangent_dtype): then nothing is rounded to float32.
    `rows` is the number of cotangent rows per call, which picks the square strategy.
    `expanding` is False (m <= n) or True (m > n: y_bar[S] is the fragment).
    """

    def __init__(self, op, b, dtype=None, rows=None):
        xp = get_array_module(b)
        n, m = b.shape
        self.op, self.m, self.shape = op, m, tuple(b.shape)
        self.dtype = np.result_type(b.dtype, dtype or b.dtype)
        # b is known to its dtype's precision: cond(b) beyond ~1/(10 eps) is rank deficiency. The Gram and QR
        # factorisations run in float64, where bᵀb resolves cond(b) up to 1/sqrt(eps64) ~ 7e7.
        self.tol = tol = max(10 * float(np.finfo(b.dtype).eps), float(np.sqrt(np.finfo(np.float64).eps)))
        self.mode = None
        self.nbytes = 0
        if m == n:
            self.expanding = False
            if rows is not None and rows <= SOLVE_ROWS * n:
                # Few rows: LU-solve them directly (ȳᵀ = b⁻¹ āᵀ), nothing kept; in the cotangents' dtype, which is
                # as accurate as float64 here (the backward-stable solve errs by ~eps relative, not eps·cond).
                self.mode, self.b = "solve", b
                return
            # Many rows: one LU inverse in float64 (~2n³ flops), applied as a float64 GEMM (an inverse rounded to
            # float32 and applied in float32 errs by ~eps·cond, 200x the solve's error at cond 1e3). It gives the
            # exact 1-norm condition number in O(n²): cond₁ <= n·cond₂, so cond₁ > n/tol means cond₂ > 1/tol for
            # sure (numerically singular for b's dtype): raise rather than amplify noise.
            b64 = b.astype(np.float64, copy=False)
            try:
                inv = xp.linalg.inv(b64)
            except np.linalg.LinAlgError:
                inv = None
            cond1 = None if inv is None else float(xp.abs(b64).sum(0).max() * xp.abs(inv).sum(0).max())
            if cond1 is None or not np.isfinite(cond1) or cond1 > n / tol:
                raise self._singular(f"cond_1(b) >~ {n / tol:.0e}")
            if self.dtype == np.float32 and _cond2_estimate(b64, inv) <= F32_APPLY_COND:
                # well conditioned: the inverse rounded to float32 and applied as a float32 GEMM errs by
                # ~eps32·cond₂ <= ~1e-6 relative, what float32 cotangents carry anyway, at half the cost
                self.mode, self.P = "inverse32", xp.ascontiguousarray(_swap(inv).astype(np.float32))
            else:
                self.mode, self.P = "inverse", xp.ascontiguousarray(_swap(inv))    # y_bar = a_bar @ b⁻ᵀ, float64
            self.nbytes = self.P.nbytes
        elif m < n:
            self.expanding = False
            b64 = b.astype(np.float64, copy=False)
            g = _swap(b64) @ b64                       # bᵀb, m x m, symmetric positive definite iff rank m
            try:
                chol = xp.linalg.cholesky(g)
            except np.linalg.LinAlgError:
                chol = None
            d = None if chol is None else xp.abs(xp.diagonal(chol))
            # diag(L) spreads like the singular values of b: min/max <= tol means cond(b) >= 1/tol
            if d is None or not bool(xp.isfinite(d).all()) or float(d.min()) <= tol * float(d.max()):
                raise NotInvertibleError(
                    f"{op}: inverse mode needs the right operand (shape {self.shape}) to have full column rank "
                    f"{m}, but it is numerically rank-deficient (cond(b) >~ {1 / tol:.0e}); use reverse mode")
            l_inv = xp.linalg.inv(chol)                # L⁻¹, (bᵀb)⁻¹ = L⁻ᵀ L⁻¹
            self.mode = "gram"
            self.P = (b64 @ (_swap(l_inv) @ l_inv)).astype(self.dtype, copy=False)   # y_bar = a_bar @ P
            self.nbytes = self.P.nbytes
        else:
            self.expanding = True
            perm, r_diag = pivoted_qr(to_host(b), k=n)
            if n == 0 or not abs(r_diag[-1]) > tol * abs(r_diag[0]):
                raise NotInvertibleError(
                    f"{op}: inverse mode through an expanding matrix (shape {self.shape}) needs rank {n}, but "
                    f"it is numerically rank-deficient (|R_nn| / |R_11| <= {tol:.0e}); use reverse mode")
            b64 = b.astype(np.float64, copy=False)
            self.mode = "fragment"
            self.K = xp.asarray(np.sort(perm[:n]))
            self.S = xp.asarray(np.sort(perm[n:]))
            self.M = _swap(xp.linalg.inv(b64[:, self.K])).astype(self.dtype)            # b[:, K]⁻ᵀ, n x n
            self.bS_T = xp.ascontiguousarray(_swap(b[:, self.S])).astype(self.dtype, copy=False)   # b[:, S]ᵀ
            self.nbytes = self.M.nbytes + self.bS_T.nbytes

    def _singular(self, why):
        return NotInvertibleError(
            f"{self.op}: inverse mode needs the square right operand (shape {self.shape}) to be invertible, but "
            f"it is numerically singular ({why}); use reverse mode")

    def fragment(self, y_bar):
        return y_bar[..., self.S] if self.expanding else None

    def _lu_solve(self, a_bar):
        """ȳᵀ = b⁻¹ āᵀ by LU, with a condition check from a few fixed probe columns solved alongside:
        ‖b⁻¹v‖/‖v‖ <= 1/σ_min(b) and ‖b‖_F/√n <= σ_max(b), so their product is a lower bound on cond₂(b);
        above 1/tol b is singular for its dtype for sure. (A lower bound can miss a singular b; Moonwalk's
        sweep measures its own error against exact cotangents, which catches what this misses.)"""
        xp = get_array_module(a_bar)
        b = self.b.astype(self.dtype, copy=False)
        n = b.shape[0]
        rows = a_bar.reshape(-1, n)
        probes = xp.asarray(np.random.default_rng(0).standard_normal((n, _PROBES)), dtype=self.dtype)
        rhs = xp.concatenate([_swap(rows), probes], axis=1)
        try:
            sol = xp.linalg.solve(b, rhs)
        except np.linalg.LinAlgError:
            raise self._singular("an exactly zero pivot") from None
        grow = float((xp.sqrt((sol[:, -_PROBES:] ** 2).sum(0)) / xp.sqrt((probes ** 2).sum(0))).max())
        lower = grow * float(xp.sqrt((b.astype(np.float64) ** 2).sum())) / np.sqrt(n)
        if not np.isfinite(lower) or lower > 1 / self.tol:
            raise self._singular(f"cond_2(b) >= {lower:.1e} > 1/tol = {1 / self.tol:.0e}")
        return xp.ascontiguousarray(_swap(sol[:, :-_PROBES])).reshape(a_bar.shape)

    def _apply_inverse(self, a_bar):
        """a_bar @ b⁻ᵀ as a float64 GEMM, n rows at a time into the result, so the float64 temporaries stay
        the size of the inverse itself rather than of the whole batch."""
        xp = get_array_module(a_bar)
        n = self.P.shape[0]
        rows = a_bar.reshape(-1, n)
        out = xp.empty(rows.shape, dtype=np.result_type(self.dtype, a_bar.dtype))
        for r0 in range(0, rows.shape[0], n):
            out[r0:r0 + n] = _matmul(rows[r0:r0 + n].astype(np.float64, copy=False), self.P)
        return out.reshape(a_bar.shape)

    def solve(self, cls, a_bar, fragment):
        if self.mode == "solve":
            return self._lu_solve(a_bar)
        if self.mode == "inverse":
            return self._apply_inverse(a_bar)
        if not self.expanding:
            return _matmul(a_bar, self.P)
        if fragment is None:
            raise cls.missing_fragment(f"{self.m - self.M.shape[0]} of the {self.m} output coordinates per row "
                                       "(an expanding layer: more outputs than inputs)")
        # y_bar[K] = (a_bar - y_bar[S] b[:, S]ᵀ) b[:, K]⁻ᵀ
        xp = get_array_module(a_bar)
        y_bar = xp.empty(a_bar.shape[:-1] + (self.m,), dtype=np.result_type(a_bar.dtype, self.dtype))
        check_fragment(cls.name, fragment, y_bar[..., self.S].shape)
        y_bar[..., self.S] = fragment
        y_bar[..., self.K] = _matmul(a_bar - _matmul(fragment, self.bS_T), self.M)
        return y_bar


# ---- condition bounds for error control -------------------------------------------------------------------

# σ_max and σ_min of a weight move slowly while it trains (optimisers update it in place), so the bounds are
# recomputed every REFRESH calls per weight array (a weak reference tells when the array itself is gone).
REFRESH = 16
_bounds_cache = {}


def singular_value_bounds(b):
    """(σ_max(b), 1/σ_min(b)) of a 2-D b, from the eigenvalues of its smaller Gram matrix (σ² = eig(bᵀb)),
    in float64 on the host. A rank-deficient b gives 1/σ_min = inf."""
    hit = _bounds_cache.get(id(b))
    if hit is not None and hit[0]() is b and hit[1] < REFRESH:
        hit[1] += 1
        return hit[2]
    a = to_host(b).astype(np.float64, copy=False)
    lam = np.linalg.eigvalsh(a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a)      # σ², ascending
    smax, smin = float(np.sqrt(max(lam[-1], 0.0))), float(np.sqrt(max(lam[0], 0.0)))
    bounds = (smax, np.inf if smin == 0 else 1.0 / smin)
    try:
        _bounds_cache[id(b)] = [weakref.ref(b), 1, bounds]
    except TypeError:                                        # not weak-referenceable: no cache
        pass
    if len(_bounds_cache) > 4096:
        for k in [k for k, v in _bounds_cache.items() if v[0]() is None]:
            del _bounds_cache[k]
    return bounds


def _right_inverse(cls, ctx, b, like=None):
    """The RightInverse of b for cotangents like `like` (their dtype and row count), built once per context
    and cached on it (its bytes are counted)."""
    dtype = None if like is None else like.dtype
    ri = getattr(ctx, "right_inverse", None)
    if ri is None or (dtype is not None and ri.dtype != np.result_type(b.dtype, dtype)):
        rows = None if like is None else (like.size // like.shape[-1] if like.ndim and like.shape[-1] else 0)
        ri = RightInverse(cls.name, b, dtype, rows)
        ctx.save(right_inverse=ri)
    return ri


# ---- matmul --------------------------------------------------------------------------------------------

class Matmul(Primitive):
    """y = a @ b with numpy.matmul semantics (1-D operands promoted, batch dimensions broadcast).

    vijp along a: exists for a 2-D (or 1-D) b of full rank (see the module doc); m > n needs the fragment
    y_bar[..., S]. Batched b: NotInvertibleError. Along b: MissingRuleError.
    """
    name = "matmul"
    submersive = False    # when b expands (m > n)
    orders = None

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ShapeError(f"matmul: operands must be at least 1-D, got shapes {a.shape} and {b.shape}")
        k_a = a.shape[-1]
        k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
        if k_a != k_b:
            raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not fit: the last dimension of a ({k_a}) "
                             f"must equal the {'only' if b.ndim == 1 else 'second-to-last'} dimension of b ({k_b})")
        if a.ndim > 2 or b.ndim > 2:         # (broadcast_shapes costs ~1 µs: only where there is a batch)
            try:
                np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            except ValueError:
                raise ShapeError(f"matmul: the batch dimensions of shapes {a.shape} and {b.shape} do not "
                                 "broadcast") from None
        if ctx.needs[0] and ctx.needs[1]:
            ctx.save(a=a, b=b)               # both cotangents wanted (the common case): one save
        else:
            ctx.save_for(0, b=b)             # ā = ȳ bᵀ needs b
            ctx.save_for(1, a=a)             # b̄ = aᵀ ȳ needs a
        ctx.a_shape, ctx.b_shape = a.shape, b.shape
        return _matmul(a, b)

    @staticmethod
    def jvp(ctx, a_dot, b_dot):
        return add_terms(None if a_dot is None else _matmul(a_dot, ctx.b),
                         None if b_dot is None else _matmul(ctx.a, b_dot))

    @staticmethod
    def vjp(ctx, y_bar):
        a_nd, b_nd = len(ctx.a_shape), len(ctx.b_shape)
        if a_nd == 2 and b_nd == 2:                          # the common case, without the reshaping below
            return (_matmul(y_bar, ctx.b.T) if ctx.needs[0] else None,       # a_bar = y_bar bᵀ
                    _matmul(ctx.a.T, y_bar) if ctx.needs[1] else None)       # b_bar = aᵀ y_bar
        g = y_bar
        if b_nd == 1:
            g = g[..., None]
        if a_nd == 1:
            g = g[..., None, :]
        a_bar = b_bar = None
        if ctx.needs[0]:
            b2 = ctx.b[:, None] if b_nd == 1 else ctx.b
            a_bar = _matmul(g, _swap(b2))                     # a_bar = y_bar bᵀ
            a_bar = sum_to(a_bar, ((1,) if a_nd == 1 else ()) + ctx.a_shape).reshape(ctx.a_shape)
        if ctx.needs[1]:
            a2 = ctx.a[None, :] if a_nd == 1 else ctx.a
            if b_nd <= 2 and a2.ndim > 2:                    # one GEMM over all batch rows
                b_bar = _matmul(_swap(a2.reshape(-1, a2.shape[-1])), g.reshape(-1, g.shape[-1]))
            else:
                b_bar = sum_to(_matmul(_swap(a2), g), ctx.b_shape + ((1,) if b_nd == 1 else ()))
            b_bar = b_bar.reshape(ctx.b_shape)               # b_bar = aᵀ y_bar, summed over the batch
        return a_bar, b_bar

    @classmethod
    def _plan(cls, ctx, like=None):
        if ctx.wrt != 0:
            raise MissingRuleError(
                "matmul: no vijp rule along the right operand b (inverse mode through b would need a left inverse "
                "of every row of a); put the data path on the left (y = x @ W), or use reverse mode")
        if len(ctx.b_shape) > 2:
            raise NotInvertibleError(
                f"matmul: inverse mode along a needs a 1-D or 2-D right operand, got a batched b of shape "
                f"{ctx.b_shape}; use reverse mode (or loop over the batch)")
        b = ctx.b[:, None] if len(ctx.b_shape) == 1 else ctx.b
        return _right_inverse(cls, ctx, b, like)

    @classmethod
    def fragment(cls, ctx, y_bar):
        if ctx.wrt != 0 or len(ctx.b_shape) != 2 or ctx.b_shape[1] <= ctx.b_shape[0]:
            return None          # not expanding: nothing erased (or the vijp raises and says why)
        return cls._plan(ctx).fragment(y_bar)

    @classmethod
    def condition(cls, ctx):
        if ctx.wrt != 0 or len(ctx.b_shape) != 2:
            return None
        return singular_value_bounds(ctx.b)       # ȳ b̄ᵀ stretches by σ_max(b), its inverse by 1/σ_min(b)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        plan = cls._plan(ctx, x_bar)
        if len(ctx.b_shape) == 1:
            return plan.solve(cls, x_bar, fragment)[..., 0]
        return plan.solve(cls, x_bar, fragment)


# ---- linear --------------------------------------------------------------------------------------------

class Linear(Primitive):
    """y = x Wᵀ + bias, W (out_features, in_features), x (..., in_features), bias (out_features,) or absent.

    Residuals by purpose: W for the x cotangent, x for the W cotangent, nothing for the bias. `residual=` a
    sketched policy (tinymoon.randomized) keeps what it keeps of x instead, and estimates W̄ from it.
    vijp along x: matmul's with b = Wᵀ (n = in, m = out): out <= in and W of full row rank: the factor of
    W Wᵀ is computed once per context (O(in·out) per row after); out > in: pivoted-QR fragment of
    out - in coordinates per row. Along W or bias: MissingRuleError.
    """
    name = "linear"
    submersive = False    # when out_features > in_features
    orders = None

    policy_order_why = "its weight cotangent is an estimate from what the policy keeps of x, not a function whose derivative is the gradient's"

    @staticmethod
    def forward(ctx, x, weight, bias=None, residual=None):
        if weight.ndim != 2:
            raise ShapeError(f"linear: weight must be 2-D (out_features, in_features), got shape {weight.shape}")
        out_f, in_f = weight.shape
        if x.ndim == 0 or x.shape[-1] != in_f:
            raise ShapeError(f"linear: input of shape {x.shape} does not fit weight of shape {weight.shape}: the "
                             f"input's last dimension must be in_features = {in_f}")
        if bias is not None and bias.shape != (out_f,):
            raise ShapeError(f"linear: bias of shape {bias.shape} does not fit weight of shape {weight.shape}: it "
                             f"must have shape ({out_f},)")
        ctx.save_for(0, weight=weight)                    # x̄ = ȳ W
        if residual is None:
            ctx.save_for(1, x=x)                          # W̄ = ȳᵀ x
        elif ctx.needs[1]:
            ctx.save(x_kept=residual.keep(x, "linear"))   # W̄ ≈ from what the policy keeps of x
            if residual.keep_input:
                ctx.save(x=x)                             # forward mode: ẏ needs x for the weight tangent
        ctx.x_shape = x.shape
        x2 = x.reshape(math.prod(x.shape[:-1]), in_f)    # not -1: in_features may be 0
        y = _matmul(x2, weight.T)                         # BLAS reads Wᵀ as a transposed view: no copy
        if bias is not None:
            y += bias
        return y.reshape(x.shape[:-1] + (out_f,))

    @staticmethod
    def jvp(ctx, x_dot, w_dot, b_dot=None):
        return add_terms(None if x_dot is None else _matmul(x_dot, ctx.weight.T),
                         None if w_dot is None else _matmul(ctx.x, w_dot.T),
                         b_dot)

    @staticmethod
    def vjp(ctx, y_bar):
        out_f, rows = y_bar.shape[-1], math.prod(y_bar.shape[:-1])     # not -1: a size may be 0
        g = y_bar.reshape(rows, out_f)
        x_bar = w_bar = b_bar = None
        if ctx.needs[0]:
            x_bar = _matmul(g, ctx.weight).reshape(ctx.x_shape)               # x_bar = y_bar W
        if ctx.needs[1] and ctx.params.get("residual") is not None:
            w_bar = ctx.x_kept.linear_weight_cotangent(g)                     # the policy's estimate of W_bar
        elif ctx.needs[1]:
            w_bar = _matmul(g.T, ctx.x.reshape(rows, ctx.x_shape[-1]))        # W_bar = y_barᵀ x
        if len(ctx.needs) > 2 and ctx.needs[2]:
            b_bar = g.sum(0)                                                  # bias_bar = sum over rows
        return (x_bar, w_bar) if len(ctx.needs) == 2 else (x_bar, w_bar, b_bar)

    @classmethod
    def _plan(cls, ctx, like=None):
        if ctx.wrt != 0:
            raise MissingRuleError(
                f"linear: no vijp rule along {'the weight' if ctx.wrt == 1 else 'the bias'}: inverse mode follows "
                "the data path through x; use reverse mode for parameters")
        return _right_inverse(cls, ctx, ctx.weight.T, like)

    @classmethod
    def fragment(cls, ctx, y_bar):
        out_f, in_f = ctx.weight.shape
        if ctx.wrt != 0 or out_f <= in_f:
            return None          # not expanding: nothing erased, and no factorisation is needed to say so
        return cls._plan(ctx).fragment(y_bar)

    @classmethod
    def condition(cls, ctx):
        return singular_value_bounds(ctx.weight) if ctx.wrt == 0 else None

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        return cls._plan(ctx, x_bar).solve(cls, x_bar, fragment)
