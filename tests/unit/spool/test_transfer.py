"""The export file's codec (spool/transfer.py): every record back exactly,
in both formats, however the stream is cut; the held-seq runs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.record import Record
from hostlog.spool.transfer import (
    HeldSeqs,
    entry_record,
    format_entry,
    format_json_line,
    parse_stream,
)

NAME = st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True)
VALUE = st.one_of(st.text(max_size=12), st.binary(max_size=12))
RECORD = st.builds(
    Record, ts=st.integers(0, 2**62), msg=st.one_of(st.text(max_size=40), st.binary(max_size=40)),
    host=st.text(max_size=6), source=st.sampled_from(["syslog", "file", "journald", "process"]),
    app=st.text(max_size=6), pid=st.one_of(st.none(), st.integers(0, 2**22)),
    severity=st.integers(0, 7), facility=st.one_of(st.none(), st.integers(0, 23)),
    fields=st.dictionaries(NAME, st.one_of(VALUE, st.lists(VALUE, min_size=2, max_size=3)), max_size=4),
    origin=st.text("0123456789abcdef", min_size=32, max_size=32), seq=st.integers(1, 2**40))


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    out, i = [], 0
    for size in sizes:
        out.append(data[i:i + size])
        i += size
    out.append(data[i:])
    return out


@settings(max_examples=200, deadline=None)
@given(records=st.lists(RECORD, max_size=8), fmt=st.sampled_from(["export", "json"]),
       sizes=st.lists(st.integers(0, 60), max_size=20))
def test_every_record_comes_back_exactly(records: list[Record], fmt: str, sizes: list[int]) -> None:
    write = format_entry if fmt == "export" else format_json_line
    data = b"".join(write(r) for r in records)
    back = [entry_record(e) for e in parse_stream(cut(data, sizes))]
    assert back == records


def test_an_entry_without_the_record_field_maps_its_journal_view() -> None:
    data = (b"__REALTIME_TIMESTAMP=1700000000000001\nMESSAGE=hello\nSYSLOG_IDENTIFIER=app\n"
            b"PRIORITY=3\n_HOSTNAME=h\n_HOSTLOG_SOURCE=syslog\n_HOSTLOG_ORIGIN=" + b"a" * 32
            + b"\n_HOSTLOG_SEQ=17\n\n")
    (record,) = [entry_record(e) for e in parse_stream([data])]
    assert (record.msg, record.app, record.severity, record.host, record.source) == \
        ("hello", "app", 3, "h", "syslog")
    assert (record.origin, record.seq, record.ts) == ("a" * 32, 17, 1_700_000_000_000_001_000)


@settings(max_examples=200, deadline=None)
@given(seqs=st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 60)), max_size=80))
def test_held_seqs_is_a_set(seqs: list[tuple[str, int]]) -> None:
    held, model = HeldSeqs(), set()
    for origin, seq in seqs:
        assert held.held(origin, seq) == ((origin, seq) in model)
        held.add(origin, seq)
        model.add((origin, seq))
    for runs in held.runs.values():
        assert all(lo <= hi for lo, hi in runs)
        assert all(a[1] + 1 < b[0] for a, b in zip(runs, runs[1:]))  # disjoint, not touching
    for origin in "ab":
        for seq in range(0, 62):
            assert held.held(origin, seq) == ((origin, seq) in model)
