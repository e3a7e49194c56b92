"""The agent's spool writer: one thread that owns the spool.

Collectors hand batches to :meth:`SpoolWriter.write` on the event loop. The
thread cuts what is pending into frames (encode, LZ4, AES-GCM and the write
run there, so the second core does that work), and syncs by the fsync
policy (group commit):

* ``always``: sync after every frame before reporting it durable;
* ``batch``: sync every ``fsync_interval`` on a second thread, while the
  writer goes on writing; everything written before a sync started becomes
  durable together when it ends;
* ``never``: never sync explicitly (the kernel writes back when it likes);
  records are reported durable once written — an operator's explicit choice.

Frames: every frame holds at most ``frame_records`` records and at most
``frame_bytes`` of message text (one record larger than that is a frame of
its own), whatever the size of the batches. A batch too big for the room
left in a frame is split: its pieces go into consecutive frames, and only the
last piece carries the batch's callback, so ``on_durable`` fires (and a
source position is noted) once the batch's *last* record is in the spool.
The frames of a batch that carries a source position are written together,
as one group (:meth:`SpoolWriter._group_fits`), so that a kill -9 never
leaves some of its pieces in the spool without the position that covers them.
The limits bound what one damaged frame costs and what a query must decrypt
to show one record (bench/RESULTS.md, "Frame limits").

Coalescing: a frame is written when it is full, when ``flush`` or ``stop``
asks, or when its oldest record has waited long enough. With ``batch``, the
sync thread asks for what is pending just before each sync, so a frame holds
up to a sync interval of records and each record is still durable after the
next sync; with ``never``, a record waits at most ``fsync_interval``; with
either, at most ``MAX_LINGER_S`` (1 s); with ``always``, not at all (each
sync already gathers what arrived during the one before). At a low rate this
makes one frame per sync interval instead of one per batch: far better
compression, and far less CPU per record.

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

A full disk (ENOSPC, EDQUOT while writing a frame, a segment's header or its
footer) is a full spool, not a failure: the segment is cut back to its last
whole frame (spool/segment.py), and the frames wait, retried on a bounded
backoff (``FULL_RETRY_MIN_S`` doubling to ``FULL_RETRY_MAX_S``), while the
queue behind them fills and pushes back on the sources as above. With
on_full = "drop_oldest" the oldest sealed segment is deleted first and what
it held is counted (Spool.drop_oldest_for_room). When a write succeeds again
the writer says so once ("spool writable again"). :attr:`SpoolWriter.full`
says why it waits, for ``hostlog ctl status`` and the metrics.

A failed sync (fsync, fdatasync: EIO, ...) is never retried and trusted: the
records it covered are not reported durable (their ``on_durable`` callbacks
never run), the writer stops, and :meth:`SpoolWriter.stop` cuts the active
segment back to the last durable record (Spool.cut_untrusted) so that, at
the next start, replayable sources read those records again
(docs/guarantees.md, "Disk full and I/O errors").

A durability callback that raises is counted (``stats.callback_errors``, and
the agent's errors metric through ``on_error``) and logged once per kind;
the callbacks after it still run.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from hostlog.crashpoint import crashpoint
from hostlog.errors import SpoolFullError, SpoolSyncError
from hostlog.faultpoint import faultpoint
from hostlog.record import Batch, Columns, OnDurable
from hostlog.spool.segment import no_space
from hostlog.spool.spool import Spool

log = logging.getLogger("hostlog.spool")


#: A quiet writer still wakes this often to seal old segments and expire data.
MAINTAIN_EVERY_S = 60.0

#: The longest a record waits for its frame to fill, whatever fsync_interval
#: is: a long sync interval is a choice about the disk, not about how late
#: `hostlog query -f` may show a line.
MAX_LINGER_S = 1.0

#: Defaults of the frame limits, chosen by measurement (bench/frame_limits.py,
#: bench/RESULTS.md "Frame limits"): past these, compression gains little,
#: while what one damaged frame loses and what `query -n` decrypts keep growing.
FRAME_RECORDS = 4096
FRAME_BYTES = 1 << 20


def frame_bytes_for(segment_bytes: int, frame_bytes: int = FRAME_BYTES) -> int:
    """The frame text limit a spool of ``segment_bytes`` segments uses: never
    more than a segment. A frame is written whole into the active segment, so
    with a small ``segment_bytes`` a 1 MiB frame would make one segment
    several times ``max_bytes``, and retention (which deletes whole sealed
    segments) would then drop all of it at the next rotation: a burst would
    cost the records just written, not the oldest."""
    return max(1, min(frame_bytes, segment_bytes))

#: A write that found the disk full is tried again after this, doubling up
#: to FULL_RETRY_MAX_S: quick to resume once room returns, and cheap while it
#: does not.
FULL_RETRY_MIN_S = 0.05
FULL_RETRY_MAX_S = 1.0

#: :attr:`SpoolWriter.full` while a write waits for room on the disk, and
#: while it waits for retention (max_bytes reached, data not acknowledged).
FULL_DISK = "no space left on device"
FULL_MAX_BYTES = "max_bytes"


@dataclass(slots=True)
class WriterStats:
    records: int = 0
    frames: int = 0
    batches: int = 0  # batches (and flush markers) written whole, their last piece included
    split_batches: int = 0  # batches that did not fit one frame and were cut into pieces
    syncs: int = 0
    rejected: int = 0  # write_nowait found the queue full (UDP drops)
    fast_frames: int = 0  # frames compressed with LZ4's fast mode (written while behind)
    blocked_s: float = 0.0  # time spent blocked on a full spool
    full_waits: int = 0  # times a write found the spool full (each counted once, until it took)
    full_retries: int = 0  # writes tried again on a full disk
    callback_errors: int = 0  # on_durable callbacks that raised


class _Entry:
    """A batch waiting for the thread. ``left`` is its message text not yet
    taken into a frame (a bound: it starts as what the batch's maker said)."""

    __slots__ = ("batch", "on_durable", "left", "since", "marker")

    def __init__(self, batch: Batch, on_durable: OnDurable | None, left: int, since: float,
                 marker: bool = False) -> None:
        self.batch = batch
        self.on_durable = on_durable
        self.left = left
        self.since = since  # time.monotonic() when queued
        self.marker = marker  # a flush(): write what is held now


class SpoolWriter:
    def __init__(self, spool: Spool, *, fsync: str = "batch", fsync_interval: float = 0.05,
                 max_pending: int = 200_000, frame_records: int = FRAME_RECORDS,
                 frame_bytes: int = FRAME_BYTES, linger: float | None = None,
                 note_position: Callable[[str, int, Any], None] | None = None,
                 on_failure: Callable[[], None] | None = None,
                 on_error: Callable[[str, str, BaseException], None] | None = None) -> None:
        """``linger``: the longest a record waits for its frame to fill. By
        default: with fsync = "batch", until the next sync asks for the frame
        (at most ``MAX_LINGER_S``); with "never", ``fsync_interval`` (at most
        ``MAX_LINGER_S``); with "always", not at all."""
        if frame_records < 1 or frame_bytes < 1:
            raise ValueError("frame_records and frame_bytes must be at least 1")
        self.spool = spool
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.max_pending = max_pending
        self.frame_records = frame_records
        self.frame_bytes = frame_bytes_for(spool.segment_bytes, frame_bytes)
        if linger is None:
            if fsync == "always":
                linger = 0.0
            elif fsync == "never" or fsync_interval > MAX_LINGER_S:
                linger = min(fsync_interval, MAX_LINGER_S)
        self.linger = linger
        # records a source position with the seq it ends at, before the frame
        # is written (see spool/checkpoints.py): exactly once across kill -9
        self.note_position = note_position
        self.on_failure = on_failure  # called on the loop if a writer thread dies
        # (source, where, exc): a durability callback raised; the agent's
        # ErrorCounts.report (counted by kind, logged once per kind)
        self.on_error = on_error
        self._callback_kinds: dict[type, int] = {}  # without on_error: logged once per kind here
        self.full: str | None = None  # why a write waits for room (FULL_DISK, FULL_MAX_BYTES)
        self.full_since = 0.0  # time.monotonic() when it began
        self._full_said = False  # the wait for room on the disk is logged (once per wait)
        self.stats = WriterStats()
        self.accepted_seq = spool.next_seq - 1
        self.durable_seq = spool.durable_seq
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # the writer thread waits on it
        self._written = threading.Condition(lock)  # the sync thread waits on it
        # guarded by the lock:
        self._pending: collections.deque[_Entry] = collections.deque()
        self._head = 0  # rows of _pending[0] already in frames
        self._pending_records = 0
        self._pending_bytes = 0
        self._markers = 0  # flush markers queued
        self._entries_in = 0  # entries ever queued
        self._entries_out = 0  # entries ever taken whole (last piece included)
        self._entries_written = 0  # of those, the ones in frames already written
        self._sync_wants = 0  # the sync thread wants entries up to this one written
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

    @property
    def spool_lock(self) -> threading.Lock:
        """The lock held while the spool is used (the archiver's commits take it too)."""
        return self._spool_lock

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
        n = len(batch)
        if not n and on_durable is None:
            return
        size = _text_bytes(batch) if n else 0
        entry = _Entry(batch, on_durable, size, time.monotonic())
        with self._cond:
            wake = not self._pending and self.linger is not None  # its deadline starts now
            self._pending.append(entry)
            self._entries_in += 1
            self._pending_records += n
            self._pending_bytes += size
            if self._pending_records >= self.max_pending:
                self._room.clear()
            if wake or self._pending_records >= self.frame_records \
                    or self._pending_bytes >= self.frame_bytes:
                self._cond.notify()

    async def flush(self) -> int:
        """Wait until everything queued before this call is durable; returns the durable seq."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        def durable(seq: int) -> None:
            if not done.done():
                done.set_result(seq)
        self._enqueue_marker(durable)
        return await done

    def _enqueue_marker(self, on_durable: OnDurable) -> None:
        with self._cond:
            self._pending.append(_Entry(Columns.empty(), on_durable, 0, time.monotonic(),
                                        marker=True))
            self._entries_in += 1
            self._markers += 1
            self._cond.notify()

    async def stop(self) -> None:
        """Write everything queued, sync, and stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            self._written.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        if self._sync_thread is not None:
            await asyncio.to_thread(self._sync_thread.join)
        if self.spool.sync_failed is not None and self.fsync != "never":
            await asyncio.to_thread(self._cut_untrusted)
        self._deliver(self.accepted_seq, self.durable_seq)

    def _cut_untrusted(self) -> None:
        """After a failed sync, both threads stopped: cut what was written
        after the last durable record (never durable, never reported so)."""
        spool = self.spool
        try:
            cut = spool.cut_untrusted()
        except OSError as exc:
            log.error("after the failed sync, the active segment could not be cut back to seq %d "
                      "(%s): recovery at the next start cuts what does not read back",
                      spool.durable_seq, exc)
            return
        log.error("after the failed sync: cut %d bytes (records after seq %d) from the active "
                  "segment; their replayable sources read them again at the next start",
                  cut, spool.durable_seq)

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
            except Exception as exc:  # counted and logged; the others still run
                self._callback_failed(cb, exc)
        with self._cond:
            if self._pending_records < self.max_pending:
                self._room.set()

    def _callback_failed(self, cb: OnDurable, exc: Exception) -> None:
        """A durability callback raised: count it, and log it once per kind
        (the agent's ErrorCounts, as (source, "durability_callback"), when
        it gave ``on_error``). Its batch is durable all the same."""
        self.stats.callback_errors += 1
        position = getattr(cb, "position", None)
        source = position[0] if position is not None else "spool"
        if self.on_error is not None:
            try:
                self.on_error(source, "durability_callback", exc)
                return
            except Exception:
                log.exception("reporting a failed durability callback failed")
        seen = self._callback_kinds[type(exc)] = self._callback_kinds.get(type(exc), 0) + 1
        if seen == 1:
            log.error("%s: durability callback failed: %s", source, exc, exc_info=exc)

    def status(self) -> dict[str, Any]:
        """For ``hostlog ctl status``: whether writes wait for room, since when, and why."""
        full = self.full
        return {"full": full, "full_for": round(time.monotonic() - self.full_since, 3) if full else 0.0,
                "blocked_s": round(self.stats.blocked_s, 3), "on_full": self.spool.on_full,
                "dropped_for_room": self.spool.dropped_for_space,
                "callback_errors": self.stats.callback_errors}

    # -- thread side -----------------------------------------------------------
    def _due(self, now: float) -> float | None:
        """Under the lock: 0 if a frame is to be written now, else how long
        until one is (None: until asked)."""
        if (self._stopping or self._markers or self._entries_out < self._sync_wants
                or self._pending_records >= self.frame_records
                or self._pending_bytes >= self.frame_bytes):
            return 0.0
        if not self._pending or self.linger is None:
            return None
        return max(0.0, self._pending[0].since + self.linger - now)

    def _take(self) -> list[tuple[Batch, OnDurable | None]]:
        """Under the lock: the pieces of one frame, oldest first. Whole
        batches while they fit; the batch that does not is cut at the limit
        and the rest stays at the head of the queue. A piece that is not its
        batch's last carries no callback."""
        taken: list[tuple[Batch, OnDurable | None]] = []
        n = size = 0
        pending = self._pending
        while pending and n < self.frame_records and size < self.frame_bytes:
            entry = pending[0]
            batch, start = entry.batch, self._head
            rows = len(batch) - start
            if start == 0 and rows <= self.frame_records - n and entry.left <= self.frame_bytes - size:
                piece, k, piece_size = batch, rows, entry.left
            else:
                k, piece_size = _fit(batch, start, min(rows, self.frame_records - n),
                                     self.frame_bytes - size, alone=not n)
                if k == 0:
                    break  # the frame is full by bytes
                piece = batch if start == 0 and k == rows else _rows(batch, start, start + k)
                if piece is not batch:
                    piece.text_size = piece_size
            if start + k == len(batch):  # the batch's last piece
                pending.popleft()
                self._head = 0
                self._entries_out += 1
                self._markers -= entry.marker
                self._pending_bytes -= entry.left
                self.stats.batches += 1
                taken.append((piece, entry.on_durable))
            else:
                self._head = start + k
                self.stats.split_batches += start == 0
                left = max(0, entry.left - piece_size)
                self._pending_bytes -= entry.left - left
                entry.left = left
                taken.append((piece, None))
            n += k
            size += piece_size
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
                quiet = False
                with self._cond:
                    while (wait := self._due(time.monotonic())) != 0.0:
                        if wait is not None:
                            self._cond.wait(wait)
                        elif not self._cond.wait(MAINTAIN_EVERY_S) \
                                and self._due(time.monotonic()) != 0.0:
                            quiet = True  # time for the spool's upkeep
                            break
                    if self.error is not None:
                        return  # the sync thread failed: nothing more is written
                    taken = [] if quiet else self._take()
                    frames = [taken] if taken else []
                    # a batch with a source position cut at the frame's end:
                    # take the rest of it now, to write it as one group
                    while frames and self._head and self._head_has_position():
                        frames.append(self._take())
                    behind = self._pending_records >= self.frame_records
                    stopping = self._stopping and not self._pending
                    written = self._entries_out
                if frames:
                    batches = [(_one_frame([batch for batch, _ in t]), t) for t in frames]
                    # one write, or (a group too big for now) one per frame, as before
                    writes = [batches] if self._group_fits(batches) else [[b] for b in batches]
                    for write in writes:
                        last = self._append_blocking(write, fast=behind)
                        taken = [piece for _, t in write for piece in t]
                        frames_n = sum(bool(len(records)) for records, _ in write)
                        self.stats.fast_frames += frames_n if behind else 0
                        if self.fsync == "always" or (stopping and self.fsync == "batch"):
                            with self._spool_lock:
                                spool.sync()
                            self.stats.syncs += 1
                        self.stats.records += sum(len(records) for records, _ in write)
                        self.stats.frames += frames_n
                        callbacks = [cb for _, cb in taken if cb is not None]
                        if callbacks:
                            def register(last: int = last, callbacks: list[OnDurable] = callbacks) -> None:
                                self._callbacks.extend((last, cb) for cb in callbacks)
                            assert self._loop is not None
                            self._loop.call_soon_threadsafe(register)
                        if len(writes) > 1:
                            self._report(spool.next_seq - 1, spool.next_seq - 1 if self.fsync == "never"
                                         else spool.durable_seq)
                    with self._cond:
                        self._entries_written = written
                        self._written.notify_all()
                elif stopping and self.fsync == "batch":
                    with self._spool_lock:
                        spool.sync()
                elif quiet:
                    try:
                        with self._spool_lock:
                            spool.maintain()
                    except OSError as exc:
                        if not no_space(exc):
                            raise
                        log.warning("spool upkeep waits for room on the disk: %s", exc)
                durable = spool.next_seq - 1 if self.fsync == "never" else spool.durable_seq
                self._report(spool.next_seq - 1, durable)
                if stopping:
                    return
        except BaseException as exc:  # the agent sees it and stops; nothing is hidden
            self._failed(exc, "spool writer failed")
        finally:
            self._sync_stop.set()
            with self._cond:
                self._written.notify_all()

    def _failed(self, exc: BaseException, what: str) -> None:
        """A thread of the writer died: say so, wake everyone waiting for room
        (their next write raises), and tell the agent, which stops. The
        first error is the one kept (the other thread may fail after it)."""
        if isinstance(exc, SpoolSyncError):
            with self._spool_lock:
                if self.spool.sync_failed is None:
                    self.spool.sync_failed = exc
            what = (f"{what} and is not retried (records after seq {self.spool.durable_seq} "
                    f"were never durable; the agent stops, and replayable sources read them "
                    f"again at its next start)")
        if self.error is not None:
            log.error("%s (after the first failure): %s", what, exc)
            return
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

    def _ask_for_frames(self) -> None:
        """Before a sync: have the writer write what is pending (the frame it
        lets fill), and wait for it, at most one interval (a writer blocked
        on a full spool must not hold up the sync of what it did write)."""
        with self._cond:
            if self._entries_in == self._entries_out:
                return
            want = self._entries_in
            self._sync_wants = want
            self._cond.notify()
            deadline = time.monotonic() + self.fsync_interval
            while self._entries_written < want and not self._stopping and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._written.wait(left)

    def _run_sync(self) -> None:
        """Group commit for fsync = "batch": every fsync_interval, have the
        writer write what it holds, then fdatasync what has been written, on
        its own thread so the writer never waits for the disk (a sync of a
        copy of the fd: rotation may close the original, and sealing syncs
        that segment itself)."""
        spool = self.spool
        try:
            while not self._sync_stop.wait(self.fsync_interval):
                self._ask_for_frames()
                with self._spool_lock:
                    if spool.active is None or spool.next_seq - 1 <= spool.durable_seq:
                        continue
                    fd, seq = spool.begin_sync()
                try:
                    # An error here is final: after a failed fdatasync the
                    # kernel may have dropped the pages, so a retry that
                    # succeeds would claim durability falsely.
                    faultpoint("segment-sync")
                    os.fdatasync(fd)
                except OSError as exc:
                    with self._spool_lock:
                        spool.fail_sync(exc)
                    raise SpoolSyncError(f"fdatasync of the active segment failed: {exc}") from exc
                finally:
                    os.close(fd)
                crashpoint("synced")
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
        position with the seq its batch will end at, before the frame is
        written. A piece that is not its batch's last has no callback here,
        so a position is noted only with the frame that ends its batch."""
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

    def _head_has_position(self) -> bool:
        """Under the lock: does the batch at the head of the queue carry a source position?"""
        return getattr(self._pending[0].on_durable, "position", None) is not None

    def _group_fits(self, frames: list[tuple[Batch, list[tuple[Batch, OnDurable | None]]]]) -> bool:
        """Are ``frames`` (each: its records, and the pieces they are made
        of) to be written as one group?

        Several frames come at once when a batch that carries a source
        position was cut across frames. They are written as one group
        (Spool.append_group): the position is noted only with the frame that
        ends the batch, and pieces written one by one would, after a kill -9
        between them, stay in the spool while the noted position is still
        before them: the restarted source would read them again, and store
        them twice (tests/faults/test_kill.py, a backlog of 20,000 lines and
        a kill after the second frame: 8,192 lines twice). A group bigger
        than the spool may still take while a destination holds data back
        (Spool.group_fits) is written frame by frame, as before: a full spool
        then blocks in the middle of the batch, not in front of it, and a
        kill -9 between its frames repeats the pieces written."""
        if len(frames) == 1:
            return True
        with self._spool_lock:
            return self.spool.group_fits(sum(_text_bytes(records) for records, _ in frames))

    def _append_blocking(self, frames: list[tuple[Batch, list[tuple[Batch, OnDurable | None]]]],
                         fast: bool) -> int:
        """Append as one frame (or one group, see :meth:`_group_fits`),
        waiting while the spool is full: returns the last seq written. The
        spool lock is held per attempt only, so the sync thread keeps making
        what was written durable while this waits.

        Full by max_bytes (retention may not free what a destination has not
        acknowledged, on_full = block): tried again every second. Full disk
        (ENOSPC, EDQUOT; the spool cut the torn write back to its last whole
        frame): with on_full = drop_oldest the oldest sealed segment goes and
        the write is tried again at once; else (or with nothing left to
        drop) tried again after FULL_RETRY_MIN_S, doubling to
        FULL_RETRY_MAX_S. The source positions are noted once, before the
        first try: every try writes the same frames with the same seqs."""
        taken = [piece for _, pieces in frames for piece in pieces]
        noted = warned = dropped_last = False
        backoff = FULL_RETRY_MIN_S
        while True:
            try:
                with self._spool_lock:
                    if not noted:
                        self._note_positions(taken)
                        noted = True
                    if len(frames) == 1:
                        last = self.spool.append(frames[0][0], fast=fast)[1]
                    else:
                        last = self.spool.append_group([records for records, _ in frames], fast=fast)[1]
            except SpoolFullError as exc:
                if self._stopping:
                    raise
                if not warned:  # once per wait, not once per retry
                    log.warning("%s; waiting for destinations to acknowledge", exc)
                    warned = True
                self._set_full(FULL_MAX_BYTES)
                self._pause(1.0)  # a second between retries; stop() ends the wait at once
                continue
            except OSError as exc:
                if not no_space(exc) or self._stopping:
                    raise
                self._set_full(FULL_DISK)
                self.stats.full_retries += 1
                if self.spool.on_full == "drop_oldest":
                    if dropped_last:  # a drop did not make room: let readers close it first
                        self._pause(FULL_RETRY_MIN_S)
                    with self._spool_lock:
                        dropped = self.spool.drop_oldest_for_room()
                    if dropped is not None:  # said by the agent's record about drops
                        dropped_last = True
                        continue
                dropped_last = False
                if not self._full_said:  # once per wait: nothing was dropped, writes wait
                    log.warning("spool full: %s; writes wait for room (on_full = %s)",
                                exc, self.spool.on_full)
                    self._full_said = True
                self._pause(backoff)
                backoff = min(backoff * 2, FULL_RETRY_MAX_S)
                continue
            self._writable_again()
            return last

    def _set_full(self, reason: str) -> None:
        if self.full != reason:
            if self.full is None:
                self.full_since = time.monotonic()
                self.stats.full_waits += 1
            self.full = reason

    def _writable_again(self) -> None:
        if self.full is None:
            return
        if self._full_said or self.full != FULL_DISK:
            log.info("spool writable again after %.1f s (it was full: %s)",
                     time.monotonic() - self.full_since, self.full)
        self.full = None
        self._full_said = False

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` (stop() ends the wait at once), counted as blocked."""
        t0 = time.monotonic()
        with self._cond:
            while not self._stopping and (left := t0 + seconds - time.monotonic()) > 0:
                self._cond.wait(left)
        self.stats.blocked_s += time.monotonic() - t0


def _text_bytes(batch: Batch) -> int:
    """The message text of a batch, as the frame_bytes limit counts it."""
    return batch.text_bytes()


def _fit(batch: Batch, start: int, most: int, room: int, *, alone: bool) -> tuple[int, int]:
    """How many rows from ``start`` (at most ``most``) fit in ``room`` bytes
    of message text, and their size. ``alone``: the frame is empty, so at
    least one row goes in, however big."""
    sizes = list(accumulate(map(len, batch.msg[start:start + most])))
    k = bisect_right(sizes, room)
    if k == 0 and alone:
        k = 1  # one record bigger than frame_bytes: a frame of its own
    return k, sizes[k - 1] if k else 0


def _rows(batch: Batch, start: int, stop: int) -> Batch:
    return batch.slice(start, stop)


def _one_frame(batches: list[Batch]) -> Batch:
    """The batches taken for one frame as one batch."""
    if len(batches) == 1:
        return batches[0]
    merged = Columns.empty(fields_pool=[])
    for batch in batches:
        merged.extend(batch)
    if merged.fields_pool:  # each shared fields dict once: the index and counts pass over the pool
        merged.fields_pool = list({id(f): f for f in merged.fields_pool}.values())
    return merged
