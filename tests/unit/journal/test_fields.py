"""Journal entries <-> records, and the Journal Export Format codec.

Real material: shared/corpora/journald/fixture/fixture.export (14 entries written
by mk_export.py, the input systemd-journal-remote turned into the journal the
recorded queries read) and the `-o export` outputs of journalctl 252 recorded in
journalctl_queries.jsonl. Format reference: systemd docs/JOURNAL_EXPORT_FORMATS.md
(summarised in NOTES.md §1).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.chunk import decode_chunk, encode_chunk
from hostlog.journal.fields import (
    ABSENT_FIELD,
    ExportFormatError,
    ExportParser,
    entry_items,
    field_values,
    format_cursor,
    format_export_entry,
    is_printable,
    is_valid_field_name,
    journal_to_record,
    parse_cursor,
    parse_export,
    record_to_journal,
    to_entry,
)
from hostlog.record import Record
from tests.conftest import need

JOURNALD = Path(__file__).resolve().parents[3] / ".." / "shared" / "corpora" / "journald"
HOSTLOG_KEYS = {"__CURSOR", "_HOSTLOG_SOURCE", "_HOSTLOG_ORIGIN", "_HOSTLOG_SEQ"}


def corpus_file(name: str) -> Path:
    path = JOURNALD / "fixture" / name
    if not path.is_file():
        need(False, f"{path}")
    return path


# --- the export format on real material ---------------------------------------------

def test_fixture_export_parses_into_its_14_entries() -> None:
    entries = parse_export(corpus_file("fixture.export").read_bytes())
    assert len(entries) == 14
    assert all(e["_HOSTNAME"] == [b"fixturehost"] for e in entries)
    # binary form: MESSAGE\n + le64 length + raw bytes + \n (NOTES §1, observed)
    assert entries[9]["MESSAGE"] == [b"bytes \x00\x01\xff not utf8"]
    assert entries[8]["MESSAGE"] == [b"first line\nsecond line\n\tindented third"]
    assert entries[10]["TAG"] == [b"one", b"two"]  # a repeated name = several values
    assert "PRIORITY" not in entries[12]
    assert entries[11]["MESSAGE"] == ["ünïcödé ✓ 日本語".encode()]
    assert list(entries[0])[:3] == ["__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP", "_BOOT_ID"]


def test_recorded_journalctl_export_output_parses_and_reencodes_byte_for_byte() -> None:
    lines = corpus_file("journalctl_queries.jsonl").read_text().splitlines()
    queries = [json.loads(line) for line in lines]
    exports = [q for q in queries if q["args"][1:3] == ["-o", "export"] and q["rc"] == 0]
    assert len(exports) == 3  # all entries, -t binary, -t multiline
    for q in exports:
        raw = base64.b64decode(q["stdout_b64"])
        entries = parse_export(raw)
        assert len(entries) == (1 if "-t" in q["args"] else 14)
        # our writer picks the text or the binary form exactly as journalctl did
        assert b"".join(format_export_entry(entry_items(e)) for e in entries) == raw


def test_fixture_maps_onto_records() -> None:
    records = [journal_to_record(e) for e in parse_export(corpus_file("fixture.export").read_bytes())]
    first = records[0]
    assert (first.ts, first.host, first.app, first.severity, first.facility, first.msg) == (
        1_700_000_000_123_456_000, "fixturehost", "kernel", 0, 0, "emerg: kernel panic - not syncing")
    assert first.source == "journald" and first.pid is None
    assert first.fields == {"__MONOTONIC_TIMESTAMP": "1000000",
                            "_BOOT_ID": "0123456789abcdef0123456789abcdef",
                            "_MACHINE_ID": "fedcba9876543210fedcba9876543210",
                            "_TRANSPORT": "syslog"}
    assert records[1].fields["SYSLOG_PID"] == "1001"  # SYSLOG_PID is not _PID
    assert records[9].msg == b"bytes \x00\x01\xff not utf8"
    assert records[10].fields["TAG"] == ["one", "two"]
    assert records[12].fields[ABSENT_FIELD] == "PRIORITY"
    assert records[13].facility == 23
    # records (lists for repeated fields included) survive the chunk codec
    assert decode_chunk(encode_chunk(records)) == records


# --- the mapping, field by field ------------------------------------------------------

def entry(**fields: bytes | list[bytes]) -> dict[str, list[bytes]]:
    return {k: (v if isinstance(v, list) else [v]) for k, v in fields.items()}


def test_identifier_falls_back_to_comm_and_the_unit_stays_queryable() -> None:
    r = journal_to_record(entry(__REALTIME_TIMESTAMP=b"5", _COMM=b"sshd", _PID=b"42",
                                _SYSTEMD_UNIT=b"ssh.service", PRIORITY=b"5", MESSAGE=b"hi"))
    assert (r.app, r.pid, r.severity, r.ts) == ("sshd", 42, 5, 5000)
    assert r.fields["_SYSTEMD_UNIT"] == "ssh.service" and r.fields["_COMM"] == "sshd"
    journal = record_to_journal(r)
    assert "SYSLOG_IDENTIFIER" not in journal  # the entry had none
    assert field_values(r, "_SYSTEMD_UNIT") == [b"ssh.service"]
    assert field_values(r, "SYSLOG_IDENTIFIER") == []


def test_source_realtime_is_the_fallback_time() -> None:
    r = journal_to_record(entry(_SOURCE_REALTIME_TIMESTAMP=b"1700000000000001", MESSAGE=b"x"))
    assert r.ts == 1_700_000_000_000_001_000
    assert r.fields[ABSENT_FIELD] == "__REALTIME_TIMESTAMP PRIORITY"
    assert "__REALTIME_TIMESTAMP" not in record_to_journal(r)


def test_journal_metadata_and_hostlog_identity_fields_are_dropped() -> None:
    r = journal_to_record(entry(__CURSOR=b"s=1;i=2", __SEQNUM=b"7", __SEQNUM_ID=b"ab",
                                __REALTIME_TIMESTAMP=b"1", __MONOTONIC_TIMESTAMP=b"99",
                                _HOSTLOG_ORIGIN=b"other", _HOSTLOG_SEQ=b"12",
                                _HOSTLOG_ABSENT=b"MESSAGE", MESSAGE=b"m", PRIORITY=b"6"))
    assert r.fields == {"__MONOTONIC_TIMESTAMP": "99"}
    assert (r.source, r.origin, r.seq) == ("journald", "", 0)


@pytest.mark.parametrize("name,values,attr,expected", [
    ("PRIORITY", [b"06"], "severity", 6),
    ("PRIORITY", [b"x"], "severity", 6),
    ("PRIORITY", [b"3", b"5"], "severity", 5),  # journalctl shows the last one
    ("_PID", [b"abc"], "pid", None),
    ("_PID", [b"007"], "pid", None),
    ("_PID", [b"1", b"2"], "pid", None),
    ("SYSLOG_FACILITY", [b"24"], "facility", None),
    ("_HOSTNAME", [b""], "host", ""),
    ("_HOSTNAME", [b"a", b"b"], "host", "b"),
    ("_HOSTNAME", [b"\xff"], "host", ""),
    ("SYSLOG_IDENTIFIER", [b"\xff"], "app", ""),
    ("MESSAGE", [b"one", b"two"], "msg", "two"),
    ("__REALTIME_TIMESTAMP", [b"12x"], "ts", 0),
])
def test_core_values_that_do_not_fit_stay_raw_and_win_in_the_journal_view(
        name: str, values: list[bytes], attr: str, expected: object) -> None:
    e = {"__REALTIME_TIMESTAMP": [b"1"], "MESSAGE": [b"m"], "PRIORITY": [b"4"], **{name: values}}
    r = journal_to_record(e)
    assert getattr(r, attr) == expected
    assert field_values(r, name) == values
    assert to_entry(record_to_journal(r))[name] == values


def test_binary_and_repeated_values_keep_their_bytes() -> None:
    r = journal_to_record(entry(MESSAGE=b"ok", BLOB=b"\x00\xff", TAG=[b"a", b"\xfe"], TXT=b"\xc3\xa9"))
    assert r.fields["BLOB"] == b"\x00\xff"
    assert r.fields["TAG"] == ["a", b"\xfe"]
    assert r.fields["TXT"] == "é"
    assert field_values(r, "TAG") == [b"a", b"\xfe"]


def test_records_from_other_sources_have_a_journal_view() -> None:
    r = Record(ts=1_700_000_000_123_456_789, msg="hello", host="web-1", source="syslog",
               app="nginx", pid=7, severity=3, facility=16,
               fields={"SD_ID": "x", "LIST": ["a", b"\xff"]}, origin="ab" * 16, seq=9)
    assert record_to_journal(r) == {
        "__CURSOR": "abababababababababababababababab:9",
        "__REALTIME_TIMESTAMP": "1700000000123456",
        "_HOSTNAME": "web-1", "PRIORITY": "3", "SYSLOG_FACILITY": "16",
        "SYSLOG_IDENTIFIER": "nginx", "_PID": "7", "MESSAGE": "hello",
        "SD_ID": "x", "LIST": ["a", b"\xff"],
        "_HOSTLOG_SOURCE": "syslog", "_HOSTLOG_ORIGIN": "ab" * 16, "_HOSTLOG_SEQ": "9"}
    assert list(record_to_journal(r))[:2] == ["__CURSOR", "__REALTIME_TIMESTAMP"]
    assert field_values(r, "__CURSOR") == [b"abababababababababababababababab:9"]
    assert field_values(r, "NOPE") == [] and field_values(r, "_HOSTLOG_ABSENT") == []
    bare = Record(ts=0, msg=b"\xff")
    assert "_HOSTNAME" not in record_to_journal(bare) and "_PID" not in record_to_journal(bare)
    assert record_to_journal(bare)["MESSAGE"] == b"\xff"


def test_cursor_round_trip() -> None:
    assert parse_cursor(format_cursor("0f" * 16, 42)) == ("0f" * 16, 42)
    assert parse_cursor("a:b:3") == ("a:b", 3)
    for bad in ("", "abc", "a:", "a:-1", "a:x", "a:\u0663"):
        with pytest.raises(ValueError):
            parse_cursor(bad)


@pytest.mark.parametrize("value,printable,printable_no_nl", [
    (b"plain", True, True), (b"tab\there", True, True), (b"two\nlines", True, False),
    (b"", True, True), (b"nul\x00", False, False), (b"\x1b[1m", False, False),
    (b"cr\r", False, False), (b"\x7f", False, False), ("\u0085".encode(), False, False),
    ("ünï ✓ 日本".encode(), True, True), (b"\xff", False, False), (b"\xc0\x80", False, False),
    ("\ufffe".encode(), False, False), ("\ufdd0".encode(), False, False),
    ("\U0001ffff".encode(), False, False), ("\U0001f600".encode(), True, True),
])
def test_printability_is_systemds(value: bytes, printable: bool, printable_no_nl: bool) -> None:
    assert is_printable(value) is printable
    assert is_printable(value, allow_newline=False) is printable_no_nl


@pytest.mark.parametrize("name,ok", [
    ("MESSAGE", True), ("_PID", True), ("__CURSOR", True), ("A" * 64, True), ("A" * 65, False),
    ("", False), ("1ABC", False), ("lower", False), ("A-B", False), ("ÄB", False)])
def test_field_names_follow_journald(name: str, ok: bool) -> None:
    assert is_valid_field_name(name) is ok


# --- the export parser's edges ------------------------------------------------------

def test_export_parser_edges() -> None:
    blob = b"MESSAGE\n" + (3).to_bytes(8, "little") + b"a\nb\n"
    assert parse_export(b"A=1\n" + blob + b"\n\n\nB=2\n") == [
        {"A": [b"1"], "MESSAGE": [b"a\nb"]}, {"B": [b"2"]}]  # the last entry needs no blank line
    assert parse_export(b"") == [] and parse_export(b"\n\n") == []
    # invalid names are skipped, as systemd-journal-remote does
    assert parse_export(b"lower=1\n=2\nOK=3\n\n") == [{"OK": [b"3"]}]
    assert parse_export(b"bad name\n" + (1).to_bytes(8, "little") + b"x\nOK=1\n\n") == [{"OK": [b"1"]}]
    assert parse_export(b"E\n" + bytes(8) + b"\n\n") == [{"E": [b""]}]
    assert parse_export(b"V=a=b\n\n") == [{"V": [b"a=b"]}]
    for broken in (b"A=1", b"MESSAGE\n\x03\x00", blob[:-1], blob[:-1] + b"X",
                   b"M\n" + (2**40).to_bytes(8, "little")):
        with pytest.raises(ExportFormatError):
            parse_export(broken)


field_names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,63}", fullmatch=True)
entries = st.dictionaries(field_names, st.lists(st.binary(max_size=40), min_size=1, max_size=3),
                          min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(entries, max_size=4), st.data())
def test_export_round_trips_in_any_split(items: list[dict[str, list[bytes]]], data: st.DataObject) -> None:
    stream = b"".join(format_export_entry(entry_items(e)) for e in items)
    assert parse_export(stream) == items
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    parser, got, start = ExportParser(), [], 0
    for cut in cuts + [len(stream)]:
        got += parser.feed(stream[start:cut])
        start = cut
    assert got + parser.close() == items


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_export_parser_fails_only_with_its_own_error(data: bytes) -> None:
    try:
        result = parse_export(data)
    except ExportFormatError:
        return
    assert all(e and all(is_valid_field_name(k) and v for k, v in e.items()) for e in result)


# --- mapping round trips ------------------------------------------------------------

def _text_or_bytes(raw: bytes) -> str | bytes:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


values = st.binary(max_size=20).map(_text_or_bytes)
plain_names = field_names.filter(lambda n: not n.startswith("_HOSTLOG_") and not n.startswith("__")
                                 and n not in {"_HOSTNAME", "PRIORITY", "SYSLOG_FACILITY",
                                               "SYSLOG_IDENTIFIER", "_PID", "MESSAGE", "_COMM"})
records = st.builds(
    Record,
    ts=st.integers(0, 2**62).map(lambda n: n - n % 1000),  # journal time is in µs
    msg=values,
    host=st.text(max_size=10),
    source=st.just("journald"),
    app=st.text(max_size=10),
    pid=st.none() | st.integers(0, 2**31),
    severity=st.integers(0, 7),
    facility=st.none() | st.integers(0, 23),
    fields=st.dictionaries(plain_names, values | st.lists(values, min_size=2, max_size=3), max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(records)
def test_record_to_journal_and_back_is_identity(record: Record) -> None:
    back = journal_to_record(to_entry(record_to_journal(record)))
    assert back == record


core_names = st.sampled_from(["__REALTIME_TIMESTAMP", "_HOSTNAME", "PRIORITY", "SYSLOG_FACILITY",
                              "SYSLOG_IDENTIFIER", "_PID", "MESSAGE", "_COMM",
                              "_SOURCE_REALTIME_TIMESTAMP", "__CURSOR", "__MONOTONIC_TIMESTAMP",
                              "__SEQNUM", "_HOSTLOG_SEQ", "_HOSTLOG_ABSENT", "_BOOT_ID"])
core_values = st.sampled_from([b"", b"0", b"3", b"06", b"7", b"8", b"23", b"24", b"42",
                               b"1700000000123456", b"x", b"\xff", "é".encode(), b"a\nb"])
raw_entries = st.dictionaries(core_names | field_names,
                              st.lists(core_values | st.binary(max_size=10), min_size=1, max_size=3),
                              max_size=10)


@settings(max_examples=500, deadline=None)
@given(raw_entries)
def test_journal_to_record_and_back_keeps_every_kept_field(e: dict[str, list[bytes]]) -> None:
    record = journal_to_record(e)
    view = to_entry(record_to_journal(record))
    dropped = {k for k in e if (k.startswith("__") and k not in
                                ("__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP"))
               or k.startswith("_HOSTLOG_")}
    expected = {k: v for k, v in e.items() if k not in dropped}
    assert {k: v for k, v in view.items() if k not in HOSTLOG_KEYS} == expected
    for name in expected:  # field_values agrees with the full view
        assert field_values(record, name) == expected[name]
    # and the record is storable as such
    assert decode_chunk(encode_chunk([record])) == [record]
