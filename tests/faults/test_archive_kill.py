"""Kill -9 while archiving: at each of the archive's named crash points, and at
random moments.

A spool of several days (generated timestamps, small frames) is archived and
compacted by a real ``hostlog spool archive`` process (the same Archiver the
agent runs on its thread) that is killed with SIGKILL: at
``HOSTLOG_CRASHPOINT=NAME:N`` (it must die there, exit status -9), or after
a random delay. After each kill, and after a second pass that is not
killed, what the spool holds is read through SpoolReader (what ``hostlog
query`` reads through) and must be every record once, in seq order (less the
segments ``keep`` expired, which must be whole segments past keep), with
``hostlog spool verify`` passing; at the end, the same segments as a pass
that was never killed. HOSTLOG_FAULTS_LONG=1 runs 60 random kills instead of 6.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hostlog.record import Columns, Record
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool
from tests.agentproc import HOSTLOG
from tests.faults.conftest import LONG

DAY_NS = 86400 * 10**9
DAYS = 8
PER_DAY = 450
BATCH = 15
SEED = int(os.environ.get("HOSTLOG_TEST_SEED") or time.time_ns() % 2**32)

#: (point, N): the N-th time it is reached comes in the middle of the pass
ARCHIVE_POINTS = [("rewrite-synced", 1), ("rewrite-synced", 4), ("archive-renamed", 2),
                  ("archive-unlinked", 3), ("archive-expired", 1)]
#: the names, for tests/faults/test_kill.py's check that every point is tested
POINT_NAMES = frozenset(name for name, _ in ARCHIVE_POINTS)


def build(tmp: Path, now_ns: int) -> int:
    keyring = Keyring.load_or_create(tmp / "spool.key")
    spool = Spool.open(tmp / "spool", keyring, max_age=0)
    n = 0
    for day in range(DAYS, 0, -1):
        for b in range(PER_DAY // BATCH):
            spool.append(Columns.of([
                Record(ts=now_ns - day * DAY_NS + (b * BATCH + i) * 10**9,
                       msg=f"line {n + i:06d} {os.urandom(6).hex()}", host="h",
                       app=f"app{(n + i) % 4}", source="syslog", severity=(n + i) % 8)
                for i in range(BATCH)]))
            n += BATCH
        if day > 1:
            spool.rotate()
    spool.close()
    return n


ARGS = ["--after", "2d", "--keep", "6d12h", "--compression", "19"]


def archive(spool_dir: Path, *, point: str | None = None,
            kill_after: float | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("HOSTLOG_CRASHPOINT", None)
    if point:
        env["HOSTLOG_CRASHPOINT"] = point
    cmd = [*HOSTLOG, "spool", "archive", "-D", str(spool_dir), *ARGS]
    if kill_after is None:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def check(spool_dir: Path, n: int, what: str) -> list[int]:
    """Every record once and in order, but whole expired segments (the
    oldest days, past keep); verify passes. Returns the seqs held."""
    reader = SpoolReader.open(spool_dir)
    seqs = [seq for seq, _ in reader.records()]
    assert not reader.damage, f"{what}: {reader.damage[:3]}"
    assert seqs == sorted(set(seqs)), f"{what}: a record read twice or out of order"
    assert seqs and seqs[-1] == n, what
    first = seqs[0]
    assert (first - 1) % PER_DAY == 0 and first <= 2 * PER_DAY + 1, f"{what}: starts at {first}"
    assert seqs == list(range(first, n + 1)), f"{what}: records missing"
    done = subprocess.run([*HOSTLOG, "spool", "verify", "-D", str(spool_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{what}: {done.stdout}"
    return seqs


def layout(spool_dir: Path) -> tuple[list[str], list[str]]:
    return (sorted(n for n in os.listdir(spool_dir / "segments") if n.endswith(".seg")),
            sorted(os.listdir(spool_dir / "archive")))


PASS_S: list[float] = []  # how long a pass not killed took (the random kills fall inside it)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str]]:
    """The layout a pass never killed ends with."""
    tmp = tmp_path_factory.mktemp("reference")
    n = build(tmp, time.time_ns())
    start = time.monotonic()
    assert archive(tmp / "spool").returncode == 0
    PASS_S.append(time.monotonic() - start)
    check(tmp / "spool", n, "a pass not killed")
    return layout(tmp / "spool")


@pytest.mark.parametrize(("point", "nth"), ARCHIVE_POINTS, ids=[f"{p}:{n}" for p, n in ARCHIVE_POINTS])
def test_kill_at_an_archive_crash_point(tmp_path: Path, point: str, nth: int,
                                        reference: tuple[list[str], list[str]]) -> None:
    n = build(tmp_path, time.time_ns())
    spool_dir = tmp_path / "spool"
    killed = archive(spool_dir, point=f"{point}:{nth}")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert f"crashpoint {point} reached" in killed.stderr
    check(spool_dir, n, f"after a kill at {point}:{nth}")
    again = archive(spool_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    check(spool_dir, n, f"after a kill at {point}:{nth} and a second pass")
    assert layout(spool_dir) == reference
    assert not [x for x in os.listdir(spool_dir / "archive") if x.startswith(".")]


def test_kill_at_random_moments(tmp_path: Path, reference: tuple[list[str], list[str]]) -> None:
    rng = random.Random(SEED)
    runs = 60 if LONG else 6
    killed = 0
    for run in range(runs):
        tmp = tmp_path / f"run{run}"
        tmp.mkdir()
        n = build(tmp, time.time_ns())
        spool_dir = tmp / "spool"
        # within the pass (the interpreter's start is the first part of it)
        delay = rng.uniform(0.3, 1.0) * PASS_S[0]
        killed += archive(spool_dir, kill_after=delay).returncode == -signal.SIGKILL
        check(spool_dir, n, f"run {run}, killed after {delay:.2f}s (seed {SEED})")
        assert archive(spool_dir).returncode == 0
        check(spool_dir, n, f"run {run}, second pass (seed {SEED})")
        assert layout(spool_dir) == reference, f"run {run} (seed {SEED})"
    assert killed, f"no pass was killed: they end before {PASS_S[0]:.2f}s (seed {SEED})"
