#!/usr/bin/env python3
"""Independent decoder for tally's on-disk files, written only from storage-format.md.

    decode_format.py SEGMENT_FILE     -> JSON {"footer": {...}, "series": [...]}
    decode_format.py --wal WAL_FILE   -> JSON {"header": {...}, "records": [...]}
    decode_format.py --manifest FILE  -> JSON (the manifest document, checksum verified)

Every checksum the document describes is verified; any violation exits with status 1
and a message on stderr. Integers that may exceed 2^53 (timestamps, raw values) are
printed as decimal strings. Uses only the standard library, plus the `zstandard`
module when a zstd frame has to be decompressed (exit status 3 if it is missing).
"""

import json
import struct
import sys

MASK64 = (1 << 64) - 1


class FormatError(Exception):
    pass


# ---- §1 primitives ------------------------------------------------------------------

def _crc32c_table():
    poly = 0x82F63B78  # reflected Castagnoli polynomial
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


CRC_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    t = CRC_TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def as_i64(u):
    u &= MASK64
    return u - (1 << 64) if u >> 63 else u


def unzigzag(u):
    return as_i64((u >> 1) ^ (-(u & 1) & MASK64))


def zstd_decompress(frame, max_out, exact=None):
    try:
        import zstandard
    except ImportError:
        sys.stderr.write(
            "decode_format.py: the 'zstandard' Python module is required to decompress zstd "
            "frames; run scripts/test.sh (it installs it into $TALLY_TEST_DEPS/venv)\n"
        )
        sys.exit(3)
    try:
        out = zstandard.ZstdDecompressor().decompress(frame, max_output_size=max_out)
    except zstandard.ZstdError as e:
        raise FormatError(f"zstd: {e}")
    if exact is not None and len(out) != exact:
        raise FormatError(f"zstd output is {len(out)} bytes, expected {exact}")
    if len(out) > max_out:
        raise FormatError("zstd output too large")
    return out


class Reader:
    def __init__(self, buf, pos=0):
        self.buf = buf
        self.pos = pos

    def remaining(self):
        return len(self.buf) - self.pos

    def u8(self):
        if self.pos >= len(self.buf):
            raise FormatError(f"truncated at byte {self.pos}")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def bytes(self, n):
        if n < 0 or self.pos + n > len(self.buf):
            raise FormatError(f"truncated: need {n} bytes at {self.pos}")
        s = self.buf[self.pos:self.pos + n]
        self.pos += n
        return s

    def fixed(self, fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.bytes(size))[0]

    def u32le(self):
        return self.fixed("<I")

    def u64le(self):
        return self.fixed("<Q")

    def uvarint(self):
        v = 0
        for i in range(10):
            b = self.u8()
            if i == 9 and b > 1:
                raise FormatError("uvarint overflows 64 bits")
            v |= (b & 0x7F) << (7 * i)
            if b < 0x80:
                return v
        raise FormatError("uvarint longer than 10 bytes")

    def ivarint(self):
        return unzigzag(self.uvarint())

    def limited(self, limit, what):
        v = self.uvarint()
        if v > limit:
            raise FormatError(f"{what} {v} exceeds limit {limit}")
        return v

    def str(self):
        n = self.uvarint()
        try:
            return self.bytes(n).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError("invalid UTF-8 string")


class BitReader:
    """§1 bit streams: little-endian bit string, fields LSB first."""

    def __init__(self, data):
        self.val = int.from_bytes(data, "little")
        self.nbits = len(data) * 8
        self.pos = 0

    def read(self, w):
        if w == 0:
            return 0
        if self.pos + w > self.nbits:
            raise FormatError("bit stream truncated")
        v = (self.val >> self.pos) & ((1 << w) - 1)
        self.pos += w
        return v


# ---- §11 kinds ----------------------------------------------------------------------

def kind_of(b):
    if b > 3:
        raise FormatError(f"unknown series kind {b}")
    return {
        "byte": b,
        "value": "money" if b & 1 else "float",
        "dup": "sum" if b & 2 else "replace",
    }


# ---- §10 column sections ------------------------------------------------------------

MODE_STATS = {}  # miniblock mode byte -> count, reported in the segment output


def read_radix_value(r):
    """RADIX/SPARSE: uvarint R - 1 with 1 <= R <= 2^16."""
    rm1 = r.uvarint()
    if rm1 >= 1 << 16:
        raise FormatError(f"radix {rm1} + 1 out of range")
    return rm1 + 1


def read_radix_digits(r, radix, count):
    """Radix digits: groups of k digits as b-bit fields, lowest digit first; k is the count
    with R^k <= 2^48 that minimises b(k)/k (the largest such k on ties)."""
    if radix == 1:
        k, b = 1, 0
    else:
        k, p = 1, radix
        best = (1, (radix - 1).bit_length())
        while p * radix <= 1 << 48:
            p *= radix
            k += 1
            bk = (p - 1).bit_length()
            if bk * best[0] <= best[1] * k:
                best = (k, bk)
        k, b = best
    groups = (count + k - 1) // k
    br = BitReader(r.bytes((b * groups + 7) // 8))
    digits = []
    for _ in range(groups):
        g = br.read(b)
        for _ in range(k):
            digits.append(g % radix)
            g //= radix
    return digits[:count]


def decode_ints(r, n):
    """§10.2: returns n signed i64 values."""
    tag = r.u8()
    if tag == 0x00:
        return [r.ivarint()] * n
    if tag != 0x01:
        raise FormatError(f"unknown ints tag {tag}")
    k = r.u8()
    if k > 2 or k > n:
        raise FormatError(f"ints order {k}")
    v0 = r.ivarint() if k >= 1 else 0
    d1 = r.ivarint() if k >= 2 else 0
    base = r.ivarint()
    mult = r.uvarint()
    log2 = r.u8()
    if not 6 <= log2 <= 16:
        raise FormatError(f"miniblock log2 {log2}")
    mb = 1 << log2
    m = n - k
    residuals = []
    while len(residuals) < m:
        length = min(mb, m - len(residuals))
        qmin = r.uvarint()
        mode = r.u8()
        if mode <= 64:  # BITS
            br = BitReader(r.bytes((mode * length + 7) // 8))
            fields = [br.read(mode) for _ in range(length)]
        elif mode == 0x80:  # RADIX
            radix = read_radix_value(r)
            fields = read_radix_digits(r, radix, length)
        elif mode == 0x81:  # SPARSE
            z = r.uvarint()
            radix = read_radix_value(r)
            bitmap = BitReader(r.bytes((length + 7) // 8))
            present = [bitmap.read(1) for _ in range(length)]
            digits = iter(read_radix_digits(r, radix, sum(present)))
            fields = []
            for bit in present:
                if bit:
                    d = next(digits)
                    fields.append(d + (1 if d >= z else 0))
                else:
                    fields.append(z)
        else:
            raise FormatError(f"miniblock mode {mode}")
        MODE_STATS[mode] = MODE_STATS.get(mode, 0) + 1
        for f in fields:
            q = (qmin + f) & MASK64
            residuals.append(as_i64(base + ((q * mult) & MASK64)))
    if k == 0:
        return residuals
    if k == 1:
        out = [v0]
        for rj in residuals:
            out.append(as_i64(out[-1] + rj))
        return out
    out = [v0, as_i64(v0 + d1)]
    d = d1
    for rj in residuals:
        d = as_i64(d + rj)
        out.append(as_i64(out[-1] + d))
    return out


def decode_timestamps(r, n):
    """§10.1"""
    tag = r.u8()
    if tag == 0x00:
        t0 = r.ivarint()
        delta = r.ivarint()
        ts = [t0 + i * delta for i in range(n)]
        if n > 1 and (delta <= 0 or ts[-1] > (1 << 63) - 1):
            raise FormatError("regular timestamps not strictly increasing")
        return ts
    if tag == 0x02:
        e = r.u8()
        if not 1 <= e <= 18:
            raise FormatError(f"timestamp scale exponent {e} out of range")
        p = 10 ** e
        t0 = r.ivarint() * p
        delta = r.ivarint() * p
        ts = [t0 + i * delta for i in range(n)]
        if not -(1 << 63) <= t0 <= (1 << 63) - 1 or not -(1 << 63) <= delta <= (1 << 63) - 1:
            raise FormatError("scaled timestamps overflow i64")
        if n > 1 and (delta <= 0 or ts[-1] > (1 << 63) - 1):
            raise FormatError("regular timestamps not strictly increasing")
        return ts
    if tag == 0x01:
        ts = decode_ints(r, n)
    else:
        raise FormatError(f"unknown timestamps tag {tag}")
    for a, b in zip(ts, ts[1:]):
        if not a < b:
            raise FormatError("timestamps not strictly increasing")
    return ts


POW10 = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9]


def f64_bits(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def decode_floats(r, n):
    """§10.3: returns n raw u64 bit patterns."""
    tag = r.u8()
    if tag == 0x00:
        return [r.u64le()] * n
    if tag in (0x01, 0x03):
        e = r.u8()
        if e > 9:
            raise FormatError(f"decimal exponent {e}")
        ms = decode_ints(r, n)
        if e == 0:
            vals = [f64_bits(float(m)) for m in ms]
        else:
            vals = [f64_bits(float(m) / POW10[e]) for m in ms]
        if tag == 0x03:
            k = r.limited(n, "patch count")
            if k == 0:
                raise FormatError("no patches")
            nxt = 0
            for _ in range(k):
                gap = r.limited(n, "patch gap")
                bits = r.u64le()
                i = nxt + gap
                if i >= n:
                    raise FormatError(f"patch index {i} >= {n}")
                vals[i] = bits
                nxt = i + 1
        return vals
    if tag == 0x02:
        first = r.u64le()
        s = r.uvarint()
        br = BitReader(r.bytes(s))
        vals = [first]
        lead, ln = 0, 64
        prev = first
        for _ in range(1, n):
            if br.read(1):
                if br.read(1):
                    lead = br.read(5)
                    ln = br.read(6) + 1
                    if lead + ln > 64:
                        raise FormatError("xor window > 64")
                x = br.read(ln)
                prev ^= (x << (64 - lead - ln)) & MASK64
            vals.append(prev)
        return vals
    raise FormatError(f"unknown floats tag {tag}")


# ---- §9 blocks ----------------------------------------------------------------------

MAX_BLOCK_SAMPLES = 65536
MAX_BLOCK_PAYLOAD = 65536 * 24 + 1024


def decode_block(block, value_kind):
    r = Reader(block)
    flags = r.u8()
    if flags & ~1:
        raise FormatError(f"unknown block flags {flags:#x}")
    if flags & 1:
        p = r.limited(MAX_BLOCK_PAYLOAD, "block payload length")
        payload = zstd_decompress(block[r.pos:], p, exact=p)
    else:
        payload = block[1:]
    r = Reader(payload)
    n = r.limited(MAX_BLOCK_SAMPLES, "block sample count")
    if n == 0:
        raise FormatError("empty block")
    ts = decode_timestamps(r, n)
    if value_kind == "money":
        vals = [v & MASK64 for v in decode_ints(r, n)]
    else:
        vals = decode_floats(r, n)
    if r.remaining():
        raise FormatError(f"{r.remaining()} trailing bytes in block payload")
    return ts, vals, bool(flags & 1)


# ---- §7, §8 segments ----------------------------------------------------------------

def decode_segment(path):
    data = open(path, "rb").read()
    if len(data) < 16 + 88:
        raise FormatError("file shorter than header + footer")
    if data[:16] != b"TALLYSEG" + struct.pack("<H", 1) + b"\0" * 6:
        raise FormatError("bad segment header")
    f = data[-88:]
    if f[80:88] != b"TALLYEND":
        raise FormatError("footer magic missing")
    if crc32c(f[:76]) != struct.unpack("<I", f[76:80])[0]:
        raise FormatError("footer checksum mismatch")
    (table_offset, table_len, table_raw_len, series_count, table_crc, min_t, max_t,
     partition_start, rank, samples, version, flags) = struct.unpack("<QQQIIqqqQQHH", f[:76])
    if version != 1:
        raise FormatError(f"unsupported segment version {version}")
    if table_offset < 16 or table_offset + table_len != len(data) - 88:
        raise FormatError("series table offsets do not match the file size")
    stored = data[table_offset:table_offset + table_len]
    if crc32c(stored) != table_crc:
        raise FormatError("series table checksum mismatch")
    if flags & 1:
        if table_raw_len > 1 << 32:
            raise FormatError("table_raw_len out of range")
        table = zstd_decompress(stored, table_raw_len)
    else:
        table = stored
    r = Reader(table)
    series = []
    zstd_blocks = 0
    total = 0
    for _ in range(series_count):
        kind = kind_of(r.u8())
        n_labels = r.limited(1024, "label count")
        labels = [[r.str(), r.str()] for _ in range(n_labels)]
        n_blocks = r.uvarint()
        ts_all, vals_all, blocks = [], [], []
        for _ in range(n_blocks):
            bmin = r.ivarint()
            bmax = as_i64(bmin + r.uvarint())
            count = r.limited(MAX_BLOCK_SAMPLES, "block count")
            off = r.uvarint()
            ln = r.limited(0xFFFFFFFF, "block length")
            crc = r.u32le()
            if off < 16 or off + ln > table_offset:
                raise FormatError(f"block at {off}+{ln} outside the data region")
            if bmax < bmin:
                raise FormatError("block time range inverted")
            block = data[off:off + ln]
            if crc32c(block) != crc:
                raise FormatError(f"block at offset {off} checksum mismatch")
            ts, vals, z = decode_block(block, kind["value"])
            if len(ts) != count:
                raise FormatError(f"block at {off} has {len(ts)} samples, index says {count}")
            if ts[0] != bmin or ts[-1] != bmax:
                raise FormatError(f"block at {off}: index time range differs from data")
            zstd_blocks += z
            blocks.append({"offset": off, "len": ln, "count": count, "zstd": z,
                           "min_t": str(bmin), "max_t": str(bmax)})
            ts_all += ts
            vals_all += vals
        for a, b in zip(ts_all, ts_all[1:]):
            if not a < b:
                raise FormatError("series timestamps not strictly increasing across blocks")
        total += len(ts_all)
        series.append({
            "labels": labels,
            "kind": kind,
            "blocks": blocks,
            "ts": [str(t) for t in ts_all],
            "values": [str(v) for v in vals_all],
        })
    if r.remaining():
        raise FormatError(f"{r.remaining()} trailing bytes in series table")
    return {
        "footer": {
            "table_offset": table_offset, "table_len": table_len,
            "table_raw_len": table_raw_len, "series_count": series_count,
            "min_t": str(min_t), "max_t": str(max_t),
            "partition_start": str(partition_start), "rank": rank,
            "samples": samples, "version": version, "flags": flags,
        },
        "zstd_blocks": zstd_blocks,
        "ints_miniblock_modes": {str(k): v for k, v in sorted(MODE_STATS.items())},
        "decoded_samples": total,
        "series": series,
    }


# ---- §5, §6 WAL ---------------------------------------------------------------------

def decode_batch(payload):
    r = Reader(payload)
    ty = r.u8()
    if ty != 1:
        raise FormatError(f"unknown WAL record type {ty}")
    defs = []
    for _ in range(r.uvarint()):
        ref = r.uvarint()
        if ref > 0xFFFFFFFF:
            raise FormatError("series ref out of range")
        kind = kind_of(r.u8())
        n = r.limited(1024, "label count")
        defs.append({"ref": ref, "kind": kind, "labels": [[r.str(), r.str()] for _ in range(n)]})
    groups = []
    for _ in range(r.uvarint()):
        ref = r.uvarint()
        n = r.limited(1 << 28, "group sample count")
        ts, prev = [], 0
        for i in range(n):
            d = r.ivarint()
            prev = d if i == 0 else as_i64(prev + d)
            ts.append(prev)
        vals = [r.u64le() for _ in range(n)]
        groups.append({"ref": ref, "ts": [str(t) for t in ts], "values": [str(v) for v in vals]})
    positions = []
    for _ in range(r.uvarint()):
        positions.append([r.str(), r.ivarint()])
    if r.remaining():
        raise FormatError(f"{r.remaining()} trailing bytes in WAL record")
    return {"defs": defs, "groups": groups, "positions": positions}


def decode_wal(path):
    data = open(path, "rb").read()
    if len(data) < 16:
        return {"header": None, "records": [], "good_end": 0, "file_len": len(data)}
    if data[:8] != b"TALLYWAL":
        raise FormatError("bad WAL magic")
    version = struct.unpack("<I", data[8:12])[0]
    pos = 16
    records = []
    stop = None
    while pos < len(data):
        if len(data) - pos < 8:
            stop = "torn record header"
            break
        ln, crc = struct.unpack("<II", data[pos:pos + 8])
        if ln > 1 << 30 or len(data) - pos - 8 < ln:
            stop = "torn record"
            break
        payload = data[pos + 8:pos + 8 + ln]
        if crc32c(payload) != crc:
            stop = "record checksum mismatch"
            break
        try:
            rec = decode_batch(payload)
        except FormatError as e:
            stop = f"undecodable record: {e}"
            break
        rec["offset"] = pos
        records.append(rec)
        pos += 8 + ln
    return {"header": {"version": version}, "records": records, "good_end": pos,
            "file_len": len(data), "stopped": stop}


# ---- §4 manifest --------------------------------------------------------------------

def decode_manifest(path):
    text = open(path, "rb").read().decode("utf-8")
    sep = "\n#crc32c="
    i = text.rfind(sep)
    if i < 0:
        raise FormatError("checksum trailer missing")
    body, trailer = text[:i], text[i + len(sep):]
    if len(trailer) != 9 or not trailer.endswith("\n"):
        raise FormatError("malformed checksum trailer")
    if int(trailer[:8], 16) != crc32c(body.encode("utf-8")):
        raise FormatError("manifest checksum mismatch")
    m = json.loads(body)
    if m["version"] != 1 or m["partition_width_ns"] <= 0:
        raise FormatError("unsupported manifest")
    return m


def main(argv):
    try:
        if len(argv) == 3 and argv[1] == "--wal":
            out = decode_wal(argv[2])
        elif len(argv) == 3 and argv[1] == "--manifest":
            out = decode_manifest(argv[2])
        elif len(argv) == 2:
            out = decode_segment(argv[1])
        else:
            sys.stderr.write(__doc__)
            return 2
    except FormatError as e:
        sys.stderr.write(f"decode_format.py: {argv[-1]}: {e}\n")
        return 1
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
