"""The columnar chunk codec round-trips any records."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.chunk import CHUNK_VERSION, ChunkError, decode_chunk, encode_chunk, encode_columns
from hostlog.record import Columns, Record

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
names = st.text(max_size=20)
values = st.one_of(st.text(max_size=50), st.binary(max_size=50))

records = st.builds(
    Record,
    ts=st.integers(min_value=0, max_value=2**62),
    msg=st.one_of(st.text(max_size=300), st.binary(max_size=300)),
    host=st.sampled_from(["", "web-1", "db", "h\u00e9te"]) | names,
    source=st.sampled_from(["syslog", "journald", "file", "process"]),
    app=names,
    pid=st.none() | st.integers(min_value=0, max_value=2**32),
    severity=st.integers(min_value=0, max_value=7),
    facility=st.none() | st.integers(min_value=0, max_value=23),
    fields=st.dictionaries(names, values, max_size=5),
    origin=st.sampled_from(["", "a" * 32, "b" * 32]),
    seq=st.integers(min_value=0, max_value=2**62),
)


@given(st.lists(records, max_size=60))
@settings(max_examples=300)
def test_any_records_round_trip(batch):
    assert decode_chunk(encode_chunk(batch)) == batch


def test_non_utf8_message_stays_bytes():
    r = Record(ts=1, msg=b"caf\xe9 \xff\x00", fields={"raw": b"\x80"})
    (back,) = decode_chunk(encode_chunk([r]))
    assert back.msg == b"caf\xe9 \xff\x00" and isinstance(back.msg, bytes)
    assert back.fields == {"raw": b"\x80"}


def test_one_huge_message():
    r = Record(ts=5, msg="x" * (8 << 20), app="big")
    assert decode_chunk(encode_chunk([r])) == [r]


def test_hundred_thousand_records():
    batch = [Record(ts=1_700_000_000_000_000_000 + i * 1000, msg=f"line {i}", host="h",
                    app=f"app{i % 7}", pid=i % 300, severity=i % 8, seq=i + 1)
             for i in range(100_000)]
    data = encode_chunk(batch)
    assert decode_chunk(data) == batch
    # the dictionary holds each host/app/source/origin once, not per record
    columns = msgpack.unpackb(data)
    assert sorted(columns[2]) == sorted({"h", "", *{f"app{i}" for i in range(7)}})


def test_empty_chunk():
    assert decode_chunk(encode_chunk([])) == []


@pytest.mark.parametrize("data, problem", [
    (b"\xc1", "not valid msgpack"),
    (msgpack.packb({"a": 1}), "not a column array"),
    (msgpack.packb([CHUNK_VERSION + 1, 0]), "version"),
    (msgpack.packb([CHUNK_VERSION, 2] + [[]] * 14), "differ in length"),
])
def test_bad_chunks_are_chunk_errors(data, problem):
    with pytest.raises(ChunkError, match=problem):
        decode_chunk(data)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_chunk_error(data):
    try:
        decode_chunk(data)
    except ChunkError:
        pass


def test_columns_hold_the_records_they_are_made_of():
    records = [Record(ts=i, msg=f"m{i}", host="h", app=f"a{i % 2}", pid=i or None,
                      fields={"k": str(i)}) for i in range(5)]
    columns = Columns.of(records)
    assert len(columns) == 5 and list(columns) == records
    assert encode_columns(columns.columns) == encode_chunk(records)
    assert columns.text_bytes() == sum(len(r.msg) for r in records)
    more = Columns.of(records[:2])
    more.extend(Columns.of(records[2:]))
    assert more.records() == records
    more.truncate(3)
    assert more.records() == records[:3]
    with pytest.raises(ValueError):
        Columns([[1], [2]])
    with pytest.raises(ValueError):
        Columns([[0]] * 10 + [[]])


def test_columns_keep_what_their_maker_knew_through_extend_and_truncate():
    records = [Record(ts=i, msg="m" * i, fields={"k": "v"}) for i in range(4)]
    a = Columns.of(records[:2])
    a.text_size, a.fields_pool = 100, [records[0].fields, records[1].fields]
    b = Columns.of(records[2:])
    b.fields_pool = [records[2].fields, records[3].fields]
    merged = Columns([[] for _ in range(11)], fields_pool=[])
    merged.extend(a)
    merged.extend(b)  # b's size is measured: 2 + 3
    assert merged.text_bytes() == 105 and merged.fields_pool == [r.fields for r in records]
    merged.truncate(1)  # both stay bounds of what is left
    assert merged.text_bytes() == 105 and len(merged.fields_pool) == 4
    merged.extend(Columns.of(records[:1]))  # no pool known for these: none any more
    assert merged.fields_pool is None and merged.text_bytes() == 105
    # the columns by name are the lists by position, read and replaced
    assert merged.app is merged.columns[3] and merged.msg is merged.columns[7]
    merged.origin = ["x"] * len(merged)
    assert merged.columns[9] == ["x"] * len(merged)


@pytest.mark.parametrize("n", [3, 15, 16, 20, 70_000])
def test_stamped_columns_with_shared_dicts_encode_as_records(n):
    # a seq range (as the spool stamps) and fields dicts shared by rows (as the
    # syslog parser makes them) give the bytes of Records with their own
    shared = [{"msgid": "a", "peer": "p"}, {}, {"sd.x.y": b"\xff"}]
    columns = Columns([list(range(n)), ["h"] * n, ["syslog"] * n, ["app"] * n, [None] * n,
                       [6] * n, [1] * n, ["m"] * n, [shared[(i // 2) % 3] for i in range(n)],
                       ["o"] * n, range(1, n + 1)])
    records = columns.records()  # own dicts, a seq list
    assert encode_columns(columns.columns) == encode_chunk(records)
    assert decode_chunk(encode_columns(columns.columns)) == records


@given(st.lists(records, max_size=40), st.integers(0, 45), st.integers(0, 45))
@settings(max_examples=200)
def test_a_slice_of_columns_holds_those_rows_and_keeps_the_pool(batch, start, stop):
    columns = Columns.of(batch)
    columns.fields_pool = [r.fields for r in batch]
    piece = columns.slice(start, stop)
    assert piece.records() == batch[start:stop]
    assert piece.text_bytes() == sum(len(r.msg) for r in batch[start:stop])
    assert piece.fields_pool is columns.fields_pool  # still a bound of what the rows use
    if batch[start:stop]:
        assert decode_chunk(encode_columns(piece.columns)) == batch[start:stop]
    assert columns.records() == batch  # the batch sliced is left as it was
