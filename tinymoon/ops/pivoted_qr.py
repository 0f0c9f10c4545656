"""Column-pivoted QR (Businger–Golub), for the fragment coordinates of an expanding layer's vijp.

Why a hand factorisation: NumPy's and CuPy's `linalg.qr` do not pivot, and a pivoting QR (LAPACK's xGEQP3)
is only reachable through SciPy, which tinymoon does not depend on. The expanding vijp needs the pivots
(they pick the best-conditioned n of m columns), not Q or R, and runs once per layer and step on a small
matrix, so a blocked NumPy version is fast enough (tests/test_linalg_vijp.py holds it to np.linalg.qr).
"""
from __future__ import annotations

import numpy as np

__all__ = ["pivoted_qr"]


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
