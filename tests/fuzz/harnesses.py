"""Fuzz harnesses: every door bytes come in by, each with the errors it declares.

A harness takes one input (``bytes``) and returns normally, or raises one
of its target's declared errors (the project's error types of
``hostlog.errors``, and the ones a parser's docs name): those the
:func:`run_one` wrapper takes as a refused input. Anything else, an input
that takes more than :data:`MAX_SECONDS`, or a process over
:data:`MAX_RSS` is a finding. A parser that contains its own bugs (the
syslog parsers count a failure of a fast path in ``FALLBACKS`` and read the
input the slow way) is held to that count staying at zero: a contained bug is
still a bug.

Harnesses never touch the network or the disk; they are sans-IO like the
code they drive.
"""

from __future__ import annotations

import resource
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from hostlog.chunk import decode_chunk, decode_columns
from hostlog.collectors.fluent.protocol import FluentProtocolError, ForwardServerConnection
from hostlog.collectors.syslog.framing import SyslogFramer
from hostlog.collectors.syslog.parse import FALLBACKS, parse_message
from hostlog.collectors.syslog.parse_batch import parse_block, parse_columns, parse_messages
from hostlog.config.errors import ConfigError
from hostlog.config.loader import parse_config
from hostlog.errors import ChunkError, FrameError, RemoteProtocolError, SpoolFormatError
from hostlog.forward.protocol import Ack, Chunk, Connection, Hello, Role, Welcome
from hostlog.spool.frame import (
    FRAME_HEADER_SIZE,
    MAX_PAYLOAD,
    SegmentHeader,
    decompress_chunk,
    decrypt_frame,
    unpack_frame_header,
)

#: The longest one input may take.
MAX_SECONDS = 1.0
#: The most resident memory a harness process may reach (ru_maxrss), bytes.
MAX_RSS = 1024 << 20

RECEIVED_NS = 1_764_755_000_000_000_000
KEY = bytes(range(32))
SALT = bytes(16)


class Finding(AssertionError):
    """What a harness found: not a declared error, too slow, too big."""


@dataclass(frozen=True)
class Harness:
    name: str
    run: Callable[[bytes], None]
    declared: tuple[type[BaseException], ...]
    doc: str


def _fallbacks() -> int:
    return sum(FALLBACKS.counts.values())


def _no_new_fallbacks(before: int, what: str) -> None:
    after = _fallbacks()
    if after != before:
        raise Finding(f"{what}: a fast path failed and was contained ({dict(FALLBACKS.counts)})")


# -- syslog ---------------------------------------------------------------------------
def _pieces(data: bytes) -> tuple[int, list[bytes]]:
    """A max_message and the stream cut in pieces (none empty: an empty read
    is EOF), both taken from the input's first bytes (so the fuzzer explores
    the cuts too)."""
    if len(data) < 3:
        return 64, [data] if data else []
    max_message = 1 + (data[0] | (data[1] & 0x0F) << 8)  # 1 .. 4096
    step = 1 + data[2] % 97
    body = data[3:]
    return max_message, [body[i:i + step] for i in range(0, len(body), step)]


def syslog_framing(data: bytes) -> None:
    """SyslogFramer (LF and octet counting, its compiled octet_prefix): no
    error at all; feed and feed_blocks + split_block give the same frames; no
    frame over max_message; nothing made out of nothing."""
    max_message, pieces = _pieces(data)
    plain, blocks = SyslogFramer(max_message), SyslogFramer(max_message)
    a: list[bytes] = []
    b: list[bytes] = []
    for piece in pieces:
        a += plain.feed(piece)
        for frame in blocks.feed_blocks(piece):
            b += blocks.split_block(frame) if type(frame).__name__ in ("LineBlock", "OctetBlock") else [frame]
    a += plain.finish()
    b += blocks.finish()
    if a != b:
        raise Finding(f"feed and feed_blocks frame differently: {a[:4]!r} vs {b[:4]!r}")
    if sum(map(len, a)) > sum(map(len, pieces)):
        raise Finding("the frames hold more bytes than came in")
    for frame in a:
        if len(frame) > max_message:
            raise Finding(f"a frame of {len(frame)} bytes with max_message {max_message}")


def syslog_parse(data: bytes) -> None:
    """parse_message (RFC 5424, RFC 3164, anything else) never raises, and
    never falls back on an internal error."""
    before = _fallbacks()
    rec = parse_message(data, received_ns=RECEIVED_NS, default_host="fuzz")
    if rec.msg is None:
        raise Finding("a record without a message")
    _no_new_fallbacks(before, "parse_message")


def syslog_parse_batch(data: bytes) -> None:
    """The batch paths (the compiled splitter's split and split_block, the
    batch regexes) give what parse_message gives, record for record, and never
    fall back on an internal error."""
    max_message, pieces = _pieces(data)
    lines = b"".join(pieces).split(b"\n")
    raws = [line for line in lines if line] or [b""]
    raws = (raws * (1 + 8 // len(raws)))[:max(8, len(raws))]  # at least BATCH_MIN: the batch path
    before = _fallbacks()
    one = [parse_message(raw, received_ns=RECEIVED_NS, default_host="fuzz") for raw in raws]
    if parse_messages(raws, received_ns=RECEIVED_NS, default_host="fuzz") != one:
        raise Finding("parse_messages differs from parse_message")
    if parse_columns(raws, received_ns=RECEIVED_NS, default_host="fuzz").records() != one:
        raise Finding("parse_columns differs from parse_message")
    framer = SyslogFramer(max_message)
    for piece in pieces:
        for frame in framer.feed_blocks(piece):
            if type(frame).__name__ not in ("LineBlock", "OctetBlock"):
                continue
            columns = parse_block(frame, received_ns=RECEIVED_NS, default_host="fuzz", max_message=max_message)
            if columns is None:
                continue
            want = parse_columns(framer.split_block(frame), received_ns=RECEIVED_NS, default_host="fuzz")
            if columns.records() != want.records():
                raise Finding("parse_block differs from parse_columns of split_block")
    _no_new_fallbacks(before, "the batch paths")


# -- fluent forward -----------------------------------------------------------------------
def fluent_forward(data: bytes) -> None:
    """The Fluent Forward server (Message, Forward, PackedForward,
    CompressedPackedForward, the handshake): FluentProtocolError only."""
    _, pieces = _pieces(data)
    shared = bool(data[:1]) and data[0] & 1
    conn = ForwardServerConnection(max_message=1 << 20, shared_key="k" if shared else None,
                                   server_hostname="fuzz", nonce=bytes(16), auth_salt=bytes(16),
                                   now_ns=lambda: RECEIVED_NS)
    for piece in pieces:
        conn.receive_data(piece)
        for _ in conn.events():
            pass
        conn.data_to_send()
    conn.receive_data(b"")
    for _ in conn.events():
        pass


# -- the peer protocol ----------------------------------------------------------------------
def peer_protocol(data: bytes) -> None:
    """A receiver's side of the peer protocol (it answers hello and acks
    chunks as a receiver does), and what it does with a chunk (LZ4 block to
    the chunk codec): RemoteProtocolError, FrameError, ChunkError. A
    LocalProtocolError (this side sending what the protocol forbids) is a bug."""
    _, pieces = _pieces(data)
    conn = Connection(Role.SERVER, max_frame=1 << 20)
    for piece in pieces:
        conn.receive_data(piece)
        for event in conn.events():
            if isinstance(event, Hello):  # as a receiver answers
                conn.send(Welcome(agent="f" * 32, held=0))
            elif isinstance(event, Chunk):
                decode_columns(decompress_chunk(event.data, min(event.chunk_len, MAX_PAYLOAD)))
                conn.send(Ack(event.origin, event.last))
    conn.receive_data(b"")
    conn.events()


# -- chunks and frames ----------------------------------------------------------------------
def chunk_codec(data: bytes) -> None:
    """decode_chunk and decode_columns of either layout: ChunkError only, and
    the two agree."""
    try:
        records = decode_chunk(data)
    except ChunkError:
        records = None
    try:
        columns = decode_columns(data).records()
    except ChunkError:
        columns = None
    if (records is None) != (columns is None):
        raise Finding(f"decode_chunk and decode_columns disagree on whether it is a chunk "
                      f"({records is None}, {columns is None})")
    if records is not None and repr(records) != repr(columns):  # (repr: a NaN equals itself)
        raise Finding("decode_chunk and decode_columns decode differently")


def chunk_lz4(data: bytes) -> None:
    """A chunk as a peer or a damaged spool hands it: LZ4 block bytes and a
    claimed length, then the codec. FramePayloadError, ChunkError."""
    if len(data) < 4:
        return
    (claimed,) = struct.unpack("<I", data[:4])
    chunk = decompress_chunk(data[4:], claimed % (4 << 20))
    decode_columns(chunk)


def frame_codec(data: bytes) -> None:
    """The spool's segment header and frame header parsers, frame
    authentication, payload inflation (LZ4 and zstd): SpoolFormatError and
    FrameError only."""
    try:
        SegmentHeader.unpack(data[:64].ljust(64, b"\0"))
    except SpoolFormatError:
        pass
    try:
        header = unpack_frame_header(data)
    except FrameError:
        header = None
    if header is not None:
        try:
            decrypt_frame(header, data[:FRAME_HEADER_SIZE], data[FRAME_HEADER_SIZE:], key=KEY, salt=SALT,
                          offset=0)
        except FrameError:
            pass
    if len(data) >= 5:
        flags = data[0] & 1
        (claimed,) = struct.unpack("<I", data[1:5])
        decompress_chunk(data[5:], claimed % (4 << 20), flags)


# -- config ----------------------------------------------------------------------------------
def config_loader(data: bytes) -> None:
    """parse_config of any text: ConfigError only."""
    parse_config(data.decode("utf-8", errors="replace"), path="fuzz.toml")


HARNESSES: dict[str, Harness] = {h.name: h for h in (
    Harness("syslog_framing", syslog_framing, (), "octet counting and LF framing"),
    Harness("syslog_parse", syslog_parse, (), "RFC 5424 / 3164 parsing, one message"),
    Harness("syslog_parse_batch", syslog_parse_batch, (), "the batch parsers and the compiled splitter"),
    Harness("fluent_forward", fluent_forward, (FluentProtocolError,), "the Fluent Forward server"),
    Harness("peer_protocol", peer_protocol, (RemoteProtocolError, FrameError, ChunkError), "the peer protocol"),
    Harness("chunk_codec", chunk_codec, (), "the chunk codec, both layouts"),
    Harness("chunk_lz4", chunk_lz4, (FrameError, ChunkError), "LZ4 chunks into the codec"),
    Harness("frame_codec", frame_codec, (FrameError,), "segment and frame headers, payloads"),
    Harness("config_loader", config_loader, (ConfigError,), "the config loader"),
)}


def run_one(harness: Harness, data: bytes) -> None:
    """One input through ``harness``: a declared error is a refused input;
    anything else, more than MAX_SECONDS, or more than MAX_RSS is raised as
    a finding."""
    started = time.monotonic()
    try:
        harness.run(data)
    except harness.declared:
        pass
    took = time.monotonic() - started
    if took > MAX_SECONDS:
        raise Finding(f"{harness.name}: one input took {took:.2f} s (> {MAX_SECONDS} s): {data[:200]!r}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if rss > MAX_RSS:
        raise Finding(f"{harness.name}: the process reached {rss >> 20} MiB (> {MAX_RSS >> 20} MiB)")


__all__ = ["HARNESSES", "MAX_RSS", "MAX_SECONDS", "Finding", "Harness", "run_one"]
