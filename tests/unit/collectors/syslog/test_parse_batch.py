"""parse_messages' batch path gives exactly what parse_message gives per message.

``parse_messages`` reads batches of common RFC 5424 / RFC 3164 lines with one
``re.split`` and C-level column maps, and hands everything else to
``parse_message``. These tests hold it to the per-message parser: same
records, same field order (the chunk bytes depend on it), in the same order,
for well-formed, unusual and broken messages, mixed in one batch or not.

The conformance corpora (see test_syslog_parse.py for their sources) are run
through it too, as batches.
"""

from __future__ import annotations

import base64
import calendar
import gc
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.chunk import encode_chunk, encode_columns
from hostlog.collectors.syslog import parse as syslog_parse
from hostlog.collectors.syslog import parse_batch as syslog_parse_batch
from hostlog.collectors.syslog.framing import LineBlock, SyslogFramer, TruncatedFrame
from hostlog.collectors.syslog.parse import parse_message
from hostlog.collectors.syslog.parse_batch import parse_block, parse_columns, parse_messages
from hostlog.record import Record
from tests.conftest import need

CORPORA = Path(__file__).resolve().parents[4] / ".." / "shared" / "corpora"
RECEIVED_NS = calendar.timegm((2024, 6, 20, 12, 0, 0)) * 10**9
BATCH_MIN = syslog_parse_batch.BATCH_MIN


def _one_by_one(raws: list[bytes], **kw) -> list[Record]:
    return [parse_message(raw, **kw) for raw in raws]


def assert_same(raws: list[bytes], *, received_ns: int = RECEIVED_NS,
                default_host: str = "relay", peer: str | None = "192.0.2.1") -> None:
    kw = dict(received_ns=received_ns, default_host=default_host, peer=peer)
    got = parse_messages(raws, **kw)
    want = _one_by_one(raws, **kw)
    assert got == want
    # same field order too: the spool's chunk bytes follow it
    assert [list(r.fields) for r in got] == [list(r.fields) for r in want]
    assert encode_chunk(got) == encode_chunk(want)
    # the collector's path: the same batch as columns (compiled splitter)
    columns = parse_columns(raws, **kw)
    assert columns.records() == want
    assert [list(r.fields) for r in columns.records()] == [list(r.fields) for r in want]
    if raws:
        assert encode_columns(columns.columns) == encode_chunk(want)


def _batch_taken(raws: list[bytes]) -> bool:
    """Whether the batch path (not the per-message fallback) read this batch."""
    return syslog_parse_batch._parse_batch(raws, RECEIVED_NS, "relay", None) is not None


# --- examples ---------------------------------------------------------------

LINES_5424 = [
    b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed",
    b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time",
    b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
    b"[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] "
    b"\xef\xbb\xbfAn application event log entry...",
    b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
    b"[exampleSDID@32473 iut=\"3\"][examplePriority@32473 class=\"high\"]",
    b"<13>1 2024-05-01T10:00:00Z h app 12 - - plain",
    b"<13>1 2024-05-01T10:00:00+02:00 h app proc-7 m1 - odd procid",
    b"<13>1 2024-05-01T10:00:00.5-00:30 - - - - -",
    b"<13>1 2024-05-01T10:00:00.5Z - - 0123 - - leading zero pid",
    b"<0>1 2024-05-01T10:00:00Z h a 2147483648 - - pid too big",
    b"<191>1 2024-05-01T10:00:00Z h a 0 - - pid zero",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - [x@1 a=\"q\\\"\\]\\\\\" a=\"2\"] escapes, repeats",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - [x][x] duplicate SD-ID",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - -x no SP after SD",
    b"<13>1 2024-02-30T10:00:00Z h a 1 - - no such day",
    b"<13>1 2024-05-01T24:00:00Z h a 1 - - no such hour",
    b"<13>1 2024-05-01T10:00:00+24:00 h a 1 - - no such offset",
    b"<13>1 2024-05-01T10:00:60Z h a 1 - - leap second",
    b"<13>1 - h a 1 - - nil timestamp",
    b"<13>2 2024-05-01T10:00:00Z h a 1 - - version 2",
    b"<192>1 2024-05-01T10:00:00Z h a 1 - - bad pri",
    b"<013>1 2024-05-01T10:00:00Z h a 1 - - leading zero pri",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - \xff not utf-8",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - trailing cr\r",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - ",
    b"<13>1 2024-05-01T10:00:00Z h a 1 -",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - \xef\xbb\xbf\xef\xbb\xbftwo BOMs",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - caf\xc3\xa9 \xe2\x82\xac",
]

LINES_3164 = [
    b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
    b"<13>Jun 19 10:00:00 myhost app[12]: msg",
    b"<13>Jun 19 10:00:00 app[12]: no host",
    b"<13>Jun 19 10:00:00 app[12] no colon",
    b"<13>Jun 19 10:00:00 myhost app: msg",
    b"<13>Jun  9 10:00:00 h postfix/smtpd[77]: x",
    b"<13>Jun 9 10:00:00 h a: unpadded day",
    b"<13>JUN 19 10:00:00 h a: upper",
    b"<13>Mar  7 2008 19:06:53 dev a: year",
    b"<13>Jun 19 10:00:00.250 h a[0x1f]: odd pid",
    b"<13>Jun 19 10:00:00.250 h a[0123]: leading zero pid",
    b"<13>Jun 19 10:00:00 h a:",
    b"<13>Jun 19 10:00:00 h",
    b"<13>Jun 19 10:00:00 h some words",
    b"<13>Jun 19 10:00:00 [::1] app: bracketed host",
    b"<13>Jun 19 10:00:00 kernel: [ 1.2] usb",
    b"<13>Jun 19 10:00:00  h a: two spaces",
    b"<13>Jun 19 10:00:00 h a:b: colon inside",
    b"<13>Jun 19 10:00:00 h a[1]:x no space",
    b"<13>Feb 30 10:00:00 h a: no such day",
    b"<13>Jun 19 25:00:00 h a: no such hour",
    b"<13>Jun 19 10:00:61 h a: no such second",
    b"<13>Foo 19 10:00:00 h a: no such month",
    b"<13>Dec 31 23:59:59 h a: last year",
    b"<13>2003-10-11T22:14:15.003+02:00 host tag: iso time",
    b"Jun 19 10:00:00 h a[1]: no pri",
    b"<13>hello world",
    b"<13>Jun 19 10:00:00 h\xff a: not utf-8",
    b"<86>Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname=",
    b"<86>Jun 15 04:06:18 combo su(pam_unix)[21416]: session opened for user cyrus by (uid=0)",
]

GARBAGE = [b"", b"x", b"<", b"<13>", b"1 ", b"\x00", b"a\nb",
           b"<13>1 2024-05-01T10:00:00Z h a 1 - - a\nb",
           b"\r", b"<13>Jun 19 10:00:00 h a: m\x00", b"<13>1 2024-05-01T10:00:00Z h a 1 - - m\n"]


@pytest.mark.parametrize("lines", [LINES_5424, LINES_3164])
def test_each_example_line_in_a_batch_of_good_ones(lines: list[bytes]) -> None:
    good = lines[0]
    for line in lines:
        assert_same([good] * (BATCH_MIN - 1) + [line] + [good] * 3)
        assert_same([line] + [good] * BATCH_MIN)


@pytest.mark.parametrize("peer", [None, "p"])
@pytest.mark.parametrize("lines", [LINES_5424, LINES_3164, LINES_5424 + LINES_3164 + GARBAGE,
                                   GARBAGE + LINES_3164 + LINES_5424])
def test_whole_example_batches(lines: list[bytes], peer: str | None) -> None:
    assert_same(lines, peer=peer)
    assert_same(lines[::-1], peer=peer, default_host="")


def test_common_batches_take_the_batch_path() -> None:
    assert _batch_taken([LINES_5424[0], LINES_5424[1]] * BATCH_MIN)
    assert _batch_taken([LINES_3164[0], LINES_3164[1], LINES_3164[2]] * BATCH_MIN)
    utf8 = [x for x in LINES_5424 + LINES_3164 if _is_utf8(x)]
    assert _batch_taken(utf8)  # mixed: per line where needed
    assert not _batch_taken([LINES_5424[4] + b"\x00x"] * BATCH_MIN)  # NUL inside: one by one
    assert not _batch_taken(LINES_5424)  # not UTF-8: one by one


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
        return True
    except UnicodeDecodeError:
        return False


def test_truncated_frames_are_marked_in_a_batch() -> None:
    raws = [LINES_5424[4]] * BATCH_MIN
    raws[3] = TruncatedFrame(raws[3])
    raws[5] = TruncatedFrame(LINES_3164[1])
    got = parse_messages(raws, received_ns=RECEIVED_NS, peer="p")
    assert [r.fields.get("truncated") for r in got].count("true") == 2
    assert_same(raws)


@pytest.mark.parametrize("trailer", [b"\n", b"\r\n", b"\x00", b"\n\x00", b"\r\n\r\n"])
def test_datagram_trailers_are_stripped_in_a_batch(trailer: bytes) -> None:
    raws = [line + trailer for line in LINES_5424[:6]] * 2
    assert _batch_taken(raws)
    assert_same(raws)
    assert_same([line + trailer for line in LINES_3164] + [b"\n", b"\x00", b""])


def test_a_message_holding_an_lf_goes_one_by_one() -> None:
    # octet counting or a datagram can carry an LF inside a message
    line = b"<13>1 2024-05-01T10:00:00Z h a 1 - - "
    for inner in (line + b"a\n" + line + b"b", line + b"a\nnot a header"):
        raws = [LINES_5424[4]] * BATCH_MIN
        raws[2] = inner
        assert_same(raws)
        assert_same(raws + [b"garbage"])


def test_many_distinct_fractions_and_zones() -> None:
    raws = [b"<13>1 2024-05-01T10:00:%02d.%06d%s h a 1 - - m" % (i % 60, i * 7919 % 10**6, z)
            for i in range(300) for z in (b"Z", b"+05:30", b"-00:00")]
    assert_same(raws)
    assert_same([r.replace(b".", b".1") for r in raws if b"Z" in r])


def test_local_day_changes_between_batches() -> None:
    raws = [b"<13>Dec 31 23:59:59 h a: m", b"<13>Jan  1 00:00:01 h a: m"] * BATCH_MIN
    for day in ((2024, 12, 31), (2025, 1, 1), (2024, 1, 5)):
        assert_same(raws, received_ns=calendar.timegm(day + (12, 0, 0)) * 10**9)


def test_framer_output_of_a_stream_parses_like_its_messages() -> None:
    stream = b"".join(line + b"\n" for line in (LINES_5424 + LINES_3164) * 3 if b"\n" not in line)
    framer = SyslogFramer()
    frames = framer.feed(stream[:1000]) + framer.feed(stream[1000:]) + framer.finish()
    assert_same(frames)


# --- properties -------------------------------------------------------------

_PRINT = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
_WORD = st.one_of(st.just("-"), _PRINT, st.sampled_from(["h", "app", "web-1", "a[1]", "x:"]))
# message text: any character but LF and NUL (those are covered by GARBAGE and
# by the raw bytes in _LINES: a batch holding one goes one by one, see above)
_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\x00"),
                max_size=30)


@st.composite
def line_5424(draw) -> bytes:
    pri = draw(st.sampled_from(["13", "0", "191", "192", "013", "7"]))
    version = draw(st.sampled_from(["1", "1", "1", "2"]))
    date = draw(st.sampled_from(["2024-05-01", "2024-02-29", "2023-02-29", "1999-12-31"]))
    clock = draw(st.sampled_from(["10:00:00", "23:59:59", "00:00:60", "24:00:00"]))
    frac = draw(st.sampled_from(["", ".1", ".123", ".123456", ".1234567"]))
    zone = draw(st.sampled_from(["Z", "+02:00", "-07:30", "+24:00", "z"]))
    ts = draw(st.one_of(st.just(f"{date}T{clock}{frac}{zone}"), st.just("-")))
    procid = draw(st.one_of(_WORD, st.integers(0, 2**32).map(str)))
    sd = draw(st.sampled_from(["-", "[a]", '[a b="1"][c d="\\]"]', "[a][a]", '[a b="x]', "-x"]))
    msg = draw(st.one_of(_TEXT, st.just(""), _TEXT.map(lambda s: "\ufeff" + s)))
    head = f"<{pri}>{version} {ts} {draw(_WORD)} {draw(_WORD)} {procid} {draw(_WORD)} {sd}"
    tail = draw(st.sampled_from([" ", " ", ""]))
    return (head + tail + msg).encode() + draw(st.sampled_from([b""] * 40 + [b"\xff", b"\r"]))


@st.composite
def line_3164(draw) -> bytes:
    pri = draw(st.sampled_from(["<13>", "<0>", "<191>", "<192>", ""]))
    month = draw(st.sampled_from(["Jun", "JUN", "Feb", "Foo", "Dec", "Jan"]))
    day = draw(st.sampled_from([" 9", "9", "19", "29", "30", "31"]))
    year = draw(st.sampled_from(["", "", "2008 "]))
    clock = draw(st.sampled_from(["10:00:00", "23:59:59", "10:00:61", "25:00:00"]))
    frac = draw(st.sampled_from(["", "", ".250"]))
    host = draw(st.one_of(st.just(""), _WORD.map(lambda w: w + " ")))
    tag = draw(st.sampled_from(["app:", "app[12]:", "app[12]", "app[0x1]:", "a:b:", "app",
                                "app[]:", "[x]:", "app[1]:x", ""]))
    msg = draw(_TEXT)
    sep = draw(st.sampled_from([" ", " ", "", "  "]))
    return f"{pri}{month} {day} {year}{clock}{frac} {host}{tag}{sep}{msg}".encode()


_LINES = st.one_of(line_5424(), line_3164(), line_5424(), line_3164(),
                   st.text(max_size=40).map(str.encode), st.binary(max_size=40),
                   st.sampled_from(GARBAGE))


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINES, min_size=0, max_size=40), st.sampled_from([None, "p"]))
def test_any_batch_parses_like_its_messages(raws: list[bytes], peer: str | None) -> None:
    assert_same(raws, peer=peer)


@settings(max_examples=300, deadline=None)
@given(st.lists(line_5424(), min_size=BATCH_MIN, max_size=40), st.lists(st.integers(0, 39)))
def test_rfc5424_batches_parse_like_their_messages(raws: list[bytes], cut: list[int]) -> None:
    for i in cut:  # some frames the framer cut
        if i < len(raws):
            raws[i] = TruncatedFrame(raws[i])
    assert_same(raws)


@settings(max_examples=300, deadline=None)
@given(st.lists(line_3164(), min_size=BATCH_MIN, max_size=40))
def test_rfc3164_batches_parse_like_their_messages(raws: list[bytes]) -> None:
    assert_same(raws)


# --- conformance corpora, as batches ----------------------------------------

def _corpus_raws() -> list[bytes]:
    raws = []
    for name in ("go-syslog-parse.jsonl", "easypost-parse.jsonl", "rfc-examples.jsonl"):
        path = CORPORA / "syslog" / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                case = json.loads(line)
                if case.get("input_b64") is not None:
                    raws.append(base64.b64decode(case["input_b64"]))
                elif case.get("input") is not None:
                    raws.append(case["input"].encode())
    for name in ("Linux_2k.log", "OpenSSH_2k.log"):
        path = CORPORA / "loghub" / name
        if path.is_file():
            raws += [b"<86>" + x for x in path.read_bytes().splitlines()]
    return raws


def test_conformance_corpora_as_batches() -> None:
    raws = _corpus_raws()
    need(bool(raws), "the syslog corpora")
    for size in (BATCH_MIN, 64, len(raws)):
        for i in range(0, len(raws), size):
            assert_same(raws[i:i + size])


def test_the_cyclic_collector_is_left_as_it_was() -> None:
    raws = [LINES_5424[0]] * BATCH_MIN
    assert gc.isenabled()
    parse_messages(raws, received_ns=RECEIVED_NS)
    assert gc.isenabled()
    gc.disable()
    try:
        parse_messages(raws, received_ns=RECEIVED_NS)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_parse_messages_is_parse_message_per_item() -> None:
    raws = [b"<14>1 - a - - - - x", b"bad", b"<13>Oct 11 22:14:15 h t: y"]
    got = parse_messages(raws, received_ns=RECEIVED_NS, default_host="d", peer="p")
    assert got == [parse_message(r, received_ns=RECEIVED_NS, default_host="d", peer="p")
                   for r in raws]


# --- fallbacks: counted, nothing lost ----------------------------------------------------------

def test_a_failing_batch_path_falls_back_counted_and_loses_nothing(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the batch path")
    monkeypatch.setattr(syslog_parse_batch, "_parse_columns", broken)
    before = dict(syslog_parse.FALLBACKS.counts)
    raws = [b"<14>1 2024-05-01T10:00:00Z h app - - - line %d" % i for i in range(50)]
    columns = parse_columns(raws, received_ns=1, default_host="h")
    assert [r.msg for r in columns.records()] == [f"line {i}" for i in range(50)]
    after = syslog_parse.FALLBACKS.counts
    assert after["columns"] == before.get("columns", 0) + 1
    assert {k: v for k, v in after.items() if k != "columns"} == \
        {k: v for k, v in before.items() if k != "columns"}


def test_a_failure_is_logged_once_per_path(caplog) -> None:
    counts = syslog_parse.Fallbacks()
    with caplog.at_level("ERROR", logger="hostlog.syslog"):
        for _ in range(3):
            counts.note("batch", RuntimeError("one"))
        counts.note("message", RuntimeError("two"))
    assert counts.counts == {"batch": 3, "message": 1}
    assert [r.getMessage().split(":")[1].strip() for r in caplog.records] == \
        ["the batch path failed, the slower path read the input", "the message path failed, "
         "the slower path read the input"]


class Tally:
    """A ``slow`` callback that keeps what it was told."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, kind: str, n: int) -> None:
        assert n > 0
        self.counts[kind] = self.counts.get(kind, 0) + n


def _slow_records(raws: list[bytes]) -> tuple[list[Record], dict[str, int]]:
    tally = Tally()
    got = parse_messages(raws, received_ns=RECEIVED_NS, slow=tally)
    assert got == _one_by_one(raws, received_ns=RECEIVED_NS)
    return got, tally.counts


def test_the_batch_regexes_report_what_they_leave_to_parse_message() -> None:
    good = [line_3164_fixed(i) for i in range(BATCH_MIN)]
    assert _slow_records(good)[1] == {}
    # two lines the batch regex does not take whole: no TAG, and a date that does not exist
    mixed = good + [b"<13>Oct 11 22:14:15 host no tag here", b"<13>Feb 30 22:14:15 h t: y"]
    assert _slow_records(mixed)[1] == {"line": 2}
    # a NUL inside a message: the whole batch goes one by one
    assert _slow_records(good + [b"<13>Oct 11 22:14:15 h t: a\x00b"])[1] == {"batch": BATCH_MIN + 1}
    # below BATCH_MIN the batch path is not tried, so nothing falls back
    assert _slow_records(good[:BATCH_MIN - 1])[1] == {}


def line_3164_fixed(i: int) -> bytes:
    return b"<13>Oct 11 22:14:%02d host app[%d]: message %d" % (i % 60, 100 + i, i)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(line_5424(), line_3164(), st.sampled_from(GARBAGE)), max_size=30))
def test_the_slow_callback_never_changes_a_record(raws: list[bytes]) -> None:
    tally = Tally()
    assert parse_messages(raws, received_ns=RECEIVED_NS, slow=tally) == \
        parse_messages(raws, received_ns=RECEIVED_NS)
    assert set(tally.counts) <= {"batch", "line"}
    assert sum(tally.counts.values()) <= len(raws)
    tally = Tally()
    assert parse_columns(raws, received_ns=RECEIVED_NS, slow=tally).records() == \
        parse_columns(raws, received_ns=RECEIVED_NS).records()
    assert set(tally.counts) <= {"columns", "frame", "batch", "line"}


def test_the_compiled_paths_report_what_they_leave(compiled_splitter) -> None:
    good = [b"<13>1 2024-05-01T10:00:00Z h app %d - - line %d" % (i, i) for i in range(20)]
    tally = Tally()
    assert parse_block(LineBlock(b"".join(g + b"\n" for g in good)), received_ns=RECEIVED_NS,
                       slow=tally) is not None
    assert tally.counts == {}
    # RFC 3164: the block goes to the framer, its frames to the batch regexes
    lines = [line_3164_fixed(i) for i in range(20)]
    assert parse_block(LineBlock(b"".join(x + b"\n" for x in lines)), received_ns=RECEIVED_NS,
                       slow=tally) is None
    assert tally.counts == {"block": 1}
    tally = Tally()
    assert parse_columns(lines, received_ns=RECEIVED_NS, slow=tally).records() == \
        _one_by_one(lines, received_ns=RECEIVED_NS)
    assert tally.counts == {"columns": 20}
    # a PROCID that is no pid: that frame alone goes to parse_message
    odd = good[:5] + [b"<13>1 2024-05-01T10:00:00Z h app proc-7 - - odd"] + good[5:]
    tally = Tally()
    assert parse_columns(odd, received_ns=RECEIVED_NS, slow=tally).records() == \
        _one_by_one(odd, received_ns=RECEIVED_NS)
    assert tally.counts == {"frame": 1}


@pytest.fixture
def compiled_splitter():
    need(syslog_parse_batch._syslog5424 is not None,
         "hostlog.collectors.syslog._syslog5424 (the package built with a C compiler)")
