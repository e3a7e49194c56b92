"""The spool's on-disk codec: segment header, frame, footer. Pure, no I/O.

Layout (all integers little-endian; docs/format.md has the full description):

    segment = SegmentHeader  Frame*  [Footer]
    frame   = FrameHeader  AES-256-GCM(key, nonce, LZ4(chunk), aad)
    aad     = FrameHeader bytes || segment salt || u64 frame offset
    footer  = [counts block  counts trailer]  index  footer trailer

The header is authenticated as associated data, and so are the segment's salt
and the frame's offset in it: a frame copied into another segment, or moved
within its own, fails authentication. The per-segment key (HKDF over the salt)
already differs between segments; binding the salt and offset explicitly keeps
that property even if key derivation changes. The counts block (per-frame
counts for ``hostlog stats``) is encrypted with the same key and bound the
same way, to the index it sits before as well.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import lz4.block
import msgpack
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hostlog.errors import FrameAuthError, FrameError, FrameHeaderError, FramePayloadError, SpoolFormatError

__all__ = [
    "FRAME_HEADER_SIZE", "FrameAuthError", "FrameError", "FrameHeader", "FrameHeaderError",
    "FramePayloadError", "IndexEntry", "SegmentHeader", "decompress_chunk", "decrypt_frame",
    "COUNTS_TRAILER_SIZE", "Footer", "counts_length", "footer_index", "footer_trailer", "open_counts",
    "open_frame", "pack_footer", "parse_footer", "seal_frame", "unpack_footer", "unpack_frame_header",
    "CODEC_LZ4", "CODEC_ZSTD", "FLAG_ZSTD", "SEGMENT_ZSTD", "to_lz4", "zstd_compress",
]

FORMAT_VERSION = 1

# --- segment header -------------------------------------------------------
SEGMENT_MAGIC = b"HLOGSEG\n"
# magic, version, incompatible flags, header length, agent id (16 bytes, a UUID),
# salt (32), key id, key check value (16), first seq, created (ns), CRC32
_SEGMENT_HEADER = struct.Struct("<8sHHI16s32sI16sQqI")
SEGMENT_HEADER_SIZE = _SEGMENT_HEADER.size

# --- frame header ---------------------------------------------------------
FRAME_MAGIC = b"HLFR"
# magic, version, flags, header length, key id, first seq, record count,
# ts min, ts max, severity mask, app filter, chunk length, payload length,
# nonce (12), CRC32 of all the preceding bytes
_FRAME_HEADER = struct.Struct("<4sBBHIQIqqBQII12sI")
FRAME_HEADER_SIZE = _FRAME_HEADER.size
NONCE_SIZE = 12
TAG_SIZE = 16
#: LZ4 HC at level 3: on columnar chunks of real logs it compresses ~30% better
#: than LZ4's fast mode (bench/RESULTS.md), at 10-17x its CPU. Reading
#: is the same LZ4 block decoder whichever mode wrote a frame.
LZ4_MODE = {"mode": "high_compression", "compression": 3}
#: LZ4's fast mode: for frames written while the writer is behind (a burst),
#: where HC would be the one step that cannot keep up.
LZ4_FAST_MODE = {"mode": "default"}
#: A frame's payload is never larger: a length beyond it is damage, not data.
MAX_PAYLOAD = 256 * 1024 * 1024

# --- codecs (docs/format.md "Codecs") ----------------------------------------
#: Frame flag: the payload is a zstd frame, not an LZ4 block. Written only by
#: a rewrite of a sealed segment (the archive tier, spool/archive.py).
FLAG_ZSTD = 0x01
KNOWN_FRAME_FLAGS = FLAG_ZSTD
#: Segment header incompatible flag: frames of this segment may be zstd. A
#: hostlog that predates zstd refuses such a segment as "not supported"
#: instead of reporting its frames as damage.
SEGMENT_ZSTD = 0x0001
KNOWN_SEGMENT_FLAGS = SEGMENT_ZSTD
CODEC_LZ4 = "lz4"
CODEC_ZSTD = "zstd"

# --- footer (sealed segments) ---------------------------------------------
FOOTER_MAGIC = b"HLFOOTER"
# index length, frame count, sealed (ns), CRC32 of index bytes + these fields, magic
_FOOTER_TRAILER = struct.Struct("<IIqI8s")
FOOTER_TRAILER_SIZE = _FOOTER_TRAILER.size


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    agent_id: bytes
    salt: bytes
    key_id: int
    key_check: bytes
    first_seq: int
    created_ns: int
    version: int = FORMAT_VERSION
    flags: int = 0  # incompatible flags (SEGMENT_ZSTD)

    def pack(self) -> bytes:
        body = _SEGMENT_HEADER.pack(SEGMENT_MAGIC, self.version, self.flags, SEGMENT_HEADER_SIZE,
                                    self.agent_id, self.salt, self.key_id, self.key_check,
                                    self.first_seq, self.created_ns, 0)
        return body[:-4] + struct.pack("<I", zlib.crc32(body[:-4]))

    @classmethod
    def unpack(cls, data: bytes) -> SegmentHeader:
        if len(data) < SEGMENT_HEADER_SIZE:
            raise SpoolFormatError(f"segment header is {len(data)} bytes, want {SEGMENT_HEADER_SIZE}")
        (magic, version, incompat, size, agent_id, salt, key_id, check, first_seq,
         created, crc) = _SEGMENT_HEADER.unpack_from(data)
        if magic != SEGMENT_MAGIC:
            raise SpoolFormatError("not a hostlog segment (bad magic)")
        if zlib.crc32(data[:SEGMENT_HEADER_SIZE - 4]) != crc:
            raise SpoolFormatError("segment header CRC mismatch")
        if version != FORMAT_VERSION or incompat & ~KNOWN_SEGMENT_FLAGS:
            raise SpoolFormatError(f"segment format version {version} (flags {incompat:#x}) "
                                   f"is not supported by this hostlog (version {FORMAT_VERSION})")
        if size != SEGMENT_HEADER_SIZE:
            raise SpoolFormatError(f"segment header length {size} is not supported")
        return cls(agent_id, salt, key_id, check, first_seq, created, version, incompat)


@dataclass(frozen=True, slots=True)
class FrameHeader:
    key_id: int
    first_seq: int
    count: int
    ts_min: int
    ts_max: int
    severity_mask: int
    app_bloom: int
    chunk_len: int
    payload_len: int
    nonce: bytes
    flags: int = 0

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1

    @property
    def size(self) -> int:
        """Bytes the whole frame takes on disk."""
        return FRAME_HEADER_SIZE + self.payload_len

    def pack(self) -> bytes:
        body = _FRAME_HEADER.pack(FRAME_MAGIC, FORMAT_VERSION, self.flags, FRAME_HEADER_SIZE,
                                  self.key_id, self.first_seq, self.count, self.ts_min,
                                  self.ts_max, self.severity_mask, self.app_bloom,
                                  self.chunk_len, self.payload_len, self.nonce, 0)
        return body[:-4] + struct.pack("<I", zlib.crc32(body[:-4]))




def unpack_frame_header(data: bytes | memoryview, offset: int = 0) -> FrameHeader:
    if len(data) - offset < FRAME_HEADER_SIZE:
        raise FrameHeaderError("short frame header")
    (magic, version, flags, size, key_id, first_seq, count, ts_min, ts_max, sev, bloom,
     chunk_len, payload_len, nonce, crc) = _FRAME_HEADER.unpack_from(data, offset)
    if magic != FRAME_MAGIC:
        raise FrameHeaderError("bad frame magic")
    if zlib.crc32(data[offset:offset + FRAME_HEADER_SIZE - 4]) != crc:
        raise FrameHeaderError("frame header CRC mismatch")
    if version != FORMAT_VERSION or size != FRAME_HEADER_SIZE:
        raise FrameHeaderError(f"frame version {version} / header length {size} not supported")
    if flags & ~KNOWN_FRAME_FLAGS:
        raise FrameHeaderError(f"frame flags {flags:#x} not supported")
    if count == 0 or not TAG_SIZE <= payload_len <= MAX_PAYLOAD:
        raise FrameHeaderError(f"implausible frame (count {count}, payload {payload_len})")
    return FrameHeader(key_id, first_seq, count, ts_min, ts_max, sev, bloom, chunk_len,
                       payload_len, nonce, flags)


def _aad(header_bytes: bytes, salt: bytes, offset: int) -> bytes:
    return header_bytes + salt + struct.pack("<Q", offset)


def seal_frame(chunk: bytes, *, key: bytes, key_id: int, salt: bytes, offset: int,
               first_seq: int, count: int, ts_min: int, ts_max: int, severity_mask: int,
               app_bloom: int, aead: AESGCM | None = None, fast: bool = False,
               zstd_level: int | None = None) -> bytes:
    """Compress and encrypt one chunk into a complete frame for ``offset``
    (``fast``: with LZ4's fast mode instead of HC; ``zstd_level``: with zstd
    at that level instead of LZ4, flagged FLAG_ZSTD)."""
    if zstd_level is None:
        compressed = lz4.block.compress(chunk, store_size=False,
                                        **(LZ4_FAST_MODE if fast else LZ4_MODE))
        flags = 0
    else:
        compressed = zstd_compress(chunk, zstd_level)
        flags = FLAG_ZSTD
    header = FrameHeader(key_id=key_id, first_seq=first_seq, count=count, ts_min=ts_min,
                         ts_max=ts_max, severity_mask=severity_mask, app_bloom=app_bloom,
                         chunk_len=len(chunk), payload_len=len(compressed) + TAG_SIZE,
                         nonce=os.urandom(NONCE_SIZE), flags=flags)  # nonce: random, never a counter
    header_bytes = header.pack()
    aead = aead or AESGCM(key)
    payload = aead.encrypt(header.nonce, compressed, _aad(header_bytes, salt, offset))
    return header_bytes + payload


def decrypt_frame(header: FrameHeader, header_bytes: bytes, payload: bytes, *, key: bytes,
                  salt: bytes, offset: int, aead: AESGCM | None = None) -> bytes:
    """Authenticate and decrypt a frame's payload: its chunk, still LZ4
    compressed (what a forwarder sends as it is). Raises
    :class:`FrameAuthError` when the payload, its header, or its place does
    not authenticate."""
    aead = aead or AESGCM(key)
    try:
        return aead.decrypt(header.nonce, payload, _aad(header_bytes, salt, offset))
    except InvalidTag:
        raise FrameAuthError("authentication failed (damaged or moved frame)") from None


_zstd = threading.local()  # (zstandard's objects are not for two threads at once)


def _zstd_compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] = _zstd.__dict__.setdefault("c", {})
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level, write_checksum=False,
                                                    write_content_size=True)
    return c


def zstd_compress(chunk: bytes, level: int) -> bytes:
    """``chunk`` as one zstd frame (content size in its header)."""
    return _zstd_compressor(level).compress(chunk)


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_zstd, "d", None)
    if d is None:
        d = _zstd.d = zstandard.ZstdDecompressor()
    return d


def to_lz4(compressed: bytes, chunk_len: int, flags: int) -> bytes:
    """A frame's decrypted payload as an LZ4 block whatever its codec: what
    the forwarder and the peer protocol carry (docs/protocol.md)."""
    if not flags & FLAG_ZSTD:
        return compressed
    chunk = decompress_chunk(compressed, chunk_len, flags)
    return lz4.block.compress(chunk, store_size=False, **LZ4_FAST_MODE)


def decompress_chunk(compressed: bytes, chunk_len: int, flags: int = 0) -> bytes:
    """An LZ4 block (or, with FLAG_ZSTD in ``flags``, a zstd frame) back
    into the chunk of ``chunk_len`` bytes; raises :class:`FramePayloadError`
    when it does not inflate to that length."""
    if flags & FLAG_ZSTD:
        try:
            chunk = _zstd_decompressor().decompress(compressed, max_output_size=chunk_len)
        except zstandard.ZstdError as exc:
            raise FramePayloadError(f"payload does not decompress (zstd): {exc}") from None
        if len(chunk) != chunk_len:
            raise FramePayloadError(f"payload decompresses to {len(chunk)} bytes, "
                                    f"header says {chunk_len}")
        return chunk
    try:
        chunk = lz4.block.decompress(compressed, uncompressed_size=chunk_len)
    except lz4.block.LZ4BlockError as exc:
        raise FramePayloadError(f"payload does not decompress: {exc}") from None
    if len(chunk) != chunk_len:
        raise FramePayloadError(f"payload decompresses to {len(chunk)} bytes, "
                                f"header says {chunk_len}")
    return chunk


def open_frame(header: FrameHeader, header_bytes: bytes, payload: bytes, *, key: bytes,
               salt: bytes, offset: int, aead: AESGCM | None = None) -> bytes:
    """Authenticate, decrypt and decompress a frame's payload into its chunk.

    Raises :class:`FrameAuthError` when the payload, its header, or its place
    does not authenticate, and :class:`FramePayloadError` when it does not
    inflate to the length its header gives.
    """
    compressed = decrypt_frame(header, header_bytes, payload, key=key, salt=salt, offset=offset,
                               aead=aead)
    return decompress_chunk(compressed, header.chunk_len, header.flags)




class IndexEntry(NamedTuple):
    """What the footer keeps of one frame, so readers skip frames unread.

    A tuple, so that a footer's rows become entries without a constructor
    call per frame (``tuple.__new__(IndexEntry, row)``, see
    :func:`footer_index`): a query over a long spool walks many of them.
    The one declaration of a frame's index fields; the footer stores them
    in this order.
    """

    offset: int
    first_seq: int
    count: int  # type: ignore[assignment]  # (shadows tuple.count: the frame's record count)
    ts_min: int
    ts_max: int
    severity_mask: int
    app_bloom: int
    size: int  # the whole frame on disk
    chunk_len: int  # the chunk before compression and encryption

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1

    @classmethod
    def of(cls, offset: int, h: FrameHeader) -> IndexEntry:
        return cls(offset, h.first_seq, h.count, h.ts_min, h.ts_max, h.severity_mask,
                   h.app_bloom, h.size, h.chunk_len)


_INDEX_FIELDS = len(IndexEntry._fields)

# --- the counts block (before the index of a footer written by this version) ---
COUNTS_MAGIC = b"HLCOUNTS"
# length of the block (nonce + ciphertext + tag), CRC32 of the block and that length, magic
_COUNTS_TRAILER = struct.Struct("<II8s")
COUNTS_TRAILER_SIZE = _COUNTS_TRAILER.size
#: The first byte of an index that a counts block precedes: msgpack's array 32
#: header, which msgpack itself uses only past 65,535 rows (docs/format.md).
_MARKED_INDEX = 0xDD
_ARRAY16_MAX = 0xFFFF


@dataclass(frozen=True, slots=True)
class Footer:
    """A footer as found at the end of a segment."""

    entries: list[IndexEntry]
    sealed_ns: int
    size: int  # bytes from the end of the last frame to the end of the file
    counts: bytes | None  # the counts block, still encrypted (None: the footer has none)
    index_crc: int  # the footer's CRC32: what the counts block is bound to


def _index_bytes(entries: list[IndexEntry], *, marked: bool) -> bytes:
    rows = [[e.offset, e.first_seq, e.count, e.ts_min, e.ts_max, e.severity_mask, e.app_bloom,
             e.size, e.chunk_len] for e in entries]
    if not marked:
        return msgpack.packb(rows)
    return struct.pack(">BI", _MARKED_INDEX, len(rows)) + b"".join(map(msgpack.packb, rows))


def _counts_aad(salt: bytes, offset: int, index_crc: int) -> bytes:
    return COUNTS_MAGIC + salt + struct.pack("<QI", offset, index_crc)


def pack_footer(entries: list[IndexEntry], sealed_ns: int, counts: bytes | None = None, *,
                key: bytes = b"", salt: bytes = b"", offset: int = 0) -> bytes:
    """The footer for ``entries``; with ``counts`` (the plaintext of the
    counts block, see :class:`hostlog.spool.index.CountsBuilder`), that block
    encrypted with ``key`` and bound to the segment's ``salt``, to the
    footer's ``offset`` in it and to the index, ahead of the index."""
    index = _index_bytes(entries, marked=counts is not None)
    fields = struct.pack("<IIq", len(index), len(entries), sealed_ns)
    crc = zlib.crc32(index + fields)
    tail = index + _FOOTER_TRAILER.pack(len(index), len(entries), sealed_ns, crc, FOOTER_MAGIC)
    if counts is None:
        return tail
    nonce = os.urandom(NONCE_SIZE)
    block = nonce + AESGCM(key).encrypt(nonce, counts, _counts_aad(salt, offset, crc))
    length = struct.pack("<I", len(block))
    return block + _COUNTS_TRAILER.pack(len(block), zlib.crc32(block + length), COUNTS_MAGIC) + tail


def open_counts(footer: Footer, *, key: bytes, salt: bytes, segment_size: int,
                aead: AESGCM | None = None) -> bytes:
    """The counts block's plaintext; :class:`FrameAuthError` when it does not
    authenticate (damaged, or not this segment's, place's or index's)."""
    assert footer.counts is not None
    nonce, sealed = footer.counts[:NONCE_SIZE], footer.counts[NONCE_SIZE:]
    aead = aead or AESGCM(key)
    try:
        return aead.decrypt(nonce, sealed, _counts_aad(salt, segment_size - footer.size,
                                                       footer.index_crc))
    except InvalidTag:
        raise FrameAuthError("the footer's counts do not authenticate") from None


def counts_length(before_index: bytes) -> int | None:
    """The length of the counts block from the COUNTS_TRAILER_SIZE bytes just
    before a footer's index, or None if they are not a counts trailer."""
    if len(before_index) != COUNTS_TRAILER_SIZE:
        return None
    length, _crc, magic = _COUNTS_TRAILER.unpack(before_index)
    return length if magic == COUNTS_MAGIC else None

def footer_trailer(trailer: bytes) -> tuple[int, int, int] | None:
    """(index length, frame count, sealed ns) from a footer's trailer (the
    last FOOTER_TRAILER_SIZE bytes of a segment), or None if it is not one."""
    if len(trailer) != FOOTER_TRAILER_SIZE:
        return None
    index_len, n, sealed_ns, _crc, magic = _FOOTER_TRAILER.unpack(trailer)
    if magic != FOOTER_MAGIC:
        return None
    return index_len, n, sealed_ns


def footer_index(index: bytes, trailer: bytes) -> list[IndexEntry] | None:
    """A footer's entries from its index bytes and trailer, or None if they
    are not intact (CRC, msgpack, row shape, count): the one place that
    checks a footer."""
    parsed = footer_trailer(trailer)
    if parsed is None:
        return None
    index_len, n, _ = parsed
    crc = _FOOTER_TRAILER.unpack(trailer)[3]
    if len(index) != index_len or zlib.crc32(index + trailer[:16]) != crc:
        return None
    try:
        rows = msgpack.unpackb(index, use_list=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not isinstance(rows, tuple) or len(rows) != n:
        return None
    if rows and (set(map(type, rows)) != {tuple} or set(map(len, rows)) != {_INDEX_FIELDS}):
        return None
    return list(map(_as_entry, rows))


def _as_entry(row: tuple[int, ...]) -> IndexEntry:
    return tuple.__new__(IndexEntry, row)


def parse_footer(tail: bytes) -> Footer | None:
    """The footer at the end of ``tail`` (the last bytes of a segment: all of
    the footer, counts block included, or more), or None if the segment has
    no intact footer (it is the active one, or its sealing was cut short, or
    the footer is damaged: index, trailer, or the counts block its index
    says it has)."""
    if len(tail) < FOOTER_TRAILER_SIZE:
        return None
    trailer = tail[len(tail) - FOOTER_TRAILER_SIZE:]
    parsed = footer_trailer(trailer)
    if parsed is None or parsed[0] + FOOTER_TRAILER_SIZE > len(tail):
        return None
    index_len, n, sealed_ns = parsed
    start = len(tail) - FOOTER_TRAILER_SIZE - index_len
    index = tail[start:start + index_len]
    entries = footer_index(index, trailer)
    if entries is None:
        return None
    crc = _FOOTER_TRAILER.unpack(trailer)[3]
    size = index_len + FOOTER_TRAILER_SIZE
    marked = index[:1] == bytes([_MARKED_INDEX])
    length = counts_length(tail[max(0, start - COUNTS_TRAILER_SIZE):start])
    counts = None
    if length is not None and start - COUNTS_TRAILER_SIZE - length >= 0:
        block = tail[start - COUNTS_TRAILER_SIZE - length:start - COUNTS_TRAILER_SIZE]
        if zlib.crc32(block + struct.pack("<I", length)) == _COUNTS_TRAILER.unpack(
                tail[start - COUNTS_TRAILER_SIZE:start])[1]:
            counts = block
    if counts is not None:
        size += COUNTS_TRAILER_SIZE + len(counts)
    elif marked and n <= _ARRAY16_MAX:
        # this index says a counts block is there (an index of fewer rows is
        # marked only by a writer that writes one): it is damaged
        return None
    return Footer(entries, sealed_ns, size, counts, crc)


def unpack_footer(tail: bytes) -> tuple[list[IndexEntry], int, int] | None:
    """Parse a footer from the last bytes of a segment.

    Returns (entries, sealed_ns, footer_size), or None if the segment has no
    intact footer (it is the active one, or its sealing was cut short).
    """
    footer = parse_footer(tail)
    return None if footer is None else (footer.entries, footer.sealed_ns, footer.size)
