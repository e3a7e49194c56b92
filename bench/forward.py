"""Forwarding: records/s edge -> central over mutual TLS on loopback, and CPU on each side.

    .venv/bin/python bench/forward.py [--records 1000000] [--runs 3] [--via hostlog|nats]

``--via nats``: the edge forwards with ``type = "nats"`` to a real
``nats-server -js`` (Debian's package) on loopback, and the central consumes
the stream with ``[[source]] type = "nats"``: edge -> JetStream -> central.

Each run: an edge spool is filled with ``--records`` real syslog-sized lines
(the loghub Linux sample, repeated) before the clock starts; then a central
agent (``[receiver]`` on tls://127.0.0.1) and the edge agent (one
``[[forward]]``, no sources) are started as real ``hostlog agent``
processes, with certificates made by ``hostlog.forward.tls``. The clock runs
from the edge's start until its metrics say the destination has
acknowledged everything (``hostlog_forward_lag_records`` = 0) and the
central has written every record (its ``hostlog_spool_records_written_total``),
both polled every 0.2 s: counters, not queries. CPU is each process's user+system time over
that interval (psutil). The chunks travel as the spool holds them (decrypted,
still LZ4-compressed); the central decodes each to drop what it holds and
writes it into its own spool (encode, LZ4, AES-GCM, group commit).

Prints a Markdown table of medians; bench/RESULTS.md records them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import psutil

from hostlog.forward.tls import issue, make_ca, write_pem
from hostlog.record import Columns, Record
from hostlog.spool.keys import Keyring
from hostlog.spool.spool import Spool
from hostlog.spool.writer import SpoolWriter

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "loghub"
HOSTLOG = [sys.executable, "-m", "hostlog.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lines() -> list[str]:
    return [line for line in (CORPORA / "Linux_2k.log").read_text(errors="replace").splitlines() if line]


async def prefill(state: Path, n: int) -> None:
    keyring = Keyring.load_or_create(state / "spool.key")
    spool = Spool.open(state / "spool", keyring)
    writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05)
    writer.start()
    text = lines()
    t0 = 1_764_000_000_000_000_000
    for start in range(0, n, 1000):
        k = min(1000, n - start)
        await writer.write(Columns.of([
            Record(ts=t0 + (start + i) * 1000, msg=text[(start + i) % len(text)], host="web-1",
                   source="syslog", app="kernel", severity=6, facility=0) for i in range(k)]))
    await writer.stop()
    spool.close()


def pki(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True)
    ca, ca_key = make_ca("bench CA")
    write_pem(ca, ca_key, directory / "ca.pem", directory / "ca.key")
    out = {"ca": directory / "ca.pem"}
    for name in ("central", "edge"):
        cert, key = issue(ca, ca_key, name if name == "edge" else "localhost", sans=["127.0.0.1"])
        write_pem(cert, key, directory / f"{name}.pem", directory / f"{name}.key")
        out[name], out[f"{name}_key"] = directory / f"{name}.pem", directory / f"{name}.key"
    return out


def start(home: Path, config: str) -> subprocess.Popen:
    (home / "agent.toml").write_text(config)
    log = open(home / "agent.log", "ab")
    proc = subprocess.Popen([*HOSTLOG, "agent", "-c", str(home / "agent.toml")], stdout=subprocess.DEVNULL,
                            stderr=log, env=dict(os.environ, HOSTLOG_LOG_LEVEL="WARNING"))
    return proc


def metric(port: int, pattern: str) -> int | None:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    m = re.search(r"^" + pattern + r" (\S+)$", body, re.M)
    return int(float(m.group(1))) if m else None


def lag(port: int) -> int | None:
    return metric(port, r'hostlog_forward_lag_records\{destination="central"\}')


def written(port: int) -> int:
    return metric(port, r"hostlog_spool_records_written_total") or 0


def run_once(n: int, tmp: Path, via: str = "hostlog") -> dict[str, float]:
    certs = pki(tmp / "pki")
    edge_home, central_home = tmp / "edge", tmp / "central"
    for home in (edge_home, central_home):
        (home / "state").mkdir(parents=True)
    asyncio.run(prefill(edge_home / "state", n))
    port, metrics, central_metrics = free_port(), free_port(), free_port()
    nats = None
    if via == "nats":
        nats = subprocess.Popen(["nats-server", "-js", "-sd", str(tmp / "nats"), "-a", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        intake = f'[[source]]\ntype = "nats"\nname = "js"\nservers = ["nats://127.0.0.1:{port}"]'
        target = f'type = "nats"\ntargets = ["nats://127.0.0.1:{port}"]'
    else:
        intake = f'[receiver]\nlisten = "tls://127.0.0.1:{port}"'
        target = f'targets = ["tls://localhost:{port}"]'
    central = start(central_home, textwrap.dedent(f"""
        [agent]
        state_dir = "{central_home}/state"
        [tls]
        ca = "{certs['ca']}"
        cert = "{certs['central']}"
        key = "{certs['central_key']}"
        [control]
        socket = "{central_home}/control.sock"
        metrics = "127.0.0.1:{central_metrics}"
        """) + intake + "\n")
    edge = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                if metric(central_metrics, "hostlog_agent_uptime_seconds") is not None:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        c_cpu0 = psutil.Process(central.pid).cpu_times()
        t0 = time.monotonic()
        edge = start(edge_home, textwrap.dedent(f"""
            [agent]
            hostname = "web-1"
            state_dir = "{edge_home}/state"
            [[forward]]
            name = "central"
            {target.replace(chr(10), chr(10) + " " * 12)}
            [tls]
            ca = "{certs['ca']}"
            cert = "{certs['edge']}"
            key = "{certs['edge_key']}"
            [control]
            socket = "{edge_home}/control.sock"
            metrics = "127.0.0.1:{metrics}"
            """))
        ep = psutil.Process(edge.pid)
        deadline = time.monotonic() + 600
        e_cpu = ep.cpu_times()
        while time.monotonic() < deadline:
            e_cpu = ep.cpu_times()
            if lag(metrics) == 0 and written(central_metrics) >= n:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("the central did not catch up in 600 s")
        elapsed = time.monotonic() - t0
        c_cpu = psutil.Process(central.pid).cpu_times()
        central_s = (c_cpu.user + c_cpu.system) - (c_cpu0.user + c_cpu0.system)
        edge_s = e_cpu.user + e_cpu.system
        wire = json.loads(subprocess.run([*HOSTLOG, "ctl", "--socket", str(edge_home / "control.sock"),
                                          "--json", "status"], capture_output=True, timeout=30).stdout)
        link = wire["forward"][0]["links"][0]
        stored = written(central_metrics)
        if stored < n:
            raise RuntimeError(f"the central stored {stored} records of {n}")
        return {"records_s": n / elapsed, "elapsed": elapsed, "edge_cpu_100k": edge_s / n * 1e5,
                "central_cpu_100k": central_s / n * 1e5, "wire_bytes_per_record": link["bytes_sent"] / n}
    finally:
        for proc in (edge, central, nats):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--via", choices=["hostlog", "nats"], default="hostlog")
    args = parser.parse_args()
    results = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="hostlog-bench-fwd-") as tmp:
            r = run_once(args.records, Path(tmp), args.via)
            results.append(r)
            print(f"run {i + 1}: {r['records_s']:,.0f} records/s, edge {r['edge_cpu_100k']:.3f} s CPU/100k, "
                  f"central {r['central_cpu_100k']:.3f} s CPU/100k, {r['wire_bytes_per_record']:.1f} B/record on "
                  f"the wire", flush=True)
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"via {args.via}")
    print(f"| records | runs | records/s edge -> central | edge CPU s / 100k | central CPU s / 100k "
          f"| wire bytes / record |\n|---|---|---|---|---|---|\n"
          f"| {args.records:,} | {args.runs} | {med['records_s']:,.0f} | {med['edge_cpu_100k']:.3f} "
          f"| {med['central_cpu_100k']:.3f} | {med['wire_bytes_per_record']:.1f} |")


if __name__ == "__main__":
    main()
