"""Supervised apps: one app writing as fast as it can, many quiet apps, latency, RSS.

    .venv/bin/python bench/apps.py [--runs 5] [--no-record]
        [--only burst,quiet,latency,rss] [--lines 1000000] [--line-bytes 150]
        [--write-bytes 60000] [--apps 20] [--rate 100] [--seconds 12]

1. burst: one child writes ``--lines`` lines of ``--line-bytes`` bytes (loghub
   Linux lines, padded) as fast as it can, in writes of ``--write-bytes``;
   the supervisor reads the pipe, splits lines and hands batches to the
   agent's spool writer (fsync = "batch", 50 ms). Timed from the start of
   the app until the spool holds every line, durable; median of ``--runs``
   runs. The same with a sink that drops the batches gives the capture cost
   alone. CPU is the agent process's (user + system: loop and writer
   threads; the child is another process) per line.
2. quiet: ``--apps`` children print ``--rate`` short lines per second each
   (one write per line, as a program that flushes every line does) for
   ``--seconds``, into the spool as in 1. Reported: the agent's CPU per line,
   records per frame, and the spool's size beside the text it holds; and the
   agent's CPU per line into a sink that drops (capture alone), counted over
   the steady part of the run (from 1.5 s after the start to 1.5 s before
   the end).
3. latency: one child prints 500 lines/s for 5 s, each carrying the child's
   clock (``time.time_ns()``) just before its write; capture latency is the
   record's receive time (its ``ts``) minus that; "durable" is the time the
   spool writer reported the line durable minus that. Median and p99.
4. rss: a fresh process sets up what the agent sets up (spool, writer,
   supervisor) with 0 and with 50 apps (each prints a line, then sleeps),
   waits until all run, and reports its RSS. Budget: < 1 MiB per app.

The bench process takes the agent's GC setting (``hostlog.agent.agent.tune_gc``:
``gc.freeze()`` and a gen-0 threshold of 50,000) before it measures, as the agent
does once started; ``--default-gc`` leaves Python's default thresholds.

Prints a Markdown section; with ``--record`` it replaces the "## supervised
apps" section of bench/RESULTS.md under a heading of its own
(``--heading``), leaving every other section alone.
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
from typing import Any

import psutil

from hostlog.agent.agent import tune_gc
from hostlog.collectors.base import CollectorContext
from hostlog.collectors.process.supervisor import ProcessSupervisor
from hostlog.config import App
from hostlog.record import Columns
from hostlog.spool.keys import Keyring
from hostlog.spool.spool import Spool
from hostlog.spool.writer import SpoolWriter

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parents[0].parent / "shared" / "corpora" / "loghub" / "Linux_2k.log"
HEADING = "## supervised apps"

# The chatty child: pre-built blocks of lines, written as fast as the pipe takes them.
CHATTY = r"""
import os, sys
lines, total, per_block = sys.argv[1].encode().split(b"\n"), int(sys.argv[2]), int(sys.argv[3])
def write(data):
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]
block = b"".join(lines[i % len(lines)] + b"\n" for i in range(per_block))
for _ in range(total // per_block):
    write(block)
write(b"".join(lines[i % len(lines)] + b"\n" for i in range(total % per_block)))
"""

# A quiet child: ``rate`` lines/s on a fixed schedule, one write(2) per line,
# each line starting with the child's clock just before the write.
PACED = r"""
import os, sys, time
lines, rate, seconds = sys.argv[1].split("\n"), float(sys.argv[2]), float(sys.argv[3])
n = int(rate * seconds)
start = time.monotonic() + 0.2
for i in range(n):
    delay = start + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    os.write(1, f"{time.time_ns()} {lines[i % len(lines)]}\n".encode())
"""


def sample_lines(width: int) -> list[str]:
    """Real lines cut or padded to ``width`` characters (the newline makes one more byte)."""
    try:
        raw = CORPUS.read_text(errors="replace").splitlines()[:200]
    except OSError:  # without the corpus: synthetic lines of the same kind
        raw = [f"Jun 14 15:16:01 combo sshd(pam_unix)[{19939 + i}]: authentication failure"
               for i in range(200)]
    return [line[:width].ljust(width, ".") for line in raw]


class NullSink:
    """Takes every batch at once: measures capture without the spool."""

    def __init__(self) -> None:
        self.records = 0

    def has_room(self) -> bool:
        return True

    async def wait_room(self) -> None:
        return None

    async def write(self, batch: Any, on_durable: Any = None) -> None:
        self.submit(batch)

    def submit(self, batch: Any, on_durable: Any = None) -> None:
        self.records += len(batch)

    def write_nowait(self, batch: Any, on_durable: Any = None) -> bool:
        self.submit(batch)
        return True


class TimingSink:
    """The spool writer, noting per captured line its ts and when it became durable."""

    def __init__(self, inner: SpoolWriter) -> None:
        self.inner = inner
        self.rows: list[tuple[Any, int]] = []  # (msg, ts)
        self.durable_at: list[tuple[int, int]] = []  # (rows so far, time durable)

    def has_room(self) -> bool:
        return self.inner.has_room()

    async def wait_room(self) -> None:
        await self.inner.wait_room()

    def _note(self, batch: Any) -> Any:
        # (from the columns: a Record per row here would cost the agent's CPU)
        if isinstance(batch, Columns):
            self.rows += zip(batch.columns[7], batch.columns[0])
        else:
            self.rows += [(r.msg, r.ts) for r in batch]
        end = len(self.rows)
        return lambda seq: self.durable_at.append((end, time.time_ns()))

    async def write(self, batch: Any, on_durable: Any = None) -> None:
        cb = self._note(batch)
        await self.inner.write(batch, _both(on_durable, cb))

    def submit(self, batch: Any, on_durable: Any = None) -> None:
        cb = self._note(batch)
        self.inner.submit(batch, _both(on_durable, cb))

    def write_nowait(self, batch: Any, on_durable: Any = None) -> bool:
        cb = self._note(batch)
        return self.inner.write_nowait(batch, _both(on_durable, cb))


def _both(a: Any, b: Any) -> Any:
    if a is None:
        return b
    return lambda seq: (a(seq), b(seq))


def open_writer(tmp: Path) -> tuple[Spool, SpoolWriter]:
    spool = Spool.open(tmp / "spool", Keyring.load_or_create(tmp / "spool.key"))
    writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05)
    writer.start()
    return spool, writer


def spool_bytes(tmp: Path) -> int:
    return sum(p.stat().st_size for p in (tmp / "spool" / "segments").iterdir())


async def burst_once(lines: int, line_bytes: int, write_bytes: int,
                     into_spool: bool) -> tuple[float, float]:
    """(seconds, agent CPU seconds) for ``lines`` lines from one child."""
    with tempfile.TemporaryDirectory(prefix="hostlog-bench-") as tmp:
        tmp_path = Path(tmp)
        spool = writer = None
        if into_spool:
            spool, writer = open_writer(tmp_path)
            sink: Any = writer
        else:
            sink = NullSink()
        context = CollectorContext("bench", sink, checkpoints=None)
        text = "\n".join(sample_lines(line_bytes - 1))
        per_write = max(1, write_bytes // line_bytes)
        app = App(name="chatty", restart="never",
                  command=[sys.executable, "-c", CHATTY, text, str(lines), str(per_write)])
        sup = ProcessSupervisor([app], context)
        gc.collect()
        cpu0, t0 = time.process_time(), time.perf_counter()
        await sup.start()
        await sup.wait_until(lambda: sup.states()["chatty"] == "EXITED", 600)
        if writer is not None:
            await writer.flush()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        await sup.stop()
        if writer is not None:
            captured = writer.stats.records
            await writer.stop()
            spool.close()
        else:
            captured = sink.records
        assert captured == lines + 2, f"{captured - 2} of {lines} lines (+ started, exited)"
        return elapsed, cpu


async def paced_once(apps: int, rate: float, seconds: float, width: int) -> dict[str, Any]:
    """``apps`` children at ``rate`` lines/s each into a real spool."""
    with tempfile.TemporaryDirectory(prefix="hostlog-bench-") as tmp:
        tmp_path = Path(tmp)
        spool, writer = open_writer(tmp_path)
        sink = TimingSink(writer)
        context = CollectorContext("bench", sink, checkpoints=None)
        text = "\n".join(sample_lines(width))
        sup = ProcessSupervisor([App(name=f"app{i}", restart="never",
                                     command=[sys.executable, "-c", PACED, text, str(rate), str(seconds)])
                                 for i in range(apps)], context)
        gc.collect()
        cpu0, t0 = time.process_time(), time.perf_counter()
        await sup.start()
        await sup.wait_until(lambda: all(s == "EXITED" for s in sup.states().values()),
                             seconds + 120)
        await writer.flush()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        await sup.stop()
        stats = writer.stats
        await writer.stop()
        spool.close()
        lines = [(msg, ts) for msg, ts in sink.rows if isinstance(msg, str) and msg[:1].isdigit()]
        expected = apps * int(rate * seconds)
        assert len(lines) == expected, f"{len(lines)} of {expected} lines"
        text_bytes = sum(len(msg) for msg, _ in lines)
        capture = sorted(ts - int(msg.split(" ", 1)[0]) for msg, ts in lines)
        # durable: each row's time from the first durable report covering it
        durable = []
        done = sorted(sink.durable_at)
        j = 0
        for i, (msg, _) in enumerate(sink.rows):
            while done[j][0] <= i:
                j += 1
            if isinstance(msg, str) and msg[:1].isdigit():
                durable.append(done[j][1] - int(msg.split(" ", 1)[0]))
        durable.sort()
        return {"elapsed": elapsed, "cpu": cpu, "lines": len(lines), "records": stats.records,
                "frames": stats.frames, "text": text_bytes, "disk": spool_bytes(tmp_path),
                "capture": capture, "durable": durable}


async def paced_capture_only(apps: int, rate: float, seconds: float, width: int) -> float:
    """Agent CPU per line of ``apps`` paced children into a sink that drops,
    over a steady-state window (after the start, before the end)."""
    sink = NullSink()
    context = CollectorContext("bench", sink, checkpoints=None)
    text = "\n".join(sample_lines(width))
    sup = ProcessSupervisor([App(name=f"app{i}", restart="never",
                                 command=[sys.executable, "-c", PACED, text, str(rate), str(seconds)])
                             for i in range(apps)], context)
    await sup.start()
    await asyncio.sleep(1.5)
    cpu0, n0 = time.process_time(), sink.records
    await asyncio.sleep(seconds - 3)
    cpu, n = time.process_time() - cpu0, sink.records - n0
    await sup.stop()
    return cpu / max(1, n)


def pct(values: list[int], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


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
    parser.add_argument("--only", default="burst,quiet,latency,rss")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--line-bytes", type=int, default=150)
    parser.add_argument("--write-bytes", type=int, default=60_000)
    parser.add_argument("--apps", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="write the section into bench/RESULTS.md")
    parser.add_argument("--heading", default=HEADING)
    parser.add_argument("--default-gc", action="store_true",
                        help="leave Python's GC thresholds as they are (the agent tunes them)")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.default_gc:
        tune_gc()  # what the agent does once it has started: measure what it runs
    try:
        import uvloop
        run = uvloop.run  # what the agent runs on
    except ImportError:
        run = asyncio.run
    if args.rss_child is not None:
        run(rss_child(args.rss_child))
        return 0
    only = set(args.only.split(","))
    out: list[str] = []
    if "burst" in only:
        mb = args.lines * args.line_bytes / 1e6
        out += [f"One child writing {args.lines:,} lines of {args.line_bytes} B as fast as it can "
                f"({args.write_bytes:,} B writes), until durable:", "",
                "| path | time | lines/s | MB/s | agent CPU per line |", "|---|---|---|---|---|"]
        for into_spool, what in ((False, "capture only (sink drops)"), (True, "capture into the spool")):
            results = [run(burst_once(args.lines, args.line_bytes, args.write_bytes, into_spool))
                       for _ in range(args.runs)]
            print(what, [f"{s:.2f}s" for s, _ in results], file=sys.stderr)
            secs = statistics.median(r[0] for r in results)
            cpu = statistics.median(r[1] for r in results)
            out.append(f"| {what} | {secs:.2f} s | {args.lines / secs:,.0f} | {mb / secs:.0f} | "
                       f"{cpu / args.lines * 1e6:.2f} µs |")
        out.append("")
    if "quiet" in only:
        results = [run(paced_once(args.apps, args.rate, args.seconds, 70)) for _ in range(args.runs)]
        for r in results:
            print(f"quiet: cpu {r['cpu']:.2f}s {r['records']} records {r['frames']} frames",
                  file=sys.stderr)
        med = lambda key: statistics.median(key(r) for r in results)  # noqa: E731
        alone = statistics.median(run(paced_capture_only(args.apps, args.rate, args.seconds, 70))
                                  for _ in range(args.runs))
        out += [f"{args.apps} apps printing {args.rate:g} lines/s each (~80 B, one write per line) "
                f"for {args.seconds:g} s, into the spool:", "",
                "| agent CPU per line | capture alone (sink drops, steady state) "
                "| records per frame | spool bytes / text bytes |",
                "|---|---|---|---|",
                f"| {med(lambda r: r['cpu'] / r['lines']) * 1e6:.1f} µs | {alone * 1e6:.1f} µs "
                f"| {med(lambda r: r['records'] / max(1, r['frames'])):.1f} "
                f"| {med(lambda r: r['disk'] / r['text']):.2f} |", ""]
    if "latency" in only:
        results = [run(paced_once(1, 500, 5, 70)) for _ in range(args.runs)]
        med = lambda key: statistics.median(key(r) for r in results)  # noqa: E731
        out += ["One app printing 500 lines/s for 5 s (the child's clock just before each write):",
                "", "| latency | median | p99 |", "|---|---|---|",
                f"| capture (record ts - write) | {med(lambda r: pct(r['capture'], 0.5)) / 1e3:.0f} µs "
                f"| {med(lambda r: pct(r['capture'], 0.99)) / 1e3:.0f} µs |",
                f"| durable in the spool - write | {med(lambda r: pct(r['durable'], 0.5)) / 1e6:.1f} ms "
                f"| {med(lambda r: pct(r['durable'], 0.99)) / 1e6:.1f} ms |", ""]
    if "rss" in only:
        apps = 50
        rss0, rssn = measure_rss(0, 3), measure_rss(apps, 3)
        per_app = (rssn - rss0) / apps
        out += [f"Agent RSS (supervisor, spool, writer; apps print a line then sleep; median of 3): "
                f"{rss0 / 2**20:.1f} MiB with 0 apps, {rssn / 2**20:.1f} MiB with {apps}: "
                f"**{per_app / 1024:.0f} KiB per app** (budget: 1024 KiB).", ""]
    section = "\n".join([
        args.heading, "",
        f"`bench/apps.py {' '.join(sys.argv[1:])}` on {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, Linux {platform.release()}, {time.strftime('%Y-%m-%d')}, "
        f"load average {os.getloadavg()[0]:.1f} at the end; medians of {args.runs} runs.", "",
        *out])
    print(section)
    if args.record:
        record(section, args.heading)
    return 0


def record(section: str, heading: str) -> None:
    """Replace (or append) our section of bench/RESULTS.md; leave the others alone."""
    path = HERE / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(heading + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
