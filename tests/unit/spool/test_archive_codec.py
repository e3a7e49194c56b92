"""The zstd frame codec of the archive tier, and the rewrite of one segment."""

from __future__ import annotations

import os
from pathlib import Path

import lz4.block
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.chunk import decode_chunk
from hostlog.errors import SpoolFormatError
from hostlog.record import Columns, Record
from hostlog.spool import frame as F
from hostlog.spool.archive import RewriteRefused, rewrite_segment
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.segment import Damage, SegmentReader
from hostlog.spool.spool import Spool

KEY = b"k" * 32
SALT = b"s" * 32


def seal(chunk: bytes, **kw: object) -> bytes:
    return F.seal_frame(chunk, key=KEY, key_id=1, salt=SALT, offset=4096, first_seq=7,
                        count=3, ts_min=1, ts_max=2, severity_mask=1, app_bloom=0, **kw)  # type: ignore[arg-type]


def open_(frame: bytes, offset: int = 4096) -> tuple[F.FrameHeader, bytes]:
    head = frame[:F.FRAME_HEADER_SIZE]
    header = F.unpack_frame_header(head)
    return header, F.open_frame(header, head, frame[F.FRAME_HEADER_SIZE:], key=KEY, salt=SALT,
                                offset=offset)


@settings(max_examples=150, deadline=None)
@given(chunk=st.binary(min_size=0, max_size=4000), level=st.one_of(st.none(), st.integers(1, 9)))
def test_a_frame_round_trips_with_either_codec(chunk: bytes, level: int | None) -> None:
    frame = seal(chunk, zstd_level=level)
    header, back = open_(frame)
    assert back == chunk
    assert header.flags == (0 if level is None else F.FLAG_ZSTD)
    # what a forwarder sends is an LZ4 block whatever the codec
    compressed = F.decrypt_frame(header, frame[:F.FRAME_HEADER_SIZE], frame[F.FRAME_HEADER_SIZE:],
                                 key=KEY, salt=SALT, offset=4096)
    lz4_block = F.to_lz4(compressed, header.chunk_len, header.flags)
    assert lz4.block.decompress(lz4_block, uncompressed_size=len(chunk)) == chunk if chunk else True


@settings(max_examples=60, deadline=None)
@given(chunk=st.binary(min_size=1, max_size=2000), where=st.integers(0, 10_000))
def test_a_flipped_bit_in_a_zstd_frame_never_reads_as_data(chunk: bytes, where: int) -> None:
    frame = bytearray(seal(chunk, zstd_level=3))
    frame[where % len(frame)] ^= 0x10
    with pytest.raises(F.FrameError):
        open_(bytes(frame))


def test_an_lz4_frame_of_version_1_reads_as_before() -> None:
    # flags 0, an LZ4 block: what every spool before the archive holds
    chunk = b"columns " * 300
    frame = seal(chunk)
    header, back = open_(frame)
    assert header.flags == 0 and back == chunk
    assert F.decompress_chunk(lz4.block.compress(chunk, store_size=False), len(chunk)) == chunk


def test_unknown_frame_flags_and_segment_flags_are_refused() -> None:
    frame = bytearray(seal(b"x" * 100))
    frame[5] = 0x80  # the flags byte
    body = bytes(frame[:F.FRAME_HEADER_SIZE - 4])
    import struct
    import zlib
    frame[F.FRAME_HEADER_SIZE - 4:F.FRAME_HEADER_SIZE] = struct.pack("<I", zlib.crc32(body))
    with pytest.raises(F.FrameHeaderError, match="flags"):
        F.unpack_frame_header(bytes(frame))
    header = F.SegmentHeader(agent_id=b"a" * 16, salt=SALT, key_id=1, key_check=b"c" * 16,
                             first_seq=1, created_ns=5, flags=F.SEGMENT_ZSTD)
    assert F.SegmentHeader.unpack(header.pack()).flags == F.SEGMENT_ZSTD
    bad = F.SegmentHeader(agent_id=b"a" * 16, salt=SALT, key_id=1, key_check=b"c" * 16,
                          first_seq=1, created_ns=5, flags=0x4)
    with pytest.raises(SpoolFormatError, match="not supported"):
        F.SegmentHeader.unpack(bad.pack())


def _spool_of(tmp: Path, batches: list[int]) -> tuple[Spool, Keyring]:
    keyring = Keyring.load_or_create(tmp / "spool.key")
    spool = Spool.open(tmp / "spool", keyring, max_age=0)
    n = 0
    for size in batches:
        spool.append(Columns.of([Record(ts=1_700_000_000 * 10**9 + (n + i) * 10**6,
                                        msg=f"m {n + i} {os.urandom(4).hex()}", host="h",
                                        app=f"a{(n + i) % 3}", source="syslog", severity=(n + i) % 8)
                                 for i in range(size)]))
        n += size
    spool.rotate()
    return spool, keyring


@settings(max_examples=25, deadline=None)
@given(batches=st.lists(st.integers(1, 40), min_size=1, max_size=30),
       frame_records=st.integers(1, 200), frame_bytes=st.integers(1, 3000),
       level=st.one_of(st.none(), st.just(3)))
def test_a_rewrite_keeps_every_record_and_seq(tmp_path_factory: pytest.TempPathFactory,
                                              batches: list[int], frame_records: int,
                                              frame_bytes: int, level: int | None) -> None:
    tmp = tmp_path_factory.mktemp("rw")
    spool, keyring = _spool_of(tmp, batches)
    src = spool.segments[0].path
    spool.close()
    before = list(SpoolReader.open(tmp / "spool").records())
    dst = tmp / "out.seg"
    result = rewrite_segment(src, dst, keyring, zstd_level=level, frame_records=frame_records,
                             frame_bytes=frame_bytes)
    assert result.records == sum(batches)
    with SegmentReader(dst, keyring) as seg:
        index = seg.index(verify=True)
        assert index.sealed and not index.damage
        assert seg.header.first_seq == 1 and bool(seg.header.flags) == (level is not None)
        got = []
        for entry in index.entries:
            assert entry.count <= frame_records
            records = seg.read_frame(entry)
            assert isinstance(records, list), records
            text = sum(len(r.msg) for r in records)
            assert entry.count == 1 or text <= frame_bytes
            got.extend(zip(range(entry.first_seq, entry.first_seq + entry.count), records))
        counts = seg.counts(index)
        assert counts is not None and not isinstance(counts, Damage)  # rebuilt, authenticated
    assert [(s, r.msg, r.origin, r.seq, r.ts) for s, r in got] == \
        [(s, r.msg, r.origin, r.seq, r.ts) for s, r in before]


def test_a_segment_with_a_damaged_frame_is_not_rewritten(tmp_path: Path) -> None:
    spool, keyring = _spool_of(tmp_path, [10, 10, 10])
    src = spool.segments[0].path
    spool.close()
    with SegmentReader(src, keyring) as seg:
        second = seg.index().entries[1]
    data = bytearray(src.read_bytes())
    data[second.offset + F.FRAME_HEADER_SIZE + 3] ^= 1
    src.write_bytes(bytes(data))
    with pytest.raises(RewriteRefused, match="damaged"):
        rewrite_segment(src, tmp_path / "out.seg", keyring, zstd_level=3, frame_records=100,
                        frame_bytes=1 << 20)
    assert not (tmp_path / "out.seg").exists()


def test_decode_of_a_rewritten_frame_is_the_chunk_codec(tmp_path: Path) -> None:
    spool, keyring = _spool_of(tmp_path, [5, 5])
    src = spool.segments[0].path
    spool.close()
    rewrite_segment(src, tmp_path / "z.seg", keyring, zstd_level=19, frame_records=100,
                    frame_bytes=1 << 20)
    with SegmentReader(tmp_path / "z.seg", keyring) as seg:
        (entry,) = seg.index().entries
        chunk = seg.read_chunk(entry)
        assert isinstance(chunk, bytes)
        assert [r.msg.split()[1] for r in decode_chunk(chunk)] == [str(i) for i in range(10)]


def test_a_rewrite_keeps_the_chunk_layout(tmp_path: Path) -> None:
    from hostlog.chunk import chunk_version

    keyring = Keyring.load_or_create(tmp_path / "spool.key")
    spool = Spool.open(tmp_path / "spool", keyring, max_age=0)
    spool.chunk_version = 2  # ([spool] chunk = 2)
    for i in range(4):
        spool.append(Columns.of([Record(ts=10**18 + i, msg=f"m {i}", app="a")]))
    spool.rotate()
    src = spool.segments[0].path
    spool.close()
    rewrite_segment(src, tmp_path / "v2.seg", keyring, zstd_level=3, frame_records=100,
                    frame_bytes=1 << 20)
    with SegmentReader(tmp_path / "v2.seg", keyring) as seg:
        (entry,) = seg.index().entries
        chunk = seg.read_chunk(entry)
        assert isinstance(chunk, bytes) and chunk_version(chunk) == 2
        assert [r.msg for r in decode_chunk(chunk)] == [f"m {i}" for i in range(4)]
