"""Kill -9 the agent while a replayable source flows, restart it, read the spool.

One scenario per collector, run once (module fixtures) and judged by two tests:

* nothing is lost and nothing is invented: every numbered line written is in
  the spool, and the spool holds nothing else;
* each line is there exactly once. The collectors save their position only
  once a batch is durable, and a kill -9 between the spool's write of a batch
  and the save of the position it reached (one fsync interval, or so) makes
  the restarted collector read that batch again. Closing that window needs
  the position committed together with the batch (by the spool writer), which
  this test cannot provide: the test is expected to fail until it does (see
  docs/collectors.md, "Crashes"), and it shows how many lines were repeated.

Random but reproducible: HOSTLOG_TEST_SEED=<n> replays a run; the seed is in
every failure message.
"""

from __future__ import annotations

import collections
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.agentproc import AgentProcess, wait_for
from tests.conftest import need
from tests.integration.helpers import StandaloneJournald, spool_records

SEED = int(os.environ.get("HOSTLOG_TEST_SEED") or time.time_ns() % 2**32)
LINE = re.compile(r"line (\d{6})")


def agent_config(tmp: Path, source: str) -> str:
    return f"""
[agent]
hostname = "kill9-host"
state_dir = "{tmp}/state"

[spool]
fsync = "batch"
fsync_interval = "20ms"

{source}
"""


@dataclass
class Run:
    written: int                            # lines 0 .. written-1 were written
    kills: list[int] = field(default_factory=list)  # lines written when each kill came
    messages: list[Any] = field(default_factory=list)  # what the spool holds, in spool order

    def numbers(self) -> list[int]:
        out = []
        for m in self.messages:
            match = LINE.fullmatch(m) if isinstance(m, str) else None
            assert match, f"seed {SEED}: the spool holds a line nobody wrote: {m!r}"
            out.append(int(match[1]))
        return out


def distinct_lines(agent: AgentProcess, source: str) -> int:
    return len({r.msg for r in spool_records(agent.state / "spool", source)})


def kill9(agent: AgentProcess) -> None:
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(timeout=10)


def finish(agent: AgentProcess, source: str, run: Run) -> Run:
    wait_for(lambda: distinct_lines(agent, source) >= run.written, timeout=60, interval=0.2,
             what=f"all {run.written} lines in the spool (seed {SEED})")
    assert agent.stop(signal.SIGTERM) == 0
    run.messages = [r.msg for r in spool_records(agent.state / "spool", source)]
    return run


def assert_nothing_lost(run: Run) -> None:
    numbers = run.numbers()
    missing = set(range(run.written)) - set(numbers)
    assert not missing, f"seed {SEED}: {len(missing)} lines lost, first {sorted(missing)[:5]}"
    assert max(numbers) < run.written, f"seed {SEED}: a line beyond what was written"
    counts = collections.Counter(numbers)
    repeated = [n for n, c in counts.items() if c > 1]
    # a repeat can only be a replay after a kill: of a line written before it
    assert all(n < max(run.kills, default=0) for n in repeated), f"seed {SEED}: repeat without a kill"
    assert all(c <= 1 + len(run.kills) for c in counts.values())


def assert_exactly_once(run: Run) -> None:
    counts = collections.Counter(run.numbers())
    repeated = sorted(n for n, c in counts.items() if c > 1)
    assert not repeated, (f"seed {SEED}: {len(repeated)} lines repeated after {len(run.kills)} "
                          f"kills, e.g. {repeated[:5]}")
    assert len(counts) == run.written


# -- journald ---------------------------------------------------------------------------------

JOURNALD_LINES = 20_000


@pytest.fixture(scope="module")
def journald_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    need(StandaloneJournald.available(), "root, /lib/systemd/systemd-journald, unshare and nsenter")
    need(shutil.which("systemd-cat") is not None, "systemd-cat")
    tmp = tmp_path_factory.mktemp("journald-kill9")
    rng = random.Random(SEED)
    with StandaloneJournald(tmp / "jd") as jd:
        agent = AgentProcess(tmp, agent_config(tmp, f"""
[[source]]
type = "journald"
name = "journal"
directory = "{jd.journal_dir}"
matches = ["SYSLOG_IDENTIFIER=kill9"]
start = "beginning"
"""))
        agent.start()
        cat = subprocess.Popen(jd.inside("systemd-cat", "-t", "kill9"), stdin=subprocess.PIPE)
        written = [0]

        def write() -> None:
            assert cat.stdin is not None
            for start in range(0, JOURNALD_LINES, 50):
                cat.stdin.write("".join(f"line {i:06d}\n" for i in range(start, start + 50)).encode())
                cat.stdin.flush()
                written[0] = start + 50
                time.sleep(0.01)
            cat.stdin.close()

        writer = threading.Thread(target=write, name="journal-writer")
        run = Run(written=JOURNALD_LINES)
        try:
            writer.start()
            while writer.is_alive() and len(run.kills) < 4:
                time.sleep(rng.uniform(0.2, 0.8))
                kill9(agent)
                run.kills.append(written[0])
                time.sleep(rng.uniform(0.0, 0.4))  # entries keep coming while it is down
                agent.start()
            writer.join(timeout=60)
            assert not writer.is_alive()
            assert cat.wait(timeout=30) == 0
            return finish(agent, "journald", run)
        finally:
            if cat.poll() is None:
                cat.kill()
                cat.wait()
            agent.stop(signal.SIGKILL)


def test_journald_kill9_loses_nothing_and_repeats_only_unsaved_batches(journald_run: Run) -> None:
    assert len(journald_run.kills) >= 2, f"seed {SEED}: the writer finished too soon"
    assert_nothing_lost(journald_run)
    # the journal is one ordered stream: in spool order the lines go up one by
    # one, and only a restart goes back (to the saved cursor), never forward
    numbers = journald_run.numbers()
    restarts = 0
    for prev, cur in zip(numbers, numbers[1:]):
        if cur != prev + 1:
            assert cur <= prev, f"seed {SEED}: a gap after line {prev}"
            restarts += 1
    assert restarts <= len(journald_run.kills)


def test_journald_kill9_each_entry_exactly_once(journald_run: Run) -> None:
    assert_exactly_once(journald_run)


# -- files --------------------------------------------------------------------------------------

FILE_LINES_PER_BURST = 25


class LineWriter(threading.Thread):
    """Appends numbered lines to app.log like an application; ``lock`` pauses it."""

    def __init__(self, path: Path, total: int) -> None:
        super().__init__(name="file-writer")
        self.path = path
        self.total = total
        self.n = 0
        self.lock = threading.Lock()
        self.fh = open(path, "a")

    def burst(self, fh: Any, count: int) -> None:
        stop = min(self.total, self.n + count)
        fh.write("".join(f"line {i:06d}\n" for i in range(self.n, stop)))
        fh.flush()
        self.n = stop

    def run(self) -> None:
        while self.n < self.total:
            with self.lock:
                self.burst(self.fh, FILE_LINES_PER_BURST)
            time.sleep(0.005)

    def reopen(self, fh: Any = None) -> None:
        """What an application does on logrotate's signal (caller holds the lock)."""
        self.fh.close()
        self.fh = fh or open(self.path, "a")


@pytest.fixture(scope="module")
def files_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("files-kill9")
    logdir = tmp / "log"
    logdir.mkdir()
    log = logdir / "app.log"
    rng = random.Random(SEED)
    agent = AgentProcess(tmp, agent_config(tmp, f"""
[[source]]
type = "file"
name = "app"
paths = ["{log}"]
start = "beginning"
poll_interval = "200ms"
rotate_wait = "1s"
"""))
    writer = LineWriter(log, total=40_000)
    run = Run(written=writer.total)
    rotation = [0]

    def caught_up() -> None:
        """Wait until the spool has every line written so far (writer paused)."""
        wait_for(lambda: distinct_lines(agent, "file") >= writer.n, timeout=30, interval=0.05,
                 what=f"the collector to catch up (seed {SEED})")

    def rename() -> None:
        # logrotate's default: rename, then the application reopens. Until it
        # does, lines still go to the renamed file.
        rotation[0] += 1
        os.rename(log, logdir / f"app.log.{rotation[0]}")
        time.sleep(0.05)
        with writer.lock:
            writer.reopen()

    def copytruncate() -> None:
        # logrotate's copytruncate loses what is written between the copy and
        # the truncation (logrotate(8) says so), and a tailer loses what it had
        # not read when the file is cut: the writer pauses and the collector
        # catches up first. Only what happens after the truncation is tested.
        with writer.lock:
            caught_up()
            rotation[0] += 1
            shutil.copy(log, logdir / f"app.log.{rotation[0]}.copy")
            with open(log, "r+") as f:
                f.truncate(0)

    def delete() -> None:
        # Deleted while the application still writes to it: readable only
        # through the collector's open descriptor, so the agent stays up until
        # those lines are in.
        with writer.lock:
            caught_up()
            os.unlink(log)
        time.sleep(0.05)
        with writer.lock:
            caught_up()
            writer.reopen()

    def replace() -> None:
        with writer.lock:
            caught_up()
            new = logdir / "app.log.new"
            fh = open(new, "a")
            writer.burst(fh, FILE_LINES_PER_BURST)
            os.replace(new, log)
            writer.reopen(fh)

    def kill(rotate_while_down: bool = False) -> None:
        kill9(agent)
        run.kills.append(writer.n)
        time.sleep(rng.uniform(0.05, 0.3))
        if rotate_while_down:  # one rename while down: found again by its inode
            rename()
        time.sleep(rng.uniform(0.0, 0.2))
        agent.start()

    steps = [rename, rename, rename, copytruncate, copytruncate, delete, replace,
             kill, kill, kill, lambda: kill(rotate_while_down=True)]
    rng.shuffle(steps)
    agent.start()
    try:
        writer.start()
        for step in steps:
            if not writer.is_alive():
                break
            time.sleep(rng.uniform(0.1, 0.4))
            step()
        writer.join(timeout=60)
        assert not writer.is_alive()
        writer.fh.close()
        return finish(agent, "file", run)
    finally:
        agent.stop(signal.SIGKILL)


def test_files_kill9_with_rotations_loses_nothing_and_repeats_only_unsaved_batches(files_run: Run) -> None:
    assert len(files_run.kills) >= 3, f"seed {SEED}: the writer finished too soon"
    assert_nothing_lost(files_run)


def test_files_kill9_with_rotations_each_line_exactly_once(files_run: Run) -> None:
    assert_exactly_once(files_run)
