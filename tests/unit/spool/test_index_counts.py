"""The footer's per-frame counts: what the writer counts, the counts block's
codec and place in the footer, and segments written before it existed."""

from __future__ import annotations

import os
import random
import struct
import zlib
from collections import Counter

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.record import Columns, Record
from hostlog.spool import frame as F
from hostlog.spool.index import CountsBuilder, _extra, frame_counts, unpack_counts
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.segment import SegmentReader
from hostlog.spool.spool import Spool

texts = st.sampled_from(["", "a", "nginx", "systemd", "ssh.service", "é"])
values = st.one_of(texts, st.binary(max_size=3), st.lists(texts, min_size=2, max_size=3))
field_maps = st.dictionaries(
    st.sampled_from(["_SYSTEMD_UNIT", "PRIORITY", "SYSLOG_IDENTIFIER", "_HOSTNAME", "_HOSTLOG_ABSENT",
                     "UNIT", "COREDUMP_UNIT", "OBJECT_SYSTEMD_UNIT", "_UID", "MESSAGE_ID", "_PID",
                     "_COMM", "OTHER"]), values, max_size=5)
records = st.builds(Record, ts=st.integers(0, 10**9), msg=st.just("m"), host=texts, source=texts,
                    app=texts, pid=st.one_of(st.none(), st.integers(0, 5)),
                    severity=st.integers(0, 7), fields=field_maps)


def reference(batch: Columns) -> Counter:
    """frame_counts() one record at a time, the obvious way."""
    counts: Counter = Counter()
    for r in batch.records():
        unit = r.fields.get("_SYSTEMD_UNIT")
        special = not isinstance(unit, (str, type(None))) or any(
            k in r.fields for k in ("PRIORITY", "SYSLOG_IDENTIFIER", "_HOSTNAME", "_HOSTLOG_ABSENT",
                                    "UNIT", "COREDUMP_UNIT", "OBJECT_SYSTEMD_UNIT"))
        counts[(r.host, r.source, r.app, r.severity, unit if isinstance(unit, str) else None,
                _extra(r.fields, r.pid) if special else None)] += 1
    return counts


@settings(max_examples=120, deadline=None)
@given(rows=st.lists(records, min_size=1, max_size=20), pooled=st.booleans())
def test_frame_counts_are_the_per_record_counts(rows, pooled):
    batch = Columns.of(rows)
    if pooled:  # rows sharing dicts, as the syslog collector hands them over
        pool = [r.fields for r in rows[:3]]
        batch.fields = [pool[i % len(pool)] for i in range(len(rows))]
        batch.fields_pool = pool
    counts = frame_counts(batch)
    assert Counter(counts) == reference(batch)
    assert sum(counts.values()) == len(rows)


def test_an_extra_holds_what_the_journal_view_and_unit_reports_read():
    f = {"PRIORITY": "06", "UNIT": "nginx.service", "_UID": "0", "MESSAGE_ID": "x", "_COMM": "systemd",
         "_SYSTEMD_UNIT": ["a", "b"]}
    assert dict(_extra(f, 1)) == {"PRIORITY": "06", "UNIT": "nginx.service", "_UID": "0",
                                  "MESSAGE_ID": "x", "_PID": "1", "_SYSTEMD_UNIT": ("a", "b")}
    # without a reported unit, no pid/uid/message id: they would split rows for nothing
    assert dict(_extra({"PRIORITY": "x", "_UID": "0"}, 7)) == {"PRIORITY": "x"}


@settings(max_examples=40, deadline=None)
@given(frames=st.lists(st.one_of(st.none(), st.lists(records, min_size=1, max_size=6)), max_size=5),
       before=st.integers(0, 3))
def test_the_counts_block_round_trips(frames, before):
    builder = CountsBuilder(frames_without=before)
    wanted = [None] * before
    for rows in frames:
        counts = None if rows is None else frame_counts(Columns.of(rows))
        builder.add(counts)
        wanted.append(counts)
    got = unpack_counts(builder.pack(), len(wanted))

    def decoded(flat):
        out = Counter()
        for k in range(0, len(flat), 7):
            h, s, a, sev, u, x, n = flat[k:k + 7]
            extra = None if x < 0 else tuple(sorted((name, tuple(v) if isinstance(v, list) else v)
                                                    for name, v in got.extras[x].items()))
            out[(got.strings[h], got.strings[s], got.strings[a], sev,
                 None if u < 0 else got.strings[u], extra)] += n
        return out

    assert [None if f is None else decoded(f) for f in got.frames] == [
        None if c is None else Counter(c) for c in wanted]
    if before or any(f is None for f in frames):
        assert got.totals is None
    else:
        assert decoded(got.totals) == sum((Counter(c) for c in wanted), Counter())
    with pytest.raises(ValueError, match="frames"):
        unpack_counts(builder.pack(), len(wanted) + 1)


def entries(n: int) -> list[F.IndexEntry]:
    return [F.IndexEntry(104 + i * 100, 1 + i * 10, 10, i, i + 1, 0x40, 7, 100, 900) for i in range(n)]


def test_a_footer_with_counts_round_trips_and_any_damage_reads_as_no_footer():
    key, salt = os.urandom(32), os.urandom(32)
    es = entries(3)
    footer = F.pack_footer(es, 123, b"the counts", key=key, salt=salt, offset=404)
    parsed = F.parse_footer(b"frames" + footer)
    assert parsed is not None and parsed.entries == es and parsed.size == len(footer)
    assert F.open_counts(parsed, key=key, salt=salt, segment_size=404 + len(footer)) == b"the counts"
    with pytest.raises(F.FrameAuthError):  # bound to its place
        F.open_counts(parsed, key=key, salt=salt, segment_size=405 + len(footer))
    # an older hostlog reads the index as before: the rows, then the trailer
    trailer = footer[-F.FOOTER_TRAILER_SIZE:]
    index = footer[-F.FOOTER_TRAILER_SIZE - int.from_bytes(trailer[:4], "little"):-F.FOOTER_TRAILER_SIZE]
    assert F.footer_index(index, trailer) == es
    for i in range(len(footer)):  # counts block, its trailer, the index (marked), the trailer
        damaged = bytearray(footer)
        damaged[i] ^= 0x01
        assert F.parse_footer(bytes(damaged)) is None, i


def test_an_old_footer_reads_without_counts_even_past_65535_frames():
    old = F.pack_footer(entries(3), 5)  # what an older hostlog wrote
    parsed = F.parse_footer(os.urandom(64) + old)
    assert parsed is not None and parsed.counts is None and parsed.size == len(old)
    # msgpack writes 65,536 rows or more with the header that marks a counts
    # block: an old footer that long is not taken for a damaged new one
    n = 65_536
    rows = msgpack.packb([[104 + i * 100, 1 + i, 1, 0, 1, 0x40, 7, 100, 900] for i in range(n)])
    assert rows[0] == 0xDD  # msgpack's own choice
    fields = struct.pack("<IIq", len(rows), n, 5)
    many = rows + struct.pack("<IIqI8s", len(rows), n, 5, zlib.crc32(rows + fields), F.FOOTER_MAGIC)
    parsed = F.parse_footer(many)
    assert parsed is not None and parsed.counts is None and len(parsed.entries) == n


def write(tmp_path, n_frames=12, segment_bytes=3000, seed=0):
    rnd = random.Random(seed)
    keyring = Keyring.load_or_create(tmp_path / "spool.key")
    spool = Spool.open(tmp_path / "spool", keyring, segment_bytes=segment_bytes)
    for f in range(n_frames):
        spool.append(Columns.of([Record(ts=10**18 + f * 1000 + i, msg=os.urandom(16).hex(), host="h",
                                        source="syslog", app=rnd.choice("abc"),
                                        severity=rnd.randrange(8)) for i in range(30)]))
    spool.close()
    return SpoolReader.open(tmp_path / "spool")


def test_sealed_segments_carry_counts_that_match_their_frames(tmp_path):
    reader = write(tmp_path)
    sealed = 0
    for path in reader.segment_paths():
        with SegmentReader(path, reader.keyring) as seg:
            index = seg.index()
            counts = seg.counts(index)
            if not index.sealed:
                assert counts is None  # the active segment: no footer yet
                continue
            sealed += 1
            assert counts is not None and len(counts.frames) == len(index.entries)
            for entry, rows in zip(index.entries, counts.frames):
                records = seg.read_frame(entry)
                got = Counter()
                for k in range(0, len(rows), 7):
                    got[(counts.strings[rows[k + 2]], rows[k + 3])] += rows[k + 6]
                assert got == Counter((r.app, r.severity) for r in records)
            # the verifying walk stops where the footer (counts block first) begins
            walked = seg.scan(verify=True)
            assert walked.sealed and not walked.damage and walked.entries == index.entries
    assert sealed >= 2


def test_segments_sealed_without_counts_still_read_and_recover_quietly(tmp_path):
    reader = write(tmp_path)
    for path in reader.segment_paths()[:-1]:
        with SegmentReader(path, reader.keyring) as seg:
            index = seg.index()
        data = path.read_bytes()
        # the footer an older hostlog wrote: no counts block, index not marked
        path.write_bytes(data[:index.end] + F.pack_footer(index.entries, index.sealed_ns or 1))
    reader = SpoolReader.open(tmp_path / "spool")
    for path in reader.segment_paths()[:-1]:
        with SegmentReader(path, reader.keyring) as seg:
            index = seg.index()
            assert index.sealed and seg.counts(index) is None
            assert seg.scan(verify=True).sealed
    assert len(list(reader.records())) == 12 * 30 and not reader.damage
    spool = Spool.open(tmp_path / "spool", Keyring.load(tmp_path / "spool.key"), segment_bytes=3000)
    try:
        assert not spool.recovery.damage
    finally:
        spool.close()


def test_a_damaged_counts_block_is_reported_by_recovery_and_costs_no_record(tmp_path):
    reader = write(tmp_path)
    path = reader.segment_paths()[0]
    with SegmentReader(path, reader.keyring) as seg:
        index = seg.index()
    data = bytearray(path.read_bytes())
    data[index.end + 20] ^= 0x80  # inside the counts block's ciphertext
    path.write_bytes(bytes(data))
    reader = SpoolReader.open(tmp_path / "spool")
    assert len(list(reader.records())) == 12 * 30
    spool = Spool.open(tmp_path / "spool", Keyring.load(tmp_path / "spool.key"), segment_bytes=3000)
    try:
        assert any(d.segment == path.name and "no footer" in d.reason for d in spool.recovery.damage)
    finally:
        spool.close()
