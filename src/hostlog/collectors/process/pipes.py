"""Reading the supervised apps' stdout and stderr (one :class:`Pipes` per supervisor).

every app's pipes are in one
epoll that the event loop watches; a wake-up reads each readable pipe once,
in a callback (no task and no future per read), with one ``os.read`` of up
to a pipe's capacity. A line is stamped with the time it was read. The
lines go into one :class:`~hostlog.record.Columns` batch shared by all apps
(one list per attribute, no object per line), handed to
``context.sink.submit`` at once when it holds :data:`HANDOFF_BYTES` or
:data:`HANDOFF_ROWS`, else once the loop has handled what woke it (before
it sleeps again: no line waits in the collector; the writer then writes it
within one sync interval, docs/guarantees.md). Many
quiet apps are read in gulps (see :meth:`Pipes._wake`): twenty of them
share one wake-up and one batch per gulp instead of one per line. When the
sink has no room after a hand-over, no pipe is read until it has: a child
writing faster than the spool takes blocks in write(2), backpressure, not
an unbounded buffer (the overshoot is one batch). A stream's end hands over
what is pending at once, so an app's lines always precede its "exited"
record.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import time
from collections.abc import Callable
from typing import Any

from hostlog.collectors.base import CollectorContext
from hostlog.collectors.process.child import Child
from hostlog.collectors.process.lines import EOF, LINE_MAX, TIMEOUT, Captured, LineCapture, Multiline, concat
from hostlog.config import App
from hostlog.errors import SinkError
from hostlog.record import COLUMNS, Columns

__all__ = ["Pipes", "Stream"]

log = logging.getLogger("hostlog.process")

# One os.read takes whatever the pipe holds, up to this: a pipe's default
# capacity, so a read gets all a full pipe holds, and the buffer a read
# allocates stays below malloc's mmap threshold (a quiet app's read of one
# line must not cost an mmap).
READ_CHUNK = 1 << 16
# Gulps (see _Pipes._wake): reading waits for many lines only while the
# pipes wake the loop more than GULP_RATE times a second; a line may then
# wait up to GULP_DELAY in its pipe. Below that rate every line is read at once.
GULP_RATE = 1000  # wake-ups per second
GULP_WINDOW = 0.02  # over which wake-ups are counted
GULP_DELAY = 0.01
GULP_BIG = 1 << 14  # a read this big ends a gulp: a busy pipe must not fill up
# A batch goes to the sink when the loop has handled what woke it (lines read
# are in the writer's hands before the loop sleeps again, none waits here),
# or at once when it holds this many bytes
# or lines. Many quiet apps still share a batch: a gulp is read in one go.
HANDOFF_BYTES = 1 << 20
HANDOFF_ROWS = 8192

class Stream:
    """One pipe of one run of an app, as :class:`Pipes` reads it."""

    __slots__ = ("app", "pid", "child", "fd", "capture", "multiline", "fields", "marked", "done", "quiet")

    def __init__(self, app: str, child: Child, fd: int, name: str, capture: LineCapture,
                 multiline: Multiline | None = None) -> None:
        self.app, self.pid, self.child, self.fd, self.capture = app, child.pid, child, fd, capture
        self.multiline = multiline  # the app's multiline_start: lines joined into records
        # Shared by the rows of this stream (Columns rows are read-only): no dict per line.
        self.fields = {"stream": name}
        self.marked = {brk: {"stream": name, "line_break": brk} for brk in (LINE_MAX, TIMEOUT, EOF)}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.quiet: asyncio.TimerHandle | None = None  # the partial line's timeout


class Pipes:
    """The pipes of every app, read on the loop into one shared Columns batch
    (see the module docstring: capture)."""

    def __init__(self, context: CollectorContext, partial_timeout: float) -> None:
        self.context = context
        self.partial_timeout = partial_timeout
        self.streams: dict[int, Stream] = {}  # by fd
        self.paused = False  # the sink had no room: no pipe is read
        self._epoll: select.epoll | None = None  # every open pipe, level-triggered
        self._watching = False  # the loop watches the epoll
        self._gulp: asyncio.TimerHandle | None = None  # reading waits for a gulp
        self._window_start = 0.0  # wake-ups are counted over GULP_WINDOW
        self._window_wakes = 0
        self._lines_in = 0  # lines ever read (a gulp counts what it found)
        self._timer: asyncio.Handle | None = None
        self._resume_task: asyncio.Task[None] | None = None
        self._new_batch()

    def _new_batch(self) -> None:
        self._columns: list[list] = [[] for _ in COLUMNS]
        self._rows = 0
        self._bytes = 0
        self._in_batch: set[Stream] = set()
        self._marks_used: list[dict[str, str]] = []  # marked fields the batch's rows use

    # -- streams -----------------------------------------------------------------
    def open(self, app: App, child: Child, fd: int, name: str, severity: int) -> asyncio.Future[None]:
        """Read ``fd`` until its end; the future is done once it is closed."""
        multiline = Multiline(app.multiline_start, max_line=app.max_line) if app.multiline_start else None
        s = Stream(app.name, child, fd, name, LineCapture(max_line=app.max_line, default_severity=severity),
                   multiline)
        if self._epoll is None:
            self._epoll = select.epoll()
        self._epoll.register(fd, select.EPOLLIN)
        self.streams[fd] = s
        self._watch()
        return s.done

    def abandon(self, child: Child) -> None:
        """Stop reading ``child``'s pipes (a process outside its group holds them)."""
        for s in [s for s in self.streams.values() if s.child is child]:
            self._guarded(self._end, s)

    def close(self) -> None:
        """Release the epoll once no pipe is open (it is made again when one is)."""
        if self._epoll is not None and not self.streams:
            self._unwatch()
            self._epoll.close()
            self._epoll = None

    def _watch(self) -> None:
        if not self._watching and not self.paused and self._gulp is None and self._epoll:
            asyncio.get_running_loop().add_reader(self._epoll.fileno(), self._wake)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching and self._epoll is not None:
            asyncio.get_running_loop().remove_reader(self._epoll.fileno())
            self._watching = False

    def _wake(self) -> None:
        """Some pipes are readable: read each once.

        Gulps: while the pipes wake the loop more than GULP_RATE times a
        second (counted over GULP_WINDOW), the loop stops watching them and
        reads every GULP_DELAY whatever came meanwhile, all in one go. It
        goes on so while a gulp finds at least GULP_RATE reads' worth of
        data per second, and watches again (reads at once) when one finds
        less. So twenty quiet apps cost one wake-up per GULP_DELAY instead
        of one per line, while an app writing a few hundred lines a second
        is read at once. A read of GULP_BIG or more (a pipe filling up) ends
        a gulp: a busy app is never held back.

        What a gulp found is counted in lines, not in pipes read: twenty
        apps printing a line each per gulp are twenty wake-ups saved, and so
        are five lines of one app (each was a write(2), each would have
        woken the loop).
        """
        now = time.monotonic()
        if now - self._window_start > GULP_WINDOW:
            self._window_start, self._window_wakes = now, 0
        self._window_wakes += 1
        reads, big = self._read_ready()
        if self._window_wakes > GULP_RATE * GULP_WINDOW and reads and not big:
            self._unwatch()
            self._gulp = asyncio.get_running_loop().call_later(GULP_DELAY, self._gulp_done)

    def _read_ready(self) -> tuple[int, bool]:
        """Read each readable pipe once: (pipes read, any read big)."""
        if self._epoll is None:
            return 0, False
        reads, big = 0, False
        for fd, _ in self._epoll.poll(0):
            s = self.streams.get(fd)
            if s is not None:
                got = self._guarded(self._read, s) or 0
                reads += got > 0
                big = big or got >= GULP_BIG
        return reads, big

    def _gulp_done(self) -> None:
        self._gulp = None
        if self.paused:
            return  # _resume watches again
        before = self._lines_in
        _, big = self._read_ready()
        lines = self._lines_in - before
        self.handoff()  # one batch per gulp: no timer of its own
        if lines >= GULP_RATE * GULP_DELAY and not big and not self.paused:
            self._gulp = asyncio.get_running_loop().call_later(GULP_DELAY, self._gulp_done)
        else:
            self._window_start, self._window_wakes = time.monotonic(), 0
            self._watch()

    def _quiet(self, s: Stream) -> None:
        s.quiet = None
        self._guarded(self._flush_partial, s)

    def _guarded(self, work: Callable[[Stream], Any], s: Stream) -> Any:
        """Run a callback's work; nothing it raises is left to the loop (which
        would log it and call the reader again and again)."""
        try:
            return work(s)
        except SinkError:  # reported by the sink, which stops the agent
            self._close(s)
        except Exception as exc:  # a bug: what this pipe held is lost, so stop the agent
            self.context.error("process", "capture", exc, fatal=True)
            self._close(s)
        return None

    def _read(self, s: Stream) -> int:
        """Read ``s`` once; returns the bytes read."""
        try:
            data = os.read(s.fd, READ_CHUNK)
        except BlockingIOError:
            return 0
        except OSError as exc:
            log.warning("%s: reading %s failed: %s", s.app, s.fields["stream"], exc)
            self._end(s)
            return 0
        if not data:
            self._end(s)
            return 0
        line = s.capture.single(data) if s.multiline is None else None
        if line is not None:  # a quiet app's read: one whole line, no columns of its own
            self._add_line(s, line, s.capture.default_severity, len(data))
        else:
            lines = s.capture.take(data)
            if s.multiline is not None:
                lines = s.multiline.take(lines)
            self._add(s, lines, len(data))
        if s.quiet is not None:
            s.quiet.cancel()
            s.quiet = None
        # a partial line waits for its LF, an open multiline record for its
        # next start line: up to partial_timeout of quiet
        if s.capture.pending or (s.multiline is not None and s.multiline.pending):
            s.quiet = asyncio.get_running_loop().call_later(self.partial_timeout, self._quiet, s)
        return len(data)

    def _flush_partial(self, s: Stream) -> None:
        self._add(s, self._flushed(s, TIMEOUT), 0)

    @staticmethod
    def _flushed(s: Stream, reason: str) -> Captured:
        """The partial line, marked ``reason``; with multiline, the open record too."""
        lines = s.capture.take_flush(reason)
        if s.multiline is None:
            return lines
        return concat(s.multiline.take(lines), s.multiline.flush())

    def _end(self, s: Stream) -> None:
        """End of the stream: its partial line, then everything pending, to the sink."""
        try:
            self._add(s, self._flushed(s, EOF), 0)
            self.handoff()
        finally:
            self._close(s)

    def _close(self, s: Stream) -> None:
        if self.streams.get(s.fd) is not s:
            return
        del self.streams[s.fd]
        if s.quiet is not None:
            s.quiet.cancel()
        if self._epoll is not None:
            self._epoll.unregister(s.fd)
        os.close(s.fd)
        if not s.done.done():
            s.done.set_result(None)

    # -- the batch ------------------------------------------------------------------
    def _add(self, s: Stream, lines: Captured, nbytes: int) -> None:
        """Append lines of ``s`` (``nbytes`` read for them, 0: count them)."""
        n = len(lines.msgs)
        if not n:
            return
        if n == 1 and not lines.breaks:
            self._add_line(s, lines.msgs[0], lines.severities[0], nbytes or len(lines.msgs[0]))
            return
        ts = time.time_ns()  # when read: a stdout line carries no time of its own
        (c_ts, c_host, c_source, c_app, c_pid, c_sev, c_fac, c_msg, c_fields, c_origin,
         c_seq) = self._columns
        fields = [s.fields] * n
        for i, brk in lines.breaks.items():
            fields[i] = s.marked[brk]
        if lines.breaks:
            self._marks_used += [s.marked[brk] for brk in set(lines.breaks.values())]
        c_ts += [ts] * n
        c_host += [self.context.hostname] * n
        c_source += ["process"] * n
        c_app += [s.app] * n
        c_pid += [s.pid] * n
        c_sev += lines.severities
        c_fac += [None] * n
        c_msg += lines.msgs
        c_fields += fields
        c_origin += [""] * n
        c_seq += [0] * n
        self._added(s, n, nbytes or sum(map(len, lines.msgs)))

    def _add_line(self, s: Stream, msg: str | bytes, severity: int, nbytes: int) -> None:
        """Append one line of ``s`` (a quiet app's read: no list per column)."""
        (c_ts, c_host, c_source, c_app, c_pid, c_sev, c_fac, c_msg, c_fields, c_origin,
         c_seq) = self._columns
        c_ts.append(time.time_ns())  # when read: a stdout line carries no time of its own
        c_host.append(self.context.hostname)
        c_source.append("process")
        c_app.append(s.app)
        c_pid.append(s.pid)
        c_sev.append(severity)
        c_fac.append(None)
        c_msg.append(msg)
        c_fields.append(s.fields)
        c_origin.append("")
        c_seq.append(0)
        self._added(s, 1, nbytes)

    def _added(self, s: Stream, n: int, nbytes: int) -> None:
        """``n`` rows of ``s`` (``nbytes`` of text) are in the batch: hand it
        over when it is big, else once the loop has handled this wake-up."""
        self._in_batch.add(s)
        self._rows += n
        self._lines_in += n
        self._bytes += nbytes
        if self._rows >= HANDOFF_ROWS or self._bytes >= HANDOFF_BYTES:
            self.handoff()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_soon(self._handoff_due)

    def _handoff_due(self) -> None:
        self._timer = None
        try:
            self.handoff()
        except SinkError:
            pass  # reported by the sink, which stops the agent
        except Exception as exc:
            self.context.error("process", "handoff", exc, fatal=True)

    def handoff(self) -> None:
        """Give the pending batch to the sink now; pause reading if it is full."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._rows:
            return
        # the fields dicts the rows use, each once (the spool's index and
        # counts pass over the pool, not over the rows)
        pool = [s.fields for s in self._in_batch]
        pool += {id(f): f for f in self._marks_used}.values()
        batch = Columns(self._columns, text_size=self._bytes, fields_pool=pool)
        self._new_batch()
        sink = self.context.sink
        sink.submit(batch)
        if not self.paused and not sink.has_room():
            self._pause()

    def _pause(self) -> None:
        self.paused = True
        self._unwatch()
        self._resume_task = asyncio.get_running_loop().create_task(
            self._resume(), name="app pipes: wait for room")

    async def _resume(self) -> None:
        try:
            await self.context.sink.wait_room()
        finally:
            self.paused = False
            self._watch()
