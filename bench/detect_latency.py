"""Detection latency: a record received -> its anomaly record durable, under load.

    .venv/bin/python bench/detect_latency.py [--rate 100000] [--seconds 20] [--runs 3]

A real agent (syslog over TCP, ``[patterns] warmup = "2s"``, everything else at
its defaults) takes a steady load of RFC 5424 messages at ``--rate`` a second
(paced in 10 ms steps down one connection: bench/syslog_tcp.py's messages), and,
after the warm-up (the probes' app is first seen at the start), every 0.25 s one
message of a template never seen before (a probe of its own length: a new branch
of the miner's tree, so always a new pattern). Each probe is one ``new_pattern`` anomaly. The agent measures, for
each, the time from the mining stage receiving the probe's batch to the spool
writer reporting the anomaly record durable (fsync = batch); the p99 of a run
(and the p50) come from ``hostlog ctl status`` (``patterns.anomaly_latency_p99_ms``, ``_p50_ms``). The
load the agent kept up with is the records stored over the run's time.
Prints each run and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from syslog_tcp import build_load, free_port, spool_records, wait_port, wait_until  # noqa: E402

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


def probe(k: int) -> bytes:
    words = " ".join(WORDS[i % len(WORDS)] for i in range(k + 2))
    return f"<11>1 2024-05-01T10:00:00.000Z bench-host probe 1 - - probe {words} stopped\n".encode()


def run(rate: int, seconds: float) -> tuple[float | None, float | None, int, float]:
    step = rate // 100  # messages each 10 ms
    lines = build_load(step * 100).split(b"\n")[:-1]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        port = free_port()
        conf = Path(d) / "agent.toml"
        conf.write_text(f'[agent]\nstate_dir = "{d}/state"\n[control]\nsocket = "{d}/control.sock"\n'
                        f'[patterns]\nwarmup = "2s"\n'
                        f'[[source]]\ntype = "syslog"\nlisten = ["tcp://127.0.0.1:{port}"]\n')
        proc = subprocess.Popen([sys.executable, "-m", "hostlog.cli.main", "agent", "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, proc)
            sent = probes = 0
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(probe(0).replace(b"probe alpha", b"warming up alpha"))  # the probes' app is watched from now
                sent += 1
                t0 = time.perf_counter()
                next_probe = t0 + 2.5
                tick = 0
                while (now := time.perf_counter()) - t0 < seconds:
                    piece = lines[(tick % 100) * step:(tick % 100 + 1) * step]
                    s.sendall(b"\n".join(piece) + b"\n")
                    sent += len(piece)
                    if now >= next_probe:
                        s.sendall(probe(probes))
                        probes += 1
                        sent += 1
                        next_probe += 0.25
                    tick += 1
                    delay = t0 + tick * 0.01 - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
            spool = Path(d) / "state" / "spool"
            wait_until(lambda: spool_records(spool) >= sent, 120)  # (the anomalies' records besides)
            elapsed = time.perf_counter() - t0
            status = json.loads(subprocess.run(
                [sys.executable, "-m", "hostlog.cli.main", "ctl", "-c", str(conf), "--json", "status"],
                capture_output=True, check=True, timeout=60).stdout)["patterns"]
            said = status["anomalies"]["new_pattern"]
            if said != probes:
                print(f"  ({said} new_pattern anomalies for {probes} probes)")
            return status["anomaly_latency_p99_ms"], status["anomaly_latency_p50_ms"], probes, sent / elapsed
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    results = []
    for i in range(args.runs):
        p99, p50, probes, kept = run(args.rate, args.seconds)
        results.append((p99, p50, kept))
        print(f"run {i + 1}: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {probes} anomalies; "
              f"load stored {kept:,.0f} msg/s")
    print(f"median p99: {statistics.median(r[0] for r in results):.1f} ms, median p50: "
          f"{statistics.median(r[1] for r in results):.1f} ms; median load "
          f"{statistics.median(r[2] for r in results):,.0f} msg/s (offered {args.rate:,} msg/s)")


if __name__ == "__main__":
    main()
