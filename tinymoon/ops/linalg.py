"""Linear algebra: matmul (numpy.matmul semantics) and the fused dense layer linear(x, W, b) = x Wᵀ + b.

Row-vector convention: y = a @ b, so the vjp is a_bar = y_bar bᵀ, b_bar = aᵀ y_bar (summed over
broadcast batch dimensions).

Inverse mode along a (the left operand), b of shape (n, m) a fixed 2-D matrix (a 1-D b is m = 1): we need
the y_bar with y_bar bᵀ = a_bar, one row at a time.
- m <= n, b of full column rank m: y_bar = a_bar b (bᵀb)⁻¹. bᵀb is factorised ONCE per context (Cholesky,
  numpy.linalg.cholesky) into the cached right inverse P = b (bᵀb)⁻¹, so each row costs one O(nm) product.
  Numerically rank-deficient b (cond(b) >~ 1/max(10 eps, sqrt(eps64)), read off the Cholesky diagonal)
  raises NotInvertibleError. The factorisations run in float64 internally (results in b's dtype).
- m > n (expanding): the vjp erases m - n dimensions of every row of y_bar. A column-pivoted QR of b
  (Businger–Golub) picks n well-conditioned columns K of b (b[:, K] invertible); the other m - n
  coordinates S of y_bar are the fragment, and y_bar[K] = (a_bar - y_bar[S] b[:, S]ᵀ) b[:, K]⁻ᵀ.
  A b of numerical rank < n (|R_nn| <= tol |R_11|, the same tol) raises NotInvertibleError.
- batched b (more than 2-D): NotInvertibleError; inverse mode along b: MissingRuleError.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_array_module
from ..errors import MissingRuleError, NotInvertibleError, ShapeError
from .base import Primitive, add_terms, check_fragment
from .shape import sum_to

_kernels = None


def _matmul(a, b):
    """tinymoon.kernels.matmul (BLAS on the host, cuBLAS via CuPy); imported lazily (it loads Numba)."""
    global _kernels
    if _kernels is None:
        try:
            from .. import kernels as k
            _kernels = k.matmul
        except ImportError:  # pragma: no cover - kernels is part of the distribution
            _kernels = np.matmul  # TODO(kernels): only while tinymoon.kernels is missing
    return _kernels(a, b)


def _swap(a):
    return a.swapaxes(-1, -2)


# ---- column-pivoted QR ------------------------------------------------------------------------------------

def pivoted_qr(b, k=None, block=32):
    """Businger–Golub column-pivoted Householder QR of b (n x m, host NumPy), k steps (default min(n, m)).

    At step j the remaining column of largest norm (orthogonal to the columns already chosen) is swapped
    to position j, then a Householder reflection H = I - tau v vᵀ zeroes it below the diagonal. Returns
    (perm, r_diag): b[:, perm] = Q R with |r_diag| = |diag(R)| non-increasing, so b[:, perm[:k]] is a
    well-conditioned choice of k columns.

    Blocked like LAPACK's xLAQPS: within a block of reflectors the trailing matrix is updated lazily,
    A = A_stale - V Fᵀ; only the pivot column and the new row of R are brought up to date at each step
    (enough to pick the next pivot, from the downdated column norms), and the whole trailing matrix is
    updated once per block with one matrix product.
    """
    a = np.array(b, dtype=np.float64, order="F")
    n, m = a.shape
    k = min(n, m) if k is None else min(k, n, m)
    perm = np.arange(m)
    vn1 = np.linalg.norm(a, axis=0)                 # remaining column norms (downdated)
    vn2 = vn1.copy()                                # the norms when last computed exactly
    tol3z = np.sqrt(np.finfo(np.float64).eps)
    r_diag = np.zeros(k)
    j0 = 0
    while j0 < k:
        nb = min(block, k - j0)
        f = np.zeros((m - j0, nb))                  # row c - j0 of f belongs to column c
        kb = 0
        stale = None
        for kk in range(nb):
            j = j0 + kk
            p = j + int(np.argmax(vn1[j:]))
            if p != j:                              # pivot: the remaining column of largest norm
                a[:, [j, p]] = a[:, [p, j]]
                f[[j - j0, p - j0]] = f[[p - j0, j - j0]]
                perm[[j, p]] = perm[[p, j]]
                vn1[[j, p]] = vn1[[p, j]]
                vn2[[j, p]] = vn2[[p, j]]
            if kk:                                  # bring the pivot column up to date
                a[j:, j] -= a[j:, j0:j] @ f[j - j0, :kk]
            # Householder reflection: H x = beta e_1
            alpha = a[j, j]
            xnorm = np.linalg.norm(a[j + 1:, j])
            if xnorm == 0:
                tau, beta = 0.0, alpha
            else:
                beta = -np.copysign(np.hypot(alpha, xnorm), alpha)
                tau = (beta - alpha) / beta
                a[j + 1:, j] /= alpha - beta
            v = a[j:, j].copy()
            v[0] = 1.0
            r_diag[j] = beta
            # f[:, kk] = tau (A_current)ᵀ v, with A_current = A_stale - V Fᵀ on the trailing columns
            aux = a[j:, j0:j].T @ v
            f[j + 1 - j0:, kk] = tau * (a[j:, j + 1:].T @ v - f[j + 1 - j0:, :kk] @ aux)
            # the new row of R: A[j, j+1:] -= V[j, :] Fᵀ
            vrow = np.append(a[j, j0:j], 1.0)
            a[j, j + 1:] -= f[j + 1 - j0:, :kk + 1] @ vrow
            a[j, j] = beta
            kb = kk + 1
            # downdate the remaining norms by the new row of R (LAPACK's safeguarded formula)
            if j + 1 < m:
                c = slice(j + 1, m)
                nz = vn1[c] != 0
                t = np.zeros(m - j - 1)
                t[nz] = np.abs(a[j, c][nz]) / vn1[c][nz]
                t = np.maximum(0.0, (1 + t) * (1 - t))
                t2 = t * (vn1[c] / np.where(vn2[c] == 0, 1, vn2[c])) ** 2
                bad = (t2 <= tol3z) & nz
                vn1[c] = vn1[c] * np.sqrt(t)
                if bad.any():                       # cancellation: recompute those exactly after the block
                    stale = np.nonzero(bad)[0] + j + 1
                    break
        jl = j0 + kb                                # the block's reflectors: columns j0..jl-1
        if jl < m and jl < n:                       # apply the block to the trailing matrix: A -= V Fᵀ
            a[jl:, jl:] -= a[jl:, j0:jl] @ f[jl - j0:, :kb].T
        if stale is not None:
            vn1[stale] = np.linalg.norm(a[jl:, stale], axis=0) if jl < n else 0.0
            vn2[stale] = vn1[stale]
        j0 = jl
    return perm, r_diag


# ---- the right inverse shared by matmul and linear -----------------------------------------------------

class RightInverse:
    """Solves y_bar bᵀ = a_bar for y_bar, b (n x m) fixed; built once per context (see the module doc).

    `expanding` is False (m <= n: y_bar = a_bar @ P) or True (m > n: y_bar[S] is the fragment).
    """

    def __init__(self, op, b):
        xp = get_array_module(b)
        n, m = b.shape
        # b is known to its dtype's precision: cond(b) beyond ~1/(10 eps) is rank deficiency. The
        # factorisations run in float64 (internally; results are cast back to b's dtype), where the
        # Gram matrix bᵀb resolves cond(b) up to 1/sqrt(eps64) ~ 7e7.
        tol = max(10 * float(np.finfo(b.dtype).eps), float(np.sqrt(np.finfo(np.float64).eps)))
        b64 = b.astype(np.float64, copy=False)
        self.m = m
        if m == n:
            # Square: y_bar = a_bar b⁻ᵀ. One LU inverse (~2n³ flops, a third of the Gram/Cholesky route below),
            # and it gives the exact 1-norm condition number in O(n²): cond₁ <= n·cond₂, so cond₁ > n/tol means
            # cond₂ > 1/tol for sure (numerically singular for b's dtype): raise rather than amplify noise.
            self.expanding = False
            try:
                inv = xp.linalg.inv(b64)
            except np.linalg.LinAlgError:
                inv = None
            cond1 = None if inv is None else float(xp.abs(b64).sum(0).max() * xp.abs(inv).sum(0).max())
            if cond1 is None or not np.isfinite(cond1) or cond1 > n / tol:
                raise NotInvertibleError(
                    f"{op}: inverse mode needs the square right operand (shape {tuple(b.shape)}) to be invertible, "
                    f"but it is numerically singular (cond_1(b) >~ {n / tol:.0e}); use reverse mode")
            self.P = xp.ascontiguousarray(_swap(inv)).astype(b.dtype, copy=False)     # y_bar = a_bar @ b⁻ᵀ
            self.nbytes = self.P.nbytes
        elif m < n:
            self.expanding = False
            g = _swap(b64) @ b64                       # bᵀb, m x m, symmetric positive definite iff rank m
            try:
                chol = xp.linalg.cholesky(g)
            except np.linalg.LinAlgError:
                chol = None
            d = None if chol is None else xp.abs(xp.diagonal(chol))
            # diag(L) spreads like the singular values of b: min/max <= tol means cond(b) >= 1/tol
            if d is None or not bool(xp.isfinite(d).all()) or float(d.min()) <= tol * float(d.max()):
                raise NotInvertibleError(
                    f"{op}: inverse mode needs the right operand (shape {tuple(b.shape)}) to have full column rank "
                    f"{m}, but it is numerically rank-deficient (cond(b) >~ {1 / tol:.0e}); use reverse mode")
            l_inv = xp.linalg.inv(chol)                # L⁻¹, (bᵀb)⁻¹ = L⁻ᵀ L⁻¹
            self.P = (b64 @ (_swap(l_inv) @ l_inv)).astype(b.dtype, copy=False)   # y_bar = a_bar @ P
            self.nbytes = self.P.nbytes
        else:
            self.expanding = True
            perm, r_diag = pivoted_qr(b.get() if hasattr(b, "get") else b, k=n)
            if n == 0 or not abs(r_diag[-1]) > tol * abs(r_diag[0]):
                raise NotInvertibleError(
                    f"{op}: inverse mode through an expanding matrix (shape {tuple(b.shape)}) needs rank {n}, but "
                    f"it is numerically rank-deficient (|R_nn| / |R_11| <= {tol:.0e}); use reverse mode")
            self.K = xp.asarray(np.sort(perm[:n]))
            self.S = xp.asarray(np.sort(perm[n:]))
            self.M = _swap(xp.linalg.inv(b64[:, self.K])).astype(b.dtype)       # b[:, K]⁻ᵀ, n x n
            self.bS_T = xp.ascontiguousarray(_swap(b[:, self.S]))               # b[:, S]ᵀ, (m - n) x n
            self.nbytes = self.M.nbytes + self.bS_T.nbytes

    def fragment(self, y_bar):
        return y_bar[..., self.S] if self.expanding else None

    def solve(self, cls, a_bar, fragment):
        if not self.expanding:
            return _matmul(a_bar, self.P)
        if fragment is None:
            raise cls.missing_fragment(f"{self.m - self.M.shape[0]} of the {self.m} output coordinates per row "
                                       "(an expanding layer: more outputs than inputs)")
        # y_bar[K] = (a_bar - y_bar[S] b[:, S]ᵀ) b[:, K]⁻ᵀ
        xp = get_array_module(a_bar)
        y_bar = xp.empty(a_bar.shape[:-1] + (self.m,), dtype=a_bar.dtype)
        check_fragment(cls.name, fragment, y_bar[..., self.S].shape)
        y_bar[..., self.S] = fragment
        y_bar[..., self.K] = _matmul(a_bar - _matmul(fragment, self.bS_T), self.M)
        return y_bar


def _right_inverse(cls, ctx, b):
    """The RightInverse of b, built once per context and cached on it (its bytes are counted)."""
    ri = getattr(ctx, "right_inverse", None)
    if ri is None:
        ri = RightInverse(cls.name, b)
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

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ShapeError(f"matmul: operands must be at least 1-D, got shapes {a.shape} and {b.shape}")
        k_a = a.shape[-1]
        k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
        if k_a != k_b:
            raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not fit: the last dimension of a ({k_a}) "
                             f"must equal the {'only' if b.ndim == 1 else 'second-to-last'} dimension of b ({k_b})")
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ShapeError(f"matmul: the batch dimensions of shapes {a.shape} and {b.shape} do not "
                             "broadcast") from None
        ctx.save_for(0, b=b)
        ctx.save_for(1, a=a)
        ctx.a_shape, ctx.b_shape = a.shape, b.shape
        y = _matmul(a, b)
        ctx.out_shape = y.shape
        return y

    @staticmethod
    def jvp(ctx, a_dot, b_dot):
        return add_terms(None if a_dot is None else _matmul(a_dot, ctx.b),
                         None if b_dot is None else _matmul(ctx.a, b_dot))

    @staticmethod
    def vjp(ctx, y_bar):
        a_nd, b_nd = len(ctx.a_shape), len(ctx.b_shape)
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
    def _plan(cls, ctx):
        if ctx.wrt != 0:
            raise MissingRuleError(
                "matmul: no vijp rule along the right operand b (inverse mode through b would need a left inverse "
                "of every row of a); put the data path on the left (y = x @ W), or use reverse mode")
        if len(ctx.b_shape) > 2:
            raise NotInvertibleError(
                f"matmul: inverse mode along a needs a 1-D or 2-D right operand, got a batched b of shape "
                f"{ctx.b_shape}; use reverse mode (or loop over the batch)")
        b = ctx.b[:, None] if len(ctx.b_shape) == 1 else ctx.b
        return _right_inverse(cls, ctx, b)

    @classmethod
    def fragment(cls, ctx, y_bar):
        if ctx.wrt != 0 or len(ctx.b_shape) != 2 or ctx.b_shape[1] <= ctx.b_shape[0]:
            return None          # not expanding: nothing erased (or the vijp raises and says why)
        return cls._plan(ctx).fragment(y_bar)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        plan = cls._plan(ctx)
        if len(ctx.b_shape) == 1:
            return plan.solve(cls, x_bar, fragment)[..., 0]
        return plan.solve(cls, x_bar, fragment)


# ---- linear --------------------------------------------------------------------------------------------

class Linear(Primitive):
    """y = x Wᵀ + bias, W (out_features, in_features), x (..., in_features), bias (out_features,) or absent.

    Residuals by purpose: W for the x cotangent, x for the W cotangent, nothing for the bias.
    vijp along x: matmul's with b = Wᵀ (n = in, m = out): out <= in and W of full row rank: the factor of
    W Wᵀ is computed once per context (O(in·out) per row after); out > in: pivoted-QR fragment of
    out - in coordinates per row. Along W or bias: MissingRuleError.
    """
    name = "linear"
    submersive = False    # when out_features > in_features

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        if weight.ndim != 2:
            raise ShapeError(f"linear: weight must be 2-D (out_features, in_features), got shape {weight.shape}")
        out_f, in_f = weight.shape
        if x.ndim == 0 or x.shape[-1] != in_f:
            raise ShapeError(f"linear: input of shape {x.shape} does not fit weight of shape {weight.shape}: the "
                             f"input's last dimension must be in_features = {in_f}")
        if bias is not None and bias.shape != (out_f,):
            raise ShapeError(f"linear: bias of shape {bias.shape} does not fit weight of shape {weight.shape}: it "
                             f"must have shape ({out_f},)")
        ctx.save_for(0, weight=weight)
        ctx.save_for(1, x=x)
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
        if ctx.needs[1]:
            w_bar = _matmul(g.T, ctx.x.reshape(rows, ctx.x_shape[-1]))        # W_bar = y_barᵀ x
        if len(ctx.needs) > 2 and ctx.needs[2]:
            b_bar = g.sum(0)                                                  # bias_bar = sum over rows
        return (x_bar, w_bar) if len(ctx.needs) == 2 else (x_bar, w_bar, b_bar)

    @classmethod
    def _plan(cls, ctx):
        if ctx.wrt != 0:
            raise MissingRuleError(
                f"linear: no vijp rule along {'the weight' if ctx.wrt == 1 else 'the bias'}: inverse mode follows "
                "the data path through x; use reverse mode for parameters")
        return _right_inverse(cls, ctx, ctx.weight.T)

    @classmethod
    def fragment(cls, ctx, y_bar):
        out_f, in_f = ctx.weight.shape
        if ctx.wrt != 0 or out_f <= in_f:
            return None          # not expanding: nothing erased, and no factorisation is needed to say so
        return cls._plan(ctx).fragment(y_bar)

    @classmethod
    def vijp(cls, ctx, x_bar, fragment):
        return cls._plan(ctx).solve(cls, x_bar, fragment)
