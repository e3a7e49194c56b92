"""Baseline: records/s into the spool, compression on real logs, idle RSS.

    .venv/bin/python bench/spool_write.py [--records 1000000] [--runs 5]

1. 1,000,000 syslog-sized records (real lines from the loghub Linux sample,
   about 160 bytes each with the syslog header) handed to the agent's spool
   writer in batches of 1,000 (what one TCP read yields), fsync = "batch"
   every 50 ms: chunk codec + LZ4 + AES-256-GCM + write + group commit. The
   Record objects are built before the clock starts: this measures the spool.
2. Compression: each loghub sample (2,000 lines) written to a fresh spool;
   raw text bytes / spool bytes on disk, beside LZ4 (fast) of the raw text.
3. Idle RSS of `hostlog agent` with the built-in sources, 5 s after start.

Prints a Markdown table of medians; bench/RESULTS.md records them.
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
import time
from pathlib import Path

import lz4.block
import psutil

from hostlog.record import Columns, Record
from hostlog.spool.keys import Keyring
from hostlog.spool.spool import Spool
from hostlog.spool.writer import SpoolWriter

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "loghub"


def corpus_lines(name: str) -> list[str]:
    text = (CORPORA / name).read_bytes().decode("utf-8", "replace")
    return [line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if line]


def make_records(n: int) -> tuple[list[Record], int]:
    lines = corpus_lines("Linux_2k.log")
    base = time.time_ns()
    records, size = [], 0
    for i in range(n):
        msg = lines[i % len(lines)]
        size += len(msg) + 30  # plus a typical "<13>1 ts host app pid - -" header's share
        records.append(Record(ts=base + i * 1000, msg=msg, host="bench-host", source="syslog",
                              app=("sshd", "kernel", "cron", "su")[i % 4], pid=1000 + i % 50,
                              severity=6, facility=1))
    return records, size


async def write_run(records: list[Record], directory: Path) -> float:
    keyring = Keyring.load_or_create(directory / "spool.key")
    spool = Spool.open(directory / "spool", keyring)
    writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05)
    writer.start()
    t0 = time.perf_counter()
    for i in range(0, len(records), 1000):
        await writer.write(Columns.of(records[i:i + 1000]))
    await writer.flush()
    elapsed = time.perf_counter() - t0
    await writer.stop()
    spool.close()
    return elapsed


def bench_write(n: int, runs: int) -> tuple[float, float]:
    times = []
    size = 0
    for _ in range(runs):
        records, size = make_records(n)  # fresh: the spool stamps origin/seq on them
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
            times.append(asyncio.run(write_run(records, Path(d))))
    med = statistics.median(times)
    return n / med, size / med / 1e6


def bench_ratio() -> list[tuple[str, int, float, float]]:
    rows = []
    for path in sorted(CORPORA.glob("*_2k.log")):
        raw = path.read_bytes()
        lines = corpus_lines(path.name)
        with tempfile.TemporaryDirectory() as d:
            keyring = Keyring.load_or_create(Path(d) / "spool.key")
            spool = Spool.open(Path(d) / "spool", keyring)
            base = time.time_ns()
            spool.append(Columns.of([Record(ts=base + i, msg=line, host="h", source="file",
                                            app=path.stem.split("_")[0])
                                     for i, line in enumerate(lines)]))
            spool.close()
            on_disk = sum(p.stat().st_size for p in (Path(d) / "spool" / "segments").iterdir())
        rows.append((path.stem, len(raw), len(raw) / on_disk,
                     len(raw) / len(lz4.block.compress(raw, store_size=False))))
    return rows


def bench_idle_rss() -> float:
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, HOSTLOG_STATE_DIR=d)
        proc = subprocess.Popen([sys.executable, "-m", "hostlog.cli.main", "agent"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(5)
            return psutil.Process(proc.pid).memory_info().rss / 2**20
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    rps, mbps = bench_write(args.records, args.runs)
    print(f"\nspool write, {args.records} records, median of {args.runs}: "
          f"{rps:,.0f} records/s, {mbps:.1f} MB/s")
    print("\n| sample | raw bytes | spool ratio | LZ4 fast on raw text |\n|---|---|---|---|")
    rows = bench_ratio()
    for name, raw, ratio, lz in rows:
        print(f"| {name} | {raw} | {ratio:.2f}:1 | {lz:.2f}:1 |")
    total_raw = sum(r[1] for r in rows)
    print(f"| all (median) | {total_raw} | {statistics.median(r[2] for r in rows):.2f}:1 | "
          f"{statistics.median(r[3] for r in rows):.2f}:1 |")
    rss = statistics.median(bench_idle_rss() for _ in range(3))
    print(f"\nagent idle RSS (median of 3): {rss:.1f} MiB")


if __name__ == "__main__":
    main()
