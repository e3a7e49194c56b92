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

Capture: ``pipes.py`` (every app's stdout and stderr read through one epoll
into shared Columns batches).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
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
from hostlog.collectors.process.pipes import Pipes
from hostlog.config import App
from hostlog.record import Columns, Record

__all__ = ["AppError", "ProcessSupervisor", "State"]

log = logging.getLogger("hostlog.process")

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
        self.pipes = Pipes(context, partial_timeout)
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
