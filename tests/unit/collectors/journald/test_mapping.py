"""journald_map.entries_to_columns against journal_to_record, entry by entry.

The batch mapper is a second implementation of the mapping for speed; these
properties hold it to the first: same attributes, same fields in the same
order, for every entry, whatever shape (repeated fields, bytes that are not
UTF-8, NULs, reserved names, core fields missing, empty or not canonical).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.collectors.journald import mapping as journald_map
from hostlog.collectors.journald.mapping import entries_to_columns
from hostlog.journal.fields import journal_to_record

HOST = "agent-host"

NAMES = st.sampled_from([
    "MESSAGE", "PRIORITY", "_PID", "_HOSTNAME", "SYSLOG_IDENTIFIER", "SYSLOG_FACILITY", "_COMM",
    "_SYSTEMD_UNIT", "_SOURCE_REALTIME_TIMESTAMP", "CUSTOM", "OTHER_FIELD", "__SEQNUM",
    "_HOSTLOG_SEQ", "X"])
VALUES = st.one_of(
    st.sampled_from([b"", b"0", b"3", b"7", b"8", b"06", b"23", b"24", b"123", b"abc",
                     b"host", b"unit.service", b"caf\xc3\xa9", b"\xff\xfe", b"a\x00b",
                     b"line\nnext", b"1700000000000000"]),
    st.binary(max_size=12))
ENTRY = st.dictionaries(NAMES, st.one_of(VALUES, st.lists(VALUES, min_size=2, max_size=3)),
                        max_size=10)


def expected(entry, realtime, monotonic):
    record = journal_to_record({**entry, "__REALTIME_TIMESTAMP": realtime,
                                "__MONOTONIC_TIMESTAMP": monotonic})
    if not record.host:
        record.host = HOST
    return record


def shape(r):
    return (r.ts, r.msg, r.host, r.source, r.app, r.pid, r.severity, r.facility,
            list(r.fields.items()), r.origin, r.seq)


def common(i):
    """The shape nearly every real entry has (the fast path)."""
    return {"_BOOT_ID": b"0123", "_HOSTNAME": b"h", "_PID": str(100 + i).encode(),
            "_SYSTEMD_UNIT": b"cron.service", "PRIORITY": str(i % 8).encode(),
            "SYSLOG_FACILITY": b"3", "SYSLOG_IDENTIFIER": b"cron",
            "MESSAGE": f"line {i} \u00e9".encode()}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ENTRY, st.integers(0, 2**63), st.integers(0, 2**63)), max_size=12),
       st.integers(1, 5))
def test_every_entry_maps_as_journal_to_record_maps_it(batch, chunk):
    entries = [e for e, _, _ in batch]
    realtime = [rt for _, rt, _ in batch]
    monotonic = [mt for _, _, mt in batch]
    old_chunk = journald_map.CHUNK_ENTRIES
    journald_map.CHUNK_ENTRIES = chunk  # chunk edges fall anywhere
    try:
        got = entries_to_columns(entries, realtime, monotonic, HOST).records()
    finally:
        journald_map.CHUNK_ENTRIES = old_chunk
    assert [shape(r) for r in got] == [shape(expected(*t)) for t in batch]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(NAMES, VALUES), max_size=3), st.integers(0, 39))
def test_one_odd_entry_among_common_ones(odd, where):
    """The common entries around an odd one keep the fast path's answer."""
    entries = [common(i) for i in range(40)]
    entries[where] = {**entries[where], **dict(odd)}
    realtime = [1_700_000_000_000_000 + i for i in range(40)]
    monotonic = [5_000_000 + i for i in range(40)]
    got = entries_to_columns(entries, realtime, monotonic, HOST).records()
    assert [shape(r) for r in got] == [shape(expected(*t)) for t in zip(entries, realtime, monotonic)]


def test_the_columns_are_a_batch_the_spool_takes_as_it_is():
    entries = [common(i) for i in range(3)]
    columns = entries_to_columns(entries, [1, 2, 3], [4, 5, 6], HOST)
    assert len(columns) == 3
    assert columns.columns[2] == ["journald"] * 3      # source
    assert columns.columns[9] == [""] * 3              # origin: the spool stamps it
    assert columns.columns[0] == [1000, 2000, 3000]    # ns
    fields = columns.columns[8]
    assert len({id(f) for f in fields}) == 3           # a dict per row
    assert list(fields[0]) == ["_BOOT_ID", "_SYSTEMD_UNIT", "__MONOTONIC_TIMESTAMP"]
    assert entries[0]["MESSAGE"] == b"line 0 \xc3\xa9"  # the raw entries are left as they were
