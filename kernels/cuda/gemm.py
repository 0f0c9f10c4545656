"""Tiled shared-memory matrix product on the GPU: C[p] = A[p] @ B[p] for a batch p (grid z).

Each block computes a TILE x TILE tile of C.  Walking K in steps of TILE, the block's threads first copy
one TILE x TILE tile of A and one of B into shared memory (each thread loads one element of each), sync,
then every thread accumulates its C element from the shared tiles (TILE multiply-adds from fast memory per
two global loads): global traffic drops by a factor TILE against the naive one-thread-per-C-element loop.
Out-of-range loads write zeros, so edges need no special case.  cuBLAS (the "cupy" implementation) is
faster still (register tiling, tensor cores); the bench measures both.
"""
import numpy as np
from numba import cuda

from .common import arg, per_dtype, xp_of

TILE = 16


@per_dtype
def _kernel(dt):
    @cuda.jit
    def matmul_tiled(a, b, c):
        sa = cuda.shared.array((TILE, TILE), dt)
        sb = cuda.shared.array((TILE, TILE), dt)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        p = cuda.blockIdx.z
        row = cuda.blockIdx.y * TILE + ty
        col = cuda.blockIdx.x * TILE + tx
        m, k = a.shape[1], a.shape[2]
        n = b.shape[2]
        acc = dt(0)
        for k0 in range(0, k, TILE):
            sa[ty, tx] = a[p, row, k0 + tx] if row < m and k0 + tx < k else dt(0)
            sb[ty, tx] = b[p, k0 + ty, col] if k0 + ty < k and col < n else dt(0)
            cuda.syncthreads()
            for kk in range(TILE):
                acc += sa[ty, kk] * sb[kk, tx]
            cuda.syncthreads()  # the tiles are overwritten next step: wait for every reader
        if row < m and col < n:
            c[p, row, col] = acc
    return matmul_tiled


def _operands(a, b):
    """broadcast_operands for either array module: (B, M, K), (B, K, N) contiguous, and the output shape."""
    xp = xp_of(a)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if a.ndim == 0 or b.ndim == 0 or a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"matmul: cannot multiply shapes {a.shape} and {b.shape}")
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    m, k, n = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    a3 = xp.ascontiguousarray(xp.broadcast_to(a2, batch + (m, k))).reshape(-1, m, k)
    b3 = xp.ascontiguousarray(xp.broadcast_to(b2, batch + (k, n))).reshape(-1, k, n)
    return a3, b3, batch + ((m,) if a.ndim > 1 else ()) + ((n,) if b.ndim > 1 else ())


def matmul_cuda(a, b):
    if a.dtype != b.dtype or a.dtype.kind != "f":
        raise ValueError(f"matmul (cuda): needs float operands of one dtype, got {a.dtype} and {b.dtype}")
    xp = xp_of(a)
    a3, b3, out_shape = _operands(a, b)
    nb, m, _ = a3.shape
    n = b3.shape[2]
    c = xp.empty((nb, m, n), a.dtype)
    grid = ((n + TILE - 1) // TILE, (m + TILE - 1) // TILE, nb)
    _kernel(a.dtype)[grid, (TILE, TILE)](arg(a3), arg(b3), c)
    return c.reshape(out_shape)
