"""The agent's spool writer: one thread that owns the spool.

Collectors hand batches to :meth:`SpoolWriter.write` on the event loop. The
thread coalesces whatever is pending into frames (encode, LZ4, AES-GCM and the
write run there, so the second core does that work), and syncs by the fsync
policy (group commit):

* ``always``: sync after every frame before reporting it durable;
* ``batch``: sync every ``fsync_interval`` on a second thread, while the
  writer goes on writing; everything written before a sync started becomes
  durable together when it ends;
* ``never``: never sync explicitly (the kernel writes back when it likes);
  records are reported durable once written — an operator's explicit choice.

Durability is reported back to the loop, where each batch's ``on_durable``
callback runs once its last record is durable: that is where replayable
sources advance their checkpoints.

Compression: a frame is compressed with LZ4 HC (level 3) when the writer
keeps up, and with LZ4's fast mode while it is behind (a whole frame more is
waiting): HC costs 10-17x the CPU of the fast mode, and in a burst it would be
the one step that cannot keep up, for ~30% less disk on real logs.

Backpressure: when more than ``max_pending`` records wait for the thread (the
disk is slow, or the spool is full and on_full = "block"), ``write`` blocks
its caller, so TCP readers stop reading and the kernel pushes back on senders.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from hostlog.collectors.base import Batch
from hostlog.errors import SpoolFullError
from hostlog.record import COLUMNS, Columns
from hostlog.spool.spool import Spool

log = logging.getLogger("hostlog.spool")

OnDurable = Callable[[int], None]

#: A quiet writer still wakes this often to seal old segments and expire data.
MAINTAIN_EVERY_S = 60.0


@dataclass(slots=True)
class WriterStats:
    records: int = 0
    frames: int = 0
    batches: int = 0
    syncs: int = 0
    rejected: int = 0  # write_nowait found the queue full (UDP drops)
    fast_frames: int = 0  # frames compressed with LZ4's fast mode (written while behind)
    blocked_s: float = 0.0  # time spent blocked on a full spool


class SpoolWriter:
    def __init__(self, spool: Spool, *, fsync: str = "batch", fsync_interval: float = 0.05,
                 max_pending: int = 200_000, frame_records: int = 16_384,
                 frame_bytes: int = 4 << 20,
                 note_position: Callable[[str, int, Any], None] | None = None,
                 on_failure: Callable[[], None] | None = None) -> None:
        self.spool = spool
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.max_pending = max_pending
        self.frame_records = frame_records
        self.frame_bytes = frame_bytes
        # records a source position with the seq it ends at, before the frame
        # is written (see agent/checkpoints.py): exactly once across kill -9
        self.note_position = note_position
        self.on_failure = on_failure  # called on the loop if a writer thread dies
        self.stats = WriterStats()
        self.accepted_seq = spool.next_seq - 1
        self.durable_seq = spool.durable_seq
        self._cond = threading.Condition()
        self._pending: collections.deque[tuple[Batch, OnDurable | None]] = collections.deque()
        self._pending_records = 0  # guarded by _cond
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._room = asyncio.Event()  # set while there is room in the queue
        self._room.set()
        self._callbacks: collections.deque[tuple[int, OnDurable]] = collections.deque()
        self.error: BaseException | None = None
        # the writer thread and the sync thread share the spool: append,
        # rotate and the start and end of a sync happen under this lock
        self._spool_lock = threading.Lock()
        self._sync_stop = threading.Event()
        self._sync_thread: threading.Thread | None = None

    # -- loop side -------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()

    def has_room(self) -> bool:
        return self._room.is_set()

    async def wait_room(self) -> None:
        await self._room.wait()

    async def write(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        """Queue a batch; waits only while the queue is full (backpressure)."""
        while not self._room.is_set():
            await self._room.wait()
        self._enqueue(batch, on_durable)

    def submit(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        """Queue a batch now. Stream readers call this from protocol callbacks
        and then pause reading until :meth:`has_room` (overshoot: one batch)."""
        self._enqueue(batch, on_durable)

    def write_nowait(self, batch: Batch, on_durable: OnDurable | None = None) -> bool:
        """Queue a batch unless the queue is full; for sources that cannot wait (UDP)."""
        if not self._room.is_set():
            self.stats.rejected += len(batch)
            return False
        self._enqueue(batch, on_durable)
        return True

    def _enqueue(self, batch: Batch, on_durable: OnDurable | None) -> None:
        if self.error is not None:
            raise RuntimeError("spool writer has failed") from self.error
        if not batch and on_durable is None:
            return
        with self._cond:
            self._pending.append((batch, on_durable))
            self._pending_records += len(batch)
            if self._pending_records >= self.max_pending:
                self._room.clear()
            self._cond.notify()

    async def flush(self) -> int:
        """Wait until everything queued before this call is durable; returns the durable seq."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._enqueue_marker(lambda seq: done.done() or done.set_result(seq))
        return await done

    def _enqueue_marker(self, on_durable: OnDurable) -> None:
        with self._cond:
            self._pending.append(([], on_durable))
            self._cond.notify()

    async def stop(self) -> None:
        """Write everything queued, sync, and stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        if self._sync_thread is not None:
            await asyncio.to_thread(self._sync_thread.join)
        self._deliver(self.accepted_seq, self.durable_seq)

    def _report(self, accepted: int, durable: int) -> None:
        # called from the thread
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._deliver, accepted, durable)
        except RuntimeError:
            pass  # loop already closed: nobody is waiting

    def _deliver(self, accepted: int, durable: int) -> None:
        self.accepted_seq = max(self.accepted_seq, accepted)
        self.durable_seq = max(self.durable_seq, durable)
        while self._callbacks and self._callbacks[0][0] <= self.durable_seq:
            _, cb = self._callbacks.popleft()
            try:
                cb(self.durable_seq)
            except Exception:
                log.exception("durability callback failed")
        with self._cond:
            if self._pending_records < self.max_pending:
                self._room.set()

    # -- thread side -----------------------------------------------------------
    def _take(self) -> list[tuple[Batch, OnDurable | None]]:
        taken, n, size = [], 0, 0
        while self._pending and n < self.frame_records and size < self.frame_bytes:
            batch, cb = self._pending.popleft()
            taken.append((batch, cb))
            n += len(batch)
            size += (batch.text_bytes() if isinstance(batch, Columns)
                     else sum(len(r.msg) for r in batch))
        self._pending_records -= n
        return taken

    def _run(self) -> None:
        spool = self.spool
        if self.fsync == "batch":
            self._sync_thread = threading.Thread(target=self._run_sync, name="spool-sync",
                                                 daemon=True)
            self._sync_thread.start()
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._stopping:
                        if not self._cond.wait(MAINTAIN_EVERY_S):
                            break  # quiet: time for the spool's upkeep
                    taken = self._take()
                    behind = self._pending_records >= self.frame_records
                    stopping = self._stopping and not self._pending
                if taken:
                    records = _one_frame([batch for batch, _ in taken])
                    last = self._append_blocking(records, taken, fast=behind)
                    self.stats.fast_frames += behind and bool(records)
                    if self.fsync == "always" or (stopping and self.fsync == "batch"):
                        with self._spool_lock:
                            spool.sync()
                        self.stats.syncs += 1
                    self.stats.records += len(records)
                    self.stats.frames += bool(records)
                    self.stats.batches += len(taken)
                    callbacks = [cb for _, cb in taken if cb is not None]
                    if callbacks:
                        def register(last: int = last, callbacks: list[OnDurable] = callbacks) -> None:
                            self._callbacks.extend((last, cb) for cb in callbacks)
                        assert self._loop is not None
                        self._loop.call_soon_threadsafe(register)
                elif stopping and self.fsync == "batch":
                    with self._spool_lock:
                        spool.sync()
                elif not stopping:
                    with self._spool_lock:
                        spool.maintain()
                durable = spool.next_seq - 1 if self.fsync == "never" else spool.durable_seq
                self._report(spool.next_seq - 1, durable)
                if stopping:
                    return
        except BaseException as exc:  # the agent sees it and stops; nothing is hidden
            self._failed(exc, "spool writer failed")
        finally:
            self._sync_stop.set()

    def _failed(self, exc: BaseException, what: str) -> None:
        """A thread of the writer died: say so, wake everyone waiting for room
        (their next write raises), and tell the agent, which stops."""
        self.error = exc
        log.error("%s: %s", what, exc, exc_info=exc)
        assert self._loop is not None
        def wake() -> None:
            self._room.set()
            if self.on_failure is not None:
                self.on_failure()
        try:
            self._loop.call_soon_threadsafe(wake)
        except RuntimeError:
            pass  # loop closed: nobody left to tell

    def _run_sync(self) -> None:
        """Group commit for fsync = "batch": every fsync_interval, fdatasync
        what has been written, on its own thread so the writer never waits
        for the disk (a sync of a copy of the fd: rotation may close the
        original, and sealing syncs that segment itself)."""
        spool = self.spool
        try:
            while not self._sync_stop.wait(self.fsync_interval):
                with self._spool_lock:
                    if spool.active is None or spool.next_seq - 1 <= spool.durable_seq:
                        continue
                    fd, seq = spool.begin_sync()
                try:
                    # An error here is final: after a failed fdatasync the
                    # kernel may have dropped the pages, so a retry that
                    # succeeds would claim durability falsely.
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
                with self._spool_lock:
                    spool.end_sync(seq)
                self.stats.syncs += 1
                self._report(seq, spool.durable_seq)
        except BaseException as exc:
            self._failed(exc, "spool sync failed")
            with self._cond:
                self._stopping = True  # the writer thread ends too
                self._cond.notify()

    def _note_positions(self, taken: list[tuple[Batch, OnDurable | None]]) -> None:
        """For batches whose on_durable callback carries a source position
        (``cb.position = (name, value)``), record each source's newest
        position with the seq its batch will end at, before the frame is written."""
        if self.note_position is None:
            return
        seq = self.spool.next_seq - 1
        newest: dict[str, tuple[int, Any]] = {}
        for batch, cb in taken:
            seq += len(batch)
            position = getattr(cb, "position", None)
            if position is not None:
                newest[position[0]] = (seq, position[1])
        for name, (last, value) in newest.items():
            self.note_position(name, last, value)

    def _append_blocking(self, records: Batch, taken: list[tuple[Batch, OnDurable | None]],
                         fast: bool) -> int:
        """Append as one frame, waiting while the spool is full and on_full =
        block. The spool lock is held per attempt only, so the sync thread
        keeps making what was written durable while this waits."""
        while True:
            try:
                with self._spool_lock:
                    self._note_positions(taken)
                    return self.spool.append(records, fast=fast)[1]
            except SpoolFullError as exc:
                if self._stopping:
                    raise
                log.warning("%s; waiting for destinations to acknowledge", exc)
                t0 = time.monotonic()
                with self._cond:
                    self._cond.wait(1.0)
                self.stats.blocked_s += time.monotonic() - t0


def _one_frame(batches: list[Batch]) -> Batch:
    """The batches taken for one frame as one batch: a list of Records, or
    Columns when any came as Columns (those are not taken apart into Records)."""
    if not any(isinstance(b, Columns) for b in batches):
        return [r for batch in batches for r in batch]
    if len(batches) == 1:
        return batches[0]
    merged = Columns([[] for _ in COLUMNS], fields_pool=[])
    for batch in batches:
        merged.extend(batch)
    return merged
