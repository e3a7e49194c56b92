"""The compiled syslog path and the pure Python one read every input alike.

The syslog grammar is written twice: in C (``_syslog5424.split`` and
``split_block``, the RFC 5424 fast path, and ``octet_prefix``, the framer's
run of octet-counted frames) and in Python (``parse.parse_message`` and the
batch regexes of ``parse_batch``), which reads whatever the C side leaves
and everything when the compiled helper is not there. These tests feed the
same input to both, as the collector feeds it (frame lists, LF-framed and
octet-counted streams through the framer, datagram blocks), once with the
compiled helper and once with the module attributes that hold it set to
None (what an install without a C compiler runs), and require the same
records, column by column (ts, host, source, app, pid, severity, facility,
msg, fields and their order, origin, seq), and the same framer counts.

``parse.FALLBACKS`` counts a faster path that *failed* (raised) and handed
its input to a slower one: a bug, exported as an error metric. A block or a
frame the compiled path declines (RFC 3164, a cut frame, a PROCID that is no
pid, ...) is not a failure and is not counted there (the collector counts
it as a slow path: test_parse_batch.py, test_collector.py): the counts stay
empty for every input here, and a compiled helper that raises is counted exactly once
per call it failed, with nothing lost.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hostlog.collectors.syslog import framing as syslog_framing
from hostlog.collectors.syslog import parse as syslog_parse
from hostlog.collectors.syslog import parse_batch as syslog_parse_batch
from hostlog.collectors.syslog.framing import LineBlock, OctetBlock, SyslogFramer, TruncatedFrame
from hostlog.collectors.syslog.parse import parse_message
from hostlog.collectors.syslog.parse_batch import parse_block, parse_columns
from hostlog.record import COLUMNS, Columns
from tests.conftest import need
from tests.unit.collectors.syslog.test_parse_batch import (
    GARBAGE,
    LINES_3164,
    LINES_5424,
    _corpus_raws,
    line_3164,
)

RECEIVED_NS = calendar.timegm((2024, 6, 20, 12, 0, 0)) * 10**9
GOOD = b"<13>1 2024-05-01T10:00:00.250Z web-1 nginx 42 req - GET /index.html 200"
KW: dict[str, Any] = dict(received_ns=RECEIVED_NS, default_host="relay")


@pytest.fixture(scope="module", autouse=True)
def compiled():
    """The compiled helper: a skip outside CI without it, a failure in CI."""
    need(syslog_parse_batch._syslog5424 is not None and syslog_framing._octet_prefix is not None,
         "hostlog.collectors.syslog._syslog5424 (the package built with a C compiler)")
    return syslog_parse_batch._syslog5424


@contextmanager
def python_only() -> Iterator[None]:
    """Run as an install without the compiled helper does."""
    with mock.patch.object(syslog_parse_batch, "_syslog5424", None), \
            mock.patch.object(syslog_framing, "_octet_prefix", None):
        yield


class FallbacksSince:
    """What ``parse.FALLBACKS`` counted since this was made, by path."""

    def __init__(self) -> None:
        self.before = dict(syslog_parse.FALLBACKS.counts)

    @property
    def counts(self) -> dict[str, int]:
        now = syslog_parse.FALLBACKS.counts
        return {k: n - self.before.get(k, 0) for k, n in now.items() if n != self.before.get(k, 0)}


@contextmanager
def fallbacks_counted() -> Iterator[FallbacksSince]:
    """The failures the parsers count from here on."""
    yield FallbacksSince()


def rows(columns: Columns) -> list[tuple]:
    """Every column of every row; a row's fields with their order (the chunk
    bytes follow it) and their value types (str or bytes)."""
    out = []
    for row in zip(*columns.columns):
        fields = row[COLUMNS.index("fields")]
        out.append(row[:8] + (list(fields.items()),) + row[9:])
    return out


# --- how the collector reads (SyslogCollector.parse_stream and parse_datagrams) -----------------

def read_frames(frames: list[bytes], framer: SyslogFramer, peer: str | None) -> Columns:
    """What feed_blocks() returned, as one batch: blocks read in place where
    parse_block can, the rest split by the framer, in order."""
    batch = Columns.empty()
    loose: list[bytes] = []
    for frame in frames:
        if type(frame) is LineBlock or type(frame) is OctetBlock:
            block = parse_block(frame, peer=peer, max_message=framer.max_message, **KW)
            if block is None:
                loose += framer.split_block(frame)
                continue
            if loose:
                batch.extend(parse_columns(loose, peer=peer, **KW))
                loose = []
            batch.extend(block)
        else:
            loose.append(frame)
    if loose:
        batch.extend(parse_columns(loose, peer=peer, **KW))
    return batch


def read_stream(chunks: list[bytes], max_message: int, peer: str | None) -> tuple[list, int, int]:
    """A connection's bytes, as received in ``chunks``, then EOF: its rows and
    the framer's counts (truncated, incomplete)."""
    framer = SyslogFramer(max_message)
    batch = Columns.empty()
    for chunk in chunks:
        batch.extend(read_frames(framer.feed_blocks(chunk), framer, peer))
    batch.extend(read_frames(framer.finish(), framer, peer))
    return rows(batch), framer.truncated, framer.incomplete


def reference_stream(chunks: list[bytes], max_message: int, peer: str | None) -> tuple[list, int, int]:
    """The same, frame by frame: feed() and parse_message alone."""
    framer = SyslogFramer(max_message)
    frames = [f for chunk in chunks for f in framer.feed(chunk)] + framer.finish()
    records = [parse_message(f, peer=peer, **KW) for f in frames]
    return rows(Columns.of(records)), framer.truncated, framer.incomplete


def read_datagrams(datagrams: list[bytes], truncated: list[int], slot: int,
                   peer: str | None) -> list:
    """One sender's datagrams, as the datagram listener hands them on: an
    octet-counted block, read in place unless the kernel cut one."""
    block = OctetBlock(b"".join(b"%d %s" % (len(d), d) for d in datagrams))
    batch = None
    if not truncated:
        batch = parse_block(block, peer=peer, max_message=slot, **KW)
    if batch is None:
        frames = SyslogFramer(slot).split_block(block)
        for i in truncated:
            frames[i] = TruncatedFrame(frames[i])
        batch = parse_columns(frames, peer=peer, **KW)
    return rows(batch)


def assert_frames_alike(raws: list[bytes], peer: str | None) -> None:
    with fallbacks_counted() as counts:
        got = rows(parse_columns(raws, peer=peer, **KW))
        with python_only():
            fallback = rows(parse_columns(raws, peer=peer, **KW))
    assert got == fallback
    assert got == rows(Columns.of([parse_message(r, peer=peer, **KW) for r in raws]))
    assert counts.counts == {}  # declining a frame is no failure


def assert_stream_alike(chunks: list[bytes], max_message: int, peer: str | None) -> None:
    with fallbacks_counted() as counts:
        got = read_stream(chunks, max_message, peer)
        with python_only():
            fallback = read_stream(chunks, max_message, peer)
    assert got == fallback
    assert got == reference_stream(chunks, max_message, peer)
    assert counts.counts == {}


def assert_datagrams_alike(datagrams: list[bytes], slot: int, peer: str | None) -> None:
    cut = [i for i, d in enumerate(datagrams) if len(d) > slot]
    sent = [d[:slot] for d in datagrams]  # what the kernel hands over
    with fallbacks_counted() as counts:
        got = read_datagrams(sent, cut, slot, peer)
        with python_only():
            fallback = read_datagrams(sent, cut, slot, peer)
    assert got == fallback
    want = [parse_message(TruncatedFrame(d) if i in cut else d, peer=peer, **KW)
            for i, d in enumerate(sent)]
    assert got == rows(Columns.of(want))
    assert counts.counts == {}


# --- inputs ------------------------------------------------------------------------------------

_PRINT = bytes(range(33, 127))
_TOKEN = st.binary(min_size=1, max_size=12).map(
    lambda b: bytes(_PRINT[x % len(_PRINT)] for x in b))
# SD-NAME: 1*32 PRINTUSASCII but '=', SP, ']', '"' (RFC 5424 6.3); some names break it
_SD_NAME = st.one_of(
    st.sampled_from([b"a", b"x@1", b"exampleSDID@32473", b"timeQuality", b"origin", b"n" * 32]),
    _TOKEN.map(lambda b: b.translate(None, b'=]"')).filter(bool),
    st.sampled_from([b"n" * 33, b"a=b", b"a]", b'a"', b""]))
# PARAM-VALUE pieces: '"', '\' and ']' MUST be escaped (6.3.3); other escapes
# are kept as they are; UTF-8 and bytes that are not UTF-8
_VALUE_PIECE = st.sampled_from([
    b"", b"3", b"Application", b"1011", b" ", b"a b", b"\\\"", b"\\]", b"\\\\", b"\\n", b"\\x",
    b"\\", b"\"", b"]", b"[", b"=", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80",
    b"\\\xc3\xa9", b"\\\xe2\x82\xac", b"\xff", b"\\\xff", b"\xc3", b"\x80", b"\n", b"\r", b"\x00",
    b"\t", b"\xef\xbb\xbf"])


@st.composite
def sd_element(draw) -> bytes:
    name = draw(_SD_NAME)
    params = b""
    for _ in range(draw(st.integers(0, 3))):
        value = b"".join(draw(st.lists(_VALUE_PIECE, max_size=6)))
        params += b" " + draw(_SD_NAME) + b'="' + value + b'"'
    end = draw(st.sampled_from([b"]"] * 12 + [b"", b" ]", b"]]"]))
    return b"[" + name + params + end


@st.composite
def structured_data(draw) -> bytes:
    if draw(st.integers(0, 3)) == 0:
        return b"-"
    elements = draw(st.lists(sd_element(), min_size=1, max_size=3))
    if len(elements) > 1 and draw(st.integers(0, 5)) == 0:
        elements.append(elements[0])  # an SD-ID twice (6.3.2: MUST NOT)
    glue = draw(st.sampled_from([b""] * 8 + [b" "]))  # no SP between SD-ELEMENTs (6.3)
    return glue.join(elements)


def _timestamp(draw) -> bytes:
    if draw(st.integers(0, 6)) == 0:
        return b"-"
    year = draw(st.sampled_from([b"2024", b"2023", b"1900", b"1899", b"2190", b"2191", b"1970",
                                 b"0024", b"20x4"]))
    month = draw(st.sampled_from([b"01", b"02", b"05", b"12", b"00", b"13", b"1"]))
    day = draw(st.sampled_from([b"01", b"28", b"29", b"30", b"31", b"00", b"32"]))
    clock = draw(st.sampled_from([b"10:00:00", b"00:00:00", b"23:59:59", b"24:00:00",
                                  b"10:60:00", b"10:00:60", b"10:00"]))
    frac = draw(st.sampled_from([b"", b"", b".5", b".250", b".000003", b".123456", b".1234567",
                                 b"."]))
    zone = draw(st.sampled_from([b"Z", b"Z", b"+02:00", b"-07:00", b"-00:00", b"+14:00",
                                 b"+23:59", b"+24:00", b"-12:60", b"z", b"+0200", b""]))
    sep = draw(st.sampled_from([b"T"] * 8 + [b"t", b" "]))
    return year + b"-" + month + b"-" + day + sep + clock + frac + zone


@st.composite
def message_bytes(draw) -> bytes:
    text = draw(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)).encode()
    parts = draw(st.lists(st.sampled_from([b"", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf",
                                           b"\n", b"\r", b"\x00", b" ", b"\xef\xbb\xbf"]),
                          max_size=2))
    at = draw(st.integers(0, len(text)))
    msg = text[:at] + b"".join(parts) + text[at:]
    if draw(st.integers(0, 3)) == 0:
        msg = b"\xef\xbb\xbf" + msg  # RFC 5424 6.4: a BOM starts MSG-UTF8
    if draw(st.integers(0, 20)) == 0:
        msg += b"long " * draw(st.integers(20, 400))
    return msg


@st.composite
def line_5424(draw) -> bytes:
    """RFC 5424 (section 6) frames, most valid, many one part off."""
    pri = draw(st.sampled_from([b"13", b"13", b"0", b"7", b"165", b"191", b"192", b"013", b"1000",
                                b"", b"x"]))
    version = draw(st.sampled_from([b"1"] * 10 + [b"2", b"10", b"01", b""]))
    host = draw(st.one_of(st.just(b"-"), _TOKEN, st.sampled_from(
        [b"mymachine.example.com", b"192.0.2.1", b"h" * 255, b"h" * 256])))
    app = draw(st.one_of(st.just(b"-"), _TOKEN, st.sampled_from([b"a" * 48, b"a" * 49])))
    procid = draw(st.one_of(st.just(b"-"), st.integers(0, 2**32).map(lambda n: b"%d" % n),
                            st.sampled_from([b"2147483647", b"2147483648", b"0123", b"0",
                                             b"proc-7", b"p" * 128, b"p" * 129]), _TOKEN))
    msgid = draw(st.one_of(st.just(b"-"), _TOKEN, st.sampled_from([b"ID47", b"m" * 32,
                                                                    b"m" * 33])))
    head = b"<%s>%s %s %s %s %s %s %s" % (pri, version, _timestamp(draw), host, app, procid,
                                          msgid, draw(structured_data()))
    tail = draw(st.sampled_from([b" ", b" ", b" ", b"", b"", b"x", b"  "]))
    trailer = draw(st.sampled_from([b""] * 12 + [b"\n", b"\r\n", b"\x00", b"\r", b"\r\n\x00"]))
    return head + tail + draw(message_bytes()) + trailer


LINES = st.one_of(line_5424(), line_5424(), line_5424(), line_3164().map(bytes),
                  st.sampled_from(LINES_5424 + LINES_3164 + GARBAGE),
                  st.binary(max_size=60), st.just(b""), st.just(GOOD))


@st.composite
def lf_stream(draw) -> bytes:
    """Non-transparent framing (RFC 6587 3.4.2): LF (or NUL, CR LF) trailers, empty lines."""
    lines = draw(st.lists(LINES, max_size=25))
    seps = st.sampled_from([b"\n"] * 8 + [b"\r\n", b"\n\n", b"\x00", b"\r\r\n"])
    return b"".join(line + draw(seps) for line in lines)


@st.composite
def octet_stream(draw) -> bytes:
    """Octet counting (RFC 6587 3.4.1): MSG-LEN SP MSG, some frames garbage."""
    out = b""
    for frame in draw(st.lists(LINES.filter(bool), min_size=1, max_size=25)):
        kind = draw(st.integers(0, 30))
        if kind == 0:
            out += frame + b"\n"  # not a MSG-LEN: read up to LF as a line
        elif kind == 1:
            out += b"0 " + frame  # "0" is no MSG-LEN
        else:
            out += b"%d %s" % (len(frame), frame)
    return out


@st.composite
def chunked(draw, stream) -> list[bytes]:
    """A stream as the socket hands it over: in pieces cut anywhere."""
    data = draw(stream)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


# --- examples: inputs the two paths could read apart -------------------------------------------

EXAMPLES = [
    GOOD,
    b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
    b"[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] "
    b"\xef\xbb\xbfAn application event log entry...",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - [x@1 a=\"q\\\"\\]\\\\\" a=\"2\"] escapes, repeats",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - [x@1 a=\"\\\xc3\xa9\\n\"] an escaped non-ASCII char",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - [x@1 a=\"\\\xff\"] an escaped byte that is not UTF-8",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - [x][x] duplicate SD-ID",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - [x a=\"]\"] bare ] in a value",
    b"<13>1 - - - - - -",
    b"<13>1 - - - - - - \xef\xbb\xbf",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - \xef\xbb\xbf\xff not UTF-8 after the BOM",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - m\r\n\x00",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - m\n\r",
    b"<13>1 2024-05-01T10:00:00.1234567Z h a 1 - - seven digits",
    b"<13>1 2024-05-01T10:00:00Z h a 0123 - - leading zero pid",
    b"<13>2 2024-05-01T10:00:00Z h a 1 - - version 2",
    b"<13>Jun 19 10:00:00 myhost app[12]: rfc 3164",
    b"<13>hello world",
    b"\xff\xfe",
    b"",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - " + b"x" * 70000,
]


def test_the_compiled_path_reads_the_common_shape(compiled) -> None:
    """Else the tests below would hold the Python path to itself."""
    *_, redo = compiled.split([GOOD] * 8, RECEIVED_NS, "relay")
    assert redo == []
    assert parse_block(LineBlock(b"%s\n" % GOOD * 3), max_message=65536, **KW) is not None
    octet = b"%d %s" % (len(GOOD), GOOD) * 3
    assert parse_block(OctetBlock(octet), max_message=65536, **KW) is not None
    framer = SyslogFramer()
    framer.feed(octet)  # (the first frames decide the framing: octet counting)
    assert [type(f) for f in framer.feed_blocks(octet)] == [OctetBlock]
    with python_only():
        assert parse_block(OctetBlock(octet), max_message=65536, **KW) is None
        assert [type(f) for f in framer.feed_blocks(octet)] == [bytes] * 3


# --- frame lists (parse_columns: the TCP/TLS and datagram fallback paths) -------------------------

@pytest.mark.parametrize("line", EXAMPLES)
@pytest.mark.parametrize("peer", [None, "192.0.2.1"])
def test_each_example_in_a_batch_reads_alike(line: bytes, peer: str | None) -> None:
    assert_frames_alike([GOOD] * 8 + [line], peer)
    assert_frames_alike([line] * 9, peer)
    assert_frames_alike([line, TruncatedFrame(line)] + [GOOD] * 8, peer)


@settings(max_examples=500, deadline=None)
@given(st.lists(LINES, max_size=40), st.lists(st.integers(0, 39), max_size=3),
       st.sampled_from([None, "192.0.2.1"]))
def test_any_batch_of_frames_reads_alike(raws: list[bytes], cut: list[int], peer: str | None) -> None:
    for i in cut:  # frames the framer cut at max_message, or at EOF
        if i < len(raws):
            raws[i] = TruncatedFrame(raws[i])
    assert_frames_alike(raws, peer)
    assert_frames_alike([GOOD] * 8 + raws, peer)  # past the compiled path's bail-out share


# --- streams (feed_blocks: LineBlocks, OctetBlocks and frames) ----------------------------------

@pytest.mark.parametrize("sep", [b"\n", b"\r\n", b"\x00"])
def test_the_examples_as_streams_read_alike(sep: bytes) -> None:
    lf = b"".join(line + sep for line in [GOOD, *EXAMPLES, GOOD] if b"\n" not in line)
    octet = b"".join(b"%d %s" % (len(line), line) for line in [GOOD, *EXAMPLES, GOOD] if line)
    for stream in (lf, octet):
        for max_message in (65536, 200, 40):
            assert_stream_alike([stream], max_message, "192.0.2.1")
            assert_stream_alike([stream[:100], stream[100:333], stream[333:]], max_message, None)


@settings(max_examples=400, deadline=None)
@given(chunked(lf_stream()), st.sampled_from([65536, 300, 64, 8]),
       st.sampled_from([None, "192.0.2.1"]))
@example([GOOD + b"\n" + b"<13>1 2024-05-01T10:00:00Z h a 1 - - " + b"y" * 500 + b"\n"], 300, None)
def test_any_lf_stream_reads_alike(chunks: list[bytes], max_message: int, peer: str | None) -> None:
    assert_stream_alike(chunks, max_message, peer)


@settings(max_examples=400, deadline=None)
@given(chunked(octet_stream()), st.sampled_from([65536, 300, 64, 8]),
       st.sampled_from([None, "192.0.2.1"]))
@example([b"%d %s0 %d %s" % (len(GOOD), GOOD, len(GOOD), GOOD)], 65536, None)
def test_any_octet_counted_stream_reads_alike(chunks: list[bytes], max_message: int,
                                              peer: str | None) -> None:
    assert_stream_alike(chunks, max_message, peer)


# --- datagrams (parse_datagrams: one block per sender) -----------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.lists(LINES, min_size=1, max_size=30), st.sampled_from([65536, 256, 48]),
       st.sampled_from([None, "192.0.2.1"]))
@example([b"", GOOD], 65536, None)  # an empty datagram is "0 ": left to the framer
def test_any_datagrams_read_alike(datagrams: list[bytes], slot: int, peer: str | None) -> None:
    assert_datagrams_alike(datagrams, slot, peer)


# --- the shared corpora's syslog cases --------------------------------------------------------

def test_the_corpora_read_alike() -> None:
    raws = _corpus_raws()
    need(bool(raws), "the syslog corpora")
    for i in range(0, len(raws), 64):
        assert_frames_alike(raws[i:i + 64], "192.0.2.1")
    lf = b"".join(r + b"\n" for r in raws if b"\n" not in r)
    octet = b"".join(b"%d %s" % (len(r), r) for r in raws if r)
    for stream in (lf, octet):
        assert_stream_alike([stream], 65536, None)
        assert_stream_alike([stream[:4096], stream[4096:]], 512, "192.0.2.1")


# --- a compiled helper that fails --------------------------------------------------------------

class _Broken:
    """A compiled helper whose parsers raise (a bug): calls counted."""

    def __init__(self, real: Any) -> None:
        self.octet_prefix = real.octet_prefix
        self.calls = {"columns": 0, "block": 0}

    def split(self, *args: Any) -> Any:
        self.calls["columns"] += 1
        raise RuntimeError("a bug in split()")

    def split_block(self, *args: Any) -> Any:
        self.calls["block"] += 1
        raise RuntimeError("a bug in split_block()")


@settings(max_examples=100, deadline=None)
@given(st.one_of(chunked(lf_stream()), chunked(octet_stream())), st.sampled_from([65536, 64]))
def test_a_failing_compiled_path_is_counted_once_per_call_and_loses_nothing(
        compiled, chunks: list[bytes], max_message: int) -> None:
    with python_only():
        want = read_stream(chunks, max_message, "p")
    broken = _Broken(compiled)
    with fallbacks_counted() as counts, mock.patch.object(syslog_parse_batch, "_syslog5424", broken):
        got = read_stream(chunks, max_message, "p")
    assert got == want
    assert counts.counts == {k: n for k, n in broken.calls.items() if n}
