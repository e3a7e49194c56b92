"""A destination down under load: the edge's memory while it waits, and the catch-up after.

    .venv/bin/python bench/forward_outage.py [--rate 20000] [--down 300] [--runs 1]

An edge agent (syslog over TCP, one ``[[forward]]`` over mutual TLS to a
central agent) takes ``--rate`` lines/s from a load generator in another
process (pre-built RFC 5424 lines of the loghub Linux sample, written in 10 ms
batches). The central is not running for the first ``--down`` seconds; the
edge's RSS is sampled every second (psutil). Then the central starts and the
clock measures the catch-up: from its start until the edge's
``hostlog_forward_lag_records`` is back near zero (below one second of
ingest), while the load goes on. Catch-up rate = records acknowledged per
second over that interval, beside the ingest rate. Counters are polled from
the metrics endpoint (never a query).

Prints a Markdown table; bench/RESULTS.md records it.
"""

from __future__ import annotations

import argparse
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

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "loghub"
HOSTLOG = [sys.executable, "-m", "hostlog.cli.main"]

GENERATOR = r"""
import socket, sys, time
port, rate, corpus = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
text = [l for l in open(corpus, errors="replace").read().splitlines() if l]
per_tick = max(1, rate // 100)
lines = [f"<14>1 2026-12-03T10:00:00Z web-1 kernel - - - {text[i % len(text)]}\n".encode()
         for i in range(per_tick * 50)]
s = socket.create_connection(("127.0.0.1", port))
t, i = time.monotonic(), 0
while True:
    s.sendall(b"".join(lines[(i % 50) * per_tick:(i % 50 + 1) * per_tick]))
    i += 1
    t += 0.01
    time.sleep(max(0.0, t - time.monotonic()))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def value(samples: dict[str, float], pattern: str) -> float:
    return sum(v for k, v in samples.items() if re.fullmatch(pattern, k))


def start(home: Path, config: str) -> subprocess.Popen:
    (home / "agent.toml").write_text(config)
    return subprocess.Popen([*HOSTLOG, "agent", "-c", str(home / "agent.toml")], stdout=subprocess.DEVNULL,
                            stderr=open(home / "agent.log", "ab"), env=dict(os.environ, HOSTLOG_LOG_LEVEL="WARNING"))


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_once(rate: int, down: float, tmp: Path) -> dict[str, float]:
    pki = tmp / "pki"
    pki.mkdir()
    ca, ca_key = make_ca("bench CA")
    write_pem(ca, ca_key, pki / "ca.pem", pki / "ca.key")
    for name in ("central", "edge"):
        cert, key = issue(ca, ca_key, "localhost" if name == "central" else name, sans=["127.0.0.1"])
        write_pem(cert, key, pki / f"{name}.pem", pki / f"{name}.key")
    edge_home, central_home = tmp / "edge", tmp / "central"
    for home in (edge_home, central_home):
        (home / "state").mkdir(parents=True)
    port, syslog, mport = free_port(), free_port(), free_port()
    edge = start(edge_home, textwrap.dedent(f"""
        [agent]
        hostname = "web-1"
        state_dir = "{edge_home}/state"
        [[source]]
        type = "syslog"
        name = "syslog"
        listen = ["tcp://127.0.0.1:{syslog}"]
        [[forward]]
        name = "central"
        targets = ["tls://localhost:{port}"]
        [tls]
        ca = "{pki}/ca.pem"
        cert = "{pki}/edge.pem"
        key = "{pki}/edge.key"
        [control]
        socket = "{edge_home}/control.sock"
        metrics = "127.0.0.1:{mport}"
        """))
    gen = central = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                metrics(mport)
                break
            except OSError:
                time.sleep(0.1)
        gen = subprocess.Popen([sys.executable, "-c", GENERATOR, str(syslog), str(rate),
                                str(CORPORA / "Linux_2k.log")])
        ep = psutil.Process(edge.pid)
        rss = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < down:
            rss.append(ep.memory_info().rss)
            time.sleep(1.0)
        lag_at_return = value(metrics(mport), r'hostlog_forward_lag_records\{destination="central"\}')
        central = start(central_home, textwrap.dedent(f"""
            [agent]
            state_dir = "{central_home}/state"
            [receiver]
            listen = "tls://127.0.0.1:{port}"
            [tls]
            ca = "{pki}/ca.pem"
            cert = "{pki}/central.pem"
            key = "{pki}/central.key"
            [control]
            socket = "{central_home}/control.sock"
            """))
        t1 = time.monotonic()
        acked0 = value(metrics(mport), r'hostlog_forward_acked_seq\{destination="central"\}')
        deadline = t1 + max(600.0, down * 4)
        while time.monotonic() < deadline:
            samples = metrics(mport)
            rss.append(ep.memory_info().rss)
            if value(samples, r'hostlog_forward_lag_records\{destination="central"\}') < rate:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("no catch-up")
        t2 = time.monotonic()
        acked = value(samples, r'hostlog_forward_acked_seq\{destination="central"\}') - acked0
        ingested = value(samples, r'hostlog_records_in_total\{source="syslog"\}')
        return {"ingest_s": ingested / (t2 - t0), "backlog": lag_at_return, "catch_up_s": t2 - t1,
                "acked_s": acked / (t2 - t1), "rss_start": rss[0] / 2**20, "rss_max": max(rss) / 2**20,
                "rss_end_of_outage": rss[int(down) - 1] / 2**20 if len(rss) >= down else rss[-1] / 2**20}
    finally:
        if gen is not None:
            gen.kill()
            gen.wait()
        stop(edge)
        stop(central)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--down", type=float, default=300.0)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    results = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="hostlog-bench-outage-") as tmp:
            r = run_once(args.rate, args.down, Path(tmp))
        results.append(r)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:,.1f}" for k, v in r.items()), flush=True)
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print("| ingest lines/s | down | backlog at return | edge RSS: start / end of outage / max | "
          "catch-up | acked/s during catch-up | catch-up / ingest |\n|---|---|---|---|---|---|---|\n"
          f"| {med['ingest_s']:,.0f} | {args.down:.0f} s | {med['backlog']:,.0f} | {med['rss_start']:.0f} / "
          f"{med['rss_end_of_outage']:.0f} / {med['rss_max']:.0f} MiB | {med['catch_up_s']:.1f} s | "
          f"{med['acked_s']:,.0f} | {med['acked_s'] / med['ingest_s']:.1f}x |")


if __name__ == "__main__":
    main()
