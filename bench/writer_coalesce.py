"""Frames at a low rate: many small batches, and what the writer makes of them.

    .venv/bin/python bench/writer_coalesce.py --corpus DIR [--apps 20] [--rate 100]
        [--seconds 12] [--runs 3] [--interval 0.05]

``--corpus`` (or HOSTLOG_CORPORA) names a directory of loghub samples; the
lines are those of its Linux sample. ``--apps`` sources each hand the agent's
spool writer one short line per batch, ``--rate`` times a second (what a
supervised app printing a line at a time gives: each pipe read holds one
line), for ``--seconds``, fsync = "batch" every ``--interval``. Two writers
side by side in the same run, taking turns:

* "at once": ``linger=0``, a frame written as soon as anything is pending
  (the writer before coalescing);
* "coalesced": the default, a frame filled until the next sync asks for it.

For each: records per frame, the spool's ratio (line bytes / segment bytes
on disk) beside the same lines written as one backlog batch, CPU of the
process per line (loop + writer threads, the line generator included; its
cost alone is printed beside), the latency from submit to the frame being
written (p50 / max of probe lines), and the latency a ``hostlog query -f``
process shows the probe lines with (p50 / max).

Prints a Markdown table of medians over ``--runs``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from hostlog.record import Columns, Record
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool
from hostlog.spool.writer import SpoolWriter

HOSTLOG = [sys.executable, "-m", "hostlog.cli.main"]
PROBE_EVERY = 50  # every 50th line of app 0 is a probe that carries its submit time


def corpus_lines(directory: Path) -> list[str]:
    text = (directory / "Linux_2k.log").read_bytes().decode("utf-8", "replace")
    return [line for line in text.splitlines() if line]


class NullSink:
    def submit(self, batch, on_durable=None) -> None:
        pass


class FollowReader:
    """A ``hostlog query -f -o cat`` process; the time each probe line shows up."""

    def __init__(self, spool: Path) -> None:
        self.seen: dict[int, float] = {}
        self.proc = subprocess.Popen([*HOSTLOG, "query", "-D", str(spool), "-f", "-o", "cat",
                                      "--no-pager"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            if line.startswith(b"probe "):
                self.seen.setdefault(int(line.split()[1]), now)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.thread.join(timeout=20)


async def generate(sink, lines: list[str], apps: int, rate: float, seconds: float,
                   probes: dict[int, float]) -> int:
    """Each app submits one line per batch, ``rate`` per second, staggered."""
    fields = {"_STREAM": "stdout"}
    period = 1.0 / (rate * apps)  # one batch of one line somewhere every period
    t0 = time.monotonic()
    n = 0
    total = int(rate * apps * seconds)
    while n < total:
        due = t0 + n * period
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        # whatever is due now (the loop wakes every ms or so): one batch per line
        now = time.monotonic()
        while n < total and t0 + n * period <= now:
            app = n % apps
            if app == 0 and (n // apps) % PROBE_EVERY == 0:
                msg = f"probe {n} {lines[n % len(lines)]}"
            else:
                msg = lines[n % len(lines)]
            record = Record(ts=time.time_ns(), msg=msg, host="bench-host", source="process",
                            app=f"app{app}", pid=1000 + app, fields=fields)
            if msg.startswith("probe "):
                probes[n] = time.monotonic()
            sink.submit(Columns.of([record]))
            n += 1
    return n


async def run_once(directory: Path, lines: list[str], args, linger: float | None) -> dict:
    spool = Spool.open(directory / "spool", Keyring.load_or_create(directory / "spool.key"))
    writes: list[tuple[int, int, float]] = []  # (first, last, when) of every frame
    append = spool.append

    def timed_append(records, **kw):
        first, last = append(records, **kw)
        writes.append((first, last, time.monotonic()))
        return first, last

    spool.append = timed_append  # type: ignore[method-assign]
    writer = SpoolWriter(spool, fsync="batch", fsync_interval=args.interval, linger=linger)
    writer.start()
    writer.submit(Columns.of([Record(ts=time.time_ns(), msg="start", app="bench")]))
    await writer.flush()
    follow = FollowReader(directory / "spool")
    await asyncio.sleep(1.0)  # the follower is running
    probes: dict[int, float] = {}
    cpu0 = time.process_time()
    n = await generate(writer, lines, args.apps, args.rate, args.seconds, probes)
    await writer.flush()
    cpu = time.process_time() - cpu0
    await asyncio.sleep(1.0)  # the follower shows the last probes
    follow.stop()
    await writer.stop()
    spool.close()
    raw = sum(len(lines[i % len(lines)].encode()) + 1 for i in range(n))
    on_disk = sum(p.stat().st_size for p in (directory / "spool" / "segments").iterdir())
    write_lat, show_lat = [], []
    # each probe's spool seq, from the spool (the writer may have merged its batch)
    seq_of = {int(r.msg.split(" ", 2)[1]): seq
              for seq, r in SpoolReader.open(directory / "spool").records()
              if isinstance(r.msg, str) and r.msg.startswith("probe ")}
    for key, sent in probes.items():
        for first, last, when in writes:
            if first <= seq_of.get(key, -1) <= last:
                write_lat.append(when - sent)
                break
        if key in follow.seen:
            show_lat.append(follow.seen[key] - sent)
    return {"records": writer.stats.records - 1, "frames": writer.stats.frames - 1,
            "ratio": raw / on_disk, "cpu": cpu, "lines": n,
            "write_p50": statistics.median(write_lat), "write_max": max(write_lat),
            "show_p50": statistics.median(show_lat) if show_lat else float("nan"),
            "show_max": max(show_lat) if show_lat else float("nan"),
            "shown": len(show_lat), "probes": len(probes)}


def backlog_ratio(directory: Path, lines: list[str], n: int, apps: int) -> float:
    spool = Spool.open(directory / "spool", Keyring.load_or_create(directory / "spool.key"))
    fields = {"_STREAM": "stdout"}
    records = [Record(ts=time.time_ns(), msg=lines[i % len(lines)], host="bench-host",
                      source="process", app=f"app{i % apps}", pid=1000 + i % apps, fields=fields)
               for i in range(n)]
    for i in range(0, n, 4096):  # frames as the writer's default limit cuts them
        spool.append(Columns.of(records[i:i + 4096]))
    spool.close()
    raw = sum(len(lines[i % len(lines)].encode()) + 1 for i in range(n))
    return raw / sum(p.stat().st_size for p in (directory / "spool" / "segments").iterdir())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=os.environ.get("HOSTLOG_CORPORA"))
    ap.add_argument("--apps", type=int, default=20)
    ap.add_argument("--rate", type=float, default=100.0, help="lines/s per app")
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--interval", type=float, default=0.05, help="fsync_interval, s")
    args = ap.parse_args()
    if args.corpus is None:
        ap.error("--corpus DIR (or HOSTLOG_CORPORA) is required")
    lines = corpus_lines(args.corpus)
    base = Path(os.environ.get("BENCH_DIR") or tempfile.gettempdir())
    # the generator alone (its loop wakes ~2,000 times a second): part of both writers' figure
    cpu0 = time.process_time()
    n = asyncio.run(generate(NullSink(), lines, args.apps, args.rate, min(args.seconds, 4.0), {}))
    gen_us = (time.process_time() - cpu0) / n * 1e6
    results: dict[str, list[dict]] = {"at once": [], "coalesced": []}
    for _ in range(args.runs):
        for name, linger in (("at once", 0.0), ("coalesced", None)):
            with tempfile.TemporaryDirectory(dir=base) as d:
                results[name].append(asyncio.run(run_once(Path(d), lines, args, linger)))
    with tempfile.TemporaryDirectory(dir=base) as d:
        backlog = backlog_ratio(Path(d), lines, results["coalesced"][0]["lines"], args.apps)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.apps} sources x {args.rate:g} lines/s for {args.seconds:g} s, one line per batch, "
          f"fsync batch every {args.interval * 1e3:g} ms; medians of {args.runs} runs; "
          f"the line generator alone: {gen_us:.1f} µs CPU per line\n")
    print("| writer | records/frame | spool ratio (backlog of the same lines) | process CPU per line "
          "| submit → written, p50 / max | submit → shown by `query -f`, p50 / max |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        med = lambda key, runs=runs: statistics.median(r[key] for r in runs)  # noqa: E731
        per_frame = statistics.median(r["records"] / r["frames"] for r in runs)
        cpu_us = statistics.median(r["cpu"] / r["lines"] * 1e6 for r in runs)
        print(f"| {name} | {per_frame:.1f} | {med('ratio'):.2f}:1 ({backlog:.2f}:1) | {cpu_us:.1f} µs "
              f"| {med('write_p50') * 1e3:.0f} / {med('write_max') * 1e3:.0f} ms "
              f"| {med('show_p50') * 1e3:.0f} / {med('show_max') * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
