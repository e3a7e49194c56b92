"""The process supervisor with real child processes, a real SpoolWriter and Spool.

Every test runs its own event loop (``arun``) with a hard time limit. The
harness tees what reaches the spool writer so a test can wait for a record
(no sleeps), and at the end checks two things for every test: the spool holds
exactly the records the supervisor handed over, in order, and every process
the test saw (children and grandchildren) is gone and reaped: no zombie.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from hostlog.collectors.base import CollectorContext
from hostlog.collectors.process.supervisor import AppError, ProcessSupervisor
from hostlog.config import App
from hostlog.record import Columns, Record
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool
from hostlog.spool.writer import SpoolWriter
from tests.conftest import need  # noqa: E402
from tests.integration.loops import arun as _arun  # noqa: E402

# every test on both loops (SO_PEERCRED and child watching differ under uvloop)
from tests.integration.loops import event_loop_kind  # noqa: E402,F401  (autouse)


def arun(coro, timeout: float = 90.0):
    return _arun(coro, timeout)


def py(name: str, code: str, **settings) -> App:
    """An app running ``python -c code``; fast backoff unless the test says otherwise."""
    settings.setdefault("backoff_initial", 0.05)
    settings.setdefault("backoff_max", 0.2)
    return App(name=name, command=[sys.executable, "-c", code], **settings)


class NoCheckpoints:
    def load(self, name):
        return None

    def save(self, name, value):
        pass


class Tee:
    """The real spool writer, plus a copy of each record for the test to wait on.
    ``gate``, when cleared, holds writers back like a full spool would."""

    def __init__(self, inner: SpoolWriter) -> None:
        self.inner = inner
        self.records: list[Record] = []
        self.batches: list = []  # every batch as it arrived
        self.offered = 0  # batches that arrived, passed the gate or not
        self.gate = asyncio.Event()
        self.gate.set()
        self._arrived = asyncio.Event()

    def _add(self, batch):
        self.batches.append(batch)
        self.records += batch
        self._arrived.set()

    def has_room(self):
        return self.inner.has_room() and self.gate.is_set()

    async def wait_room(self):
        await self.gate.wait()
        await self.inner.wait_room()

    async def write(self, batch, on_durable=None):
        self.offered += 1
        await self.gate.wait()
        await self.inner.write(batch, on_durable)
        self._add(batch)

    def submit(self, batch, on_durable=None):
        self.offered += 1
        self.inner.submit(batch, on_durable)
        self._add(batch)

    def write_nowait(self, batch, on_durable=None):
        ok = self.inner.write_nowait(batch, on_durable)
        if ok:
            self._add(batch)
        return ok

    async def wait(self, predicate, what: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while not (value := predicate(self.records)):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; have {[r.msg for r in self.records][-20:]}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                pass
        return value


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pids: set[int] = set()  # every process seen: all must be reaped at the end
        self.sups: list[ProcessSupervisor] = []

    async def __aenter__(self) -> Harness:
        self.spool = Spool.open(self.tmp / "spool", Keyring.load_or_create(self.tmp / "spool.key"))
        self.writer = SpoolWriter(self.spool, fsync="never")
        self.writer.start()
        self.tee = Tee(self.writer)
        self.context = CollectorContext(hostname="test-host", sink=self.tee, checkpoints=NoCheckpoints())
        return self

    def supervisor(self, *apps: App, **kw) -> ProcessSupervisor:
        kw.setdefault("state_file", self.tmp / "apps.json")
        sup = ProcessSupervisor(list(apps), self.context, **kw)
        self.sups.append(sup)
        return sup

    async def __aexit__(self, *exc) -> None:
        for sup in self.sups:
            await sup.stop()
        self.tee.gate.set()
        await self.writer.stop()
        self.spool.close()
        if exc[0] is not None:
            return
        stored = [r.msg for _, r in SpoolReader.open(self.tmp / "spool", self.tmp / "spool.key").records()]
        assert stored == [r.msg for r in self.tee.records]
        self.pids |= {r.pid for r in self.tee.records if r.pid}
        survivors = [p for p in self.pids if psutil.pid_exists(p)]
        assert not survivors, f"not gone or not reaped: {[(p, _status(p)) for p in survivors]}"

    # -- reading what was captured -----------------------------------------------
    def lines(self, app: str, stream: str | None = None) -> list:
        return [r.msg for r in self.tee.records if r.app == app and "stream" in r.fields
                and (stream is None or r.fields["stream"] == stream)]

    def events(self, app: str, event: str | None = None) -> list[Record]:
        return [r for r in self.tee.records if r.app == app and "event" in r.fields
                and (event is None or r.fields["event"] == event)]

    async def wait_event(self, app: str, event: str, count: int = 1) -> list[Record]:
        return await self.tee.wait(lambda _: len(self.events(app, event)) >= count and self.events(app, event),
                                   f"{count} {event} record(s) of {app}")

    async def wait_line(self, app: str, text: str):
        return await self.tee.wait(lambda recs: next((r for r in recs if r.app == app and r.msg == text), None),
                                   f"line {text!r} of {app}")


def _status(pid: int) -> str:
    try:
        return psutil.Process(pid).status()
    except psutil.Error:
        return "gone"


def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


# -- capture --------------------------------------------------------------------------

BOTH = """
import sys
for i in range(200):
    print(f"out {i}", flush=True)
    print(f"err {i}", file=sys.stderr, flush=True)
print("<4>a warning", flush=True)
sys.stdout.buffer.write(b"\\xff\\xfebinary\\n")
"""


def test_app_printing_to_both_streams_gives_one_record_per_line_with_stream_pid_and_severity(tmp_path):
    async def main():
        async with harness(tmp_path) as h:
            sup = h.supervisor(py("both", BOTH, restart="never"))
            await sup.start()
            await h.wait_event("both", "exited")
            started = h.events("both", "started")[0]
            out = [r for r in h.tee.records if r.fields.get("stream") == "stdout"]
            err = [r for r in h.tee.records if r.fields.get("stream") == "stderr"]
            assert [r.msg for r in out] == [f"out {i}" for i in range(200)] + ["a warning", b"\xff\xfebinary"]
            assert [r.msg for r in err] == [f"err {i}" for i in range(200)]
            assert {r.severity for r in out[:200]} == {6} and out[200].severity == 4
            assert {r.severity for r in err} == {3}
            assert {(r.app, r.pid, r.source, r.host) for r in out + err} == \
                {("both", started.pid, "process", "test-host")}
            assert sup.status()[0]["state"] == "EXITED"
    arun(main())


MIXED = r"""
import os, sys
os.write(1, b"<4>warned\nplain\n" + b"y" * 10 + b"\n<7>debug\n")
os.write(2, b"<2>critical\nplain err\n")
os.write(1, b"no newline at the end")
"""


def test_batches_are_columns_carrying_app_pid_stream_severity_and_line_breaks(tmp_path):
    async def main():
        async with harness(tmp_path) as h:
            await h.supervisor(py("mixed", MIXED, restart="never", max_line=4)).start()
            await h.wait_event("mixed", "exited")
            pid = h.events("mixed", "started")[0].pid
            batches = [b for b in h.tee.batches if any(r.fields.get("stream") for r in b)]
            assert batches and all(isinstance(b, Columns) for b in batches)
            rows = [r for b in batches for r in b.records()]
            assert {(r.app, r.pid, r.source, r.host, r.facility) for r in rows} == \
                {("mixed", pid, "process", "test-host", None)}
            out = [(r.msg, r.severity, r.fields.get("line_break")) for r in rows
                   if r.fields["stream"] == "stdout"]
            err = [(r.msg, r.severity, r.fields.get("line_break")) for r in rows
                   if r.fields["stream"] == "stderr"]
            assert out == [("warn", 4, "line-max"), ("ed", 4, None),
                           ("plai", 6, "line-max"), ("n", 6, None),
                           ("yyyy", 6, "line-max"), ("yyyy", 6, "line-max"), ("yy", 6, None),
                           ("debu", 7, "line-max"), ("g", 7, None),
                           ("no n", 6, "line-max"), ("ewli", 6, "line-max"), ("ne a", 6, "line-max"),
                           ("t th", 6, "line-max"), ("e en", 6, "line-max"), ("d", 6, "eof")]
            assert err == [("crit", 2, "line-max"), ("ical", 2, None),
                           ("plai", 3, "line-max"), ("n er", 3, "line-max"), ("r", 3, None)]
            for b in batches:  # the spool's frame index reads the pool, not every row
                assert all(any(f is p for p in b.fields_pool) for f in b.columns[8])
                assert b.text_size >= sum(map(len, b.columns[7]))
    arun(main())


PACED = r"""
import os, sys, time
for i in range(int(sys.argv[1])):
    os.write(1, f"{sys.argv[2]} {i}\n".encode())
    time.sleep(0.001)
"""


def test_many_apps_writing_line_by_line_lose_nothing_and_keep_their_order(tmp_path):
    """Twenty apps, a line per write: the pipes wake the loop thousands of
    times a second, so they are read in gulps; every line still arrives once,
    in order, with its app's pid."""
    apps = [App(name=f"a{i}", command=[sys.executable, "-c", PACED, "300", f"a{i}"],
                restart="never") for i in range(20)]
    async def main():
        async with harness(tmp_path) as h:
            sup = h.supervisor(*apps)
            await sup.start()
            await sup.wait_until(lambda: all(s == "EXITED" for s in sup.states().values()), 60)
            for app in apps:
                pid = h.events(app.name, "started")[0].pid
                lines = [r for r in h.tee.records if r.app == app.name and "stream" in r.fields]
                assert [r.msg for r in lines] == [f"{app.name} {i}" for i in range(300)]
                assert {r.pid for r in lines} == {pid}
            # lines of several reads (and apps) share a batch
            assert len([b for b in h.tee.batches if len(b) > 1]) > 0
    arun(main())


def test_a_one_mebibyte_line_is_split_at_max_line_and_marked(tmp_path):
    code = "import sys; sys.stdout.write('x' * (1 << 20) + '\\n' + 'after\\n')"
    async def main():
        async with harness(tmp_path) as h:
            await h.supervisor(py("big", code, restart="never", max_line="64KiB")).start()
            await h.wait_line("big", "after")
            pieces = [r for r in h.tee.records if r.fields.get("stream") == "stdout"][:-1]
            assert len(pieces) == 16
            assert [r.fields.get("line_break") for r in pieces] == ["line-max"] * 15 + [None]
            assert "".join(r.msg for r in pieces) == "x" * (1 << 20)
    arun(main())


def test_output_without_trailing_newline_is_flushed_at_exit_and_a_quiet_partial_after_a_timeout(tmp_path):
    last = "import sys; sys.stdout.write('first\\nlast words')"
    prompt = "import sys, time; sys.stdout.write('prompt> '); sys.stdout.flush(); time.sleep(60)"
    async def main():
        async with harness(tmp_path) as h:
            sup = h.supervisor(py("last", last, restart="never"), py("prompt", prompt),
                               partial_timeout=0.2)
            await sup.start()
            record = await h.wait_line("last", "last words")
            assert record.fields == {"stream": "stdout", "line_break": "eof"}
            record = await h.wait_line("prompt", "prompt> ")  # while the app still runs
            assert record.fields == {"stream": "stdout", "line_break": "timeout"}
            assert sup.status()[1]["state"] == "RUNNING"
    arun(main())


# -- restart policy -------------------------------------------------------------------

CRASHING = """
import pathlib, sys
counter = pathlib.Path(sys.argv[1])
run = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(run + 1))
for i in range(30):
    print(f"run {run} out {i}", flush=True)
    print(f"run {run} err {i}", file=sys.stderr, flush=True)
sys.exit(3 if run < 2 else 0)
"""


def test_app_crashing_after_n_lines_is_restarted_with_backoff_and_no_line_is_lost(tmp_path):
    app = App(name="crashy", command=[sys.executable, "-c", CRASHING, str(tmp_path / "runs")],
              restart="on-failure", backoff_initial=0.2, backoff_max=0.3, start_retries=5)
    async def main():
        async with harness(tmp_path) as h:
            sup = h.supervisor(app)
            await sup.start()
            await sup.wait_until(lambda: sup.states()["crashy"] == "EXITED", 30)
            runs = range(3)
            assert h.lines("crashy", "stdout") == [f"run {r} out {i}" for r in runs for i in range(30)]
            assert h.lines("crashy", "stderr") == [f"run {r} err {i}" for r in runs for i in range(30)]
            exits = h.events("crashy", "exited")
            assert [e.fields["exit"] for e in exits] == ["3", "3", "0"]
            assert "exit status 3; not expected" in exits[0].msg and "expected)" in exits[2].msg
            restarting = h.events("crashy", "restarting")
            assert [e.fields["delay"] for e in restarting] == ["0.2", "0.3"]  # doubled, capped at max
            starts = h.events("crashy", "started")
            assert len({s.pid for s in starts}) == 3
            for exited, started, delay in zip(exits, starts[1:], (0.2, 0.3)):
                assert (started.ts - exited.ts) / 1e9 >= delay * 0.9
            assert sup.status()[0]["restarts"] == 2
    arun(main())


@pytest.mark.parametrize("policy, code, final, runs", [
    ("always", 0, "FATAL", 3),  # even a clean exit restarts; quick ones count as failures
    ("on-failure", 0, "EXITED", 1),
    ("on-failure", 1, "FATAL", 3),
    ("never", 1, "EXITED", 1),
])
def test_restart_policy(tmp_path, policy, code, final, runs):
    async def main():
        async with harness(tmp_path) as h:
            sup = h.supervisor(py("app", f"raise SystemExit({code})", restart=policy, start_retries=3))
            await sup.start()
            await sup.wait_until(lambda: sup.states()["app"] == final, 30)
            assert len(h.events("app", "started")) == runs
            if final == "FATAL":
                [gave_up] = h.events("app", "gave_up")
                assert gave_up.msg == "gave up: 'app' entered FATAL state, too many start retries too quickly"
                assert gave_up.severity == 3
    arun(main())


def test_a_missing_program_is_a_spawn_error_retried_then_fatal(tmp_path):
    app = App(name="ghost", command=["/nonexistent/program"], backoff_initial=0.01, start_retries=2)
    async def main():
        async with harness(tmp_path) as h:
            sup = h.supervisor(app)
            await sup.start()
            await sup.wait_until(lambda: sup.states()["ghost"] == "FATAL", 10)
            errors = h.events("ghost", "spawn_error")
            assert len(errors) == 2
            assert errors[0].msg == "spawnerr: 'ghost': can't find command '/nonexistent/program'"
            assert "can't find command" in sup.status()[0]["info"]
    arun(main())


# -- stopping -------------------------------------------------------------------------

IGNORES_TERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


def test_app_ignoring_sigterm_is_killed_after_stop_timeout(tmp_path):
    async def main():
        async with harness(tmp_path) as h:
            sup = h.supervisor(py("stubborn", IGNORES_TERM, stop_timeout=0.5))
            await sup.start()
            await h.wait_line("stubborn", "ready")
            t0 = time.monotonic()
            status = await sup.stop_app("stubborn")
            assert 0.5 <= time.monotonic() - t0 < 5
            assert status["state"] == "STOPPED"
            [stopped] = h.events("stubborn", "stopped")
            assert stopped.msg == "stopped: 'stubborn' (terminated by SIGKILL)"
    arun(main())


FORKS = """
import os, signal, sys, time
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN if "stubborn" in sys.argv else signal.SIG_DFL)
    time.sleep(60)
    os._exit(0)
print(f"grandchild {pid}", flush=True)
if "exit" in sys.argv:
    sys.exit(0)
time.sleep(60)
"""


@pytest.mark.parametrize("how", [["stop"], ["exit", "stubborn"]])
def test_grandchild_is_stopped_with_its_group_and_reaped(tmp_path, how):
    """Stopped by ``stop``, or left behind (ignoring SIGTERM) when the main process exits."""
    app = App(name="forker", command=[sys.executable, "-c", FORKS, *how], restart="never", stop_timeout=0.5)
    async def main():
        async with harness(tmp_path) as h:
            sup = h.supervisor(app)
            await sup.start()
            line = await h.tee.wait(lambda recs: next((r.msg for r in recs if str(r.msg).startswith("grandchild")),
                                                      None), "the grandchild's pid")
            grandchild = int(line.split()[1])
            h.pids.add(grandchild)
            assert psutil.pid_exists(grandchild)
            if how == ["stop"]:
                await sup.stop_app("forker")
            else:
                await sup.wait_until(lambda: sup.states()["forker"] == "EXITED", 20)
            assert not psutil.pid_exists(grandchild)  # killed and reaped, not a zombie
    arun(main())


def test_stop_during_backoff_cancels_the_restart(tmp_path):
    async def main():
        async with harness(tmp_path) as h:
            sup = h.supervisor(py("flappy", "raise SystemExit(1)", backoff_initial=30, backoff_max=30))
            await sup.start()
            await sup.wait_until(lambda: sup.states()["flappy"] == "BACKOFF", 10)
            assert (await sup.stop_app("flappy"))["state"] == "STOPPED"
            assert len(h.events("flappy", "started")) == 1
            with pytest.raises(AppError, match="not running"):
                await sup.stop_app("flappy")
            assert (await sup.start_app("flappy"))["state"] in ("RUNNING", "BACKOFF")
    arun(main())


# -- backpressure ---------------------------------------------------------------------

def _blocked_in_pipe_write(pid: int) -> bool:
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        syscall = Path(f"/proc/{pid}/syscall").read_text().split()[0]
    except OSError:
        return False
    write_nr = {"x86_64": "1", "aarch64": "64"}.get(platform.machine())
    return "pipe_write" in wchan or (wchan == "0" and syscall == write_nr)


FLOOD = """
import pathlib, sys
pad = "y" * 100
write = sys.stdout.write
for i in range(100000):
    write(f"{i:08d} {pad}\\n")
sys.stdout.flush()
pathlib.Path(sys.argv[1]).write_text("done")
"""


def test_a_child_writing_faster_than_the_sink_takes_is_held_by_the_pipe(tmp_path):
    marker = tmp_path / "done"
    app = App(name="flood", command=[sys.executable, "-c", FLOOD, str(marker)], restart="never")
    async def main():
        async with harness(tmp_path) as h:
            h.tee.gate.clear()  # the spool takes nothing
            sup = h.supervisor(app)
            await sup.start()
            pid = sup.status()[0]["pid"]
            deadline = time.monotonic() + 30
            while not _blocked_in_pipe_write(pid):  # /proc offers no event to wait on
                assert time.monotonic() < deadline, "the child never blocked on its pipe"
                await asyncio.sleep(0.02)
            assert not marker.exists()
            # one batch went past the full sink (submit overshoots by one) or
            # waits at its gate; nothing piles up behind it
            assert h.tee.offered <= 2
            h.tee.gate.set()
            await h.wait_event("flood", "exited")
            assert marker.exists()
            lines = h.lines("flood")
            assert len(lines) == 100000 and lines[0].startswith("00000000") and lines[-1].startswith("00099999")
            assert all(int(line[:8]) == i for i, line in enumerate(lines))
    arun(main(), timeout=120)


# -- reload, leftovers, credentials -----------------------------------------------------

SLEEPER = "import os, time; print('up', os.getpid(), flush=True); time.sleep(60)"


def test_reload_starts_added_stops_removed_restarts_changed_and_leaves_the_rest(tmp_path):
    async def main():
        async with harness(tmp_path) as h:
            sup = h.supervisor(py("same", SLEEPER), py("changed", SLEEPER), py("removed", SLEEPER))
            await sup.start()
            before = {a["name"]: a["pid"] for a in sup.status()}
            changes = await sup.reload([py("same", SLEEPER), py("changed", SLEEPER, env={"X": "1"}),
                                        py("added", SLEEPER)])
            assert changes == {"added": ["added"], "removed": ["removed"], "changed": ["changed"]}
            after = {a["name"]: (a["state"], a["pid"]) for a in sup.status()}
            assert after["same"] == ("RUNNING", before["same"])
            assert after["changed"][0] == "RUNNING" and after["changed"][1] != before["changed"]
            assert after["added"][0] == "RUNNING" and "removed" not in after
            assert not psutil.pid_exists(before["removed"])
            assert json.loads((tmp_path / "apps.json").read_text())["apps"].keys() == {"same", "changed", "added"}
    arun(main())


def test_a_restarted_agent_stops_what_the_previous_one_left_and_runs_each_app_once(tmp_path):
    """The previous run's group is recorded in apps.json; a stranger reusing a
    recorded number (no matching invocation or cmdline) is left alone."""
    env = dict(os.environ, HOSTLOG_INVOCATION="previous-run")
    left = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    stranger = subprocess.Popen(["sleep", "61"], start_new_session=True)
    (tmp_path / "apps.json").write_text(json.dumps({"apps": {
        "web": {"pid": left.pid, "pgid": left.pid, "invocation": "previous-run", "cmdline": ["x"]},
        "other": {"pid": stranger.pid, "pgid": stranger.pid, "invocation": "nope", "cmdline": ["y"]},
    }}))
    async def main():
        async with harness(tmp_path) as h:
            h.pids.add(left.pid)
            sup = h.supervisor(py("web", SLEEPER, env={"HOSTLOG_TEST": str(tmp_path)}))
            await sup.start()
            assert left.poll() is not None or not psutil.pid_exists(left.pid)
            [notice] = h.events("web", "leftover")
            assert f"process group {left.pid}" in notice.msg
            assert stranger.poll() is None  # not ours: untouched
            running = [p for p in psutil.process_iter(["environ"])  # this test's, not a parallel run's
                       if (p.info["environ"] or {}).get("HOSTLOG_TEST") == str(tmp_path)
                       and p.status() != "zombie"]
            assert [p.pid for p in running] == [sup.status()[0]["pid"]]
    try:
        arun(main())
    finally:
        for proc in (left, stranger):
            proc.kill()
            proc.wait()


def test_cwd_and_env_reach_the_app(tmp_path):
    code = "import os; print(os.getcwd(), os.environ['GREETING'], os.environ['HOSTLOG_APP'], " \
           "'NOTIFY_SOCKET' in os.environ, flush=True)"
    async def main():
        async with harness(tmp_path) as h:
            await h.supervisor(py("envy", code, cwd=str(tmp_path), env={"GREETING": "hi"},
                                  restart="never")).start()
            await h.wait_event("envy", "exited")
            assert h.lines("envy") == [f"{tmp_path} hi envy False"]
    os.environ["NOTIFY_SOCKET"] = "/run/systemd/notify"  # the agent's, never its apps'
    try:
        arun(main())
    finally:
        del os.environ["NOTIFY_SOCKET"]


@pytest.mark.root
def test_user_and_group_switching_when_root(tmp_path):
    need(os.geteuid() == 0, "root (switching an app's user and group)")
    # /bin/sh, not this test's python: that one may live where nobody may not read
    app = App(name="nob", command=["sh", "-c", 'echo "$(id -u) $(id -g) $USER"'], user="nobody",
              restart="never", cwd="/")
    async def main():
        async with harness(tmp_path) as h:
            await h.supervisor(app).start()
            await h.wait_event("nob", "exited")
            import pwd
            nobody = pwd.getpwnam("nobody")
            assert h.lines("nob") == [f"{nobody.pw_uid} {nobody.pw_gid} nobody"]
    arun(main())


def test_status_reports_pid_uptime_cpu_and_rss_of_a_running_app(tmp_path):
    async def main():
        async with harness(tmp_path) as h:
            sup = h.supervisor(py("idle", SLEEPER), py("manual", SLEEPER, autostart=False))
            await sup.start()
            await h.tee.wait(lambda recs: any(str(r.msg).startswith("up ") for r in recs), "the app's line")
            idle, manual = sup.status()
            assert idle["state"] == "RUNNING" and psutil.Process(idle["pid"]).is_running()
            assert idle["uptime"] > 0 and idle["rss"] > 1 << 20 and idle["cpu_percent"] >= 0
            assert manual == {"name": "manual", "state": "STOPPED", "pid": None, "uptime": None,
                              "restarts": 0, "cpu_percent": None, "rss": None, "info": ""}
            restarted = await sup.restart_app("idle")
            assert restarted["state"] == "RUNNING" and restarted["pid"] != idle["pid"]
            with pytest.raises(AppError, match="already started"):
                await sup.start_app("idle")
            with pytest.raises(AppError, match="no such app"):
                await sup.start_app("nope")
    arun(main())
