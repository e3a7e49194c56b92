"""File collector: lines/s and MB/s tailing a growing file into the spool.

    .venv/bin/python bench/file_tail.py [--lines 1000000] [--runs 5]

A separate process appends ``--lines`` real log lines (the loghub Linux,
OpenSSH and Apache samples, read in place and repeated) to a file in 1 MiB
writes as fast as it can, while the file collector tails it (inotify) into
a real spool (SpoolWriter, fsync = "batch" every 50 ms). Measured: from the
writer's first byte until every line is durable in the spool. Also printed:
the writer's own time (the file grows faster than it is read when the first
is much smaller than the second) and the split-only rate of the framer over
the same bytes (no records, no spool), and the collector into a sink that
only counts (no spool): what the collector itself costs.

Prints the medians of ``--runs`` runs and the machine; bench/RESULTS.md records them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hostlog.collectors.base import CollectorContext
from hostlog.collectors.files.collector import FileCollector
from hostlog.collectors.files.lines import LineFramer, decode_messages
from hostlog.config import FileSource
from hostlog.spool.checkpoints import CheckpointFiles
from hostlog.spool.keys import Keyring
from hostlog.spool.spool import Spool
from hostlog.spool.writer import SpoolWriter

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "loghub"

# Appends the content file to the target in 1 MiB writes; prints its own time.
WRITER = """
import sys, time
src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
t0 = time.perf_counter()
with open(dst, "ab", buffering=0) as f:
    for i in range(0, len(data), 1 << 20):
        f.write(data[i:i + (1 << 20)])
print(time.perf_counter() - t0)
"""


def content(n: int) -> bytes:
    lines: list[bytes] = []
    for name in ("Linux_2k.log", "OpenSSH_2k.log", "Apache_2k.log"):
        raw = (CORPORA / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines += [ln for ln in raw.split(b"\n") if ln]
    return b"".join(lines[i % len(lines)] + b"\n" for i in range(n))


async def tail(directory: Path, source: Path, n: int) -> tuple[float, float]:
    keyring = Keyring.load_or_create(directory / "spool.key")
    spool = Spool.open(directory / "spool", keyring)
    writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05)
    writer.start()
    context = CollectorContext(hostname="bench", sink=writer,
                               checkpoints=CheckpointFiles(directory / "spool" / "state" / "checkpoints"))
    log = directory / "app.log"
    log.touch()
    collector = FileCollector(FileSource(name="bench", paths=[str(log)], start="beginning"), context)
    await collector.start()
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, str(source), str(log),
                                                stdout=asyncio.subprocess.PIPE)
    while writer.durable_seq < n:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    out, _ = await proc.communicate()
    await collector.stop()
    await writer.stop()
    spool.close()
    return elapsed, float(out)


class NullSink:
    """Accepts every batch at once and calls it durable: the collector's own cost."""

    def __init__(self) -> None:
        self.records = 0

    async def write(self, batch: list, on_durable: object = None) -> None:
        self.records += len(batch)
        if on_durable is not None:
            on_durable(self.records)  # type: ignore[operator]


class NoCheckpoints:
    def load(self, name: str) -> None:
        return None

    def save(self, name: str, value: object) -> None:
        pass


async def tail_null(directory: Path, source: Path, n: int) -> float:
    directory.mkdir(parents=True)
    sink = NullSink()
    context = CollectorContext(hostname="bench", sink=sink,  # type: ignore[arg-type]
                               checkpoints=NoCheckpoints())
    log = directory / "app.log"
    log.touch()
    collector = FileCollector(FileSource(name="bench", paths=[str(log)], start="beginning"), context)
    await collector.start()
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, str(source), str(log),
                                                stdout=asyncio.subprocess.PIPE)
    while sink.records < n:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    await proc.communicate()
    await collector.stop()
    return elapsed


def split_only(data: bytes) -> float:
    framer = LineFramer(max_line=64 * 1024)
    t0 = time.perf_counter()
    for i in range(0, len(data), 1 << 20):
        decode_messages(framer.feed(data[i:i + (1 << 20)]).messages)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    data = content(args.lines)
    mib = len(data) / 2**20
    times, writes, splits, nulls = [], [], [], []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        source = Path(d) / "content"
        source.write_bytes(data)
        for run in range(args.runs):
            elapsed, wrote = asyncio.run(tail(Path(d) / f"run{run}", source, args.lines))
            times.append(elapsed)
            writes.append(wrote)
            splits.append(split_only(data))
            nulls.append(asyncio.run(tail_null(Path(d) / f"null{run}", source, args.lines)))
            print(f"run {run + 1}: tail {elapsed:.2f}s (writer {wrote:.2f}s)", file=sys.stderr)
    t, w, s = statistics.median(times), statistics.median(writes), statistics.median(splits)
    z = statistics.median(nulls)
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.machine()}, {platform.system()} {platform.release()}")
    print(f"lines: {args.lines} ({mib:.0f} MiB, {len(data) / args.lines:.0f} B/line), "
          f"runs: {args.runs} (medians)\n")
    print("| what | time | lines/s | MB/s |")
    print("|---|---|---|---|")
    print(f"| file collector → spool (durable), file growing | {t:.2f} s | "
          f"{args.lines / t:,.0f} | {len(data) / t / 1e6:.1f} |")
    print(f"| file collector → a sink that only counts (no spool) | {z:.2f} s | "
          f"{args.lines / z:,.0f} | {len(data) / z / 1e6:.1f} |")
    print(f"| the writer appending the file (1 MiB writes) | {w:.2f} s | "
          f"{args.lines / w:,.0f} | {len(data) / w / 1e6:.1f} |")
    print(f"| split + decode only (LineFramer, no records, no spool) | {s:.2f} s | "
          f"{args.lines / s:,.0f} | {len(data) / s / 1e6:.1f} |")


if __name__ == "__main__":
    main()
