"""Syslog over TCP into storage: hostlog (into its spool) beside rsyslog (imtcp -> omfile).

    .venv/bin/python bench/syslog_tcp.py [--messages 1000000] [--runs 3]

The load generator is this script: it builds N RFC 5424 messages (~160 bytes,
LF-framed, as `logger --rfc5424 --tcp` and loggen send them; or with RFC 6587
octet counting, `--octet-counting`) in memory first,
then writes them down one TCP connection with sendall() in 1 MiB pieces, so
the sender costs almost nothing and the receiver is the bottleneck. (loggen,
from syslog-ng-core, cannot be installed beside rsyslog on Debian: the two
packages conflict.)

Each receiver gets the same bytes; the clock runs from the first byte sent
until all N messages are stored (hostlog: counted in the spool's frame index,
fsync = batch; rsyslog: lines in its output file). CPU time of the receiving
process is read with psutil. Runs alternate between the receivers (hostlog,
rsyslog, hostlog, ...). Prints medians (each run as wall time / CPU per
message) and the hostlog/rsyslog ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostlog.spool.reader import SpoolReader  # noqa: E402
from peers import LineCounter, free_port, need_rsyslogd, start_rsyslogd, stop  # noqa: E402

__all__ = ["build_load", "free_port", "run_hostlog", "send", "spool_records", "wait_port",
           "wait_until"]

SEND_PIECE = 1 << 20


def build_load(n: int, octet_counting: bool = False) -> bytes:
    apps = ("sshd", "nginx", "cron", "postfix", "kernel")
    parts = []
    for i in range(n):
        app = apps[i % 5]
        msg = (f"<{8 + i % 8}>1 2024-05-01T10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z "
               f"bench-host {app} {1000 + i % 97} ID{i % 10} - message number {i:07d} from the load "
               f"generator with some ordinary text like a request path /api/v1/items?id={i % 5000}")
        # RFC 6587: "MSG-LEN SP MSG" (the messages are ASCII: len() is octets), or MSG LF
        parts.append(f"{len(msg)} {msg}" if octet_counting else msg + "\n")
    return "".join(parts).encode()


def send(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        view = memoryview(data)
        for off in range(0, len(view), SEND_PIECE):
            s.sendall(view[off:off + SEND_PIECE])


def wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError("receiver did not store every message in time")


def wait_port(port: int, proc: subprocess.Popen) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("receiver exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False
    wait_until(up, 30)


def spool_records(spool: Path) -> int:
    try:
        reader = SpoolReader.open(spool)
    except Exception:
        return 0
    return sum(e.count for _, e in reader.frames())


#: bytes of hostlog's spool segments after each run (compression in a burst)
SPOOL_BYTES: list[int] = []


def run_hostlog(data: bytes, n: int, extra: str = "") -> tuple[float, float]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        port = free_port()
        conf = Path(d) / "agent.toml"
        conf.write_text(f'[agent]\nstate_dir = "{d}/state"\n[[source]]\ntype = "syslog"\n'
                        f'listen = ["tcp://127.0.0.1:{port}"]\n' + extra)
        proc = subprocess.Popen([sys.executable, "-m", "hostlog.cli.main", "agent", "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, proc)
            p = psutil.Process(proc.pid)
            cpu0 = sum(p.cpu_times()[:2])
            t0 = time.perf_counter()
            send(port, data)
            spool = Path(d) / "state" / "spool"
            wait_until(lambda: spool_records(spool) >= n, 600)
            elapsed = time.perf_counter() - t0
            cpu = sum(p.cpu_times()[:2]) - cpu0
            SPOOL_BYTES.append(sum(f.stat().st_size for f in spool.rglob("*.seg")))
        finally:
            stop(proc)
    return elapsed, cpu


RSYSLOG_CONF = """
global(workDirectory="{d}")
module(load="imtcp")
input(type="imtcp" port="{port}" address="127.0.0.1")
action(type="omfile" file="{d}/out.log" template="RSYSLOG_FileFormat")
"""


def run_rsyslog(data: bytes, n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        port = free_port()
        proc = start_rsyslogd(Path(d), RSYSLOG_CONF.format(d=d, port=port))
        try:
            wait_port(port, proc)
            p = psutil.Process(proc.pid)
            cpu0 = sum(p.cpu_times()[:2])
            t0 = time.perf_counter()
            send(port, data)
            counter = LineCounter(Path(d) / "out.log")
            wait_until(lambda: counter() >= n, 600)
            elapsed = time.perf_counter() - t0
            cpu = sum(p.cpu_times()[:2]) - cpu0
        finally:
            stop(proc)
    return elapsed, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--octet-counting", action="store_true",
                    help="frame the messages with RFC 6587 octet counting instead of LF")
    args = ap.parse_args()
    need_rsyslogd()
    n = args.messages
    data = build_load(n, args.octet_counting)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load: {n} RFC 5424 messages, {len(data) / n:.0f} B each, {len(data) / 1e6:.0f} MB, "
          + ("octet-counted" if args.octet_counting else "LF-framed"))
    receivers = (("hostlog", run_hostlog), ("rsyslog", run_rsyslog))
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in receivers}
    for _ in range(args.runs):
        # one run of each per round: on a shared machine, load that comes and
        # goes then hits both receivers alike
        for name, fn in receivers:
            runs[name].append(fn(data, n))
    results = {}
    for name, _ in receivers:
        wall = statistics.median(r[0] for r in runs[name])
        cpu = statistics.median(r[1] for r in runs[name])
        results[name] = (n / wall, len(data) / wall / 1e6, cpu / n * 1e6)
        print(f"{name}: {n / wall:,.0f} msg/s, {len(data) / wall / 1e6:.1f} MB/s, "
              f"{cpu / n * 1e6:.2f} µs CPU/msg (median of {args.runs}; runs: "
              + ", ".join(f"{r[0]:.2f}s/{r[1] / n * 1e6:.2f}µs" for r in runs[name]) + ")")
    print(f"ratio hostlog/rsyslog msg/s: {results['hostlog'][0] / results['rsyslog'][0]:.2f}")
    size = statistics.median(SPOOL_BYTES)
    print(f"hostlog spool on disk: {size / 1e6:.1f} MB ({len(data) / size:.1f}:1 of the bytes sent)")


if __name__ == "__main__":
    main()
