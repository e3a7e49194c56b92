"""The spool reader: a follower's second look at the active segment walks
only what was appended, and sees exactly what a fresh reader sees."""

from __future__ import annotations

import os

from hostlog.record import Columns, Record
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool


def batch(n: int, start: int) -> Columns:
    return Columns.of([Record(ts=(start + i) * 10**6, msg=f"m {start + i} {os.urandom(6).hex()}",
                              app="a") for i in range(n)])


def listing(reader: SpoolReader) -> list[tuple[str, int, int]]:
    return [(seg.path.name, e.first_seq, e.count) for seg, e in reader.frames_quick()]


def test_a_second_look_at_the_active_segment_sees_what_a_fresh_reader_sees(tmp_path):
    keyring = Keyring.load_or_create(tmp_path / "spool.key")
    spool = Spool.open(tmp_path / "spool", keyring, segment_bytes=16 << 10)
    follower = SpoolReader.open(tmp_path / "spool")
    seen = []
    for round_ in range(12):  # the active segment grows, and is sealed and replaced on the way
        for k in range(5):
            spool.append(batch(20, round_ * 100 + k * 20))
        mine = listing(follower)
        fresh = listing(SpoolReader.open(tmp_path / "spool"))
        assert mine == fresh
        seen.append(len(mine))
        # the active segment's index is kept for the next look, and only it
        active = spool.active.path
        assert [path for path, _ in follower._unsealed] == [active]
    spool.close()
    assert seen == sorted(seen) and seen[-1] == 60 and len(set(seen)) == 12
    assert listing(follower) == listing(SpoolReader.open(tmp_path / "spool"))


def test_a_torn_frame_being_written_is_read_once_it_is_whole(tmp_path):
    keyring = Keyring.load_or_create(tmp_path / "spool.key")
    spool = Spool.open(tmp_path / "spool", keyring)
    spool.append(batch(10, 0))
    spool.append(batch(10, 10))
    path = spool.active.path
    whole = path.read_bytes()
    spool.close()
    reader = SpoolReader.open(tmp_path / "spool")
    full = listing(reader)
    assert len(full) == 2
    # as if the second frame were still being written: half of it on disk
    second = full[1]
    cut = len(whole) - 40
    path.write_bytes(whole[:cut])
    follower = SpoolReader.open(tmp_path / "spool")
    assert listing(follower) == full[:1]
    path.write_bytes(whole)  # the write completes
    assert listing(follower) == full and listing(follower)[1] == second
