"""The spool writer thread: durability while blocked, failures that stop the agent,
frame limits whatever the batch size, frames that fill at a low rate."""

import asyncio
import os
import time

import pytest

from hostlog.errors import SpoolSyncError
from hostlog.record import Columns, Record
from hostlog.spool.inspect import collect_stats
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool
from hostlog.spool.state import write_json
from hostlog.spool.writer import SpoolWriter


def recs(n, start=0):
    return Columns.of([Record(ts=time.time_ns(), msg=f"m {start + i} {os.urandom(16).hex()}",
                              app="a") for i in range(n)])


async def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_what_was_written_becomes_durable_while_a_full_spool_blocks(tmp_path):
    async def main():
        spool = Spool.open(tmp_path / "spool", Keyring.load_or_create(tmp_path / "k"),
                           segment_bytes=8 * 1024, max_bytes=24 * 1024)
        # a destination that acknowledged nothing: retention may not free space
        write_json(tmp_path / "spool" / "state" / "cursors" / "central.json", {"acked_seq": 0})
        # one batch per frame, so the spool fills up frame by frame
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05, frame_records=50)
        writer.start()
        durable = []
        for i in range(40):
            writer.submit(recs(50, i * 50), on_durable=durable.append)
        await _wait(lambda: writer.stats.blocked_s > 0 or writer.accepted_seq >= 2000)
        assert writer.accepted_seq < 2000  # the spool is full: the writer waits
        # ... and everything it did write is made durable meanwhile
        await _wait(lambda: writer.durable_seq == writer.accepted_seq and durable)
        write_json(tmp_path / "spool" / "state" / "cursors" / "central.json", {"acked_seq": 10**9})
        await _wait(lambda: writer.accepted_seq == 2000)
        await writer.stop()
        spool.close()
    asyncio.run(main())


def test_a_failing_sync_stops_the_agent_instead_of_stalling_durability(tmp_path, monkeypatch):
    async def main():
        spool = Spool.open(tmp_path / "spool", Keyring.load_or_create(tmp_path / "k"))
        stopped = asyncio.Event()
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05, on_failure=stopped.set)
        def eio(fd):
            raise OSError(5, "Input/output error")
        monkeypatch.setattr(os, "fdatasync", eio)
        writer.start()
        writer.submit(recs(10))
        await asyncio.wait_for(stopped.wait(), 10)
        assert isinstance(writer.error, SpoolSyncError) and writer.durable_seq == 0
        assert isinstance(writer.error.__cause__, OSError)
        await writer.stop()
        monkeypatch.undo()
        spool.close()
    asyncio.run(main())


def test_columns_and_records_batches_share_frames_in_order(tmp_path):
    async def main():
        spool = Spool.open(tmp_path / "spool", Keyring.load_or_create(tmp_path / "k"))
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05, frame_records=250)
        writer.start()
        sent = []
        for i in range(8):
            batch = recs(100, i * 100)
            sent.extend(batch.msg)
            writer.submit(batch)
        seq = await writer.flush()
        await writer.stop()
        spool.close()
        assert seq == 800
        reader = SpoolReader.open(tmp_path / "spool")
        assert [(s, r.msg) for s, r in reader.records()] == list(enumerate(sent, 1))
        assert writer.stats.frames < 8  # batches were merged into frames
    asyncio.run(main())


def test_frames_written_while_behind_use_the_fast_compression(tmp_path):
    async def main():
        spool = Spool.open(tmp_path / "spool", Keyring.load_or_create(tmp_path / "k"))
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05, frame_records=100)
        sent = []
        for i in range(10):  # queued before the thread starts: it is 9 frames behind
            batch = recs(100, i * 100)
            sent.extend(batch.msg)
            writer.submit(batch)
        writer.start()
        assert await writer.flush() == 1000
        await writer.stop()
        spool.close()
        # every frame but the last had a whole frame more waiting behind it
        assert (writer.stats.frames, writer.stats.fast_frames) == (10, 9)
        reader = SpoolReader.open(tmp_path / "spool")
        assert [r.msg for _, r in reader.records()] == sent
    asyncio.run(main())


# -- frame limits whatever the batch size (issue 13, item 2) ---------------------

def _frames(directory):
    """(first seq, count, message text) of every frame in the spool, read back."""
    reader = SpoolReader.open(directory)
    out = []
    for seg, entry in reader.frames():
        records = reader.read(seg, entry)
        assert len(records) == entry.count
        out.append((entry.first_seq, entry.count, sum(len(r.msg) for r in records)))
    assert not reader.damage
    return out


def sized_recs(n, start=0):
    # messages of 20 to 400 characters, so the byte limit cuts inside batches too
    return [Record(ts=time.time_ns(), msg=f"m {start + i} " + "x" * (20 + (i * 37) % 380), app="a")
            for i in range(n)]


def test_a_batch_of_100k_records_is_written_as_frames_within_both_limits(tmp_path):
    async def main():
        spool = Spool.open(tmp_path / "spool", Keyring.load_or_create(tmp_path / "k"))
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05,
                             frame_records=4096, frame_bytes=256 * 1024)
        writer.start()
        small = sized_recs(10)
        big = sized_recs(100_000, 10)
        huge = [Record(ts=time.time_ns(), msg="h" * (300 * 1024), app="a")]  # > frame_bytes
        sent = [r.msg for r in small + big + huge]
        for batch in (small, big, huge):
            writer.submit(Columns.of(batch))
        assert await writer.flush() == len(sent)
        await writer.stop()
        spool.close()
        frames = _frames(tmp_path / "spool")
        assert sum(count for _, count, _ in frames) == len(sent)
        for _, count, text in frames[:-1]:
            assert count <= 4096 and text <= 256 * 1024
        assert frames[-1][1] == 1  # the one record bigger than frame_bytes: alone
        assert len(frames) >= 100_000 * 219 // (256 * 1024)  # the byte limit did cut
        assert writer.stats.split_batches == 1
        reader = SpoolReader.open(tmp_path / "spool")
        assert [r.msg for _, r in reader.records()] == sent
    asyncio.run(main())


def test_a_burst_into_a_small_spool_keeps_its_newest_records_not_none(tmp_path):
    # segment_bytes 64 KiB, max_bytes 192 KiB, drop_oldest: 6,000 records of
    # ~100 characters that compress badly, handed over as one batch (a syslog
    # burst the writer could not keep up with). Frames of 4,096 records would
    # each be a segment larger than max_bytes, deleted whole at its seal;
    # frames no bigger than a segment keep the newest records of the burst.
    async def main():
        spool = Spool.open(tmp_path / "spool", Keyring.load_or_create(tmp_path / "k"),
                           segment_bytes=64 * 1024, max_bytes=192 * 1024, on_full="drop_oldest")
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05)
        assert writer.frame_bytes == 64 * 1024
        writer.start()
        burst = [Record(ts=time.time_ns(), msg=f"bulk {i} {os.urandom(40).hex()}", app="bulk")
                 for i in range(6000)]
        writer.submit(Columns.of(burst))
        writer.submit(Columns.of([Record(ts=time.time_ns(), msg="after", app="web")]))
        assert await writer.flush() == 6001
        await writer.stop()
        spool.close()
        kept = [r.msg for _, r in SpoolReader.open(tmp_path / "spool").records()]
        assert kept[-1] == "after"
        bulk = kept[:-1]
        assert len(bulk) >= 500  # at least the newest segment's worth of the burst
        assert bulk == [r.msg for r in burst[-len(bulk):]]  # the newest, in order
        for _, _, text in _frames(tmp_path / "spool"):
            assert text <= 64 * 1024
    asyncio.run(main())


@pytest.mark.parametrize("where", ["payload", "header"])
@pytest.mark.parametrize("sealed", [False, True])
def test_one_flipped_bit_costs_at_most_one_frame_of_a_big_batch(tmp_path, where, sealed):
    async def main():
        spool = Spool.open(tmp_path / "spool", Keyring.load_or_create(tmp_path / "k"))
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05, frame_records=4096)
        writer.start()
        writer.submit(recs(100_000))  # one batch, as a file backlog hands it over
        await writer.flush()
        await writer.stop()
        if sealed:
            spool.rotate()
        spool.close()
    asyncio.run(main())
    reader = SpoolReader.open(tmp_path / "spool")
    entries = [entry for _, entry in reader.frames()]
    assert len(entries) >= 100_000 // 4096
    victim = entries[len(entries) // 2]
    path = reader.segment_paths()[0]
    offset = victim.offset + (20 if where == "header" else victim.size // 2)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))
    stats = collect_stats(SpoolReader.open(tmp_path / "spool"), verify=True)
    lost = 100_000 - stats.records
    assert len(stats.damage) == 1 and 0 < lost <= 4096


def test_a_split_batch_reports_durable_and_notes_its_position_only_at_its_last_record(tmp_path):
    async def main():
        spool = Spool.open(tmp_path / "spool", Keyring.load_or_create(tmp_path / "k"),
                           segment_bytes=16 * 1024, max_bytes=48 * 1024)
        # a destination that acknowledged nothing: the spool fills up and the
        # writer stops in the middle of the big batch
        cursor = tmp_path / "spool" / "state" / "cursors" / "central.json"
        write_json(cursor, {"acked_seq": 0})
        noted = []  # (name, seq, value, the seq the frame about to be written starts at)
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05, frame_records=100,
                             note_position=lambda name, seq, value:
                                 noted.append((name, seq, value, spool.next_seq)))
        appended = []  # (first, last) of every frame, as the writer wrote them
        append = spool.append
        def recording_append(records, **kw):
            span = append(records, **kw)
            appended.append(span)
            return span
        spool.append = recording_append
        writer.start()
        fired = {}
        def durable(name, value):
            def cb(seq):
                fired[name] = seq
            cb.position = (name, value)
            return cb
        writer.submit(recs(10), on_durable=durable("small", 1))
        writer.submit(recs(5000, 10), on_durable=durable("big", 2))
        writer.submit(recs(10, 5010), on_durable=durable("after", 3))
        await _wait(lambda: writer.stats.blocked_s > 0 and writer.durable_seq == writer.accepted_seq
                    and "small" in fired)
        # pieces of the big batch are written and durable, its end is not
        assert 10 < writer.durable_seq < 5010
        assert "big" not in fired and [n[0] for n in noted] == ["small"]
        write_json(cursor, {"acked_seq": 10**9})
        await writer.flush()
        await writer.stop()
        spool.close()
        assert fired["small"] >= 10 and fired["big"] >= 5010 and fired["after"] >= 5020
        assert [(name, seq, value) for name, seq, value, _ in noted] == \
            [("small", 10, 1), ("big", 5010, 2), ("after", 5020, 3)]
        # each position noted just before the frame that holds its batch's last record
        frames = dict(appended)
        for _, seq, _, first in noted:
            assert first <= seq <= frames[first]
    asyncio.run(main())


# -- coalescing at a low rate (issue 13, item 7) -----------------------------------

@pytest.mark.parametrize("fsync", ["batch", "never"])
def test_small_batches_at_a_low_rate_fill_frames_for_a_sync_interval(tmp_path, fsync):
    interval = 0.2

    async def main():
        spool = Spool.open(tmp_path / "spool", Keyring.load_or_create(tmp_path / "k"))
        writer = SpoolWriter(spool, fsync=fsync, fsync_interval=interval)
        writer.start()
        fired = []
        t0 = time.monotonic()
        for i in range(300):  # one short line every ~5 ms, each its own batch
            writer.submit(recs(1, i), on_durable=fired.append)
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - t0
        await writer.flush()
        await writer.stop()
        spool.close()
        stats = writer.stats
        assert stats.records == 300 and len(fired) == 300
        # at most one frame per interval that passed (plus the flush's), where
        # writing each batch at once made 300
        assert stats.frames <= elapsed / interval + 2
        assert stats.records / stats.frames >= 300 / (elapsed / interval + 2)
        msgs = [r.msg for _, r in SpoolReader.open(tmp_path / "spool").records()]
        assert [m.split()[1] for m in msgs] == [str(i) for i in range(300)]
    asyncio.run(main())


@pytest.mark.parametrize("fsync", ["batch", "never", "always"])
def test_flush_and_stop_write_what_is_held_without_waiting_for_the_frame_to_fill(tmp_path, fsync):
    async def main():
        spool = Spool.open(tmp_path / "spool", Keyring.load_or_create(tmp_path / "k"))
        # an hour to fill a frame: only flush() and stop() can make it written now
        writer = SpoolWriter(spool, fsync=fsync, fsync_interval=0.05, linger=3600.0)
        writer.start()
        writer.submit(recs(5))
        assert await asyncio.wait_for(writer.flush(), 10) == 5
        writer.submit(recs(7, 5))
        await asyncio.wait_for(writer.stop(), 10)
        spool.close()
        assert writer.stats.frames == 2
        assert len(list(SpoolReader.open(tmp_path / "spool").records())) == 12
    asyncio.run(main())
