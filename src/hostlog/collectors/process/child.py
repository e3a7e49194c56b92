"""The OS side of a supervised app: one child in its own process group.

:func:`spawn` starts a child the way every app is started: its own session
and process group (``setsid``), stdin on /dev/null, stdout/stderr on two
fresh pipes, the configured user/group/cwd/env, and PR_SET_PDEATHSIG
(SIGKILL) so it dies with the agent. :class:`Child` then tracks that run:
its exit (a pidfd on the event loop), its group (signals, "is anything
left?"), and reaping.

Reaping: the agent makes itself a child subreaper (:func:`become_subreaper`),
so whatever an app leaves behind is re-parented to the agent instead of to
init (which, in some containers, never reaps). :meth:`Child.reap` collects
dead processes with ``waitid(P_PGID, <the app's group>)``: only processes of
that app's group, never another child of the agent (asyncio's, for one).

:func:`kill_leftovers` is for a restarted agent: the parent-death signal
reaches the agent's children only, not their children, so the pids of each
run are recorded and the next agent stops what is still there.
"""

from __future__ import annotations

import asyncio
import ctypes
import grp
import json
import logging
import os
import pwd
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from hostlog.config import App
from hostlog.errors import AppError

log = logging.getLogger("hostlog.process")

KILL_WAIT = 10.0  # how long a group may take to vanish after SIGKILL

# Variables of the agent's own service manager that must not leak to apps: an
# app must not notify systemd or take sockets in the agent's name.
_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID",
                "LISTEN_FDNAMES")

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
try:  # loaded here, in the parent: the child must not dlopen between fork and exec
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    _prctl.restype = ctypes.c_int
except (OSError, AttributeError):  # no prctl: no parent-death signal, no subreaper
    _prctl = None


def become_subreaper() -> None:
    """Orphans of our apps come to us (to be reaped), not to init."""
    if _prctl is not None:
        _prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _child_setup(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: runs in the child after the uid/gid switch, before exec."""
    def setup() -> None:
        # After setuid, because a credential change clears the parent-death
        # signal. It fires when the *thread* that forked exits: spawn from the
        # loop thread, never from a worker thread.
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:  # the agent died before prctl: nobody would kill us
            os.kill(os.getpid(), signal.SIGKILL)
    return setup


def credentials(app: App) -> tuple[int | None, int | None, list[int] | None, dict[str, str]]:
    """uid, gid, supplementary groups, and HOME/USER/LOGNAME for ``user``/``group``."""
    if app.user is None and app.group is None:
        return None, None, None, {}
    uid = gid = None
    groups: list[int] | None = None
    env: dict[str, str] = {}
    if app.user is not None:
        try:
            pw = pwd.getpwuid(int(app.user)) if app.user.isdigit() else pwd.getpwnam(app.user)
        except KeyError:
            if not app.user.isdigit():
                raise AppError(f"no such user {app.user!r}") from None
            uid = gid = int(app.user)  # a bare uid without a passwd entry: its own group
            groups = []
        else:
            uid, gid = pw.pw_uid, pw.pw_gid
            groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
            env = {"HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name}
    if app.group is not None:
        try:
            gid = int(app.group) if app.group.isdigit() else grp.getgrnam(app.group).gr_gid
        except KeyError:
            raise AppError(f"no such group {app.group!r}") from None
    if os.geteuid() != 0:
        if uid not in (None, os.geteuid()) or gid not in (None, os.getegid()):
            raise AppError("user/group switching needs the agent to run as root")
        return None, None, None, env
    return uid, gid, groups, env


def exit_text(code: int | None) -> str:
    """"exit status 1", "terminated by SIGKILL" (Popen's convention: -N is signal N)."""
    if code is None:
        return "unknown exit status"
    if code < 0:
        try:
            return f"terminated by {signal.Signals(-code).name}"
        except ValueError:
            return f"terminated by signal {-code}"
    return f"exit status {code}"


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """True if ``event`` is set within ``timeout`` seconds."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return True
    except TimeoutError:
        return False


class Child:
    """One run of an app: its process, its group, its pipes, its exit."""

    def __init__(self, popen: subprocess.Popen, invocation: str, stdout: int, stderr: int) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.pgid = popen.pid  # setsid: the child leads its own group
        self.invocation = invocation  # HOSTLOG_INVOCATION: tells our leftovers from others
        self.stdout, self.stderr = stdout, stderr  # read ends, non-blocking
        self.started = time.monotonic()
        self.returncode: int | None = None  # of the main process; -N: killed by signal N
        self.exited = asyncio.Event()
        self.stop_requested = False  # the exit is reported as "stopped", not "exited"
        self.kill_at: float | None = None  # when the group gets SIGKILL, once signalled
        self.abandoned = False  # pipes are no longer read (an escaped process holds them)
        self.gone = False  # the group is gone and the pipes are closed
        self.pumps: list[asyncio.Future[None]] = []  # one per pipe: done once it is closed
        self._pidfd: int | None = None
        try:
            self.proc: psutil.Process | None = psutil.Process(self.pid)
            self.proc.cpu_percent(None)  # the first call only sets the baseline
        except psutil.Error:
            self.proc = None

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Get told when the main process exits: a pidfd on the loop, else a thread."""
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            def wait() -> None:
                try:  # WNOWAIT: only learn of the exit; reaping stays in reap()
                    os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
                except ChildProcessError:
                    pass
                loop.call_soon_threadsafe(self.reap)
            threading.Thread(target=wait, name=f"wait-{self.pid}", daemon=True).start()
        else:
            loop.add_reader(self._pidfd, self.reap)

    def reap(self) -> None:
        """Collect every dead process of the group that is our child: the main
        one and orphans re-parented to us."""
        while True:
            try:
                info = os.waitid(os.P_PGID, self.pgid, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                break
            if info is None:
                break
            if info.si_pid == self.pid:
                code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
                self.returncode = self.popen.returncode = code  # Popen must not wait again
                self.exited.set()
        if self.exited.is_set() and self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the whole group; False if nothing is left in it."""
        try:
            os.killpg(self.pgid, sig)
            return True
        except ProcessLookupError:
            return False

    def group_alive(self) -> bool:
        self.reap()
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a member we may not signal (setuid program) is still a member
            return True
        return True

    async def wait_gone(self, timeout: float) -> bool:
        """Wait until the group is empty. Polled: the kernel tells nobody when a
        process group empties, and its members need not be our children."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while self.group_alive():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.exited.is_set():
                await asyncio.sleep(min(left, delay))
            else:  # the main process still runs: its exit ends the wait early
                await wait_event(self.exited, min(left, delay))
            delay = min(delay * 2, 0.1)
        return True

    def abandon(self) -> None:
        """The pipes are no longer read (the supervisor closes them)."""
        self.abandoned = True


def spawn(app: App, invocation: str) -> Child:
    """Start one run of ``app``; raises AppError/OSError/SubprocessError when it cannot."""
    become_subreaper()  # idempotent; only an agent that runs apps needs it
    uid, gid, groups, user_env = credentials(app)
    env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
    env.update(user_env)
    env.update(app.env)
    env.update(HOSTLOG_APP=app.name, HOSTLOG_INVOCATION=invocation)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
    except OSError:
        os.close(out_r)
        os.close(out_w)
        raise
    try:
        popen = subprocess.Popen(
            app.command, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w,
            cwd=app.cwd, env=env, start_new_session=True, user=uid, group=gid,
            extra_groups=groups, preexec_fn=_child_setup(os.getpid()), close_fds=True)
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:  # the child has its copies; ours would keep the pipes from ever reaching EOF
        os.close(out_w)
        os.close(err_w)
    os.set_blocking(out_r, False)
    os.set_blocking(err_r, False)
    child = Child(popen, invocation, out_r, err_r)
    child.watch(asyncio.get_running_loop())
    return child


def write_state(path: Path, value: Any) -> None:
    """Record the running children. Temp + rename, no fsync: the file guards
    against an agent crash, and a power loss takes the children with it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_state(path: Path) -> dict[str, dict[str, Any]]:
    """The ``apps`` map of a state file; {} when missing or unreadable."""
    try:
        apps = json.loads(path.read_text()).get("apps", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return apps if isinstance(apps, dict) else {}


def _ours(proc: psutil.Process, entry: dict[str, Any]) -> bool:
    """A live member of a recorded group is ours if it carries the recorded
    invocation, or is the recorded pid with the recorded cmdline."""
    try:
        if proc.environ().get("HOSTLOG_INVOCATION") == entry.get("invocation"):
            return True
    except psutil.Error:
        pass
    try:
        return proc.pid == entry.get("pid") and proc.cmdline() == entry.get("cmdline")
    except psutil.Error:
        return False


def find_leftovers(recorded: dict[str, dict[str, Any]]) -> dict[str, tuple[int, list[psutil.Process]]]:
    """name -> (pgid, live members) for each recorded group that still runs and is ours.

    A group whose members are all strangers (the number was reused) is not listed.
    """
    by_pgid = {e["pgid"]: (name, e) for name, e in recorded.items()
               if isinstance(e, dict) and isinstance(e.get("pgid"), int) and e["pgid"] > 1
               and e["pgid"] != os.getpgrp()}
    if not by_pgid:
        return {}
    members: dict[int, list[psutil.Process]] = {}
    for proc in psutil.process_iter():
        try:
            pgid = os.getpgid(proc.pid)
            if pgid in by_pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.setdefault(pgid, []).append(proc)
        except (OSError, psutil.Error):
            continue
    found = {}
    for pgid, procs in members.items():
        name, entry = by_pgid[pgid]
        if any(_ours(p, entry) for p in procs):
            found[name] = (pgid, procs)
    return found


async def kill_group(pgid: int, procs: list[psutil.Process], sig: int, timeout: float) -> bool:
    """``sig`` to a group that is not our child, SIGKILL after ``timeout``; True if it went."""
    for s, wait in ((sig, timeout), (signal.SIGKILL, KILL_WAIT)):
        try:
            os.killpg(pgid, s)
        except ProcessLookupError:
            return True
        # psutil polls: these processes are not our children, nothing notifies us.
        _, procs = await asyncio.to_thread(psutil.wait_procs, procs, wait)
        if not procs:
            return True
    return False
