"""A chunk read by column gives what decoding it whole gives, and the short
layouts printed from the columns are the bytes printed from Records."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.chunk import FIELDS, MSG, FrameColumns, decode_chunk, encode_chunk
from hostlog.journal.fields import journal_to_record
from hostlog.query.output import Formatter
from hostlog.query.run import ColumnPick, Printer
from hostlog.record import Columns, Record
from tests.support.tz import zone

BOOTS = ["11111111111111111111111111111111", "22222222222222222222222222222222"]
texts = st.sampled_from(["ok", "disk full", "tab\there", "two\nlines", "\x1b[1mbold\x1b[0m",
                         "ünïcödé ✓", "nbsp\u00a0x", "nul\x00x", "c1\x85x", "", "x" * 400,
                         "nonchar\ufdd0", "bidi\u200fx"])


@st.composite
def records(draw) -> Record:
    ts = draw(st.integers(1_600_000_000_000_000, 1_600_000_500_000_000))
    if draw(st.booleans()):  # a journald record, quirks and all
        entry: dict[str, list[bytes]] = {"__REALTIME_TIMESTAMP": [str(ts).encode()]}
        for name, values in (
                ("_HOSTNAME", [[b"h1"], [b"h2"], [b""], [b"bad\x01host"]]),
                ("SYSLOG_IDENTIFIER", [[b"app"], [b"x" * 300], [b"a", b"b"], [b"\xff"]]),
                ("_COMM", [[b"comm"]]),
                ("_PID", [[b"42"], [b"abc"]]),
                ("SYSLOG_PID", [[b"7"], [b"\xff"], [b"1", b"2"], [b"p\x01"]]),
                ("PRIORITY", [[b"3"], [b"06"], [b"3", b"5"]]),
                ("MESSAGE", [[t.encode()] for t in ["ok", "tab\there", "two\nlines", "ünï"]]
                 + [[b"bin\xff"], [b"a", b"b"]]),
                ("_BOOT_ID", [[b.encode()] for b in BOOTS] + [[b"short"], [BOOTS[0].encode()] * 2,
                                                              [b"\xff" * 32]]),
                ("_SOURCE_REALTIME_TIMESTAMP", [[b"1600000001000000"], [b"12x"], [b"1", b"2"],
                                                [b"0"], [b"\xff"]]),
                ("_TRANSPORT", [[b"audit"]])):
            if draw(st.integers(0, 2)) == 0:
                continue
            entry[name] = draw(st.sampled_from(values))
        r = journal_to_record(entry)
    else:
        fields = draw(st.sampled_from([{}, {"_BOOT_ID": BOOTS[1]}, {"SYSLOG_PID": "9"},
                                       {"_SOURCE_REALTIME_TIMESTAMP": "1600000002000000"}]))
        r = Record(ts=ts * 1000, msg=draw(st.one_of(texts, st.just(b"\xffbin"))),
                   host=draw(st.sampled_from(["h1", "", "h\x02"])), source="syslog",
                   app=draw(st.sampled_from(["app", "", "ü"])), pid=draw(st.sampled_from([None, 5])),
                   severity=draw(st.integers(0, 7)), fields=fields)
    r.origin, r.seq = "o", draw(st.integers(1, 10**9))
    return r


@settings(max_examples=300, deadline=None)
@given(st.lists(records(), min_size=1, max_size=40), st.data())
def test_columns_give_the_records_decode_chunk_gives(recs, data):
    chunk = encode_chunk(recs)
    whole = decode_chunk(chunk)
    idx = sorted(data.draw(st.sets(st.integers(0, len(recs) - 1))))
    cols = FrameColumns(chunk)
    assert cols.records(idx) == [whole[i] for i in idx]
    assert [(r.ts, r.msg, r.fields) for r in cols.records(idx, identity=False)] == \
        [(whole[i].ts, whole[i].msg, whole[i].fields) for i in idx]
    assert FrameColumns(chunk).some(FIELDS, idx) == [whole[i].fields for i in idx]
    assert FrameColumns(chunk).msgs() == [r.msg for r in whole]
    starts = FrameColumns(chunk).element_starts(MSG)
    assert len(starts) == len(recs) + 1 and starts == sorted(starts)


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
@pytest.mark.parametrize("mode", ["short", "short-precise", "short-iso", "short-iso-precise",
                                  "short-full", "short-unix"])
def test_short_lines_from_columns_are_the_lines_from_records(tz, mode):
    with zone(tz):
        check_columns_against_records(mode)


def check_columns_against_records(mode: str) -> None:
    @settings(max_examples=150, deadline=None)
    @given(st.lists(records(), min_size=1, max_size=40), st.data(), st.booleans(), st.booleans())
    def run(recs, data, boot_lines, reverse):
        chunk = encode_chunk(recs)
        idx = sorted(data.draw(st.sets(st.integers(0, len(recs) - 1))))
        formatter = Formatter(mode)

        def verify(r: Record) -> bool:
            # a rule on the journal quirks (as Query.verify): a raw PRIORITY
            return not r.fields or r.fields.get("PRIORITY") != "06"

        by_records = Printer(formatter.format, boot_lines=boot_lines)
        pick = ColumnPick(FrameColumns(chunk), idx, 100, verify, False)
        pick.reverse = reverse
        want = by_records(pick.pairs())
        by_columns = Printer(formatter.format, boot_lines=boot_lines, fast=formatter.fast_path(),
                             columns=formatter.short_columns)
        assert by_columns(pick) == want
        with_fast_path = Printer(formatter.format, boot_lines=boot_lines, fast=formatter.fast_path())
        assert with_fast_path(pick.pairs()) == want
        assert (by_columns.first, by_columns.last) == (by_records.first, by_records.last)
        assert by_columns.top == by_records.top
    run()


def test_quick_frame_listing_is_the_frame_listing(tmp_path):
    """SpoolReader.frames_quick() (footer rows as tuples) lists what frames()
    lists, sealed segments and the active one, in either order and after a
    seq; with a time range it only leaves out segments wholly outside it."""
    from hostlog.spool.keys import Keyring
    from hostlog.spool.reader import SpoolReader
    from hostlog.spool.spool import Spool

    keyring = Keyring.load_or_create(tmp_path / "spool.key")
    spool = Spool.open(tmp_path / "spool", keyring, segment_bytes=4 << 10)
    for n in range(60):
        spool.append(Columns.of([Record(ts=(n * 10 + k) * 10**9,
                                        msg=f"m{n}-{k} " + os.urandom(8).hex(),
                                        host="h", app="a") for k in range(10)]))
    spool.close()
    # a sealed segment whose footer is damaged is walked instead, as frames() does
    sealed = sorted((tmp_path / "spool" / "segments").glob("*.seg"))
    assert len(sealed) > 5
    with open(sealed[1], "r+b") as f:
        f.seek(-3, 2)
        f.write(b"XYZ")
    reader = SpoolReader.open(tmp_path / "spool")

    def listing(frames):
        return [(seg.path.name, tuple(getattr(e, a) for a in (
            "offset", "first_seq", "count", "ts_min", "ts_max", "severity_mask", "app_bloom",
            "size", "chunk_len", "last_seq"))) for seg, e in frames]

    for reverse in (False, True):
        for after in (0, 1, 123, 400, 600):
            assert listing(reader.frames_quick(reverse=reverse, after_seq=after)) == \
                listing(reader.frames(reverse=reverse, after_seq=after))
    everything = listing(reader.frames())
    lo, hi = 200 * 10**9, 330 * 10**9
    some = listing(reader.frames_quick(since_ns=lo, until_ns=hi))
    assert set(some) <= set(everything)
    in_range = [f for f in everything if f[1][4] >= lo and f[1][3] <= hi]
    assert set(in_range) <= set(some) and len(some) < len(everything)
