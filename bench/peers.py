"""The peer processes the benchmarks run beside hostlog, started and stopped one way.

    from peers import LineCounter, free_port, start_rsyslogd, stop

``start_rsyslogd`` writes an rsyslog configuration into a work directory and
starts ``rsyslogd -n`` on it (in the foreground, its pid file there too);
``stop`` ends any process a benchmark started, by its own handle: SIGTERM,
then SIGKILL if it has not exited in time. ``LineCounter`` counts the lines
of a file a peer appends to (rsyslog's omfile output), reading only what
was added since the last call, so the clock's poll costs the receiver no
CPU on a small machine. ``free_port`` is a free loopback port.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

__all__ = ["LineCounter", "free_port", "need_rsyslogd", "start_rsyslogd", "stop"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port of 127.0.0.1 nothing listens on now (TCP, or UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def need_rsyslogd() -> None:
    """Exit with a word on what to install when rsyslogd is not there."""
    if shutil.which("rsyslogd") is None:
        sys.exit("rsyslogd is needed for the side-by-side run (apt-get install rsyslog)")


def start_rsyslogd(work: Path, conf: str, stderr: Path | None = None) -> subprocess.Popen[bytes]:
    """rsyslogd in the foreground on ``conf`` (written to ``work``/rsyslog.conf);
    its stderr to ``stderr`` (appended) or nowhere."""
    path = work / "rsyslog.conf"
    path.write_text(conf)
    err: IO[bytes] | int = subprocess.DEVNULL if stderr is None else open(stderr, "ab")  # noqa: SIM115
    try:
        return subprocess.Popen(["rsyslogd", "-n", "-f", str(path), "-i", str(work / "pid")],
                                stdout=subprocess.DEVNULL, stderr=err)
    finally:
        if not isinstance(err, int):
            err.close()  # (the child holds its own copy)


def stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """End a process this benchmark started: SIGTERM, then SIGKILL after ``timeout`` s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class LineCounter:
    """Lines in a file another process appends to, counted incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def __call__(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    self.lines += chunk.count(b"\n")
                    self.offset += len(chunk)
        except FileNotFoundError:
            pass
        return self.lines
