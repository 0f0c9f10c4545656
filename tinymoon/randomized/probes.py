"""Probe matrices Z (n x r) with E[Z Zᵀ] = I, regenerated from a seed.

A sketched layer stores X̄ = Zᵀ x and the seed that made Z; backward calls `probes(...)` again with the same
seed and gets the same Z, bit for bit. Every Z is drawn on the host in float64 (so the same seed gives the
same probes on every device and in every dtype) and then cast / moved.

Scalings (r columns, n rows):
- "gaussian":   Z_ij ~ N(0, 1/r)                    E[Z Zᵀ] = r · (1/r) I = I
- "rademacher": Z_ij = ±1/√r with probability 1/2   E[Z Zᵀ] = I, and Z Zᵀ has the exact diagonal 1
- "orthogonal": Z = √(n/r) · Q, Q the first r columns of a Haar-random orthogonal n x n matrix
                (QR of a Gaussian n x r with the signs of diag(R) folded into Q, which makes Q Haar).
                E[Q Qᵀ] = (r/n) I, so E[Z Zᵀ] = I; for r = n, Z Zᵀ = I exactly (the estimate is exact).
- "block_orthogonal" (multi-channel only): the n = C·N rows are C channel blocks of N rows; the r columns
                are split into C disjoint groups (r_c = r // C, the first r % C channels get one more), and
                block c is √(N/r_c) times r_c Haar-orthogonal columns on its own columns only. So
                Z_cᵀ Z_c' = 0 for c ≠ c' (no cross-channel leakage) and E[Z_c Z_cᵀ] = I_N. Needs r >= C;
                r = C·N gives Z Zᵀ = I exactly.
"""
from __future__ import annotations

import numpy as np

DISTRIBUTIONS = ("gaussian", "rademacher", "orthogonal", "block_orthogonal")


def _haar_columns(rng, n, r):
    """r orthonormal columns of a Haar-random n x n orthogonal matrix (r <= n)."""
    g = rng.standard_normal((n, r))
    q, rr = np.linalg.qr(g)                     # reduced QR: q (n, r)
    signs = np.sign(np.diagonal(rr)).copy()
    signs[signs == 0] = 1.0
    return q * signs                            # fixes QR's sign convention: the result is Haar


def probe_matrix(seed, n, r, dist="gaussian", blocks=1):
    """The n x r probe matrix for `seed` (an int), float64 on the host. `blocks` = C for "block_orthogonal"
    (n must then be a multiple of C: channel c owns rows c·N .. (c+1)·N - 1)."""
    if r < 1:
        raise ValueError(f"probes: need at least one probe column, got r={r}")
    rng = np.random.default_rng(seed)
    if dist == "gaussian":
        return rng.standard_normal((n, r)) / np.sqrt(r)
    if dist == "rademacher":
        return (rng.integers(0, 2, size=(n, r)) * 2.0 - 1.0) / np.sqrt(r)
    if dist == "orthogonal":
        if r > n:
            raise ValueError(f"probes: orthogonal probes need r <= n (at most n orthogonal columns), got r={r}, "
                             f"n={n}; use r <= {n} or dist='gaussian'")
        return _haar_columns(rng, n, r) * np.sqrt(n / r)
    if dist == "block_orthogonal":
        c = int(blocks)
        if n % c:
            raise ValueError(f"probes: block_orthogonal needs n = C·N, got n={n} for C={c} blocks")
        npix = n // c
        if r < c or -(-r // c) > npix:
            raise ValueError(f"probes: block_orthogonal needs C <= r <= C·N (every channel gets between 1 and N "
                             f"columns), got r={r} for C={c} channels of N={npix} pixels")
        z = np.zeros((n, r))
        sizes = [r // c + (k < r % c) for k in range(c)]
        col = 0
        for k, rc in enumerate(sizes):
            z[k * npix:(k + 1) * npix, col:col + rc] = _haar_columns(rng, npix, rc) * np.sqrt(npix / rc)
            col += rc
        return z
    raise ValueError(f"probes: unknown distribution {dist!r}; choose one of {', '.join(DISTRIBUTIONS)}")


def new_seed(generator):
    """A fresh 63-bit seed from the estimator's numpy Generator (one per forward call)."""
    return int(generator.integers(0, 2 ** 63 - 1))
