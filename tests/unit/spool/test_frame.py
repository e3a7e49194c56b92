"""Frames: sealed (LZ4, AES-GCM) and opened again, in either compression mode."""

import os

import pytest

from hostlog.spool import frame as F


def seal(chunk: bytes, fast: bool, key: bytes) -> bytes:
    return F.seal_frame(chunk, key=key, key_id=1, salt=b"s" * 16, offset=4096, first_seq=7,
                        count=3, ts_min=1, ts_max=2, severity_mask=0x40, app_bloom=5, fast=fast)


def open_(data: bytes, key: bytes, offset: int = 4096) -> bytes:
    header = F.unpack_frame_header(data)
    head, payload = data[:F.FRAME_HEADER_SIZE], data[F.FRAME_HEADER_SIZE:]
    return F.open_frame(header, head, payload, key=key, salt=b"s" * 16, offset=offset)


@pytest.mark.parametrize("fast", [False, True])
def test_a_sealed_frame_opens_to_its_chunk_in_either_mode(fast):
    key = os.urandom(32)
    chunk = b"".join(b"<13>1 2024-05-01T10:00:%02dZ host app - - - line %d\n" % (i % 60, i)
                     for i in range(2000)) + os.urandom(64)
    data = seal(chunk, fast, key)
    assert open_(data, key) == chunk
    header = F.unpack_frame_header(data)
    assert (header.first_seq, header.count, header.chunk_len) == (7, 3, len(chunk))
    with pytest.raises(F.FrameAuthError, match="authentication failed"):
        open_(data, key, offset=8192)  # the frame is bound to its place


def test_the_fast_mode_is_another_lz4_encoding_of_the_same_chunk():
    # HC searches harder: on text with long-range repeats its output differs
    key = os.urandom(32)
    words = [os.urandom(6).hex().encode() for _ in range(300)]
    chunk = b" ".join(words[(i * 7919) % 300] for i in range(20000))
    hc, fast = seal(chunk, False, key), seal(chunk, True, key)
    assert len(hc) < len(fast)
    assert open_(hc, key) == open_(fast, key) == chunk


def test_library_errors_are_mapped_to_frame_errors_once():
    key = os.urandom(32)
    data = bytearray(seal(b"x" * 5000, False, key))
    data[-20] ^= 1  # inside the payload: the tag fails
    with pytest.raises(F.FrameAuthError):
        open_(bytes(data), key)
    # a payload that authenticates but is not LZ4 of the stated length
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    header = F.unpack_frame_header(data)
    head = bytes(data[:F.FRAME_HEADER_SIZE])
    bogus = AESGCM(key).encrypt(header.nonce, b"\xff" * 64, F._aad(head, b"s" * 16, 4096))
    with pytest.raises(F.FramePayloadError, match="does not decompress"):
        F.open_frame(header, head, bogus, key=key, salt=b"s" * 16, offset=4096)


def test_a_footer_round_trips_and_any_damage_reads_as_no_footer():
    entries = [F.IndexEntry(4096 + i * 100, 1 + i * 10, 10, i, i + 1, 0x40, 7, 100, 900)
               for i in range(5)]
    footer = F.pack_footer(entries, sealed_ns=123)
    assert F.unpack_footer(b"junk" + footer) == (entries, 123, len(footer))
    for i in range(len(footer)):  # the CRC covers the index and the trailer's fields
        damaged = bytearray(footer)
        damaged[i] ^= 0x10
        assert F.unpack_footer(bytes(damaged)) is None, i
