"""Forwarding: records/s edge -> central over mutual TLS on loopback, and CPU on each side.

    .venv/bin/python bench/forward.py [--records 1000000] [--runs 3]
                                      [--via hostlog|nats|fluent|syslog|otlp]

``--via nats``: the edge forwards with ``type = "nats"`` to a real
``nats-server -js`` (Debian's package) on loopback, and the central consumes
the stream with ``[[source]] type = "nats"``: edge -> JetStream -> central.

The other outputs, each to a real receiver on loopback (plain TCP / HTTP):

* ``--via fluent``: ``type = "fluent"`` (PackedForward, an ack per message)
  to a central ``hostlog agent`` with ``[[source]] type = "forward"``;
* ``--via syslog``: ``type = "syslog"`` (RFC 5424, octet counting) to a real
  ``rsyslogd -n`` (imtcp, one omfile action writing RSYSLOG_FileFormat); the
  records it holds are the lines of its file;
* ``--via otlp``: ``type = "otlp"`` (protobuf, gzip) to a small aiohttp
  server of this script, in its own process (``--serve-otlp PORT``), that
  decodes every ExportLogsServiceRequest with opentelemetry-proto and counts
  its log records.

Besides the figures over the whole run (the clock from the edge's start),
each run gives the steady figures: from the last poll (every 10 ms) before
the edge has written 64 KiB (it starts sending) to the end, records/s and CPU
of the edge and of the receiver per 100k records (the edge's start-up left
out), and the bytes the edge wrote over that time (its ``write_chars``:
what it sent, TLS, HTTP and framing included; its log and cursor files are
a few hundred bytes) per record.

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
import gzip
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
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostlog.forward.tls import issue, make_ca, write_pem  # noqa: E402
from hostlog.record import Columns, Record  # noqa: E402
from hostlog.spool.keys import Keyring  # noqa: E402
from hostlog.spool.spool import Spool  # noqa: E402
from hostlog.spool.writer import SpoolWriter  # noqa: E402
from peers import LineCounter, free_port, start_rsyslogd, stop  # noqa: E402

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "loghub"
HOSTLOG = [sys.executable, "-m", "hostlog.cli.main"]


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


def acked(port: int) -> int | None:
    return metric(port, r'hostlog_forward_acked_seq\{destination="central"\}')


def written(port: int) -> int:
    return metric(port, r"hostlog_spool_records_written_total") or 0


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


RSYSLOG_CONF = """
global(workDirectory="{work}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="r")
ruleset(name="r") {{ action(type="omfile" file="{work}/out.log" template="RSYSLOG_FileFormat") }}
"""


class Receiver:
    """What the edge forwards to: its process (for CPU), how many records it holds."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], target: str, received: Any, ready: Any,
                 cpu_pid: int) -> None:
        self.procs = procs  # stopped in reverse order
        self.target = target  # the [[forward]] lines
        self.received = received
        self.ready = ready
        self.cpu_pid = cpu_pid  # the process whose CPU is the receiver's

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc, 30)


def central_agent(home: Path, certs: dict[str, Path], metrics: int, intake: str) -> subprocess.Popen[bytes]:
    return start(home, textwrap.dedent(f"""
        [agent]
        state_dir = "{home}/state"
        [tls]
        ca = "{certs['ca']}"
        cert = "{certs['central']}"
        key = "{certs['central_key']}"
        [control]
        socket = "{home}/control.sock"
        metrics = "127.0.0.1:{metrics}"
        """) + intake + "\n")


def receiver(via: str, tmp: Path, certs: dict[str, Path]) -> Receiver:
    port, central_metrics = free_port(), free_port()
    home = tmp / "central"

    def agent_up() -> bool:
        return listening(port) and metric(central_metrics, "hostlog_agent_uptime_seconds") is not None

    if via == "syslog":
        work = tmp / "rsyslog"
        work.mkdir()
        proc = start_rsyslogd(work, RSYSLOG_CONF.format(work=work, port=port), work / "rsyslogd.log")
        return Receiver([proc], f'type = "syslog"\ntargets = ["tcp://127.0.0.1:{port}"]',
                        LineCounter(work / "out.log"), lambda: listening(port), proc.pid)
    if via == "otlp":
        proc = subprocess.Popen([sys.executable, __file__, "--serve-otlp", str(port)],
                                stdout=subprocess.DEVNULL, stderr=open(tmp / "otlp-receiver.log", "ab"))
        return Receiver([proc], f'type = "otlp"\ntargets = ["http://127.0.0.1:{port}"]',
                        lambda: otlp_count(port) or 0, lambda: otlp_count(port) is not None, proc.pid)
    procs: list[subprocess.Popen[bytes]] = []
    if via == "nats":
        procs.append(subprocess.Popen(["nats-server", "-js", "-sd", str(tmp / "nats"), "-a", "127.0.0.1",
                                       "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        intake = f'[[source]]\ntype = "nats"\nname = "js"\nservers = ["nats://127.0.0.1:{port}"]'
        target = f'type = "nats"\ntargets = ["nats://127.0.0.1:{port}"]'
    elif via == "fluent":
        intake = f'[[source]]\ntype = "forward"\nname = "fw"\nlisten = ["tcp://127.0.0.1:{port}"]'
        target = f'type = "fluent"\ntargets = ["tcp://127.0.0.1:{port}"]'
    else:
        intake = f'[receiver]\nlisten = "tls://127.0.0.1:{port}"'
        target = f'targets = ["tls://localhost:{port}"]'
    central = central_agent(home, certs, central_metrics, intake)
    procs.append(central)
    return Receiver(procs, target, lambda: written(central_metrics), agent_up, central.pid)


def otlp_count(port: int) -> int | None:
    try:
        return int(urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5).read())
    except OSError:
        return None


def serve_otlp(port: int) -> None:
    """The OTLP/HTTP receiver of ``--via otlp``: decodes each request, counts its log records."""
    import aiohttp.web
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )

    count = 0
    answer = ExportLogsServiceResponse().SerializeToString()

    async def logs(request: aiohttp.web.Request) -> aiohttp.web.Response:
        nonlocal count
        body = await request.read()  # (not decompressed by aiohttp: auto_decompress below)
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportLogsServiceRequest()
        export.ParseFromString(body)
        count += sum(len(sl.log_records) for rl in export.resource_logs for sl in rl.scope_logs)
        return aiohttp.web.Response(body=answer, content_type="application/x-protobuf")

    async def counted(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text=str(count))

    async def serve() -> None:
        app = aiohttp.web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/logs", logs)
        app.router.add_get("/count", counted)
        runner = aiohttp.web.AppRunner(app, access_log=None, auto_decompress=False)
        await runner.setup()
        await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        await stopping.wait()
        await runner.cleanup()

    asyncio.run(serve())


def cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_once(n: int, tmp: Path, via: str = "hostlog") -> dict[str, float]:
    certs = pki(tmp / "pki")
    edge_home, central_home = tmp / "edge", tmp / "central"
    for home in (edge_home, central_home):
        (home / "state").mkdir(parents=True)
    asyncio.run(prefill(edge_home / "state", n))
    metrics = free_port()
    recv = receiver(via, tmp, certs)
    edge = None
    try:
        deadline = time.monotonic() + 30
        while not recv.ready():
            if time.monotonic() > deadline or any(p.poll() is not None for p in recv.procs):
                raise RuntimeError(f"the {via} receiver did not start")
            time.sleep(0.05)
        r_cpu0 = cpu(recv.cpu_pid)
        t0 = time.monotonic()
        edge = start(edge_home, textwrap.dedent(f"""
            [agent]
            hostname = "web-1"
            state_dir = "{edge_home}/state"
            [[forward]]
            name = "central"
            {recv.target.replace(chr(10), chr(10) + " " * 12)}
            [tls]
            ca = "{certs['ca']}"
            cert = "{certs['edge']}"
            key = "{certs['edge_key']}"
            [control]
            socket = "{edge_home}/control.sock"
            metrics = "127.0.0.1:{metrics}"
            """))
        ep = psutil.Process(edge.pid)
        # the steady part starts at the last poll before the edge has written 64 KiB (its
        # start-up writes a few KiB: the cursor, spool.json; then it sends)
        first: tuple[float, float, float, int, int] | None = None  # t, edge CPU, receiver CPU, held, bytes
        prev: tuple[float, float, float, int, int] = (t0, 0.0, r_cpu0, 0, 0)
        deadline = time.monotonic() + 300
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the receiver did not catch up in 300 s: the edge acked {acked(metrics)}, "
                                   f"the receiver holds {recv.received()} of {n}; see {edge_home}/agent.log")
            if edge.poll() is not None:
                raise RuntimeError(f"the edge exited with {edge.returncode}")
            e_cpu, e_bytes, r_cpu = cpu(edge.pid), ep.io_counters().write_chars, cpu(recv.cpu_pid)
            now = time.monotonic()
            held = recv.received()
            if first is None and e_bytes > 64 << 10:
                first = prev
            prev = (now, e_cpu, r_cpu, held, e_bytes)
            if held >= n and lag(metrics) == 0 and (acked(metrics) or 0) >= n:
                break
            time.sleep(0.01)
        assert first is not None
        elapsed = now - t0
        steady_n = n - first[3]
        wire = json.loads(subprocess.run([*HOSTLOG, "ctl", "--socket", str(edge_home / "control.sock"),
                                          "--json", "status"], capture_output=True, timeout=30).stdout)
        link = wire["forward"][0]["links"][0]
        stored = recv.received()
        if stored < n:
            raise RuntimeError(f"the receiver holds {stored} records of {n}")
        out = {"records_s": n / elapsed, "elapsed": elapsed, "edge_cpu_100k": e_cpu / n * 1e5,
               "central_cpu_100k": (r_cpu - r_cpu0) / n * 1e5, "wire_bytes_per_record": link["bytes_sent"] / n,
               "steady_records": steady_n}
        if steady_n > 0 and now > first[0]:
            out.update(steady_records_s=steady_n / (now - first[0]),
                       steady_edge_cpu_100k=(e_cpu - first[1]) / steady_n * 1e5,
                       steady_receiver_cpu_100k=(r_cpu - first[2]) / steady_n * 1e5,
                       edge_bytes_per_record=(e_bytes - first[4]) / steady_n)
        return out
    finally:
        if edge is not None:
            stop(edge, 30)
        recv.stop()


VIAS = ["hostlog", "nats", "fluent", "syslog", "otlp"]
RECEIVERS = {"hostlog": "central agent, [receiver] over mutual TLS", "nats": "nats-server -js, central agent",
             "fluent": "central agent, [[source]] type = \"forward\"", "syslog": "rsyslogd (imtcp, omfile)",
             "otlp": "aiohttp + opentelemetry-proto (Python)"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--via", choices=VIAS, default="hostlog")
    parser.add_argument("--serve-otlp", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_otlp:
        serve_otlp(args.serve_otlp)
        return
    results = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="hostlog-bench-fwd-") as tmp:
            r = run_once(args.records, Path(tmp), args.via)
            results.append(r)
            print(f"run {i + 1}: {r['records_s']:,.0f} records/s, edge {r['edge_cpu_100k']:.3f} s CPU/100k, "
                  f"central {r['central_cpu_100k']:.3f} s CPU/100k, {r['wire_bytes_per_record']:.1f} B/record on "
                  f"the wire; steady ({r['steady_records']:,} records once the edge sends): "
                  f"{r.get('steady_records_s', 0):,.0f} records/s, edge {r.get('steady_edge_cpu_100k', 0):.3f} "
                  f"s CPU/100k, receiver {r.get('steady_receiver_cpu_100k', 0):.3f} s CPU/100k, "
                  f"edge wrote {r.get('edge_bytes_per_record', 0):.1f} B/record", flush=True)
    med = {k: statistics.median(r[k] for r in results) for k in results[0] if all(k in r for r in results)}
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"via {args.via}")
    print(f"| records | runs | records/s edge -> central | edge CPU s / 100k | central CPU s / 100k "
          f"| wire bytes / record |\n|---|---|---|---|---|---|\n"
          f"| {args.records:,} | {args.runs} | {med['records_s']:,.0f} | {med['edge_cpu_100k']:.3f} "
          f"| {med['central_cpu_100k']:.3f} | {med['wire_bytes_per_record']:.1f} |")
    if "steady_records_s" in med:
        print(f"\n| output | receiver | records/s (whole run) | records/s (steady) | edge CPU s / 100k (steady) "
              f"| receiver CPU s / 100k (steady) | edge bytes written / record |\n|---|---|---|---|---|---|---|\n"
              f"| {args.via} | {RECEIVERS[args.via]} | {med['records_s']:,.0f} | {med['steady_records_s']:,.0f} "
              f"| {med['steady_edge_cpu_100k']:.3f} | {med['steady_receiver_cpu_100k']:.3f} "
              f"| {med['edge_bytes_per_record']:.1f} |")


if __name__ == "__main__":
    main()
