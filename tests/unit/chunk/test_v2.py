"""The chunk codec, version 2 (a column store, messages by template): every
batch and every message reads back byte for byte, by whole chunk and by
column, and readers dispatch on the version a chunk carries."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.chunk import (
    APP,
    FIELDS,
    HOST,
    MSG,
    ORIGIN,
    SEVERITY,
    SOURCE,
    ChunkError,
    FrameColumns,
    chunk_version,
    decode_chunk,
    decode_columns,
    encode_chunk,
    encode_columns,
)
from hostlog.chunk import v2 as chunk_v2
from hostlog.query.build import build_query
from hostlog.query.filters import Query
from hostlog.record import Columns, Record
from tests.unit.chunk.test_v1_columns import records as journal_records

# Tokens a tokenizer could get wrong: numbers that do not round-trip as
# integers (leading zeros, signs, huge), mixed words, separators.
TOKENS = ["0", "00", "007", "7", "-12", "+3", "1.5", "1e9", "18446744073709551615",
          "18446744073709551616", "9999999999999999999", "10000000000000000000",
          "12345678901234567890123", "x1", "1x", "blk_-69", "0x1f", "R02-M1", "٣", "²", "ab",
          " ", "  ", "\t", "\n", ":", "=", "[", "]", "\x00", "\x01", "\x02", "\udc80", "é", "✓",
          "", "\r\n", "{}", "%s"]
messages = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=60),  # surrogates too
    st.lists(st.sampled_from(TOKENS), max_size=12).map("".join),
    st.lists(st.one_of(st.sampled_from(TOKENS), st.integers(-10**25, 10**25).map(str)),
             max_size=8).map(" ".join),
    st.binary(max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
names = st.sampled_from(["", "h1", "host-2", "ü", "x" * 300])
ints = st.integers(-(1 << 63), (1 << 63) - 1)


@st.composite
def any_records(draw) -> Record:
    return Record(ts=draw(ints), msg=draw(messages), host=draw(names), source=draw(names),
                  app=draw(names), pid=draw(st.one_of(st.none(), st.integers(0, 1 << 40))),
                  severity=draw(st.integers(0, 7)),
                  facility=draw(st.one_of(st.none(), st.integers(0, 23))),
                  fields=draw(st.sampled_from([{}, {"a": "b"}, {"K": b"\xff", "L": ["1", b"2"]}])),
                  origin=draw(st.sampled_from(["", "o" * 32])), seq=draw(st.integers(0, 1 << 62)))


@st.composite
def batches(draw, anything: bool = True) -> list[Record]:
    """Records as sources hand them over: some columns constant, messages of
    a few shapes (so templates repeat), or (``anything``) anything at all."""
    if anything and draw(st.booleans()):
        return draw(st.lists(any_records(), max_size=30))
    n = draw(st.integers(1, 60))
    shapes = draw(st.lists(messages, min_size=1, max_size=4))
    ts0 = draw(ints.filter(lambda t: t < (1 << 62)))
    out = []
    for i in range(n):
        shape = draw(st.sampled_from(shapes))
        msg = shape if isinstance(shape, bytes) else shape.replace("7", str(draw(
            st.integers(0, 10**12))))
        out.append(Record(ts=ts0 + i * draw(st.sampled_from([0, 1, 1000])), msg=msg, host="h",
                          source="file", app="a", fields={"path": "/var/log/x"},
                          origin="o" * 32, seq=1000 + i))
    return out


@settings(max_examples=400, deadline=None)
@given(batches())
def test_v2_gives_back_every_batch(rows: list[Record]) -> None:
    chunk = encode_chunk(rows, version=2)
    assert chunk_version(chunk) == 2
    assert decode_chunk(chunk) == rows
    batch = decode_columns(chunk)
    assert batch.records() == rows
    if rows:
        assert encode_columns(batch.columns, version=2) == chunk
        assert encode_columns(Columns.of(rows).columns, version=2) == chunk


@settings(max_examples=400, deadline=None)
@given(st.lists(messages, min_size=1, max_size=50))
def test_every_message_reads_back_byte_for_byte(msgs: list[str | bytes]) -> None:
    block = msgpack.unpackb(chunk_v2.encode_messages(msgs), raw=False)
    back = chunk_v2.decode_messages(block, len(msgs))
    assert back == msgs
    assert [type(m) for m in back] == [type(m) for m in msgs]


@settings(max_examples=200, deadline=None)
@given(st.one_of(batches().filter(bool), st.lists(journal_records(), min_size=1, max_size=40)),
       st.data())
def test_columns_of_v2_give_what_decode_chunk_gives(rows: list[Record], data) -> None:
    chunk = encode_chunk(rows, version=2)
    whole = decode_chunk(chunk)
    idx = sorted(data.draw(st.sets(st.integers(0, len(rows) - 1))))
    cols = FrameColumns(chunk)
    assert type(cols).__name__ == "FrameColumnsV2" and cols.n == len(rows)
    assert cols.records(idx) == [whole[i] for i in idx]
    assert [(r.ts, r.msg, r.fields, r.origin, r.seq) for r in cols.records(idx, identity=False)] \
        == [(whole[i].ts, whole[i].msg, whole[i].fields, "", 0) for i in idx]
    assert FrameColumns(chunk).some(FIELDS, idx) == [whole[i].fields for i in idx]
    raw = FrameColumns(chunk).some(FIELDS, idx, raw=True)
    assert raw == [msgpack.unpackb(msgpack.packb(whole[i].fields, use_bin_type=True), raw=True)
                   for i in idx]
    assert cols.msgs() == [r.msg for r in whole]
    assert cols.ts() == [r.ts for r in whole] and cols.seq() == [r.seq for r in whole]
    assert cols.severity() == bytes(r.severity for r in whole)
    for c, attr in ((HOST, "host"), (SOURCE, "source"), (APP, "app"), (ORIGIN, "origin")):
        assert [cols.strings[k] for k in cols.column(c)] == [getattr(r, attr) for r in whole]
    # holding(): every record whose fields hold a needle is found
    needle = data.draw(st.sampled_from([b"path", b"log", b"_BOOT_ID", b"\xff", b"nothing"]))
    found = FrameColumns(chunk).holding(FIELDS, [needle])
    for i, r in enumerate(whole):
        if needle in msgpack.packb(r.fields, use_bin_type=True):
            assert i in found


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(journal_records(), min_size=1, max_size=40),
                 batches(anything=False).filter(lambda rows: all(map(_printable, rows)))),
       st.sampled_from([{"priority": "err"}, {"units": ["app"]}, {"identifiers": ["app"]},
                        {"hosts": ["h1"]}, {"grep": "ok"}, {"grep": "two"}, {"grep": "5"},
                        {"grep": "tab\there"}, {"grep": "o\nli"}, {"grep": "k \\d+ x"},
                        {"matches": ["MESSAGE=ok"]}, {"matches": ["_BOOT_ID=" + "2" * 32]},
                        {"priority": "3..5", "grep": "[a-z]"}, {"units": ["x*"]}]))
def test_a_query_selects_the_same_records_from_v1_and_v2(rows: list[Record], words) -> None:
    """The query's chunk and column tests read a v2 chunk as they read v1:
    the same records pass."""
    query: Query = build_query(**words)

    def selected(version: int) -> list[Record]:
        chunk = encode_chunk(rows, version=version)
        if not query.chunk_test(chunk):
            return []
        cols = FrameColumns(chunk)
        idx, need_records = query.candidates(cols)
        test = query.record_test if need_records else query.verify
        return [r for r in cols.records(idx) if test(r)]

    everything = [r for r in rows if query.record_test(r)]
    assert selected(1) == selected(2) == everything


@pytest.mark.parametrize("version", [1, 2])
def test_dispatch_reads_each_version_by_what_it_carries(version: int) -> None:
    rows = [Record(ts=i, msg=f"m {i}", host="h", app="a", seq=i + 1) for i in range(5)]
    chunk = encode_chunk(rows, version=version)
    assert chunk_version(chunk) == version
    assert decode_chunk(chunk) == rows
    assert decode_columns(chunk).records() == rows
    assert FrameColumns(chunk).records([0, 4]) == [rows[0], rows[4]]
    assert decode_chunk(encode_chunk([], version=version)) == []
    assert len(decode_columns(encode_chunk([], version=version))) == 0
    assert FrameColumns(encode_chunk([], version=version)).n == 0


def test_an_unknown_version_is_refused_when_writing() -> None:
    with pytest.raises(ValueError):
        encode_chunk([Record(ts=1, msg="x")], version=3)


def test_a_constant_column_costs_nothing_per_row() -> None:
    """One host, source, app, origin, fields map and time for the batch, and
    a seq counting up: the chunk grows by the messages' variables only."""
    def size(n: int) -> int:
        return len(encode_chunk([Record(ts=5, msg="same text", host="h", source="file", app="a",
                                        fields={"path": "/x"}, origin="o" * 32, seq=i + 1)
                                 for i in range(n)], version=2))
    assert size(4096) - size(1) <= 4096 + 16  # the template id: one byte a row


VALID = encode_chunk([Record(ts=10**18 + i, msg=f"request {i} took {i * 3} ms from 10.0.0.{i % 9}",
                             host="h", source="syslog", app=f"a{i % 3}", pid=100 + i % 2,
                             severity=i % 8, fields={"k": str(i % 2)}, origin="o" * 32,
                             seq=i + 1) for i in range(50)]
                     + [Record(ts=1, msg=b"\xff\xfe"), Record(ts=2, msg="\udcff x")], version=2)


@pytest.mark.parametrize("data", [
    b"\x02", b"\x02\xc1", b"\x02" + msgpack.packb([1, [1] * 11]), b"\x02" + msgpack.packb([-1, []]),
    b"\x02" + msgpack.packb([0, [1]]), b"\x02" + msgpack.packb([1, [1] * 10]) + b"\x00" * 10,
    VALID[:-1], VALID + b"\x00",
])
def test_v2_refuses_what_is_not_a_v2_chunk(data: bytes) -> None:
    with pytest.raises(ChunkError):
        decode_columns(data)
    with pytest.raises(ChunkError):
        cols = FrameColumns(data)
        cols.records(list(range(cols.n)))


@settings(max_examples=500, deadline=None)
@given(st.integers(1, len(VALID) - 1), st.integers(0, 255))
def test_a_damaged_v2_chunk_decodes_or_is_refused_never_crashes(at: int, value: int) -> None:
    """Any changed byte (the frame's AEAD makes this rare): a ChunkError or
    a decoded batch, never another exception."""
    data = bytearray(VALID)
    data[at] = value
    try:
        decode_columns(bytes(data))
    except ChunkError:
        pass
    try:
        cols = FrameColumns(bytes(data))
        cols.records(list(range(cols.n)))
        cols.holding(FIELDS, [b"k"])
        cols.severity()
        cols.column(SEVERITY)
        cols.column(MSG)
    except ChunkError:
        pass


def _loghub(corpora) -> dict[str, list[str | bytes]]:
    samples = {}
    for path in sorted((corpora / "loghub").glob("*_2k.log")):
        lines: list[str | bytes] = []
        for raw in path.read_bytes().split(b"\n"):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                lines.append(raw)
        samples[path.name.split("_")[0]] = lines
    assert len(samples) >= 16
    return samples


def test_every_loghub_sample_reads_back_byte_for_byte(corpora) -> None:
    """Each sample as the file source hands it over (one frame of its lines,
    read time, one path), and all of them interleaved as one host's journal,
    in frames of 4,096 records."""
    samples = _loghub(corpora)
    for name, lines in samples.items():
        rows = [Record(ts=1_700_000_000_000_000_000, msg=line, host="h", source="file", app=name,
                       fields={"path": f"/var/log/{name}.log"}, origin="o" * 32, seq=i + 1)
                for i, line in enumerate(lines)]
        chunk = encode_chunk(rows, version=2)
        assert decode_chunk(chunk) == rows, name
        assert FrameColumns(chunk).msgs() == lines, name
        assert len(chunk) < len(encode_chunk(rows)), name  # smaller than v1 before LZ4
    rng = random.Random(7)
    mixed = [(name, line) for name, lines in samples.items() for line in lines]
    rng.shuffle(mixed)
    for start in range(0, len(mixed), 4096):
        rows = [Record(ts=1_700_000_000_000_000_000 + 1000 * (start + i), msg=line, host="h",
                       source="syslog", app=name, pid=rng.choice([None, 1, 99999]),
                       severity=rng.randrange(8), origin="o" * 32, seq=start + i + 1)
                for i, (name, line) in enumerate(mixed[start:start + 4096])]
        assert decode_chunk(encode_chunk(rows, version=2)) == rows


def _printable(r: Record) -> bool:
    """Text a terminal can be given (the sources never make lone surrogates)."""
    try:
        r.msg.encode() if isinstance(r.msg, str) else None
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.parametrize("mode", ["short", "short-precise", "short-iso", "short-full", "short-unix"])
def test_short_lines_from_v2_columns_are_the_lines_from_records(mode: str) -> None:
    """The short layouts printed from a v2 chunk's columns (the fast path the
    query takes) are the bytes printed from its Records."""
    from hostlog.query.output import Formatter
    from hostlog.query.run import ColumnPick, Printer
    from tests.support.tz import zone

    @settings(max_examples=60, deadline=None)
    @given(st.one_of(batches().filter(lambda rows: rows and all(map(_printable, rows))),
                     st.lists(journal_records(), min_size=1, max_size=40)),
           st.data())
    def run(rows: list[Record], data) -> None:
        chunk = encode_chunk(rows, version=2)
        idx = sorted(data.draw(st.sets(st.integers(0, len(rows) - 1))))
        formatter = Formatter(mode)
        by_records = Printer(formatter.format)
        pick = ColumnPick(FrameColumns(chunk), idx, 100, lambda r: True, False)
        want = by_records(pick.pairs())
        by_columns = Printer(formatter.format, fast=formatter.fast_path(),
                             columns=formatter.short_columns)
        assert by_columns(pick) == want
        assert [(r.ts, r.msg, r.fields) for _, r in pick.pairs()] == \
            [(rows[i].ts, rows[i].msg, rows[i].fields) for i in idx]

    with zone("Europe/Berlin"):
        run()


@settings(max_examples=300, deadline=None)
@given(batches().filter(bool), st.data())
def test_may_hold_never_rules_out_a_message_that_holds_the_text(rows: list[Record], data) -> None:
    """The -g prefilter over a v2 message block: False only when no message
    holds the needle (any piece of any message, as its UTF-8)."""
    cols = FrameColumns(encode_chunk(rows, version=2))
    texts = [m for m in cols.msgs() if isinstance(m, str) and _printable(Record(ts=0, msg=m))]
    if texts:
        text = data.draw(st.sampled_from(texts))
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, len(text)))
        assert cols.may_hold(MSG, text[i:j].encode())
    for m in cols.msgs():
        if isinstance(m, bytes) and m:
            assert cols.may_hold(MSG, m[:8]) or not _is_utf8(m[:8])


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_may_hold_rules_out_a_text_no_message_holds() -> None:
    rows = [Record(ts=i, msg=f"GET /item/{i} took {i * 3} ms", seq=i + 1) for i in range(100)]
    cols = FrameColumns(encode_chunk(rows, version=2))
    assert cols.may_hold(MSG, b"/item/") and cols.may_hold(MSG, b"m/4 took 1")
    assert not cols.may_hold(MSG, b"GET: /") and not cols.may_hold(MSG, b"took; 3")
