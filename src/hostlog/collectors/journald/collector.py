"""The journald collector: the systemd journal, read with systemd-python.

How it runs:

* ``systemd.journal.Reader`` opens the system journal, or the journal files
  under ``directory``. Entries are read in batches of up to
  :data:`BATCH_ENTRIES` on a worker thread (a backlog of millions must not
  stall the event loop), mapped as ``journal_to_record`` maps them straight
  into :class:`~hostlog.record.Columns` and written to the sink as one batch
  each: by the compiled ``_journald_read`` when it was built, else by
  systemd-python's raw calls and :mod:`hostlog.collectors.journald.mapping`
  (no Record per entry either way: that mapping was most of the cost). The
  reader is only ever used by one thread at a time: the loop waits for each
  read before it touches the reader again (the compiled reader relies on it
  when it reads without the GIL).
* When the journal has nothing more, the loop watches the reader's file
  descriptor (inotify inside libsystemd) and reads again when it becomes
  readable, after ``process()`` has consumed the event. A slow timer re-reads
  anyway in case the descriptor is not reliable (network file systems).
* Position: the cursor of the last entry of a batch is saved only once that
  batch is durable in the spool (:mod:`hostlog.collectors.checkpoint`). A
  restart seeks to the cursor and skips the entry it names (which is already
  in the spool), so a kill -9 repeats nothing and loses nothing.
* First start (no checkpoint): ``start = "beginning"`` reads every entry the
  journal has; ``"now"`` only those written from now on, and saves the
  position at once, so a crash before the first entry does not move "now".
* A saved cursor the journal no longer has (vacuumed, or journal files
  replaced): reading starts at the oldest entry and one record says so.

``matches`` are added after the cursor is checked, so a cursor whose entry no
longer matches (the matches were changed) is still found and not mistaken
for a vacuumed one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hostlog.collectors.base import CollectorContext, finish_task
from hostlog.collectors.checkpoint import STOP_WAIT, DurableCheckpoint
from hostlog.collectors.events import Counted
from hostlog.collectors.journald.mapping import JournalEntry, columns_of, entries_to_columns
from hostlog.config import JournaldSource
from hostlog.record import Columns, Record

try:  # built with the package when libsystemd-dev is there (setup.py)
    from hostlog.collectors.journald import _journald_read as _journald_read  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - the Python reader does the same, slower
    _journald_read = None

log = logging.getLogger("hostlog.journald")

#: Entries per batch: big enough that per-batch costs vanish, small enough
#: that a batch is a few MiB at most.
BATCH_ENTRIES = 5000
#: Largest field value asked of libsystemd (a hint it applies to compressed
#: fields); journald's own limit is 768 MiB, which a log agent should not hold.
DATA_THRESHOLD = 16 << 20
#: Seconds between reads when no inotify event came (safety net).
SAFETY_WAKE = 5.0
#: Seconds between reads when libsystemd says its descriptor is not reliable.
UNRELIABLE_WAKE = 0.25


class JournaldCollector:
    """One ``[[source]] type = "journald"``."""

    def __init__(self, config: JournaldSource, context: CollectorContext) -> None:
        self.name: str = config.name or "journald"
        self.config = config
        self.context = context
        self.checkpoint = DurableCheckpoint(context.checkpoints, self.name)
        self.stop_wait = STOP_WAIT  # for the last batches to be durable, in stop()
        self.batch_entries = BATCH_ENTRIES
        self.compiled = True  # read with _journald_read when it was built
        self.reader: Any = None
        self._task: asyncio.Task[None] | None = None
        self._reading: asyncio.Future[Any] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._first: list[Record] = []          # the "cursor not found" notice, if any
        self._start_cursor: str | None = None   # position of start = "now", saved at once

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        try:
            from systemd import journal  # systemd-python is an optional dependency
        except ImportError as exc:
            raise ValueError(f"the journald source needs systemd-python: {exc}") from None
        self.reader = await asyncio.to_thread(self._open, journal)
        # a task that dies stops the agent (the guard): it must not stop reading unseen
        self._task = asyncio.get_running_loop().create_task(
            self.context.guard(self.name, "run", self._run()), name=f"collector {self.name}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        await finish_task(self._task)
        if self._reading is not None:
            await asyncio.gather(self._reading, return_exceptions=True)
        await self.checkpoint.close(self.context.sink, self.stop_wait)
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    # -- positioning (worker thread) --------------------------------------------------
    def _open(self, journal: Any) -> Any:
        if self.config.directory is not None:
            reader = journal.Reader(path=str(self.config.directory))
        else:
            reader = journal.Reader()
        reader.data_threshold = DATA_THRESHOLD
        reader.fileno()  # sets up inotify before positioning, so no change is missed
        saved = self.checkpoint.load()
        cursor = saved.get("cursor") if isinstance(saved, dict) else None
        if cursor:
            if not self._seek_after(reader, cursor):
                log.warning("%s: cursor not in the journal; reading from the oldest entry", self.name)
                self._first.append(self.context.notice(
                    "hostlog", f"journald source {self.name}: the saved cursor is no longer in the "
                    "journal (vacuumed?); reading from the oldest entry, entries in between are lost",
                    severity=4, SOURCE_NAME=self.name, CURSOR=cursor))
                reader.seek_head()
        elif self.config.start == "beginning":
            reader.seek_head()
        else:
            reader.seek_tail()
            # Step onto the last entry so the next read returns the first new one.
            if reader._previous():
                self._start_cursor = reader._get_cursor()
            else:
                # An empty journal: everything it will hold is "from now on".
                # (Left at the tail, libsystemd would not return later entries.)
                reader.seek_head()
        for match in self.config.matches:
            reader.add_match(match)
        return reader

    @staticmethod
    def _seek_after(reader: Any, cursor: str) -> bool:
        """Position on the entry ``cursor`` names; False if the journal lacks it."""
        try:
            reader.seek_cursor(cursor)
            # seek_cursor only sets a location; reading the next entry lands on
            # the cursor's own entry if it still exists (sd_journal_test_cursor(3)).
            return bool(reader._next()) and bool(reader.test_cursor(cursor))
        except (OSError, ValueError):  # a malformed cursor
            return False

    # -- reading ---------------------------------------------------------------------
    def _read_batch(self, process: bool) -> tuple[Columns, str | None, int]:
        """Up to ``batch_entries`` records, the cursor of the last, and how many
        entries were skipped as unreadable (worker thread)."""
        reader = self.reader
        if process:
            reader.process()  # consume the inotify events; picks up new/rotated files
        if self.compiled and _journald_read is not None:
            records, skipped = self._read_compiled()
        else:
            records, skipped = self._read_python()
        cursor = None
        if records:
            try:
                cursor = reader._get_cursor()
            except OSError:
                pass  # the position stays where it was: a restart repeats, never loses
        return records, cursor, skipped

    def _read_compiled(self) -> tuple[Columns, int]:
        """libsystemd's calls in C, each entry mapped as it is read."""
        hostname = self.context.hostname
        (ts, host, app, pid, severity, facility, msg, fields, redo, skipped, skip_error,
         stop_error) = _journald_read.read_batch(self.reader, self.batch_entries, hostname)
        if skipped:  # a corrupt entry: journalctl skips it too
            log.warning("%s: skipped %d unreadable journal entries: %s", self.name, skipped,
                        skip_error)
        if stop_error is not None:  # cannot step past it now; the next read tries again
            log.warning("%s: the journal cannot move on: %s", self.name, stop_error)
        return columns_of(ts, host, app, pid, severity, facility, msg, fields, redo,
                          hostname), skipped

    def _read_python(self) -> tuple[Columns, int]:
        """The same with systemd-python's raw calls (no per-field conversion),
        mapped a batch at a time afterwards."""
        reader = self.reader
        entries: list[JournalEntry] = []
        realtimes: list[int] = []
        monotonics: list[int] = []
        add_entry, add_realtime, add_monotonic = entries.append, realtimes.append, monotonics.append
        next_entry, get_all = reader._next, reader._get_all
        realtime, monotonic = reader._get_realtime, reader._get_monotonic
        limit = self.batch_entries
        skipped = 0
        while len(entries) + skipped < limit:
            try:
                if not next_entry():
                    break
            except OSError as exc:
                # cannot step past it now; the next read tries again
                log.warning("%s: the journal cannot move on: %s", self.name, exc)
                break
            try:
                entry = get_all()
                at = realtime()
                since_boot = monotonic()[0]
            except OSError as exc:  # a corrupt entry: journalctl skips it too
                skipped += 1
                log.warning("%s: skipping an unreadable journal entry: %s", self.name, exc)
                continue
            add_entry(entry)
            add_realtime(at)
            add_monotonic(since_boot)
        return entries_to_columns(entries, realtimes, monotonics, self.context.hostname), skipped

    async def _run(self) -> None:
        sink = self.context.sink
        if self._first:
            self.context.count(self.name, Counted.CURSOR_LOST)
        if self._first or self._start_cursor:
            value = {"cursor": self._start_cursor} if self._start_cursor else None
            await sink.write(Columns.of(self._first), on_durable=self.checkpoint.on_durable(value) if value else None)
            self._first = []
        process = False
        while not self._stopping:
            self._reading = asyncio.ensure_future(asyncio.to_thread(self._read_batch, process))
            try:
                # shielded: a cancelled task must not leave the thread using the reader
                records, cursor, skipped = await asyncio.shield(self._reading)
            except OSError as exc:
                # e.g. a journal file that vanished under process(); the
                # reader recovers on a later call, so wait and try again
                log.warning("%s: reading the journal: %s", self.name, exc)
                self.context.count(self.name, Counted.READ_ERRORS)
                records, cursor, skipped = Columns.of([]), None, 0
            self._reading = None
            process = False
            if skipped:
                self.context.count(self.name, Counted.UNREADABLE, skipped)
            if records:
                self.context.count(self.name, Counted.RECORDS, len(records))
                await sink.write(records, on_durable=(self.checkpoint.on_durable({"cursor": cursor})
                                                      if cursor else None))
                if len(records) + skipped >= self.batch_entries:
                    continue  # a backlog: read on without waiting
            await self._wait_for_change()
            process = True

    async def _wait_for_change(self) -> None:
        if self._stopping:
            return
        loop = asyncio.get_running_loop()
        fd = self.reader.fileno()
        timeout = SAFETY_WAKE if self.reader.reliable_fd() else UNRELIABLE_WAKE
        self._wake.clear()
        # Registered only while waiting: the descriptor stays readable until
        # process() runs, and a permanent reader callback would spin meanwhile.
        loop.add_reader(fd, self._wake.set)
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(fd)
