"""Frame limits: what the size of a frame buys and costs, to choose its default.

    .venv/bin/python bench/frame_limits.py --corpus DIR [--sizes 256,1024,4096,16384]
        [--records 196608] [--runs 5] [--flips 7]

``--corpus`` (or the environment variable HOSTLOG_CORPORA) names a directory
of loghub samples (``*_2k.log``). For each ``frame_records`` in ``--sizes``
(``frame_bytes`` high enough that the record count decides), a fresh spool
gets ``--records`` loghub lines as ONE batch, the way a file collector hands
over a backlog, through the agent's spool writer (fsync = "batch"):

* ratio: raw text bytes (each line and its newline) / segment bytes on disk,
  for two kinds of data: "mixed" (the samples interleaved at random, like a
  host's journal) and "one file" (each sample repeated, one app: a file
  backlog; the median over the samples);
* write: records/s into the spool (encode, LZ4 HC, AES-GCM, write);
* ``-n 100``: ``hostlog query -D SPOOL -n 100`` as a whole process, output to
  /dev/null, and the same query in process (``select``, records built), which
  shows the frame size without the interpreter's start;
* blast radius: one bit flipped at a random offset of the segment
  (``--flips`` times, seeded), then ``collect_stats(verify=True)`` (what
  ``hostlog spool verify`` runs): records no longer readable.

Medians of ``--runs`` runs (the spool is built once per size; the query runs
``--runs`` times after a warm-up). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hostlog.query.filters import Query
from hostlog.query.run import select
from hostlog.record import Columns, Record
from hostlog.spool.inspect import collect_stats
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool
from hostlog.spool.writer import SpoolWriter

HOSTLOG = [sys.executable, "-m", "hostlog.cli.main"]


def corpus(directory: Path) -> dict[str, list[str]]:
    samples = {}
    for path in sorted(directory.glob("*_2k.log")):
        text = path.read_bytes().decode("utf-8", "replace")
        samples[path.name.split("_")[0]] = [line for line in text.splitlines() if line]
    if not samples:
        sys.exit(f"no *_2k.log samples in {directory}")
    return samples


def mixed_lines(samples: dict[str, list[str]], n: int) -> list[tuple[str, str]]:
    """(app, line): the samples interleaved at random, each in its own order."""
    rng = random.Random(13)
    names = list(samples)
    at = dict.fromkeys(names, 0)
    out = []
    for _ in range(n):
        name = rng.choice(names)
        lines = samples[name]
        out.append((name, lines[at[name] % len(lines)]))
        at[name] += 1
    return out


def make_records(lines: list[tuple[str, str]]) -> list[Record]:
    base = time.time_ns()
    return [Record(ts=base + i * 1000, msg=line, host="bench-host", source="file", app=app,
                   fields={"path": f"/var/log/{app}.log"})
            for i, (app, line) in enumerate(lines)]


async def _write(directory: Path, records: list[Record], frame_records: int) -> float:
    spool = Spool.open(directory / "spool", Keyring.load_or_create(directory / "spool.key"))
    writer = SpoolWriter(spool, fsync="batch", fsync_interval=0.05,
                         frame_records=frame_records, frame_bytes=1 << 30,
                         max_pending=len(records) + 1)
    writer.start()
    t0 = time.perf_counter()
    writer.submit(Columns.of(records))  # one batch, as a file backlog arrives
    await writer.flush()
    elapsed = time.perf_counter() - t0
    await writer.stop()
    spool.close()
    return elapsed


def build(directory: Path, lines: list[tuple[str, str]], frame_records: int) -> tuple[float, float]:
    """Write ``lines`` as one batch; (ratio, records/s)."""
    records = make_records(lines)
    elapsed = asyncio.run(_write(directory, records, frame_records))
    raw = sum(len(line.encode()) + 1 for _, line in lines)
    on_disk = sum(p.stat().st_size for p in (directory / "spool" / "segments").iterdir())
    return raw / on_disk, len(records) / elapsed


def query_process_ms(spool: Path, runs: int) -> float:
    cmd = [*HOSTLOG, "query", "-D", str(spool), "-n", "100", "--no-pager"]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def query_inprocess_ms(spool: Path, runs: int) -> float:
    times = []
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        reader = SpoolReader.open(spool)
        pieces, _ = select(reader, Query(), lines=100)
        shown = sum(len(p) for p in pieces)
        times.append(time.perf_counter() - t0)
        assert shown == 100, shown
    return statistics.median(times[1:]) * 1e3


def blast_radius(spool: Path, total: int, flips: int) -> list[int]:
    """Records lost to one flipped bit, for ``flips`` random bits (one at a time)."""
    rng = random.Random(7)
    (segment,) = (spool / "segments").iterdir()
    lost = []
    with open(segment, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        for _ in range(flips):
            offset = rng.randrange(200, size)  # past the segment header
            bit = 1 << rng.randrange(8)
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ bit]))
            f.flush()
            stats = collect_stats(SpoolReader.open(spool), verify=True)
            lost.append(total - stats.records)
            f.seek(offset)
            f.write(bytes([byte]))
            f.flush()
    return lost


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=os.environ.get("HOSTLOG_CORPORA"),
                    help="directory of loghub *_2k.log samples (or HOSTLOG_CORPORA)")
    ap.add_argument("--sizes", default="256,1024,2048,4096,8192,16384")
    ap.add_argument("--records", type=int, default=196_608)  # 12 x 16,384: whole frames
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--flips", type=int, default=7)
    args = ap.parse_args()
    if args.corpus is None:
        ap.error("--corpus DIR (or HOSTLOG_CORPORA) is required")
    samples = corpus(args.corpus)
    sizes = [int(s) for s in args.sizes.split(",")]
    mixed = mixed_lines(samples, args.records)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.records} records, {len(samples)} samples, medians of {args.runs}\n")
    print("| frame_records | ratio, mixed | ratio, one file (median of samples) | write, records/s "
          "| `query -n 100` process | `-n 100` in process | records lost to one flipped bit "
          "(median / max of flips) |")
    print("|---|---|---|---|---|---|---|")
    base = Path(os.environ.get("BENCH_DIR") or tempfile.gettempdir())
    for size in sizes:
        ratios, rates = [], []
        with tempfile.TemporaryDirectory(dir=base) as d:
            for run in range(args.runs):
                run_dir = Path(d) / f"run{run}"
                ratio, rate = build(run_dir, mixed, size)
                ratios.append(ratio)
                rates.append(rate)
            spool = Path(d) / "run0" / "spool"
            process_ms = query_process_ms(spool, args.runs)
            inprocess_ms = query_inprocess_ms(spool, args.runs)
            lost = blast_radius(spool, args.records, args.flips)
        one_file = []
        for name, lines in samples.items():
            n = max(size * 4, 8192)  # enough lines for a few whole frames
            with tempfile.TemporaryDirectory(dir=base) as d:
                one_file.append(build(Path(d), [(name, lines[i % len(lines)]) for i in range(n)],
                                      size)[0])
        print(f"| {size:,} | {statistics.median(ratios):.2f}:1 | {statistics.median(one_file):.2f}:1 "
              f"| {statistics.median(rates):,.0f} | {process_ms:.1f} ms | {inprocess_ms:.2f} ms "
              f"| {statistics.median(lost):,.0f} / {max(lost):,} |", flush=True)


if __name__ == "__main__":
    main()
