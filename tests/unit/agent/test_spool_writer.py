"""The spool writer thread: durability while blocked, failures that stop the agent."""

import asyncio
import os
import time

from hostlog.agent.spool_writer import SpoolWriter
from hostlog.record import Columns, Record
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool
from hostlog.spool.state import write_json


def recs(n, start=0):
    return [Record(ts=time.time_ns(), msg=f"m {start + i} {os.urandom(16).hex()}", app="a")
            for i in range(n)]


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
        assert isinstance(writer.error, OSError) and writer.durable_seq == 0
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
            sent.extend(r.msg for r in batch)
            writer.submit(Columns.of(batch) if i % 2 else batch)
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
            sent.extend(r.msg for r in batch)
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
