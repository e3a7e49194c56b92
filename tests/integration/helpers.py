"""Real parts for collector tests: a spool with its writer, journal files built
by systemd-journal-remote, and a standalone systemd-journald.

Every process started here is stopped by its PID; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hostlog.agent.counting import CountingSink
from hostlog.agent.metrics import Metrics
from hostlog.collectors.base import CollectorContext, ErrorCounts, GuardedSink
from hostlog.record import Record
from hostlog.spool.checkpoints import CheckpointFiles
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool
from hostlog.spool.writer import SpoolWriter
from tests.conftest import need

JOURNALD = Path("/lib/systemd/systemd-journald")
JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")


async def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition",
                     interval: float = 0.02) -> Any:
    """Poll ``predicate`` on the loop until it returns something true, at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


class SpoolHarness:
    """What the agent gives a collector: a real spool, its writer, checkpoint files.

    The sink is the agent's whole chain with everything on: the error guard
    (:class:`GuardedSink`), the metrics count (:class:`CountingSink`), then
    the writer, so a collector test also proves every consumer on the way
    takes the batches the collector makes (a count that fails on one batch
    type once lost every syslog TCP record with metrics on). ``metrics=False``
    leaves the count out, for a test that says why.

    ``open()`` must run inside the event loop (the writer reports to it).
    ``close()`` stops the writer (which reports the last batches durable) and
    closes the spool, in the agent's order: collectors first, then this.
    It then checks what the agent would show: no error caught at the
    collector's edge (unless ``expect_errors``), and the metrics count agrees
    with what the writer wrote.
    """

    def __init__(self, directory: Path, *, fsync: str = "batch", fsync_interval: float = 0.02,
                 hostname: str = "test-host", metrics: bool = True,
                 expect_errors: bool = False) -> None:
        self.directory = directory
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.hostname = hostname
        self.spool: Spool | None = None
        self.writer: SpoolWriter | None = None
        self.context: CollectorContext | None = None
        self.metrics: Metrics | None = Metrics() if metrics else None
        self.expect_errors = expect_errors
        # what a fatal error (the sink refused a batch) would stop the agent with
        self.fatal: list[BaseException] = []
        self.errors = ErrorCounts(on_fatal=self.fatal.append)

    @property
    def spool_dir(self) -> Path:
        return self.directory / "spool"

    @property
    def checkpoints(self) -> CheckpointFiles:
        return CheckpointFiles(self.spool_dir / "state" / "checkpoints")

    def save_checkpoint(self, name: str, value: Any) -> None:
        """A checkpoint as an earlier run would have left it."""
        (self.spool_dir / "state" / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.checkpoints.save(name, value)

    def open(self) -> CollectorContext:
        keyring = Keyring.load_or_create(self.directory / "spool.key")
        self.spool = Spool.open(self.spool_dir, keyring)
        self.writer = SpoolWriter(self.spool, fsync=self.fsync, fsync_interval=self.fsync_interval)
        self.writer.start()
        inner: Any = self.writer
        if self.metrics is not None:
            inner = CountingSink(inner, self.metrics)
        self.context = CollectorContext(hostname=self.hostname, sink=GuardedSink(inner, self.errors),
                                        checkpoints=self.checkpoints, errors=self.errors)
        return self.context

    async def close(self) -> None:
        written = None
        if self.writer is not None:
            await self.writer.stop()
            written = self.writer.stats.records
            self.writer = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        if not self.expect_errors:
            assert not self.errors.counts and not self.fatal, \
                f"errors at the collector's edge: {self.errors.counts} {self.fatal}"
        if self.metrics is not None and written is not None:
            counted = sum(self.metrics.records_in.values())
            assert counted == written, \
                f"the metrics counted {counted} records in, the writer wrote {written}"

    def records(self, source: str | None = None) -> list[Record]:
        """Every record in the spool now (reads the segments like a query does)."""
        if not (self.spool_dir / "segments").is_dir():
            return []
        reader = SpoolReader.open(self.spool_dir, self.directory / "spool.key")
        return [r for _, r in reader.records() if source is None or r.source == source]


def spool_records(spool_dir: Path, source: str | None = None) -> list[Record]:
    """Records of a spool another process writes (an agent's), read like a query."""
    if not (spool_dir / "segments").is_dir():
        return []
    reader = SpoolReader.open(spool_dir)
    return [r for _, r in reader.records() if source is None or r.source == source]


# -- journal files -----------------------------------------------------------------------

def export_entry(fields: dict[str, str | bytes]) -> bytes:
    """One entry in the Journal Export Format: ``NAME=value`` for plain text,
    the binary form (length-prefixed) for anything else."""
    out = []
    for name, value in fields.items():
        raw = value.encode() if isinstance(value, str) else value
        if isinstance(value, str) and value.isprintable():
            out.append(name.encode() + b"=" + raw + b"\n")
        else:
            out.append(name.encode() + b"\n" + len(raw).to_bytes(8, "little") + raw + b"\n")
    return b"".join(out) + b"\n"


def build_journal(export: bytes, out: Path) -> Path:
    """A journal file made by the real systemd-journal-remote from an export stream."""
    need(JOURNAL_REMOTE.exists(), f"{JOURNAL_REMOTE} (Debian package systemd-journal-remote)")
    out.parent.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([str(JOURNAL_REMOTE), f"--output={out}", "-"], input=export,
                         capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return out


# -- a standalone journald ------------------------------------------------------------------

JOURNALD_CONF = """[Journal]
Storage=persistent
RateLimitIntervalSec=0
ReadKMsg=no
Audit=no
ForwardToSyslog=no
ForwardToWall=no
ForwardToConsole=no
ForwardToKMsg=no
"""


class StandaloneJournald:
    """systemd-journald in a private mount namespace, writing into ``root/journal``.

    ``unshare --mount`` gives journald its own view of the file system: a
    tmpfs over /run (its sockets), our directory bound over /var/log/journal
    (its files) and our journald.conf over the real one (no rate limit, no
    kmsg). The host's /run and journal stay untouched. ``flushed`` tells it
    to write to /var at once instead of waiting for a `journalctl --flush`.
    The files stay visible to this process at ``root/journal``, which is what
    a collector reads with ``directory =``. Clients run in the same namespace
    through ``nsenter``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.journal_dir = root / "journal"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return (os.geteuid() == 0 and JOURNALD.exists() and shutil.which("unshare") is not None
                and shutil.which("nsenter") is not None)

    def start(self, timeout: float = 15.0) -> None:
        need(self.available(), "root, /lib/systemd/systemd-journald, unshare and nsenter")
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        conf = self.root / "journald.conf"
        conf.write_text(JOURNALD_CONF)
        script = (
            "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/systemd/journal /run/log/journal; "
            "touch /run/systemd/journal/flushed; "
            f"mount --bind '{self.journal_dir}' /var/log/journal; "
            f"mount --bind '{conf}' /etc/systemd/journald.conf; "
            f"exec {JOURNALD}"
        )
        # exec: the PID we hold is journald's own, so we stop exactly it
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                      "sh", "-c", script],
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "journald.log", "ab"))
        deadline = time.monotonic() + timeout
        while not list(self.journal_dir.glob("*/system.journal")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("journald did not start: "
                                     + (self.root / "journald.log").read_text(errors="replace"))
            time.sleep(0.02)
        self._wait_socket(deadline)

    def _wait_socket(self, deadline: float) -> None:
        while self.run("test", "-S", "/run/systemd/journal/stdout", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError("journald's sockets did not appear")
            time.sleep(0.02)

    def inside(self, *args: str) -> list[str]:
        """argv that runs ``args`` in journald's mount namespace."""
        assert self.proc is not None
        return ["nsenter", "-t", str(self.proc.pid), "-m", "--", *args]

    def run(self, *args: str, input: bytes | None = None,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
        res = subprocess.run(self.inside(*args), input=input, capture_output=True, timeout=60)
        if check:
            assert res.returncode == 0, res.stderr.decode(errors="replace")
        return res

    def logger(self, fields: dict[str, str]) -> None:
        """One entry through ``logger --journald`` (native protocol, our own fields)."""
        need(shutil.which("logger") is not None, "logger (util-linux)")
        self.run("logger", "--journald", input="".join(f"{k}={v}\n" for k, v in fields.items()).encode())

    def cat(self, identifier: str, lines: list[str], priority: str = "info") -> None:
        """Lines through ``systemd-cat`` (the stdout stream transport)."""
        need(shutil.which("systemd-cat") is not None, "systemd-cat")
        self.run("systemd-cat", "-t", identifier, "-p", priority,
                 input="".join(f"{line}\n" for line in lines).encode())

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> StandaloneJournald:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
