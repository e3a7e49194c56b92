"""Supervised apps: lines/s captured from one chatty child, agent RSS per app.

    .venv/bin/python bench/apps.py [--lines 1000000] [--runs 5] [--apps 50] [--no-record]

1. Capture: one child writes ``--lines`` lines of 100 bytes (loghub Linux
   lines, padded) as fast as it can, in 64 KiB writes; the supervisor reads
   the pipe, splits lines and hands batches to the agent's spool writer
   (fsync = "batch", 50 ms). Timed from the start of the app until the spool
   holds every line; median of ``--runs`` runs. The same with a sink that
   drops the batches gives the capture cost alone. CPU is the agent process's
   (user + system) per line.
2. RSS: a fresh process sets up what the agent sets up (spool, writer,
   supervisor) with 0 and with ``--apps`` apps (each prints a line, then
   sleeps), waits until all run, and reports its RSS. Budget: < 1 MiB per app.

Prints a Markdown section and writes it to bench/RESULTS.md under
"## supervised apps" (that section only; the others are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from hostlog.agent.spool_writer import SpoolWriter
from hostlog.collectors.base import CollectorContext
from hostlog.collectors.process import ProcessSupervisor
from hostlog.config import App
from hostlog.spool.keys import Keyring
from hostlog.spool.spool import Spool

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parents[0].parent / "shared" / "corpora" / "loghub" / "Linux_2k.log"
HEADING = "## supervised apps"

# The child: pre-built 64 KiB blocks of 100-byte lines, written as fast as the pipe takes them.
CHATTY = r"""
import os, sys
lines, total = sys.argv[1].encode().split(b"\n"), int(sys.argv[2])
def write(data):
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]
per_block = 655
block = b"".join(lines[i % len(lines)] + b"\n" for i in range(per_block))
for _ in range(total // per_block):
    write(block)
write(b"".join(lines[i % len(lines)] + b"\n" for i in range(total % per_block)))
"""


def sample_lines() -> str:
    try:
        raw = CORPUS.read_text(errors="replace").splitlines()[:200]
    except OSError:  # without the corpus: synthetic lines of the same size
        raw = [f"Jun 14 15:16:01 combo sshd(pam_unix)[{19939 + i}]: authentication failure" for i in range(200)]
    return "\n".join((line[:99]).ljust(99, ".") for line in raw)


class NullSink:
    """Takes every batch at once: measures capture without the spool."""

    def __init__(self) -> None:
        self.records = 0

    def has_room(self) -> bool:
        return True

    async def wait_room(self) -> None:
        return None

    async def write(self, batch, on_durable=None) -> None:
        self.submit(batch)

    def submit(self, batch, on_durable=None) -> None:
        self.records += len(batch)

    def write_nowait(self, batch, on_durable=None) -> bool:
        self.submit(batch)
        return True


async def capture_once(lines: int, into_spool: bool) -> tuple[float, float]:
    """(seconds, agent CPU seconds) for ``lines`` lines from one child."""
    with tempfile.TemporaryDirectory(prefix="hostlog-bench-") as tmp:
        tmp_path = Path(tmp)
        spool = writer = None
        if into_spool:
            spool = Spool.open(tmp_path / "spool", Keyring.load_or_create(tmp_path / "spool.key"))
            writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05)
            writer.start()
            sink = writer
        else:
            sink = NullSink()
        context = CollectorContext("bench", sink, checkpoints=None)
        app = App(name="chatty", command=[sys.executable, "-c", CHATTY, sample_lines(), str(lines)],
                  restart="never")
        sup = ProcessSupervisor([app], context)
        cpu0, t0 = time.process_time(), time.perf_counter()
        await sup.start()
        await sup.wait_until(lambda: sup.states()["chatty"] == "EXITED", 600)
        if into_spool:
            await writer.flush()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        await sup.stop()
        if into_spool:
            captured = writer.stats.records
            await writer.stop()
            spool.close()
        else:
            captured = sink.records
        assert captured == lines + 2, f"{captured - 2} of {lines} lines (+ started, exited)"
        return elapsed, cpu


async def rss_child(apps: int) -> None:
    """Run in a fresh process: set up like the agent with ``apps`` apps, print RSS."""
    with tempfile.TemporaryDirectory(prefix="hostlog-bench-") as tmp:
        tmp_path = Path(tmp)
        spool = Spool.open(tmp_path / "spool", Keyring.load_or_create(tmp_path / "spool.key"))
        writer = SpoolWriter(spool)
        writer.start()
        context = CollectorContext("bench", writer, checkpoints=None)
        sup = ProcessSupervisor([App(name=f"app{i}", command=["sh", "-c", "echo up; exec sleep 600"])
                                 for i in range(apps)], context, state_file=tmp_path / "apps.json")
        await sup.start()
        await sup.wait_until(lambda: all(s == "RUNNING" for s in sup.states().values()), 60)
        await writer.flush()
        for _ in range(3):  # a few status calls, as ctl status and metrics do
            sup.status()
        gc.collect()
        rss = psutil.Process().memory_info().rss
        await sup.stop()
        await writer.stop()
        spool.close()
        print(json.dumps({"apps": apps, "rss": rss}))


def measure_rss(apps: int, runs: int) -> int:
    values = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, __file__, "--rss-child", str(apps)], capture_output=True,
                             check=True, timeout=300, text=True).stdout
        values.append(json.loads(out.strip().splitlines()[-1])["rss"])
    return int(statistics.median(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import uvloop
        run = uvloop.run  # what the agent runs on
    except ImportError:
        run = asyncio.run
    if args.rss_child is not None:
        run(rss_child(args.rss_child))
        return 0

    rows = []
    for into_spool, what in ((False, "capture only (sink drops)"), (True, "capture into the spool")):
        results = [run(capture_once(args.lines, into_spool)) for _ in range(args.runs)]
        secs = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        rows.append(f"| {what} | {args.lines / secs:,.0f} lines/s | {cpu / args.lines * 1e6:.2f} µs |")
    rss0, rssn = measure_rss(0, 3), measure_rss(args.apps, 3)
    per_app = (rssn - rss0) / args.apps
    section = "\n".join([
        HEADING,
        "",
        f"`bench/apps.py --lines {args.lines} --runs {args.runs} --apps {args.apps}` on "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, Linux {platform.release()}, "
        f"{time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f} at the end; medians. "
        "Rates move with the machine's load; CPU per line (the agent process: loop and "
        "spool writer thread) is the steadier figure.",
        "",
        "One child writing 100-byte lines as fast as it can (64 KiB writes):",
        "",
        "| path | rate | agent CPU per line |",
        "|---|---|---|",
        *rows,
        "",
        f"Agent RSS (supervisor, spool, writer; apps print a line then sleep): "
        f"{rss0 / 2**20:.1f} MiB with 0 apps, {rssn / 2**20:.1f} MiB with {args.apps}: "
        f"**{per_app / 1024:.0f} KiB per app** (budget: 1024 KiB).",
        "",
    ])
    print(section)
    if not args.no_record:
        record(section)
    return 0


def record(section: str) -> None:
    """Replace (or append) our section of bench/RESULTS.md; leave the others alone."""
    path = HERE / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(HEADING + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
