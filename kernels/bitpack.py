"""Bit packing: boolean masks and b-bit bin indices stored as a little-endian bit stream.

Layout (the contract every implementation keeps, CPU and GPU alike):
element i of an array of b-bit codes occupies stream bits [i*b, (i+1)*b), least significant bit first;
stream bit j is bit (j % 8) of byte j // 8.  So b = 1 is exactly
``numpy.packbits(mask.ravel(), bitorder="little")`` and n codes take ceil(n*b/8) bytes.

Why groups of 8: eight b-bit codes fill exactly b whole bytes (8*b bits), so a group of 8 elements never
shares a byte with its neighbours.  The fast kernels give each group to one worker: gather the 8 codes into
one 64-bit word (8*8 = 64 bits at most), then write its low b bytes.  No two workers touch the same byte,
so the parallel loop needs no atomics.
"""
import numpy as np
from numba import njit, prange

VALID_BITS = range(1, 9)


def nbytes_for(n, bits):
    """Bytes needed for n codes of `bits` bits: ceil(n*bits/8)."""
    return (n * bits + 7) // 8


def check_bits(bits):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in VALID_BITS:
        raise ValueError(f"bits must be an integer in 1..8 (valid range 1..8), got {bits!r}")
    return int(bits)


def check_packed(packed, n, bits, what):
    """The packed buffer must be flat-able uint8 with at least ceil(n*bits/8) bytes."""
    if packed.dtype != np.uint8:
        raise ValueError(f"{what}: packed must be uint8, got {packed.dtype}")
    need = nbytes_for(n, bits)
    if packed.size < need:
        raise ValueError(f"{what}: {n} codes of {bits} bits need {need} bytes, packed has {packed.size}")
    if n < 0:
        raise ValueError(f"{what}: n must be >= 0, got {n}")


# ---------------------------------------------------------------------------------------------- reference
# Written against an array module xp (numpy or cupy): the CuPy implementation reuses them.
def _xp(a):
    return np if isinstance(a, (np.ndarray, np.generic)) else __import__("cupy")


def pack_bits_reference(mask):
    bits = mask.ravel()
    return _xp(mask).packbits(bits if bits.dtype == np.bool_ else bits != 0, bitorder="little")


def unpack_bits_reference(packed, n):
    return _xp(packed).unpackbits(packed.ravel(), bitorder="little")[:n].view(np.bool_)


def pack_bins_reference(idx, bits):
    # The spec, literally: expand every code into its `bits` binary digits (LSB first), then pack the stream.
    xp = _xp(idx)
    idx = idx.ravel().astype(np.uint8)
    stream = (idx[:, None] >> xp.arange(bits, dtype=np.uint8)) & 1  # (n, bits): stream bit i*bits + k
    return xp.packbits(stream.ravel(), bitorder="little")


def unpack_bins_reference(packed, bits, n):
    xp = _xp(packed)
    stream = xp.unpackbits(packed.ravel(), bitorder="little")[: n * bits].reshape(n, bits)
    weights = (1 << xp.arange(bits)).astype(np.uint8)
    return (stream * weights).sum(axis=1, dtype=np.uint8)  # idx = Σ_k bit_k · 2^k


# ---------------------------------------------------------------------------------------------- numba CPU
@njit(parallel=True, cache=True)
def _pack_groups(codes, bits, out):
    # codes: flat array of ints < 2**bits (or a mask, bits = 1); out: ceil(n*bits/8) bytes.
    n = codes.size
    ngroups = (n + 7) // 8
    nbytes = out.size
    for g in prange(ngroups):
        word = np.uint64(0)
        base = g * 8
        for t in range(min(8, n - base)):
            word |= np.uint64(codes[base + t]) << np.uint64(t * bits)
        for q in range(bits):  # the group's b bytes; the last group may be cut short
            byte = g * bits + q
            if byte < nbytes:
                out[byte] = np.uint8((word >> np.uint64(8 * q)) & np.uint64(0xFF))


@njit(parallel=True, cache=True)
def _pack_mask(mask, out):
    # bits = 1 special case: byte k holds mask[8k .. 8k+7]; any nonzero counts as set.
    n = mask.size
    for k in prange(out.size):
        v = 0
        base = k * 8
        for t in range(min(8, n - base)):
            if mask[base + t] != 0:
                v |= 1 << t
        out[k] = v


@njit(parallel=True, cache=True)
def _unpack_groups(packed, bits, n, out):
    ngroups = (n + 7) // 8
    nbytes = (n * bits + 7) // 8
    mask = np.uint64((1 << bits) - 1)
    for g in prange(ngroups):
        word = np.uint64(0)
        for q in range(bits):
            byte = g * bits + q
            if byte < nbytes:
                word |= np.uint64(packed[byte]) << np.uint64(8 * q)
        base = g * 8
        for t in range(min(8, n - base)):
            out[base + t] = np.uint8((word >> np.uint64(t * bits)) & mask)


@njit(parallel=True, cache=True)
def _unpack_mask(packed, n, out):
    nbytes = (n + 7) // 8
    for k in prange(nbytes):
        v = packed[k]
        base = k * 8
        for t in range(min(8, n - base)):
            out[base + t] = (v >> t) & 1 != 0


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def pack_bits_numba(mask):
    mask = _flat(mask)
    if mask.dtype == np.bool_:
        mask = mask.view(np.uint8)
    out = np.empty(nbytes_for(mask.size, 1), np.uint8)
    _pack_mask(mask, out)
    return out


def unpack_bits_numba(packed, n):
    out = np.empty(n, np.bool_)
    _unpack_mask(_flat(packed), n, out)
    return out


def pack_bins_numba(idx, bits):
    idx = _flat(idx)
    if bits == 1:  # a 1-bit stream is a bit mask: NumPy's SIMD packbits is faster than the group kernel
        return pack_bits_reference(idx)
    out = np.empty(nbytes_for(idx.size, bits), np.uint8)
    _pack_groups(idx, bits, out)
    return out


def unpack_bins_numba(packed, bits, n):
    if bits == 1:
        return unpack_bits_reference(packed, n).view(np.uint8)
    out = np.empty(n, np.uint8)
    _unpack_groups(_flat(packed), bits, n, out)
    return out
