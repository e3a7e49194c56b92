"""The spool: frames, recovery, damage, keys, lock, retention."""

import os
import time
from pathlib import Path

import pytest

from hostlog.chunk import decode_chunk
from hostlog.errors import KeyFileError, SpoolLockedError, WrongKeyError
from hostlog.record import Columns, Record
from hostlog.spool import frame as F
from hostlog.spool.index import app_bloom_bits
from hostlog.spool.inspect import collect_stats
from hostlog.spool.keys import Keyring, add_key, create_key_file
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool

SECRET = "the-secret-message-text"


def recs(n, start=0, app="app", msg=SECRET):
    # a random tail so frames compress like real logs do, not like a repeated line
    return Columns.of([Record(ts=1_700_000_000_000_000_000 + (start + i) * 1_000_000,
                              msg=f"{msg} {start + i} {os.urandom(12).hex()}",
                              host="h", app=app, source="syslog", severity=(start + i) % 8)
                       for i in range(n)])


@pytest.fixture
def keyring(tmp_path):
    return Keyring.load_or_create(tmp_path / "spool.key")


def open_spool(tmp_path, keyring, **kw):
    return Spool.open(tmp_path / "spool", keyring, **kw)


def read_all(tmp_path, keyring=None):
    reader = SpoolReader.open(tmp_path / "spool")
    return [(seq, r.msg) for seq, r in reader.records()], reader


def test_records_get_origin_and_seq_and_read_back(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring)
    assert spool.append(recs(3)) == (1, 3)
    assert spool.append(recs(2, 3)) == (4, 5)
    spool.sync()
    spool.close()
    got, _ = read_all(tmp_path)
    assert [(seq, m.rsplit(" ", 1)[0]) for seq, m in got] == [(i + 1, f"{SECRET} {i}") for i in range(5)]
    reader = SpoolReader.open(tmp_path / "spool")
    origins = {r.origin for _, r in reader.records()}
    assert len(origins) == 1 and len(origins.pop()) == 32


def test_forwarded_records_keep_their_identity(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring)
    batch = recs(2)
    batch.origin[0], batch.seq[0] = "c" * 32, 77
    spool.append(batch)
    spool.close()
    reader = SpoolReader.open(tmp_path / "spool")
    got = [(seq, r.origin, r.seq) for seq, r in reader.records()]
    assert got[0] == (1, "c" * 32, 77)
    assert got[1][0] == 2 and got[1][2] == 2 and got[1][1] != "c" * 32


def test_key_file_is_created_private(tmp_path, keyring):
    assert (tmp_path / "spool.key").stat().st_mode & 0o777 == 0o600


def test_no_message_text_is_readable_in_spool_files(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring, segment_bytes=4 * 1024)
    for i in range(20):
        spool.append(recs(200, i * 200))
    spool.close()
    files = list((tmp_path / "spool").rglob("*"))
    assert len([f for f in files if f.suffix == ".seg"]) > 1
    for f in files:
        if f.is_file():
            data = f.read_bytes()
            assert SECRET.encode() not in data and b"secret" not in data, f


def test_rotation_seals_segments_with_a_footer(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring, segment_bytes=32 * 1024)
    for i in range(30):
        spool.append(recs(100, i * 100))
    spool.close()
    reader = SpoolReader.open(tmp_path / "spool")
    paths = reader.segment_paths()
    assert len(paths) > 2
    for p in paths[:-1]:
        seg = reader.open_segment(p)
        assert seg.index().sealed
        seg.close()
    got = [seq for seq, _ in reader.records()]
    assert got == list(range(1, 3001))


def last_frame_span(path: Path) -> tuple[int, int]:
    reader = SpoolReader.open(path.parent.parent)
    with reader.open_segment(path) as seg:
        e = seg.index().entries[-1]
    return e.offset, e.offset + e.size


def test_truncating_the_last_frame_at_every_offset_keeps_every_earlier_frame(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring)
    spool.append(recs(5))
    spool.append(recs(5, 5))
    spool.append(recs(5, 10))
    spool.close()
    (seg_path,) = (tmp_path / "spool" / "segments").iterdir()
    original = seg_path.read_bytes()
    start, end = last_frame_span(seg_path)
    assert end == len(original)
    for cut in range(start, end):
        seg_path.write_bytes(original[:cut])
        spool = open_spool(tmp_path, keyring)
        assert spool.next_seq == 11, cut  # the cut frame is gone, the others stay
        assert spool.recovery.truncated_bytes == cut - start
        spool.close()
        assert seg_path.stat().st_size == start  # the torn tail was cut off
        got, reader = read_all(tmp_path)
        assert [s for s, _ in got] == list(range(1, 11)), cut
        assert not reader.damage
    # and writing goes on after recovery, with the next seq
    spool = open_spool(tmp_path, keyring)
    assert spool.append(recs(1, 99)) == (11, 11)
    spool.close()


def test_a_flipped_byte_in_a_sealed_frame_is_reported_and_the_rest_read(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring, segment_bytes=16 * 1024)
    for i in range(12):
        spool.append(recs(50, i * 50))
    spool.close()
    reader = SpoolReader.open(tmp_path / "spool")
    first = reader.segment_paths()[0]
    with reader.open_segment(first) as seg:
        index = seg.index()
        assert index.sealed and len(index.entries) >= 2
        victim = index.entries[1]
    data = bytearray(first.read_bytes())
    data[victim.offset + F.FRAME_HEADER_SIZE + 7] ^= 0x01  # inside the payload
    first.write_bytes(bytes(data))
    got, reader = read_all(tmp_path)
    lost = set(range(victim.first_seq, victim.first_seq + victim.count))
    assert [s for s, _ in got] == [s for s in range(1, 601) if s not in lost]
    assert len(reader.damage) == 1 and "authentication failed" in reader.damage[0].reason
    assert reader.damage[0].first_seq == victim.first_seq
    # recovery reports it too, and does not die
    spool = open_spool(tmp_path, keyring, segment_bytes=16 * 1024)
    spool.close()
    stats = collect_stats(SpoolReader.open(tmp_path / "spool"), verify=True)
    assert len(stats.damage) == 1 and stats.records == 600 - len(lost)


def test_a_flipped_byte_in_a_frame_header_is_skipped_by_the_footer_index(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring, segment_bytes=16 * 1024)
    for i in range(12):
        spool.append(recs(50, i * 50))
    spool.close()
    reader = SpoolReader.open(tmp_path / "spool")
    first = reader.segment_paths()[0]
    with reader.open_segment(first) as seg:
        victim = seg.index().entries[0]
    data = bytearray(first.read_bytes())
    data[victim.offset + 10] ^= 0xFF  # the header's key id
    first.write_bytes(bytes(data))
    got, reader = read_all(tmp_path)
    assert [s for s, _ in got] == list(range(victim.count + 1, 601))
    assert len(reader.damage) == 1


def test_a_frame_moved_to_another_place_fails_authentication(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring)
    spool.append(recs(3))
    spool.append(recs(3, 3))
    spool.close()
    (seg_path,) = (tmp_path / "spool" / "segments").iterdir()
    reader = SpoolReader.open(tmp_path / "spool")
    with reader.open_segment(seg_path) as seg:
        a, b = seg.index().entries
    data = seg_path.read_bytes()
    frame_a = data[a.offset:a.offset + a.size]
    # append a copy of frame A after frame B: right header, wrong place
    seg_path.write_bytes(data + frame_a)
    reader = SpoolReader.open(tmp_path / "spool")
    with reader.open_segment(seg_path) as seg:
        index = seg.scan(verify=True)
    assert [e.first_seq for e in index.entries] == [1, 4]
    assert index.damage and "authentication failed" in index.damage[0].reason


def test_a_frame_copied_into_another_segment_fails_authentication(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring, segment_bytes=200)  # a segment per frame
    spool.append(recs(20))
    spool.append(recs(20, 20))
    spool.close()
    reader = SpoolReader.open(tmp_path / "spool")
    p1, p2 = reader.segment_paths()[:2]
    with reader.open_segment(p1) as s1, reader.open_segment(p2) as s2:
        e1, e2 = s1.index().entries[0], s2.index().entries[0]
    d1, d2 = p1.read_bytes(), p2.read_bytes()
    assert e1.offset == e2.offset  # the same place in each file: only the segment differs
    frame1 = d1[e1.offset:e1.offset + e1.size]
    p2.write_bytes(d2[:e2.offset] + frame1)  # segment 2 now holds segment 1's frame
    reader = SpoolReader.open(tmp_path / "spool")
    with reader.open_segment(p2) as seg:
        index = seg.scan(verify=True)
    assert index.entries == [] and "authentication failed" in index.damage[0].reason


def test_wrong_key_is_a_clear_error_naming_the_key_id(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring)
    spool.append(recs(3))
    spool.close()
    other = tmp_path / "other.key"
    create_key_file(other)
    with pytest.raises(WrongKeyError, match="key id 1 .*other.key.* is not the key"):
        list(SpoolReader.open(tmp_path / "spool", other).records())
    create_key_file(tmp_path / "k7.key", key_id=7)
    with pytest.raises(KeyFileError, match="key id 1 is not in the key file .*k7.key.*has key ids: 7"):
        list(SpoolReader.open(tmp_path / "spool", tmp_path / "k7.key").records())
    with pytest.raises(WrongKeyError):
        open_spool(tmp_path, Keyring.load(other))


def test_old_key_ids_stay_readable_after_key_rotation(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring, segment_bytes=1024)
    spool.append(recs(20))
    spool.close()
    assert add_key(tmp_path / "spool.key") == 2
    ring = Keyring.load(tmp_path / "spool.key")
    assert ring.current_id == 2
    spool = open_spool(tmp_path, ring, segment_bytes=1024)
    spool.rotate()
    spool.append(recs(20, 20))
    spool.close()
    got, reader = read_all(tmp_path)
    assert [s for s, _ in got] == list(range(1, 41)) and not reader.damage
    key_ids = set()
    for p in reader.segment_paths():
        with reader.open_segment(p) as seg:
            key_ids.add(seg.header.key_id)
    assert key_ids == {1, 2}


def test_two_writers_never_share_a_spool(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring)
    with pytest.raises(SpoolLockedError, match=f"pid {os.getpid()}"):
        open_spool(tmp_path, keyring)
    spool.close()
    open_spool(tmp_path, keyring).close()


def test_retention_by_bytes_drops_the_oldest_sealed_segments(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring, segment_bytes=8 * 1024, max_bytes=40 * 1024)
    for i in range(60):
        spool.append(recs(50, i * 50, msg=os.urandom(8).hex()))
    assert spool.total_bytes <= 40 * 1024 + 8 * 1024 + 4096
    spool.close()
    got, _ = read_all(tmp_path)
    seqs = [s for s, _ in got]
    assert seqs[-1] == 3000 and seqs[0] > 1
    assert seqs == list(range(seqs[0], 3001))  # what is left is contiguous


def test_retention_keeps_what_a_destination_has_not_acknowledged(tmp_path, keyring):
    from hostlog.errors import SpoolFullError
    from hostlog.spool.state import write_json

    spool = open_spool(tmp_path, keyring, segment_bytes=8 * 1024, max_bytes=24 * 1024)
    write_json(tmp_path / "spool" / "state" / "cursors" / "central.json", {"acked_seq": 0})
    with pytest.raises(SpoolFullError, match="on_full = block"):
        for i in range(200):
            spool.append(recs(50, i * 50, msg=os.urandom(8).hex()))
    assert spool.segments[0].first_seq == 1  # nothing unacknowledged was dropped
    spool.close()
    spool = open_spool(tmp_path, keyring, segment_bytes=8 * 1024, max_bytes=24 * 1024,
                       on_full="drop_oldest")
    spool.append(recs(50, 0, msg=os.urandom(8).hex()))
    spool.rotate()
    assert spool.dropped_records > 0 and spool.segments[0].first_seq > 1
    spool.close()


def test_retention_by_age(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring, segment_bytes=4 * 1024, max_age=3600)
    for i in range(10):
        spool.append(recs(50, i * 50))
    n = len(spool.segments)
    assert n > 2
    assert spool.enforce_retention(now_ns=time.time_ns()) == []
    removed = spool.enforce_retention(now_ns=time.time_ns() + 2 * 3600 * 10**9)
    assert len(removed) == n - 1 and len(spool.segments) == 1  # only the active one stays
    spool.close()


def test_a_segment_whose_header_never_reached_disk_is_replaced(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring)
    spool.append(recs(3))
    spool.rotate()
    spool.close()
    newest = sorted((tmp_path / "spool" / "segments").iterdir())[-1]
    newest.write_bytes(b"")  # crash between O_EXCL create and the header write
    spool = open_spool(tmp_path, keyring)
    assert spool.next_seq == 4
    spool.close()


def test_damage_in_the_middle_of_the_active_segment_cuts_it_there(tmp_path, keyring):
    # After a power loss the unsynced tail may have holes: frames past one must
    # not survive, or a source would resume after records that are not there.
    spool = open_spool(tmp_path, keyring)
    spool.append(recs(3))
    spool.append(recs(3, 3))
    spool.append(recs(3, 6))
    spool.close()
    (seg_path,) = (tmp_path / "spool" / "segments").iterdir()
    reader = SpoolReader.open(tmp_path / "spool")
    with reader.open_segment(seg_path) as seg:
        second = seg.index().entries[1]
    data = bytearray(seg_path.read_bytes())
    data[second.offset + F.FRAME_HEADER_SIZE + 3] ^= 0xFF  # inside frame 2's payload
    seg_path.write_bytes(bytes(data))
    spool = open_spool(tmp_path, keyring)
    assert spool.next_seq == 4 and len(spool.recovery.damage) == 1  # frame 1 kept, 2 and 3 cut
    assert spool.recovery.truncated_bytes == len(data) - second.offset
    spool.close()
    assert seg_path.stat().st_size == second.offset


def test_a_segment_with_a_damaged_header_is_moved_aside_and_writing_goes_on(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring, segment_bytes=200)
    spool.append(recs(20))
    spool.append(recs(20, 20))
    spool.close()
    newest = sorted((tmp_path / "spool" / "segments").glob("*.seg"))[-1]
    data = bytearray(newest.read_bytes())
    data[20] ^= 0xFF  # inside the segment header (agent id)
    newest.write_bytes(bytes(data))
    spool = open_spool(tmp_path, keyring, segment_bytes=200)
    assert [d for d in spool.recovery.damage if "moved aside" in d.reason]
    first, _ = spool.append(recs(1, 99))  # a new segment takes the damaged one's seqs
    spool.close()
    assert newest.with_name(newest.name + ".damaged").exists()
    spool = open_spool(tmp_path, keyring, segment_bytes=200)  # and it opens again cleanly
    assert not spool.recovery.damage and spool.next_seq == first + 1
    spool.close()


def test_max_age_zero_turns_age_retention_off(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring, segment_bytes=4 * 1024, max_age=0)
    for i in range(10):
        spool.append(recs(50, i * 50))
    n = len(spool.segments)
    assert n > 2
    assert spool.enforce_retention(now_ns=time.time_ns() + 365 * 86400 * 10**9) == []
    assert len(spool.segments) == n
    spool.close()


def test_a_key_error_path_word_does_not_make_damage_fatal(tmp_path, keyring):
    base = tmp_path / "monkey"  # a directory name containing "key"
    base.mkdir()
    ring = Keyring.load_or_create(base / "spool.key")
    spool = Spool.open(base / "spool", ring, segment_bytes=200)
    spool.append(recs(20))
    spool.append(recs(20, 20))
    spool.close()
    oldest = sorted((base / "spool" / "segments").glob("*.seg"))[0]
    data = bytearray(oldest.read_bytes())
    data[20] ^= 0xFF
    oldest.write_bytes(bytes(data))
    spool = Spool.open(base / "spool", ring, segment_bytes=200)
    assert len(spool.recovery.damage) == 1
    spool.close()


def test_a_quiet_spool_still_seals_old_segments_and_expires_data(tmp_path, keyring):
    spool = open_spool(tmp_path, keyring, max_age=3600)
    spool.append(recs(10))
    later = time.time_ns() + int(spool.segment_age * 1e9) + 1
    spool.maintain(now_ns=later)  # nothing written since: the active segment is sealed
    assert len(spool.segments) == 2 and spool.segments[0].sealed_ns is not None
    spool.maintain(now_ns=time.time_ns() + 2 * 3600 * 10**9)  # and expires by age
    assert len(spool.segments) == 1
    spool.close()


def test_a_batch_with_a_fields_pool_makes_the_same_frame_as_one_without(tmp_path, keyring):
    rows = recs(5).records()
    rows[2].fields = {"msgid": "x", "_SYSTEMD_UNIT": "cron.service"}
    rows[3].fields = {"PRIORITY": "2"}
    columns = Columns.of([Record(**{k: getattr(r, k) for k in r.__slots__}) for r in rows])
    pooled = Columns.of([Record(**{k: getattr(r, k) for k in r.__slots__}) for r in rows])
    pooled.fields_pool = [r.fields for r in rows]  # the index reads these instead
    as_columns = Spool.open(tmp_path / "b", keyring)
    as_pooled = Spool.open(tmp_path / "c", keyring)
    assert as_columns.append(columns) == as_pooled.append(pooled) == (1, 5)
    # stamped in place: this spool's origin, the seqs
    assert columns.origin == [as_columns.agent_id] * 5
    assert list(columns.seq) == [1, 2, 3, 4, 5]
    seen = []
    for spool in (as_columns, as_pooled):
        spool.close()
        reader = SpoolReader.open(spool.directory)
        for seg, entry in reader.frames():
            assert entry.count == 5  # one frame
            # the index sees the unit and the PRIORITY field in columns too
            unit = app_bloom_bits(seg.keys.bloom_key, "cron.service")
            assert entry.app_bloom & unit == unit
            records = decode_chunk(reader.read_chunk(seg, entry))
        for r in records:
            r.origin = ""  # each spool has its own
        seen.append((entry.severity_mask, entry.ts_min, entry.ts_max, records))
    assert seen[0] == seen[1]
    assert seen[0][0] & (1 << 2)


def test_the_frame_index_sees_every_value_of_a_repeated_or_binary_unit(tmp_path, keyring):
    """journald rows carry their own fields dicts: a repeated _SYSTEMD_UNIT is
    a list, a unit that is not UTF-8 is bytes. The frame's app filter must
    hold each (query -u skips frames by it), and the append must not fail."""
    batch = recs(3)
    batch.fields[0] = {"_SYSTEMD_UNIT": ["one.service", "two.service"], "PRIORITY": ["3", "06"]}
    batch.fields[1] = {"_SYSTEMD_UNIT": b"bin\xff.service"}
    for name, given in (("columns", batch),):
        spool = Spool.open(tmp_path / name, keyring)
        assert spool.append(given) == (1, 3)
        spool.close()
        reader = SpoolReader.open(tmp_path / name)
        (seg, entry), = list(reader.frames())
        for unit in ("one.service", "two.service", b"bin\xff.service".decode("utf-8", "surrogateescape")):
            bits = app_bloom_bits(seg.keys.bloom_key, unit)
            assert entry.app_bloom & bits == bits, unit
        assert entry.severity_mask & (1 << 3) and entry.severity_mask & (1 << 6)
