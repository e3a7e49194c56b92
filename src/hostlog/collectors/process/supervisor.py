"""Supervised applications: start them, capture their output, restart, stop.

The agent runs each ``[[app]]`` as a child and turns every line it writes on
stdout/stderr into a record (``source = "process"``, ``app`` = its name,
``pid``, ``fields.stream``; stdout at info, stderr at err, unless an sd-daemon
``<N>`` prefix says otherwise). Line rules: :mod:`.process_lines`; the OS
side of one child (process group, parent-death signal, reaping, leftovers of
a previous agent): :mod:`.process_child`.

States and transitions (one :class:`_App` per ``[[app]]``; every change that
matters is one lifecycle record and one log line, worded as supervisord's)::

    STOPPED  -> RUNNING    start: autostart, ``hostlog ctl start``, reload
    RUNNING  -> STOPPING   stop requested: stop_signal to the process group
    STOPPING -> STOPPED    the group is gone (SIGKILL after stop_timeout)
    RUNNING  -> BACKOFF    exited; the restart policy restarts it after a delay
    RUNNING  -> EXITED     exited; the policy does not restart it
    RUNNING  -> FATAL      exited; start_retries quick failures in a row: gave up
    BACKOFF  -> RUNNING    the delay is over (or ``ctl start``): spawned again
    BACKOFF  -> STOPPED    stop requested during the delay
    EXITED, FATAL -> RUNNING  start

A failed spawn (no such program, bad cwd or user) counts as a quick failure.
When the main process exits, whatever it left in its group is stopped too
(stop_signal, then SIGKILL), as systemd does with a service's cgroup, so a
restart never runs beside leftovers of the previous run.

Capture (:class:`_Pipes`, one per supervisor): every app's pipes are in one
epoll that the event loop watches; a wake-up reads each readable pipe once,
in a callback (no task and no future per read), with one ``os.read`` of up
to a pipe's capacity. A line is stamped with the time it was read. The
lines go into one :class:`~hostlog.record.Columns` batch shared by all apps
(one list per attribute, no object per line), handed to
``context.sink.submit`` at once when it holds :data:`HANDOFF_BYTES` or
:data:`HANDOFF_ROWS`, else once the loop has handled what woke it (before
it sleeps again, so a kill -9 of the agent loses no line it has read). Many
quiet apps are read in gulps (see :meth:`_Pipes._wake`): twenty of them
share one wake-up and one batch per gulp instead of one per line. When the
sink has no room after a hand-over, no pipe is read until it has: a child
writing faster than the spool takes blocks in write(2), backpressure, not
an unbounded buffer (the overshoot is one batch). A stream's end hands over
what is pending at once, so an app's lines always precede its "exited"
record.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import select
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from hostlog.collectors.base import CollectorContext
from hostlog.collectors.process.child import (
    KILL_WAIT,
    AppError,
    Child,
    exit_text,
    find_leftovers,
    kill_group,
    read_state,
    spawn,
    wait_event,
    write_state,
)
from hostlog.collectors.process.lines import EOF, LINE_MAX, TIMEOUT, Captured, LineCapture
from hostlog.config import App
from hostlog.errors import SinkError
from hostlog.record import COLUMNS, Columns, Record

__all__ = ["AppError", "ProcessSupervisor", "State"]

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
# are in the writer's hands before the loop sleeps again: a kill -9 of the
# agent loses no line it has read), or at once when it holds this many bytes
# or lines. Many quiet apps still share a batch: a gulp is read in one go.
HANDOFF_BYTES = 1 << 20
HANDOFF_ROWS = 8192
DRAIN_TIMEOUT = 5.0  # after the group is gone, how long the pipes may take to reach EOF
HELD_MAX = 60.0  # ... plus how long a full spool may hold the reading back meanwhile
SWEEP_INTERVAL = 10.0  # how often orphans of a running app are reaped


class State(str, enum.Enum):
    STOPPED = "STOPPED"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"


class _App:
    """One ``[[app]]``: its state, its current child and its supervising task."""

    def __init__(self, app: App, sup: ProcessSupervisor) -> None:
        self.app = app
        self.sup = sup
        self._state = State.STOPPED
        self.child: Child | None = None
        self.info = ""  # last exit / spawn error / restart delay, for status
        self.restarts = 0  # restarts done by the policy (not by ctl)
        self.failures = 0  # quick failures in a row (runs shorter than backoff_reset)
        self.want = False  # the app should be running
        self.lock = asyncio.Lock()  # one ctl command at a time per app
        self.task: asyncio.Task | None = None
        self._wake = asyncio.Event()  # ends a backoff delay early (stop, start)
        self._attempted = asyncio.Event()  # a spawn was tried (start returns then)

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        self._state = value
        self.sup.changed()

    # -- commands ----------------------------------------------------------------
    async def start(self) -> None:
        if self.task is not None and not self.task.done():
            if self.state is not State.BACKOFF:
                raise AppError(f"{self.app.name}: already started")
            self._wake.set()  # BACKOFF -> RUNNING now, not after the delay
            return
        self.want, self.failures = True, 0
        self._attempted.clear()
        self._wake.clear()
        self.task = asyncio.create_task(self._supervise(), name=f"app-{self.app.name}")
        await self._attempted.wait()

    async def stop(self) -> None:
        if self.task is None or self.task.done():
            if self.state in (State.EXITED, State.FATAL):
                self.state = State.STOPPED
                return
            raise AppError(f"{self.app.name}: not running")
        self.want = False
        self._wake.set()
        child = self.child
        if child is not None and child.returncode is None:
            self.state = State.STOPPING  # RUNNING -> STOPPING
            child.stop_requested = True
            child.kill_at = time.monotonic() + self.app.stop_timeout
            child.signal_group(signal.Signals[self.app.stop_signal])
            if not await wait_event(child.exited, self.app.stop_timeout):
                log.warning("%s did not stop within %gs: SIGKILL", self.app.name, self.app.stop_timeout)
                child.signal_group(signal.SIGKILL)  # the whole group: leftovers too
        await self.task

    # -- the supervising task ----------------------------------------------------
    async def _supervise(self) -> None:
        try:
            await self._run()
        except Exception:  # a bug here must not take the agent down: report, give up on the app
            log.exception("supervising %s failed", self.app.name)
            self.info = "internal error (see the agent log)"
            self.state = State.FATAL
        finally:
            self._attempted.set()

    async def _run(self) -> None:
        app, sup = self.app, self.sup
        while self.want:
            child = self._spawn()
            self._attempted.set()
            ran, restart = 0.0, app.restart != "never"
            if child is not None:
                self.state = State.RUNNING  # STOPPED/BACKOFF -> RUNNING
                await sup.lifecycle(app.name, child.pid, f"started: '{app.name}' with pid {child.pid}",
                                    6, event="started")
                await self._wait_exit(child)
                ran = time.monotonic() - child.started
                code = child.returncode
                self.info = exit_text(code)
                if child.stop_requested:
                    await sup.lifecycle(app.name, child.pid, f"stopped: '{app.name}' ({self.info})",
                                        6, event="stopped", exit=str(code))
                else:
                    ok = code == 0
                    await sup.lifecycle(
                        app.name, child.pid,
                        f"exited: '{app.name}' ({self.info}; {'expected' if ok else 'not expected'})",
                        6 if ok else 4, event="exited", exit=str(code))
                restart = app.restart == "always" or (app.restart == "on-failure" and code != 0)
            if not self.want:
                break
            if child is None and not restart:
                return await self._give_up("could not be started")  # STOPPED -> FATAL
            if not restart:
                self.state = State.EXITED  # RUNNING -> EXITED
                return
            if ran >= app.backoff_reset:  # a healthy run: the delay starts over
                self.failures = 0
            else:
                self.failures += 1
            if app.start_retries and self.failures >= app.start_retries:
                return await self._give_up("too many start retries too quickly")  # RUNNING -> FATAL
            delay = min(app.backoff_initial * 2 ** max(self.failures - 1, 0), app.backoff_max)
            self.info = f"restarting in {delay:g}s ({self.info})"
            self.state = State.BACKOFF  # RUNNING -> BACKOFF
            await sup.lifecycle(app.name, None, f"restarting: '{app.name}' in {delay:g} s",
                                5, event="restarting", delay=f"{delay:g}")
            self._wake.clear()
            await wait_event(self._wake, delay)
            if self.want:
                self.restarts += 1  # BACKOFF -> RUNNING
        self.state = State.STOPPED  # STOPPING/BACKOFF -> STOPPED

    async def _give_up(self, why: str) -> None:
        self.info = f"{why} ({self.info})"
        self.state = State.FATAL
        await self.sup.lifecycle(self.app.name, None,
                                 f"gave up: '{self.app.name}' entered FATAL state, {why}", 3,
                                 event="gave_up")

    def _spawn(self) -> Child | None:
        try:
            child = spawn(self.app, uuid.uuid4().hex)
        except (AppError, OSError, subprocess.SubprocessError, ValueError) as exc:
            command = self.app.command[0]
            reason = (f"can't find command {command!r}" if isinstance(exc, FileNotFoundError)
                      and exc.filename in (command, None) else str(exc))
            self.info = f"spawn error: {reason}"
            # Submitted, not awaited: nothing may interleave with a spawn attempt.
            self.sup.submit_lifecycle(self.app.name, None, f"spawnerr: '{self.app.name}': {reason}", 3,
                                      event="spawn_error")
            return None
        self.child = child
        self.sup.save_state()  # before anything else: a crash from here on leaves a record
        pipes = self.sup.pipes
        child.pumps = [pipes.open(self.app, child, child.stdout, "stdout", 6),
                       pipes.open(self.app, child, child.stderr, "stderr", 3)]
        return child

    async def _wait_exit(self, child: Child) -> None:
        """Wait for the main process, then end its group and drain the pipes."""
        while not await wait_event(child.exited, SWEEP_INTERVAL):
            child.reap()  # orphans that died while the main process runs
        # A stop already signalled the group: its stop_timeout keeps running.
        if child.group_alive():
            if child.kill_at is None:
                child.kill_at = time.monotonic() + self.app.stop_timeout
                child.signal_group(signal.Signals[self.app.stop_signal])
            if not await child.wait_gone(max(0.0, child.kill_at - time.monotonic())):
                child.signal_group(signal.SIGKILL)
                if not await child.wait_gone(KILL_WAIT):
                    log.error("%s: process group %d survives SIGKILL", self.app.name, child.pgid)
        pending = set(child.pumps)
        left, held = DRAIN_TIMEOUT, HELD_MAX
        while pending and left > 0:
            t0 = time.monotonic()
            _, pending = await asyncio.wait(pending, timeout=min(left, 0.5))
            spent = time.monotonic() - t0
            if self.sup.pipes.paused and held > 0:
                held -= spent  # a full spool holds the reading back: not the pipes' doing
            else:
                left -= spent
        if pending:  # a process that left the group (setsid) still holds a pipe
            log.warning("%s: a process outside its group holds its output; no longer read",
                        self.app.name)
            child.abandon()
            self.sup.pipes.abandon(child)
        child.gone = True
        self.sup.save_state()

    def status(self) -> dict[str, Any]:
        child = self.child if self.state in (State.RUNNING, State.STOPPING) else None
        out: dict[str, Any] = {"name": self.app.name, "state": self.state.value, "pid": None,
                               "uptime": None, "restarts": self.restarts, "cpu_percent": None,
                               "rss": None, "info": self.info}
        if child is not None:
            out["pid"], out["uptime"] = child.pid, round(time.monotonic() - child.started, 3)
            if child.proc is not None:  # the main process only; its children are not added
                try:
                    with child.proc.oneshot():
                        out["cpu_percent"] = child.proc.cpu_percent(None)
                        out["rss"] = child.proc.memory_info().rss
                except psutil.Error:
                    pass
        return out


class ProcessSupervisor:
    """Runs the ``[[app]]`` entries: the one place in the agent that spawns them."""

    name = "process"

    def __init__(self, apps: list[App], context: CollectorContext, *, state_file: Path | None = None,
                 partial_timeout: float = 1.0) -> None:
        self.context = context
        self.state_file = state_file  # <state_dir>/apps.json: what runs now, for the next agent
        self.partial_timeout = partial_timeout  # a partial line waits this long for its LF
        self.apps: dict[str, _App] = {a.name: _App(a, self) for a in apps}
        self.pipes = _Pipes(context, partial_timeout)
        self._changed = asyncio.Event()  # set on every state change (wait_until)

    async def start(self) -> None:
        """Stop what a previous agent left running, then start the autostart apps."""
        await self._kill_leftovers()
        await asyncio.gather(*(self._start(a) for a in self.apps.values() if a.app.autostart))

    async def stop(self) -> None:
        """Stop every app (concurrently) and wait for their groups to go."""
        await asyncio.gather(*(self._stop(a) for a in list(self.apps.values())))
        self.pipes.close()
        self.save_state()

    async def reload(self, apps: list[App]) -> dict[str, list[str]]:
        """Apply a new ``[[app]]`` list: added started, removed stopped, changed
        restarted, the others untouched."""
        wanted = {a.name: a for a in apps}
        removed = [n for n in self.apps if n not in wanted]
        changed = [n for n, a in wanted.items() if n in self.apps and self.apps[n].app != a]
        added = [n for n in wanted if n not in self.apps]
        active = {n for n in changed if self.apps[n].want}
        await asyncio.gather(*(self._stop(self.apps[n]) for n in removed + changed))
        for n in removed:
            del self.apps[n]
        for n in changed:
            new = _App(wanted[n], self)
            new.restarts = self.apps[n].restarts  # a counter: keep it monotonic
            self.apps[n] = new
        for n in added:
            self.apps[n] = _App(wanted[n], self)
        self.save_state()
        await asyncio.gather(*(self._start(self.apps[n]) for n in added + changed
                               if wanted[n].autostart or n in active))
        return {"added": added, "removed": removed, "changed": changed}

    async def start_app(self, name: str) -> dict[str, Any]:
        app = self._get(name)
        await self._start(app)
        return app.status()

    async def stop_app(self, name: str) -> dict[str, Any]:
        app = self._get(name)
        async with app.lock:
            await app.stop()
        return app.status()

    async def restart_app(self, name: str) -> dict[str, Any]:
        app = self._get(name)
        async with app.lock:
            if app.task is not None and not app.task.done():
                await app.stop()
            await app.start()
        return app.status()

    def status(self) -> list[dict[str, Any]]:
        """Per app: name, state, pid, uptime (s), restarts, cpu_percent, rss (bytes), info."""
        return [a.status() for a in list(self.apps.values())]

    def restart_counts(self) -> dict[str, int]:
        """Restarts per app; safe to call from another thread (metrics)."""
        return {a.app.name: a.restarts for a in list(self.apps.values())}

    def states(self) -> dict[str, str]:
        """State per app; safe to call from another thread (metrics)."""
        return {a.app.name: a.state.value for a in list(self.apps.values())}

    def changed(self) -> None:
        self._changed.set()

    async def wait_until(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """Wait until ``predicate()`` is true, re-checked at each state change;
        returns its value, or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            left = deadline - time.monotonic()
            self._changed.clear()
            if left <= 0 or not await wait_event(self._changed, left):
                raise TimeoutError(f"condition not reached within {timeout}s: {self.states()}")
        return value

    # -- records -----------------------------------------------------------------
    def _lifecycle_record(self, app: str, pid: int | None, msg: str, severity: int,
                          fields: dict[str, str]) -> Record:
        log.log(logging.WARNING if severity <= 4 else logging.INFO, "%s", msg)
        return Record(time.time_ns(), msg, self.context.hostname, "process", app, pid, severity,
                      None, dict(fields))

    async def lifecycle(self, app: str, pid: int | None, msg: str, severity: int, **fields: str) -> None:
        record = self._lifecycle_record(app, pid, msg, severity, fields)
        await self.context.sink.write(Columns.of([record]))

    def submit_lifecycle(self, app: str, pid: int | None, msg: str, severity: int, **fields: str) -> None:
        record = self._lifecycle_record(app, pid, msg, severity, fields)
        self.context.sink.submit(Columns.of([record]))

    # -- internals ---------------------------------------------------------------
    def _get(self, name: str) -> _App:
        try:
            return self.apps[name]
        except KeyError:
            raise AppError(f"no such app {name!r} (apps: {', '.join(self.apps) or 'none'})") from None

    async def _start(self, app: _App) -> None:
        async with app.lock:
            await app.start()

    async def _stop(self, app: _App) -> None:
        async with app.lock:
            if app.task is not None and not app.task.done():
                await app.stop()

    def save_state(self) -> None:
        if self.state_file is None:
            return
        running = {a.app.name: {"pid": c.pid, "pgid": c.pgid, "invocation": c.invocation,
                                "cmdline": list(a.app.command)}
                   for a in self.apps.values() if (c := a.child) is not None and not c.gone}
        try:
            write_state(self.state_file, {"agent_pid": os.getpid(), "apps": running})
        except OSError as exc:
            log.error("cannot record app pids in %s: %s", self.state_file, exc)

    async def _kill_leftovers(self) -> None:
        """Stop the process groups a previous agent recorded that still run."""
        if self.state_file is None:
            return
        leftovers = await asyncio.to_thread(find_leftovers, read_state(self.state_file))

        async def kill(name: str, pgid: int, procs: list[psutil.Process]) -> None:
            app = self.apps.get(name)
            sig = signal.Signals[app.app.stop_signal] if app else signal.SIGTERM
            await self.lifecycle(name, pgid, f"killing leftover: '{name}' process group {pgid} "
                                 "from a previous agent run", 4, event="leftover")
            if not await kill_group(pgid, procs, sig, app.app.stop_timeout if app else 10.0):
                log.error("leftover process group %d of %s survives SIGKILL", pgid, name)
        await asyncio.gather(*(kill(name, pgid, procs) for name, (pgid, procs) in leftovers.items()))
        self.save_state()


class _Stream:
    """One pipe of one run of an app, as :class:`_Pipes` reads it."""

    __slots__ = ("app", "pid", "child", "fd", "capture", "fields", "marked", "done", "quiet")

    def __init__(self, app: str, child: Child, fd: int, name: str, capture: LineCapture) -> None:
        self.app, self.pid, self.child, self.fd, self.capture = app, child.pid, child, fd, capture
        # Shared by the rows of this stream (Columns rows are read-only): no dict per line.
        self.fields = {"stream": name}
        self.marked = {brk: {"stream": name, "line_break": brk} for brk in (LINE_MAX, TIMEOUT, EOF)}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.quiet: asyncio.TimerHandle | None = None  # the partial line's timeout


class _Pipes:
    """The pipes of every app, read on the loop into one shared Columns batch
    (see the module docstring: capture)."""

    def __init__(self, context: CollectorContext, partial_timeout: float) -> None:
        self.context = context
        self.partial_timeout = partial_timeout
        self.streams: dict[int, _Stream] = {}  # by fd
        self.paused = False  # the sink had no room: no pipe is read
        self._epoll: select.epoll | None = None  # every open pipe, level-triggered
        self._watching = False  # the loop watches the epoll
        self._gulp: asyncio.TimerHandle | None = None  # reading waits for a gulp
        self._window_start = 0.0  # wake-ups are counted over GULP_WINDOW
        self._window_wakes = 0
        self._timer: asyncio.Handle | None = None
        self._resume_task: asyncio.Task[None] | None = None
        self._new_batch()

    def _new_batch(self) -> None:
        self._columns: list[list] = [[] for _ in COLUMNS]
        self._rows = 0
        self._bytes = 0
        self._in_batch: set[_Stream] = set()

    # -- streams -----------------------------------------------------------------
    def open(self, app: App, child: Child, fd: int, name: str, severity: int) -> asyncio.Future[None]:
        """Read ``fd`` until its end; the future is done once it is closed."""
        s = _Stream(app.name, child, fd, name, LineCapture(max_line=app.max_line,
                                                           default_severity=severity))
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
        reads, big = self._read_ready()
        self.handoff()  # one batch per gulp: no timer of its own
        if reads >= GULP_RATE * GULP_DELAY and not big and not self.paused:
            self._gulp = asyncio.get_running_loop().call_later(GULP_DELAY, self._gulp_done)
        else:
            self._window_start, self._window_wakes = time.monotonic(), 0
            self._watch()

    def _quiet(self, s: _Stream) -> None:
        s.quiet = None
        self._guarded(self._flush_partial, s)

    def _guarded(self, work: Callable[[_Stream], Any], s: _Stream) -> Any:
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

    def _read(self, s: _Stream) -> int:
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
        self._add(s, s.capture.take(data), len(data))
        if s.quiet is not None:
            s.quiet.cancel()
            s.quiet = None
        if s.capture.pending:  # a partial line waits for its LF, up to partial_timeout
            s.quiet = asyncio.get_running_loop().call_later(self.partial_timeout, self._quiet, s)
        return len(data)

    def _flush_partial(self, s: _Stream) -> None:
        self._add(s, s.capture.take_flush(TIMEOUT), 0)

    def _end(self, s: _Stream) -> None:
        """End of the stream: its partial line, then everything pending, to the sink."""
        try:
            self._add(s, s.capture.take_flush(EOF), 0)
            self.handoff()
        finally:
            self._close(s)

    def _close(self, s: _Stream) -> None:
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
    def _add(self, s: _Stream, lines: Captured, nbytes: int) -> None:
        """Append lines of ``s`` (``nbytes`` read for them, 0: count them)."""
        n = len(lines.msgs)
        if not n:
            return
        ts = time.time_ns()  # when read: a stdout line carries no time of its own
        (c_ts, c_host, c_source, c_app, c_pid, c_sev, c_fac, c_msg, c_fields, c_origin,
         c_seq) = self._columns
        if n == 1 and not lines.breaks:  # a quiet app's read: one line
            c_ts.append(ts)
            c_host.append(self.context.hostname)
            c_source.append("process")
            c_app.append(s.app)
            c_pid.append(s.pid)
            c_sev.append(lines.severities[0])
            c_fac.append(None)
            c_msg.append(lines.msgs[0])
            c_fields.append(s.fields)
            c_origin.append("")
            c_seq.append(0)
        else:
            fields = [s.fields] * n
            for i, brk in lines.breaks.items():
                fields[i] = s.marked[brk]
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
        self._in_batch.add(s)
        self._rows += n
        self._bytes += nbytes or sum(map(len, lines.msgs))
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
        pool = [f for s in self._in_batch for f in (s.fields, *s.marked.values())]
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
