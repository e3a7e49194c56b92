"""The archive tier and compaction: ratio before and after, and MB/s.

    .venv/bin/python bench/archive.py --corpus DIR [--days 7] [--per-day 20000]
        [--frame 100] [--runs 3] [--levels 3,9,19]
    .venv/bin/python bench/archive.py --corpus DIR --low-rate [--seconds 30]
        [--segment-bytes 256KiB] [--runs 3]

``--corpus`` (or HOSTLOG_CORPORA) names a directory of loghub samples; the
lines are those of every ``*_2k.log`` in it, in turn (16 kinds of log, as a
host with many services writes them).

The first mode builds a spool of ``--days`` days (generated timestamps, one
sealed segment a day) whose frames hold ``--frame`` records each (what the
writer makes at a low rate, bench/RESULTS.md "Frames at a low rate"), then
rewrites every sealed segment: compaction (LZ4 HC, full frames of 4,096) and
archiving with zstd at each of ``--levels``. For each: the ratio (the lines'
bytes / the segments' bytes on disk), the rewrite's speed in MB/s of lines
(the process's CPU time, one thread) and the read speed of a full
``hostlog query -o json`` over the result. Medians of ``--runs``.

``--low-rate`` is the writer at a low rate (bench/writer_coalesce.py's
generator: 20 sources x 100 lines/s, a line per batch, fsync batch every
50 ms) with small segments so they seal during the run, side by side in the
same run with and without the archiver's thread compacting in the
background; the ratio of the spool at the end beside the same lines as a
backlog, and the CPU per line of the whole process.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostlog.config import parse_size  # noqa: E402
from hostlog.record import Columns, Record  # noqa: E402
from hostlog.spool.archive import ArchivePolicy, Archiver  # noqa: E402
from hostlog.spool.keys import Keyring  # noqa: E402
from hostlog.spool.spool import Spool  # noqa: E402
from hostlog.spool.writer import SpoolWriter  # noqa: E402

HOSTLOG = [sys.executable, "-m", "hostlog.cli.main"]
DAY_NS = 86400 * 10**9


def corpus_lines(directory: Path) -> list[str]:
    out: list[str] = []
    for path in sorted(directory.glob("*_2k.log")):
        out.extend(x for x in path.read_bytes().decode("utf-8", "replace").splitlines() if x)
    return out


def on_disk(spool_dir: Path, *, sealed_only: bool = False) -> int:
    paths = []
    for sub in ("segments", "archive"):
        d = spool_dir / sub
        if d.is_dir():
            paths.extend(p for p in d.iterdir() if p.name.endswith(".seg"))
    if sealed_only:  # not the active segment (the newest; never rewritten)
        paths.remove(max(paths, key=lambda p: p.name))
    return sum(p.stat().st_size for p in paths)


def build(directory: Path, lines: list[str], days: int, per_day: int, frame: int) -> int:
    """The spool; returns the bytes of line text its sealed segments hold."""
    spool = Spool.open(directory / "spool", Keyring.load_or_create(directory / "spool.key"),
                       max_age=0, segment_bytes=1 << 40)
    now = time.time_ns()
    raw = 0
    n = 0
    for day in range(days, -1, -1):  # day 0: the active segment, not rewritten
        for start in range(0, per_day, frame):
            records = []
            for i in range(start, min(per_day, start + frame)):
                text = lines[n % len(lines)]
                raw += (len(text.encode()) + 1) if day else 0
                records.append(Record(ts=now - day * DAY_NS + i * 10**6, msg=text, host="bench-host",
                                      source="process", app=f"app{n % 20}", pid=1000 + n % 20))
                n += 1
            spool.append(Columns.of(records))
        if day:
            spool.rotate()
    spool.close()
    return raw


def rewrite(directory: Path, policy: ArchivePolicy) -> tuple[float, int]:
    """One pass; returns (CPU seconds, segments rewritten)."""
    spool = Spool.open(directory / "spool", Keyring.load(directory / "spool.key"), max_age=0,
                       segment_bytes=1 << 40)
    archiver = Archiver(spool, policy)
    cpu0 = time.thread_time()
    report = archiver.run_once()
    cpu = time.thread_time() - cpu0
    spool.close()
    assert not report.refused, report.refused
    return cpu, len(report.compacted) + len(report.archived)


def query_s(directory: Path) -> float:
    t0 = time.monotonic()
    subprocess.run([*HOSTLOG, "query", "-D", str(directory / "spool"), "-o", "json", "--no-pager"],
                   stdout=subprocess.DEVNULL, check=True, timeout=600)
    return time.monotonic() - t0


def bench_archive(args: argparse.Namespace, lines: list[str], base: Path) -> None:
    levels = [int(x) for x in args.levels.split(",")]
    modes: list[tuple[str, ArchivePolicy | None]] = [("as written", None),
                                                     ("compacted (LZ4 HC)", ArchivePolicy(compact=True))]
    modes += [(f"archived (zstd {lv})", ArchivePolicy(archive=True, after_s=0.5 * 86400, keep_s=1e12,
                                                     level=lv, compact=False)) for lv in levels]
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in modes}
    for _ in range(args.runs):
        for name, policy in modes:
            with tempfile.TemporaryDirectory(dir=base) as d:
                directory = Path(d)
                raw = build(directory, lines, args.days, args.per_day, args.frame)
                speed = float("nan")
                if policy is not None:
                    cpu, done = rewrite(directory, policy)
                    assert done == args.days, (name, done)
                    speed = raw / cpu / 1e6
                ratio = raw / on_disk(directory / "spool", sealed_only=True)
                read = raw * (args.days + 1) / args.days / query_s(directory) / 1e6
                rows[name].append((ratio, speed, read))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.days} sealed days + 1 active of {args.per_day} lines each, {args.frame} records "
          f"per frame as written; medians of {args.runs} runs\n")
    print("| sealed segments | ratio (line bytes / on disk) | rewrite, MB/s of lines (one core) "
          "| `hostlog query -o json`, MB/s of lines |")
    print("|---|---|---|---|")
    for name, values in rows.items():
        ratio = statistics.median(v[0] for v in values)
        speed = statistics.median(v[1] for v in values)
        read = statistics.median(v[2] for v in values)
        print(f"| {name} | {ratio:.2f}:1 | {'-' if speed != speed else f'{speed:.1f}'} | {read:.1f} |")


class _NullSink:
    def submit(self, batch: Columns, on_durable: object = None) -> None:
        pass


async def _low_rate_once(directory: Path, lines: list[str], args: argparse.Namespace,
                         compact: bool) -> dict[str, float]:
    from writer_coalesce import generate

    spool = Spool.open(directory / "spool", Keyring.load_or_create(directory / "spool.key"),
                       segment_bytes=parse_size(args.segment_bytes))
    writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05)
    writer.start()
    archiver = None
    if compact:
        archiver = Archiver(spool, ArchivePolicy(compact=True), lock=writer.spool_lock, interval=1.0)
        archiver.start()
    cpu0 = time.process_time()
    n = await generate(writer, lines, 20, 100.0, args.seconds, {})
    await writer.flush()
    if archiver is not None:  # the last sealed segment's compaction: part of the cost
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _small_sealed(spool):
            await asyncio.sleep(0.2)
        archiver.stop()
    cpu = time.process_time() - cpu0
    await writer.stop()
    spool.close()
    raw = sum(len(lines[i % len(lines)].encode()) + 1 for i in range(n))
    return {"ratio": raw / on_disk(directory / "spool"), "cpu_us": cpu / n * 1e6, "lines": n,
            "segments": len(os.listdir(directory / "spool" / "segments"))}


def _small_sealed(spool: Spool) -> bool:
    from hostlog.spool.segment import SegmentReader
    for info in list(spool.segments[:-1]):
        try:
            with SegmentReader(info.path, spool.keyring) as seg:
                entries = seg.index().entries
        except FileNotFoundError:
            continue
        if len(entries) > 2 and sum(e.count for e in entries) / len(entries) < 1024:
            return True
    return False


def bench_low_rate(args: argparse.Namespace, lines: list[str], base: Path) -> None:
    from writer_coalesce import backlog_ratio
    from writer_coalesce import corpus_lines as linux_lines

    lines = linux_lines(args.corpus)
    results: dict[str, list[dict[str, float]]] = {"compaction off": [], "compaction on": []}
    for _ in range(args.runs):
        for name in results:
            with tempfile.TemporaryDirectory(dir=base) as d:
                results[name].append(asyncio.run(_low_rate_once(Path(d), lines, args,
                                                                name == "compaction on")))
    with tempfile.TemporaryDirectory(dir=base) as d:
        backlog = backlog_ratio(Path(d), lines, int(results["compaction on"][0]["lines"]), 20)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"20 sources x 100 lines/s for {args.seconds:g} s, a line per batch, fsync batch every "
          f"50 ms, segment_bytes {args.segment_bytes}; medians of {args.runs} runs, both taking turns\n")
    print("| writer | segments | spool ratio (backlog of the same lines) | process CPU per line |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        med = lambda key, runs=runs: statistics.median(r[key] for r in runs)  # noqa: E731
        print(f"| {name} | {med('segments'):.0f} | {med('ratio'):.2f}:1 ({backlog:.2f}:1) "
              f"| {med('cpu_us'):.1f} µs |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=os.environ.get("HOSTLOG_CORPORA"))
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--per-day", type=int, default=20_000)
    ap.add_argument("--frame", type=int, default=100)
    ap.add_argument("--levels", default="3,9,19")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--low-rate", action="store_true")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--segment-bytes", default="256KiB")
    args = ap.parse_args()
    if args.corpus is None:
        ap.error("--corpus DIR (or HOSTLOG_CORPORA) is required")
    base = Path(os.environ.get("BENCH_DIR") or tempfile.gettempdir())
    lines = corpus_lines(args.corpus)
    if args.low_rate:
        bench_low_rate(args, lines, base)
    else:
        bench_archive(args, lines, base)
    threading.enumerate()  # (nothing left running: every thread above was stopped)


if __name__ == "__main__":
    main()
