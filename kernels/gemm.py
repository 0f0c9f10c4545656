"""Batched matrix product (the `matmul` kernel), numpy.matmul broadcasting: (..., M, K) @ (..., K, N).

CPU choice: numpy.matmul, i.e. the BLAS GEMM NumPy links (OpenBLAS).  A hand-written kernel cannot beat it:
BLAS packs panels of A and B into cache-sized, SIMD-aligned buffers and runs an assembly micro-kernel that
keeps a register tile of C live across the whole K loop.  `python -m tinymoon.bench kernels` measures
the Numba kernel below against numpy.matmul in the same run (docs/kernels.md has the numbers).

The Numba kernel exists to be read and to cross-check: a blocked i-k-j loop.
  C[i, j] = Σ_k A[i, k] B[k, j]
The innermost loop runs over j, so it walks rows of B and C contiguously (SIMD-friendly); blocks of
BK rows of B (BK x N) are reused by every row i of the current row block while they sit in cache.
Parallelism: one (batch, row-block) pair per prange iteration; every iteration writes its own rows of C.
"""
import numpy as np
from numba import njit, prange

from . import blas

BM, BK = 32, 128


def broadcast_operands(a, b):
    """numpy.matmul's shape rules, made explicit: promote 1-D operands, broadcast the batch dimensions.
    Returns (a3, b3, out_shape) with a3 (B, M, K), b3 (B, K, N) contiguous."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-D, got shapes {a.shape} and {b.shape}")
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape}")
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    m, k, n = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    a3 = np.ascontiguousarray(np.broadcast_to(a2, batch + (m, k))).reshape(-1, m, k)
    b3 = np.ascontiguousarray(np.broadcast_to(b2, batch + (k, n))).reshape(-1, k, n)
    out_shape = batch + ((m,) if a.ndim > 1 else ()) + ((n,) if b.ndim > 1 else ())
    return a3, b3, out_shape


def matmul_reference(a, b):
    # np.matmul; small products on one OpenBLAS thread (blas.py: its spinning workers starve Numba's)
    return blas.matmul(a, b)


@njit(parallel=True, cache=True)
def _matmul_blocked(a, b, c):
    nb, m, k = a.shape
    n = b.shape[2]
    row_blocks = (m + BM - 1) // BM
    for job in prange(nb * row_blocks):
        p = job // row_blocks
        i0 = (job % row_blocks) * BM
        i1 = min(i0 + BM, m)
        for i in range(i0, i1):
            for j in range(n):
                c[p, i, j] = 0
        for k0 in range(0, k, BK):  # B[k0:k1, :] stays in cache for the whole row block
            k1 = min(k0 + BK, k)
            for i in range(i0, i1):
                for kk in range(k0, k1):
                    aik = a[p, i, kk]
                    for j in range(n):
                        c[p, i, j] += aik * b[p, kk, j]


def matmul_numba(a, b):
    dtype = np.result_type(a, b)
    a3, b3, out_shape = broadcast_operands(np.asarray(a, dtype), np.asarray(b, dtype))
    c = np.empty((a3.shape[0], a3.shape[1], b3.shape[2]), dtype)
    _matmul_blocked(a3, b3, c)
    return c.reshape(out_shape)
