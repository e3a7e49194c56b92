"""The spool writer on a full disk and on a failing disk, with injected errors.

A full disk is simulated by a stand-in for ``os.pwrite`` that lets the
segments directory hold at most ``capacity`` bytes: a write that does not
fit writes what fits (as the kernel does) and the next one fails with
ENOSPC. tests/faults/test_disk_full.py does the same on a real tmpfs.
A failing disk is an ``os.fdatasync`` / ``os.fsync`` that raises EIO.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hostlog import faultpoint
from hostlog.errors import SpoolSyncError
from hostlog.record import Columns, Record
from hostlog.spool import frame as F
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool
from hostlog.spool.writer import FULL_DISK, SpoolWriter


def recs(n: int, start: int = 0) -> Columns:
    return Columns.of([Record(ts=time.time_ns(), msg=f"m {start + i:06d} {os.urandom(12).hex()}", app="a")
                       for i in range(n)])


async def wait_until(predicate: Callable[[], Any], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


class SmallDisk:
    """``os.pwrite`` for files under ``root`` as on a file system of
    ``capacity`` bytes (the sizes of the files there now)."""

    def __init__(self, root: Path, capacity: int) -> None:
        self.root = root
        self.capacity = capacity
        self.real = os.pwrite
        self.enospc = 0  # writes refused
        self.partial = 0  # writes cut short
        # while set: writes whose data it says yes to find no room (half of
        # them is written, the rest fails)
        self.refuse: Callable[[Any], bool] | None = None
        self._torn: tuple[int, int] | None = None  # where the rest of a half-written refusal goes

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if self.root not in path.parents:
            return self.real(fd, data, offset)
        if self.refuse is not None and (self.refuse(data) or self._torn == (fd, offset)):
            if self._torn != (fd, offset) and len(data) > 1:
                n = self.real(fd, bytes(data[:len(data) // 2]), offset)
                self._torn = (fd, offset + n)
                self.partial += 1
                return n
            self._torn = None
            self.enospc += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        size = os.fstat(fd).st_size
        grow = max(0, offset + len(data) - size)
        room = self.capacity - self.used()
        if grow <= room:
            return self.real(fd, data, offset)
        fits = max(0, size + room - offset)
        if fits <= 0:
            self.enospc += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.partial += 1
        return self.real(fd, bytes(data[:fits]), offset)


def open_spool(tmp_path: Path, **options: Any) -> Spool:
    return Spool.open(tmp_path / "spool", Keyring.load_or_create(tmp_path / "k"), **options)


def stored(tmp_path: Path) -> list[tuple[int, str]]:
    reader = SpoolReader.open(tmp_path / "spool")
    out = [(seq, r.msg) for seq, r in reader.records()]
    assert not reader.damage, reader.damage
    return out


def test_a_full_disk_blocks_cuts_the_torn_frame_and_resumes_by_itself(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, "hostlog.spool")
    spool = open_spool(tmp_path, segment_bytes=16 * 1024, max_bytes=1 << 30)
    disk = SmallDisk(tmp_path / "spool" / "segments", 48 * 1024)
    monkeypatch.setattr(os, "pwrite", disk.pwrite)
    sent: list[str] = []

    async def main() -> None:
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.02, frame_records=40,
                             max_pending=400)
        writer.start()
        durable: list[int] = []
        for i in range(60):  # as a stream reader hands them over (it pauses while no room)
            batch = recs(40, i * 40)
            sent.extend(batch.msg)
            writer.submit(batch, on_durable=durable.append)
        # 2,400 records of ~40 bytes do not fit in 48 KiB: the writer waits,
        # its queue fills, and it has no room for more (backpressure)
        await wait_until(lambda: writer.full == FULL_DISK and not writer.has_room())
        waiting = writer.accepted_seq
        assert 0 < waiting < 2400
        # what was written meanwhile is whole frames, every one readable, and durable
        await wait_until(lambda: writer.durable_seq == writer.accepted_seq)
        held = stored(tmp_path)
        assert held == list(enumerate(sent[:len(held)], 1)) and len(held) == writer.accepted_seq
        assert disk.enospc + disk.partial > 0
        with writer._spool_lock:  # between two tries: the torn part of the last one is cut off
            assert spool.active is not None and spool.active.path.stat().st_size == spool.active.end
        assert writer.status()["full"] == FULL_DISK and writer.status()["full_for"] > 0
        await asyncio.sleep(0.3)  # still full: retried on the backoff, nothing more taken
        assert writer.accepted_seq == waiting and writer.stats.full_retries >= 2
        disk.capacity = 1 << 30  # room again
        await wait_until(lambda: writer.accepted_seq == 2400)
        assert writer.full is None and writer.status()["full"] is None
        assert await writer.flush() == 2400
        await writer.stop()
        assert writer.stats.full_waits == 1 and writer.stats.blocked_s > 0
        assert durable and max(durable) == 2400

    asyncio.run(main())
    spool.close()
    assert stored(tmp_path) == list(enumerate(sent, 1))  # every record once, in order
    said = [r.getMessage() for r in caplog.records]
    assert sum("spool full: " in m for m in said) == 1
    assert sum("spool writable again" in m for m in said) == 1
    # and the spool recovers as it is: no torn tail left to cut
    again = open_spool(tmp_path)
    assert again.recovery.truncated_bytes == 0 and not again.recovery.damage and again.next_seq == 2401
    again.close()


def test_drop_oldest_on_a_full_disk_drops_whole_sealed_segments_and_counts_exactly(tmp_path, monkeypatch):
    spool = open_spool(tmp_path, segment_bytes=8 * 1024, max_bytes=1 << 30, on_full="drop_oldest")
    disk = SmallDisk(tmp_path / "spool" / "segments", 40 * 1024)
    monkeypatch.setattr(os, "pwrite", disk.pwrite)
    sent: list[str] = []

    async def main() -> None:
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.02, frame_records=30)
        writer.start()
        for i in range(100):
            batch = recs(30, i * 30)
            sent.extend(batch.msg)
            await writer.write(batch)
        assert await writer.flush() == 3000  # never blocked for good: old segments made room
        await writer.stop()

    asyncio.run(main())
    assert disk.enospc + disk.partial > 0
    first = spool.segments[0].first_seq
    spool.close()
    held = stored(tmp_path)
    # no destination: every record deleted to make room is counted, exactly
    assert spool.dropped_records == spool.dropped_for_space == first - 1 > 0
    assert held == [(seq, sent[seq - 1]) for seq in range(first, 3001)]
    assert 3000 - len(held) == spool.dropped_records


def test_drop_oldest_counts_only_what_a_destination_had_not_acknowledged(tmp_path, monkeypatch):
    spool = open_spool(tmp_path, segment_bytes=8 * 1024, max_bytes=1 << 30, on_full="drop_oldest")
    cursor = tmp_path / "spool" / "state" / "cursors" / "central.json"
    cursor.write_text('{"acked_seq": 500}')
    disk = SmallDisk(tmp_path / "spool" / "segments", 40 * 1024)
    monkeypatch.setattr(os, "pwrite", disk.pwrite)

    async def main() -> None:
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.02, frame_records=30)
        writer.start()
        for i in range(100):
            await writer.write(recs(30, i * 30))
        assert await writer.flush() == 3000
        await writer.stop()

    asyncio.run(main())
    first = spool.segments[0].first_seq
    spool.close()
    assert first > 501
    assert spool.dropped_records == spool.dropped_for_space == first - 1 - 500


def test_a_full_disk_when_a_segment_is_sealed_or_created_delays_the_rotation(tmp_path, monkeypatch):
    """No room for a footer (half of it written) or for the next segment's
    header: the frames are accepted once (never written twice), the torn
    footer or header is removed, and the rotation happens once there is room."""
    spool = open_spool(tmp_path, segment_bytes=4 * 1024, max_bytes=1 << 30)
    disk = SmallDisk(tmp_path / "spool" / "segments", 1 << 30)
    monkeypatch.setattr(os, "pwrite", disk.pwrite)
    sent: list[str] = []
    refused = {"footer": 0, "header": 0}
    for i in range(60):
        batch = recs(20, i * 20)
        sent.extend(batch.msg)
        # appends 10..24: no room for footers; 30..44: none for segment headers
        disk.refuse = ((lambda d: not bytes(d[:4]) == F.FRAME_MAGIC) if 10 <= i < 25 else
                       (lambda d: bytes(d[:8]) == F.SEGMENT_MAGIC) if 30 <= i < 45 else None)
        before = len(spool.segments)
        try:
            spool.append(batch)
        except OSError as exc:  # the next segment could not be created: nothing was written
            assert exc.errno == errno.ENOSPC and spool.active is None and 30 <= i < 45
            refused["header"] += 1
            disk.refuse = None
            spool.append(batch)
        if 10 <= i < 25:
            refused["footer"] += len(spool.segments) == before and spool.active is not None \
                and spool.active.size >= 4 * 1024
        assert spool.next_seq == (i + 1) * 20 + 1
    disk.refuse = None
    spool.sync()
    spool.close()
    assert refused["footer"] > 0 and refused["header"] > 0 and disk.partial > 0
    assert stored(tmp_path) == list(enumerate(sent, 1))
    assert not list((tmp_path / "spool" / "segments").glob("*.damaged"))
    again = open_spool(tmp_path)
    assert again.recovery.truncated_bytes == 0 and not again.recovery.damage and again.next_seq == 1201
    again.close()


def _fail_sync_on(monkeypatch: pytest.MonkeyPatch, nth: int) -> list[str]:
    """os.fdatasync and os.fsync of segments: the nth call fails with EIO;
    returns the calls made after it, with the file's size then."""
    calls = {"n": 0}
    after: list[str] = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync

    def wrap(real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            if not os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
                return real(fd)
            calls["n"] += 1
            if calls["n"] > nth:
                after.append(f"{real.__name__} at size {os.fstat(fd).st_size}")
            if calls["n"] == nth:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return real(fd)
        return sync

    monkeypatch.setattr(os, "fdatasync", wrap(real_fdatasync))
    monkeypatch.setattr(os, "fsync", wrap(real_fsync))
    return after


@pytest.mark.parametrize("fsync", ["batch", "always"])
def test_a_failed_sync_is_never_retried_nor_trusted_and_the_spool_is_cut_back(tmp_path, monkeypatch, fsync,
                                                                              caplog):
    spool = open_spool(tmp_path, max_bytes=1 << 30)
    after = _fail_sync_on(monkeypatch, 4)
    fired: list[tuple[int, int]] = []  # (batch end seq, durable seq reported)

    async def main() -> SpoolWriter:
        stopped = asyncio.Event()
        writer = SpoolWriter(spool, fsync=fsync, fsync_interval=0.02, frame_records=25,
                             on_failure=stopped.set)
        writer.start()
        end = 0
        for i in range(40):
            end += 25
            try:
                await writer.write(recs(25, i * 25), on_durable=lambda seq, end=end: fired.append((end, seq)))
            except RuntimeError:
                break  # the writer has failed: it takes no more
            await asyncio.sleep(0.01)
        await asyncio.wait_for(stopped.wait(), 10)
        await writer.stop()
        return writer

    writer = asyncio.run(main())
    assert isinstance(writer.error, SpoolSyncError) and isinstance(writer.error.__cause__, OSError)
    spool.close()
    durable = spool.durable_seq
    size = (tmp_path / "spool" / "segments" / "00000000000000000001.seg").stat().st_size
    # no sync after the failed one (not retried, not at stop, not at close)
    # but the fsync of the cut back to the last durable record
    assert after == [f"fsync at size {size}"]
    assert writer.durable_seq == durable < 1000
    if fsync == "always":  # syncs 1 to 3 made 75 records durable, the 4th failed
        assert durable == 75
    # what was written after the last durable record was cut off
    cut = [int(m.group(1)) for r in caplog.records
           if (m := re.search(r"after the failed sync: cut (\d+) bytes", r.getMessage()))]
    assert len(cut) == 1 and cut[0] > 0
    # callbacks fired for batches whose records were durable, and only those
    assert fired and all(end <= durable for end, _ in fired)
    assert max(end for end, _ in fired) == durable
    monkeypatch.undo()
    # the spool was cut back to the last durable record: the restart starts there
    again = open_spool(tmp_path)
    assert again.next_seq == durable + 1 and not again.recovery.damage
    again.close()
    assert [seq for seq, _ in stored(tmp_path)] == list(range(1, durable + 1))


def test_a_seal_during_a_sync_that_fails_is_not_trusted(tmp_path):
    """The seal's fsync may succeed only because the failed fdatasync on the
    other thread took the error: durability waits for that sync's outcome."""
    spool = open_spool(tmp_path, segment_bytes=4 * 1024)
    spool.append(recs(10))
    spool.sync()
    spool.append(recs(10, 10))
    fd, seq = spool.begin_sync()
    os.close(fd)
    spool.rotate()  # sealed (fsync returned) while the sync is in flight
    assert spool.durable_seq == 10
    spool.fail_sync(OSError(errno.EIO, "Input/output error"))
    assert spool.durable_seq == 10
    with pytest.raises(OSError):
        spool.sync()
    spool.close()

    spool = open_spool(tmp_path / "b", segment_bytes=4 * 1024)
    spool.append(recs(10))
    fd, seq = spool.begin_sync()
    os.close(fd)
    spool.append(recs(10, 10))
    spool.rotate()
    spool.end_sync(seq)  # it succeeded: the seal is trusted too
    assert spool.durable_seq == 20
    spool.close()


def test_a_durability_callback_that_raises_is_counted_and_the_others_still_run(tmp_path):
    spool = open_spool(tmp_path)
    reported: list[tuple[str, str, BaseException]] = []
    ran: list[int] = []

    def bad(seq: int) -> None:
        raise ValueError("checkpoint not saved")

    bad.position = ("app", {"offset": 1})  # type: ignore[attr-defined]

    async def main() -> SpoolWriter:
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.02,
                             on_error=lambda *a: reported.append(a))
        writer.start()
        await writer.write(recs(5), on_durable=bad)
        await writer.write(recs(5, 5), on_durable=ran.append)
        await writer.write(recs(5, 10), on_durable=bad)
        await writer.flush()
        await writer.stop()
        return writer

    writer = asyncio.run(main())
    spool.close()
    assert ran == [15] or ran == [10]
    assert writer.stats.callback_errors == 2
    assert [(s, w, type(e)) for s, w, e in reported] == [("app", "durability_callback", ValueError)] * 2


def test_without_a_reporter_a_raising_callback_is_logged_once_per_kind(tmp_path, caplog):
    spool = open_spool(tmp_path)

    def bad(seq: int) -> None:
        raise KeyError("x")

    async def main() -> SpoolWriter:
        writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.02)
        writer.start()
        for i in range(3):
            await writer.write(recs(5, i * 5), on_durable=bad)
            await writer.flush()
        await writer.stop()
        return writer

    writer = asyncio.run(main())
    spool.close()
    assert writer.stats.callback_errors == 3
    assert sum("durability callback failed" in r.getMessage() for r in caplog.records) == 1


def test_fault_points_parse_and_refuse_typos():
    assert faultpoint._parse(None) is None and faultpoint._parse("") is None
    assert faultpoint._parse("segment-sync") == ("segment-sync", 1)
    assert faultpoint._parse("segment-sync:7") == ("segment-sync", 7)
    for bad in ("segment-snyc", "segment-sync:0", "segment-sync:x"):
        with pytest.raises(ValueError):
            faultpoint._parse(bad)


def test_a_fault_point_raises_eio_the_nth_time(monkeypatch):
    monkeypatch.setattr(faultpoint, "_TARGET", ("segment-sync", 2))
    monkeypatch.setattr(faultpoint, "_hits", 0)
    faultpoint.faultpoint("segment-sync")
    with pytest.raises(OSError) as info:
        faultpoint.faultpoint("segment-sync")
    assert info.value.errno == errno.EIO
    faultpoint.faultpoint("segment-sync")  # once only
