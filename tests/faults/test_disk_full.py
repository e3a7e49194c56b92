"""Disk full and I/O errors, with a real agent (docs/guarantees.md, "Disk full and I/O errors").

The spool lives on a real tmpfs of 4 MiB that the test mounts into its
tmp_path (root needed; in CI a missing mount is a failure, never a skip) and
unmounts at the end. A filler file the test writes takes most of it, so the
agent's sources fill what is left: a file source (numbered lines the test
appends to a file outside the tmpfs) and a syslog TCP source (numbered lines
a sender thread writes to a loopback connection).

* ``on_full = "block"``: once the spool is full, the writer waits, the
  sources are slowed (the file is read no further, the TCP sender's
  ``sendall`` stalls), ``hostlog ctl status`` and ``hostlog_spool_full`` say
  so; the test deletes the filler, the agent resumes by itself (the log says
  ``spool writable again`` once) and every line is stored exactly once.
* ``on_full = "drop_oldest"``: the agent never stops taking lines; what is
  missing at the end is exactly what ``hostlog_spool_dropped_records_total``
  counts (by seq, and by line once the agent's own notices are told apart).
* A failed fdatasync (``HOSTLOG_FAULT=segment-sync:N``, src/hostlog/faultpoint.py):
  the agent exits 1 with the error, the spool is cut back to its last
  durable record, and after a restart every line is stored exactly once.

* SIGTERM while full, then a start on a disk that is still full: exit 1,
  the restarted agent runs, resumes once room returns, no file line lost.

HOSTLOG_FAULTS_LONG=1 runs three fill-and-free cycles instead of one, and
five times the lines with drop_oldest.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostlog.spool.reader import SpoolReader
from tests.agentproc import AgentProcess, free_port, metric_by_label, wait_for
from tests.conftest import need
from tests.faults.conftest import LONG

LINE = re.compile(r"\b(file|tcp) line (\d{7}) [0-9a-f]{16}\b")
CYCLES = 3 if LONG else 1
DROP_FILE_LINES = 500_000 if LONG else 100_000
DROP_TCP_LINES = 100_000 if LONG else 20_000


def text(kind: str, n: int) -> str:
    """Line n of a source: numbered, and 16 hex digits that compress like real text does not."""
    return f"{kind} line {n:07d} {hashlib.blake2b(n.to_bytes(8, 'little'), digest_size=8).hexdigest()}"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs of 4 MiB at tmp_path/fs, unmounted at the end."""
    need(os.geteuid() == 0 and shutil.which("mount") is not None, "root and mount(8), to mount a tmpfs")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mnt)],
                   check=True, timeout=30, capture_output=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], timeout=30, capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], timeout=30, check=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int) -> int:
    """Write a filler file at ``path`` until only about ``leave`` bytes stay free; its size."""
    want = max(0, free_bytes(path.parent) - leave)
    block = b"\0" * 65536
    written = 0
    with open(path, "wb") as f:
        while written < want:
            try:
                written += f.write(block[:min(len(block), want - written)])
            except OSError:
                break
    return written


def agent_config(tmp: Path, fs: Path, port: int, on_full: str) -> str:
    return f"""
[agent]
hostname = "full-host"
state_dir = "{fs}/state"

[spool]
fsync = "batch"
fsync_interval = "50ms"
segment_bytes = "64KiB"
max_bytes = "1GiB"
on_full = "{on_full}"
max_pending = 2000

[[source]]
type = "file"
name = "app"
paths = ["{tmp}/app.log"]
start = "beginning"
poll_interval = "100ms"

[[source]]
type = "syslog"
name = "net"
listen = ["tcp://127.0.0.1:{port}"]
"""


class Sender(threading.Thread):
    """Writes ``count`` syslog lines over one TCP connection, in chunks of 100
    lines, with a small send buffer; notes when it made no progress for long."""

    def __init__(self, port: int, first: int, count: int) -> None:
        super().__init__(daemon=True)
        self.port, self.first, self.count = port, first, count
        self.sent = 0  # lines handed to the kernel
        self.longest_stall = 0.0
        self.error: BaseException | None = None
        self.last_progress = time.monotonic()

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=120) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
                for start in range(self.first, self.first + self.count, 100):
                    stop = min(start + 100, self.first + self.count)
                    data = "".join(f"<13>Dec  3 10:00:00 full-host net: {text('tcp', n)}\n"
                                   for n in range(start, stop)).encode()
                    t0 = time.monotonic()
                    s.sendall(data)
                    now = time.monotonic()
                    self.longest_stall = max(self.longest_stall, now - t0)
                    self.sent += stop - start
                    self.last_progress = now
        except BaseException as exc:  # the test reads it and fails
            self.error = exc

    def stalled_for(self) -> float:
        return 0.0 if self.sent == self.count else time.monotonic() - self.last_progress


def append_lines(path: Path, first: int, count: int) -> None:
    with open(path, "a") as f:
        f.write("".join(text("file", n) + "\n" for n in range(first, first + count)))


def held_lines(spool: Path) -> tuple[collections.Counter[tuple[str, int]], list[int], int]:
    """What the spool holds: each line with its count, every seq, and the agent's notices."""
    reader = SpoolReader.open(spool)
    lines: collections.Counter[tuple[str, int]] = collections.Counter()
    seqs = []
    notices = 0
    for seq, record in reader.records():
        seqs.append(seq)
        m = LINE.search(record.msg if isinstance(record.msg, str) else "")
        if m:
            lines[(m.group(1), int(m.group(2)))] += 1
        elif record.source == "hostlog":
            notices += 1
        else:
            raise AssertionError(f"a record that is no line and no notice: {record}")
    assert not reader.damage, reader.damage
    return lines, seqs, notices


def metric(agent: AgentProcess, name: str) -> float:
    return agent.metrics().get(name, 0.0)


def test_block_slows_the_sources_and_resumes_by_itself_once_space_returns(tmp_path, small_fs):
    port = free_port()
    log = tmp_path / "app.log"
    log.touch()
    agent = AgentProcess(tmp_path, agent_config(tmp_path, small_fs, port, "block"))
    file_lines = tcp_lines = 0
    figures = []
    agent.start()
    try:
        for cycle in range(CYCLES):
            filler = small_fs / f"filler-{cycle}"
            fill(filler, leave=300 * 1024)
            # file lines until the spool is full (bounded: 400,000 lines)
            t0 = time.monotonic()
            while metric(agent, "hostlog_spool_full") != 1:
                assert file_lines < 400_000 and time.monotonic() - t0 < 120, \
                    f"the spool never filled ({file_lines} lines):\n{agent.log_text()[-3000:]}"
                append_lines(log, file_lines, 5000)
                file_lines += 5000
                time.sleep(0.2)
            full_at = time.monotonic()
            # the TCP source while full: its sender stalls (the agent reads no more)
            sender = Sender(port, tcp_lines, 20_000)
            sender.start()
            wait_for(lambda sender=sender: sender.stalled_for() > 2.0 or sender.error, timeout=60,
                     what="the TCP sender to stall on the full spool")
            assert sender.error is None and sender.sent < sender.count
            # the file source too: nothing more is taken in while full
            taken = sum(metric_by_label(agent.metrics(), "hostlog_records_in_total", "source").values())
            time.sleep(1.0)
            samples = agent.metrics()
            assert sum(metric_by_label(samples, "hostlog_records_in_total", "source").values()) == taken
            assert samples["hostlog_spool_full"] == 1
            status = subprocess.run([*agent_cli(), "ctl", "-c", str(agent.config), "status"],
                                    capture_output=True, text=True, timeout=30, env=agent.env)
            assert status.returncode == 0 and "spool FULL (no space left on device)" in status.stdout, status
            stored_while_full = int(samples["hostlog_spool_records_written_total"])
            # room again: the agent resumes by itself
            filler.unlink()
            sender.join(timeout=120)
            assert not sender.is_alive() and sender.error is None and sender.sent == sender.count
            tcp_lines += sender.count
            want = file_lines + tcp_lines
            wait_for(lambda want=want: metric(agent, "hostlog_spool_records_written_total") >= want,
                     timeout=60, what="every line to be written after the filler went")
            assert metric(agent, "hostlog_spool_full") == 0
            figures.append(f"cycle {cycle + 1}: full after {stored_while_full} records, blocked "
                           f"{time.monotonic() - full_at:.1f} s, TCP sender stalled {sender.longest_stall:.1f} s")
        assert agent.stop() == 0
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop(signal.SIGKILL)
    text_log = agent.log_text()
    assert text_log.count("spool writable again") == CYCLES, text_log[-3000:]
    lines, seqs, _ = held_lines(small_fs / "state" / "spool")
    sent = {("file", n) for n in range(file_lines)} | {("tcp", n) for n in range(tcp_lines)}
    lost = sent - set(lines)
    duplicated = sum(c - 1 for c in lines.values())
    assert seqs == list(range(1, len(seqs) + 1))
    print(f"\nFAULTS disk full, block: {CYCLES} cycles on a 4 MiB tmpfs; sent {len(sent)} lines "
          f"({file_lines} file, {tcp_lines} tcp), stored {len(lines)}, lost {len(lost)}, "
          f"duplicated {duplicated}; " + "; ".join(figures))
    assert not lost and not duplicated and set(lines) == sent
    verify = subprocess.run([*agent_cli(), "spool", "verify", "-D", str(small_fs / "state" / "spool")],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_drop_oldest_drops_exactly_what_it_counts(tmp_path, small_fs):
    port = free_port()
    log = tmp_path / "app.log"
    log.touch()
    agent = AgentProcess(tmp_path, agent_config(tmp_path, small_fs, port, "drop_oldest"))
    agent.start()
    try:
        fill(small_fs / "filler", leave=1024 * 1024)
        sender = Sender(port, 0, DROP_TCP_LINES)
        sender.start()
        for first in range(0, DROP_FILE_LINES, 10_000):
            append_lines(log, first, 10_000)
            time.sleep(0.1)
        sender.join(timeout=300)
        assert not sender.is_alive() and sender.error is None and sender.sent == DROP_TCP_LINES
        total = DROP_FILE_LINES + DROP_TCP_LINES
        wait_for(lambda: metric(agent, "hostlog_spool_records_written_total") >= total, timeout=120,
                 what="every line to be written")
        time.sleep(1.5)  # the agent's last notice about drops (checked every second)
        samples = agent.metrics()
        dropped = int(samples["hostlog_spool_dropped_records_total"])
        for_room = int(samples["hostlog_spool_dropped_for_room_records_total"])
        assert agent.stop() == 0
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop(signal.SIGKILL)
    lines, seqs, notices_held = held_lines(small_fs / "state" / "spool")
    notices_made = agent.log_text().count("retention dropped ")
    assert dropped > 0 and for_room == dropped and notices_made > 0
    # the spool lost its oldest seqs and nothing else: exactly the counted ones
    assert seqs == list(range(dropped + 1, dropped + 1 + len(seqs))), (dropped, seqs[:3])
    duplicated = sum(c - 1 for c in lines.values())
    missing = total - len(lines)
    print(f"\nFAULTS disk full, drop_oldest on a 4 MiB tmpfs: sent {total} lines "
          f"({DROP_FILE_LINES} file, {DROP_TCP_LINES} tcp), stored {len(lines)}, dropped "
          f"(counted) {dropped} records, missing {missing} lines + {notices_made - notices_held} "
          f"of the agent's {notices_made} notices about it; duplicated {duplicated}")
    assert not duplicated
    assert missing + (notices_made - notices_held) == dropped
    # what is missing is the oldest: of each source, what is held is its newest lines (or none)
    for kind in ("file", "tcp"):
        held = sorted(n for k, n in lines if k == kind)
        count = DROP_FILE_LINES if kind == "file" else DROP_TCP_LINES
        assert held == list(range(count - len(held), count)), kind


def agent_cli() -> list[str]:
    from tests.agentproc import HOSTLOG
    return list(HOSTLOG)


def test_a_failed_fdatasync_stops_the_agent_and_its_lines_are_read_again(tmp_path):
    """The 5th fdatasync of a segment fails with EIO: nothing it covered is
    acknowledged, the agent exits 1 and cuts the spool back to what was
    durable; restarted, the file source reads the rest again: every line once."""
    log = tmp_path / "app.log"
    append_lines(log, 0, 3000)
    config = f"""
[agent]
hostname = "eio-host"
state_dir = "{tmp_path}/state"

[spool]
fsync = "batch"
fsync_interval = "50ms"
segment_bytes = "64KiB"

[[source]]
type = "file"
name = "app"
paths = ["{log}"]
start = "beginning"
poll_interval = "50ms"
"""
    agent = AgentProcess(tmp_path, config, env={"HOSTLOG_FAULT": "segment-sync:5"})
    agent.start()
    assert agent.proc is not None
    written = 3000
    while agent.proc.poll() is None and written < 30_000:  # the fault comes among these
        append_lines(log, written, 1000)
        written += 1000
        time.sleep(0.1)
    code = agent.proc.wait(timeout=30)
    text_log = agent.log_text()
    assert code == 1, text_log[-3000:]
    assert "fault segment-sync injected" in text_log
    assert "spool sync failed and is not retried" in text_log
    cut = re.search(r"after the failed sync: cut (\d+) bytes \(records after seq (\d+)\)", text_log)
    assert cut, text_log[-3000:]
    # restarted without the fault: the lines after the cut are read again
    append_lines(log, written, 1000)
    written += 1000
    agent.env.pop("HOSTLOG_FAULT")
    agent.start()
    wait_for(lambda: metric_lines(tmp_path) >= written, timeout=60, what="every line after the restart")
    assert agent.stop() == 0
    lines, seqs, _ = held_lines(tmp_path / "state" / "spool")
    lost = {("file", n) for n in range(written)} - set(lines)
    duplicated = sum(c - 1 for c in lines.values())
    print(f"\nFAULTS failed fdatasync (EIO, HOSTLOG_FAULT=segment-sync:5): exit 1; {written} lines "
          f"written, {len(lines)} stored, lost {len(lost)}, duplicated {duplicated}; cut at the "
          f"failure: {cut.group(1)} bytes, records after seq {cut.group(2)}")
    assert seqs == list(range(1, len(seqs) + 1))
    assert not lost and not duplicated


def metric_lines(tmp_path: Path) -> int:
    try:
        return sum(held_lines(tmp_path / "state" / "spool")[0].values())
    except (OSError, ValueError):
        return 0


def test_stopped_and_started_again_on_a_full_disk_the_file_source_loses_nothing(tmp_path, small_fs):
    """SIGTERM while writes wait for room: exit 1, nothing of what waited is
    durable; started again with the disk still full, the agent runs (full),
    and once room returns every line of the file is stored once."""
    port = free_port()
    log = tmp_path / "app.log"
    log.touch()
    agent = AgentProcess(tmp_path, agent_config(tmp_path, small_fs, port, "block"))
    agent.start()
    lines = 0
    try:
        filler = small_fs / "filler"
        fill(filler, leave=200 * 1024)
        t0 = time.monotonic()
        while metric(agent, "hostlog_spool_full") != 1:
            assert lines < 400_000 and time.monotonic() - t0 < 120, agent.log_text()[-3000:]
            append_lines(log, lines, 5000)
            lines += 5000
            time.sleep(0.2)
        assert agent.stop() == 1
        assert "No space left on device" in agent.log_text()
        agent.start()  # the disk is still full
        wait_for(lambda: metric(agent, "hostlog_spool_full") == 1, timeout=30, what="full again")
        append_lines(log, lines, 5000)
        lines += 5000
        filler.unlink()
        wait_for(lambda: metric(agent, "hostlog_spool_records_written_total") > 0
                 and metric(agent, "hostlog_spool_full") == 0, timeout=60, what="resumed")
        wait_for(lambda: len(held_lines(small_fs / "state" / "spool")[0]) >= lines, timeout=60,
                 what="every line")
        assert agent.stop() == 0
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop(signal.SIGKILL)
    held, seqs, _ = held_lines(small_fs / "state" / "spool")
    lost = {("file", n) for n in range(lines)} - set(held)
    duplicated = sum(c - 1 for c in held.values())
    print(f"\nFAULTS disk full, stopped while full and started again full: {lines} lines written, "
          f"{len(held)} stored, lost {len(lost)}, duplicated {duplicated}")
    assert seqs == list(range(1, len(seqs) + 1))
    assert not lost and not duplicated
