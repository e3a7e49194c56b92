"""Rules at ingest: syslog over TCP into the spool with the issue's rules, beside the same without rules.

    .venv/bin/python bench/rules.py [--messages 1000000] [--runs 5] [--load plain|mixed|both]
        [--builtin]

Method and load as bench/syslog_tcp.py: N RFC 5424 messages built in memory
first, written down one TCP connection in 1 MiB pieces; the clock runs from
the first byte sent until the spool holds every record the rules keep
(counted in the spool's frame index; fsync = batch); CPU is the agent
process's (psutil). Runs alternate between the configs (none, rules, none,
...), so load that comes and goes on a shared machine hits both alike.
Medians.

The rules are the four ``[[rule]]`` tables of the issue (no-debug,
health-checks, secrets, api) and, fifth, ``[[forward]] central`` that the
api rule routes to (unreachable here: the link retries in the background,
as on an edge whose central is away); ``--builtin`` adds a fifth rule,
``redact = ["@builtin"]`` on every record.

Loads:

* ``plain``: bench/syslog_tcp.py's messages as they are (five apps, one in
  eight at debug): the rules select (and drop) the debug ones and find
  nothing else: the cost of looking.
* ``mixed``: per 100 messages, 70 of those, 10 health checks of app ``web``
  (sampled 1 in 100), 5 other ``web`` lines, 10 JSON lines of app ``api``
  (parsed, tagged, routed) and 5 of app ``auth``, one of them with a
  password or a bearer token (redacted): every rule has work.

The records the rules keep are known from the load (one in eight of the
plain ones at debug is dropped; ceil(m / 100) of the m health checks are
kept), so the clock stops when exactly that many are stored.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from syslog_tcp import free_port, send, spool_records, wait_port, wait_until  # noqa: E402

# The four [[rule]] tables of docs/rules.md's example, as a user copies them
# (they send to "central": a [[forward]] of that name, never reached).
RULES = ('[[forward]]\nname = "central"\ntargets = ["tcp://127.0.0.1:1"]\n\n'
         + (Path(__file__).resolve().parent.parent / "docs" / "rules.md").read_text()
         .split("```toml\n", 1)[1].split("```", 1)[0])

BUILTIN = """
[[rule]]
name = "builtin"
redact = ["@builtin"]
"""


def build_load(n: int, mixed: bool) -> tuple[bytes, int]:
    """The bytes to send, and how many records the rules keep of them."""
    apps = ("sshd", "nginx", "cron", "postfix", "kernel")
    parts = []
    kept = health = 0
    for i in range(n):
        k = i % 100
        if not mixed or k < 70:
            app, severity = apps[i % 5], i % 8
            text = (f"message number {i:07d} from the load generator with some ordinary text like a "
                    f"request path /api/v1/items?id={i % 5000}")
            kept += severity != 7
        elif k < 80:
            app, severity, text = "web", 6, f"GET /healthz HTTP/1.1 200 {i % 7} ms from 10.0.{i % 250}.7"
            health += 1
        elif k < 85:
            app, severity, text = "web", 6, f"GET /items/{i % 5000} HTTP/1.1 200 {i % 13} ms"
            kept += 1
        elif k < 95:
            app, severity = "api", 6
            text = ('{"level":"info","msg":"request done","path":"/api/v1/items/%d","status":200,"ms":%d}'
                    % (i % 5000, i % 17))
            kept += 1
        else:
            app, severity = "auth", 6
            if k == 95:
                text = (f"login user{i % 300} ok password=hunter{i % 97}" if i % 200 < 100
                        else f"call upstream with Authorization: Bearer eyJhbGciOi.{i:07d}.sig")
            else:
                text = f"session {i:07d} for user{i % 300} from 10.1.{i % 250}.9 renewed"
            kept += 1
        msg = (f"<{8 + severity}>1 2024-05-01T10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z "
               f"bench-host {app} {1000 + i % 97} ID{i % 10} - {text}")
        parts.append(msg + "\n")
    kept += math.ceil(health / 100)
    return "".join(parts).encode(), kept


def run_agent(data: bytes, expect: int, rules: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        port = free_port()
        conf = Path(d) / "agent.toml"
        conf.write_text(f'[agent]\nstate_dir = "{d}/state"\n[[source]]\ntype = "syslog"\n'
                        f'listen = ["tcp://127.0.0.1:{port}"]\n' + rules)
        proc = subprocess.Popen([sys.executable, "-m", "hostlog.cli.main", "agent", "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, proc)
            p = psutil.Process(proc.pid)
            cpu0 = sum(p.cpu_times()[:2])
            t0 = time.perf_counter()
            send(port, data)
            spool = Path(d) / "state" / "spool"
            wait_until(lambda: spool_records(spool) >= expect, 600)
            elapsed = time.perf_counter() - t0
            cpu = sum(p.cpu_times()[:2]) - cpu0
            held = spool_records(spool)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        if held != expect:
            raise RuntimeError(f"the spool holds {held} records, the rules keep {expect}")
    return elapsed, cpu


def engine_cost(data: bytes, rules: str) -> float:
    """ns per message of the rule engine alone, in this process (the agent's parser's batches)."""
    from hostlog.collectors.syslog.parse_batch import parse_columns
    from hostlog.config import parse_config
    from hostlog.rules import RuleEngine

    lines = data.split(b"\n")[:200_000]
    now = time.time_ns()
    batches = [parse_columns(lines[i:i + 2000], received_ns=now, default_host="bench")
               for i in range(0, len(lines), 2000)]
    engine = RuleEngine(parse_config(rules).rules)
    t0 = time.perf_counter()
    for b in batches:
        engine.apply(b)
    return (time.perf_counter() - t0) / sum(len(b) for b in batches) * 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--load", choices=("plain", "mixed", "both"), default="both")
    ap.add_argument("--builtin", action="store_true", help='a fifth rule: redact = ["@builtin"]')
    args = ap.parse_args()
    n = args.messages
    rules = RULES + (BUILTIN if args.builtin else "")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    loads = ("plain", "mixed") if args.load == "both" else (args.load,)
    for load in loads:
        data, kept = build_load(n, load == "mixed")
        print(f"load {load}: {n} RFC 5424 messages, {len(data) / n:.0f} B each, {len(data) / 1e6:.0f} MB; "
              f"the rules keep {kept}")
        runs: dict[str, list[tuple[float, float]]] = {"without rules": [], "with the rules": []}
        for _ in range(args.runs):
            runs["without rules"].append(run_agent(data, n, ""))
            runs["with the rules"].append(run_agent(data, kept, rules))
        rates = {}
        for name, got in runs.items():
            wall = statistics.median(r[0] for r in got)
            cpu = statistics.median(r[1] for r in got)
            rates[name] = n / wall
            print(f"  {name}: {n / wall:,.0f} msg/s, {cpu / n * 1e6:.2f} µs CPU/msg (median of {args.runs}; "
                  "runs: " + ", ".join(f"{r[0]:.2f}s/{r[1] / n * 1e6:.2f}µs" for r in got) + ")")
        print(f"  ratio with/without: {rates['with the rules'] / rates['without rules']:.2f}")
        print(f"  the engine alone, in process: {engine_cost(data, rules):.0f} ns per message")


if __name__ == "__main__":
    main()
