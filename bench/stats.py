"""``hostlog stats`` beside ``hostlog query -o json | counter`` over 10 million records.

    .venv/bin/python bench/stats.py [--data DIR] [--records 10000000] [--runs 5] [--baseline-runs 3]

1. Builds, once, a spool of the dataset bench/query.py describes (14 days of
   journald entries from 17 services, real loghub lines, journald's trusted
   fields; mapped by ``journal_to_record``, appended in frames of 1,000
   records, default 64 MiB segments), without the journal files. Kept in
   ``--data`` (default ``/var/tmp/hostlog-bench-stats``) and reused;
   ``--rebuild`` starts again.
2. Times, as command lines (process start included, output to a pipe that
   is read to the end), ``hostlog stats --by SYSLOG_IDENTIFIER,PRIORITY -o
   json`` against ``hostlog query -o json`` piped into a counter (a Python
   loop of ``json.loads`` and a ``Counter`` over the same two fields), and a
   few other counts: the median of ``--runs`` runs after a warm-up
   (``--baseline-runs`` for the piped query, which takes a minute), taking
   turns. Both counts are checked to be equal.
3. Says, from the engine, how many frames each count took from the index
   and how many it read (the active segment has no footer: its frames are read).
4. What the counts cost the writer: bench/spool_write.py's write (1,000,000
   syslog records in batches of 1,000 through the spool writer) with the
   per-frame counts and without them (``frame_counts`` replaced by a
   function that counts nothing), runs taking turns, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from hostlog.record import Columns  # noqa: E402
from hostlog.spool.keys import Keyring  # noqa: E402
from hostlog.spool.spool import Spool  # noqa: E402
from query import DAYS, FRAME_RECORDS, PIECE, Generator, load, machine, to_records  # noqa: E402

DEFAULT_DATA = Path("/var/tmp/hostlog-bench-stats")
BYTES_PER_RECORD = 70  # the spool alone (bench/query.py measured ~60)
COUNTER = ("import sys, json, collections\n"
           "c = collections.Counter()\n"
           "for line in sys.stdin.buffer:\n"
           "    o = json.loads(line)\n"
           "    c[(o.get('SYSLOG_IDENTIFIER'), o.get('PRIORITY'))] += 1\n"
           "for (a, p), n in sorted(c.items(), key=str):\n"
           "    print(json.dumps({'SYSLOG_IDENTIFIER': a, 'PRIORITY': p, 'count': n}))\n")

# (name, arguments after `hostlog stats -D SPOOL`); {day} is the data's last day
COUNTS = [
    ("by app, priority", ["--by", "SYSLOG_IDENTIFIER,PRIORITY"]),
    ("-u nginx -p err, by priority", ["-u", "nginx", "-p", "err", "--by", "PRIORITY"]),
    ("-S last day, by app", ["-S", "{day}", "--by", "SYSLOG_IDENTIFIER"]),
    ("by app, --every 1h", ["--by", "SYSLOG_IDENTIFIER", "--every", "1h"]),
    ("by app, priority, --no-index", ["--by", "SYSLOG_IDENTIFIER,PRIORITY", "--no-index"]),
    ("-g PATTERN, by app", ["-g", "Invalid user admin", "--by", "SYSLOG_IDENTIFIER"]),
]


def build(data: Path, total: int) -> dict:
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    end_us = time.time_ns() // 1000
    gen = Generator(total, end_us)
    keyring = Keyring.load_or_create(data / "spool.key")
    spool = Spool.open(data / "spool", keyring)  # default 64 MiB segments
    started = time.monotonic()
    last_report = started
    t_spool = 0.0
    while gen.done < total:
        records = to_records(gen.piece(min(PIECE, total - gen.done)))
        t = time.monotonic()
        for i in range(0, len(records), FRAME_RECORDS):
            spool.append(Columns.of(records[i:i + FRAME_RECORDS]))
        t_spool += time.monotonic() - t
        if time.monotonic() - last_report > 30:
            last_report = time.monotonic()
            print(f"  {gen.done:,} / {total:,} records, {last_report - started:.0f} s", flush=True)
    spool.sync()
    spool.close()
    segments = sorted((data / "spool" / "segments").glob("*.seg"))
    facts = {"records": total, "end_us": end_us, "days": DAYS,
             "built_at": time.strftime("%Y-%m-%d %H:%M:%S"),
             "seconds_total": round(time.monotonic() - started, 1),
             "seconds_spool_append": round(t_spool, 1),
             "spool_bytes": sum(p.stat().st_size for p in segments),
             "spool_segments": len(segments)}
    (data / "dataset.json").write_text(json.dumps(facts, indent=1))
    return facts


def timed(cmd: list[str], env: dict[str, str], runs: int) -> tuple[float, bytes]:
    """Median wall time of ``runs`` runs after a warm-up, and the warm-up's output."""
    out = subprocess.run(cmd, capture_output=True, env=env, check=True).stdout
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def parsed(out: bytes) -> Counter:
    c: Counter = Counter()
    for line in out.splitlines():
        o = json.loads(line)
        c[(o.get("SYSLOG_IDENTIFIER"), o.get("PRIORITY"))] += o["count"]
    return c


def engine_split(spool: Path, args: list[str]) -> tuple[int, int]:
    """(frames counted from the index, frames read) for a count."""
    from hostlog.cli.main import build_parser
    from hostlog.cli.query_cmd import build_query
    from hostlog.query import stats
    from hostlog.spool.reader import SpoolReader

    ns = build_parser().parse_args(["stats", "-D", str(spool), *args])
    spec = stats.StatsSpec(by=stats.parse_by(ns.by),
                           every_ns=stats.parse_every(ns.every) if ns.every else None,
                           use_index=not ns.no_index)
    result = stats.compute(SpoolReader.open(spool), build_query(ns), spec, workers=1)
    return result.frames_counted, result.frames_read


def writer_cost(records: int, runs: int) -> tuple[float, float]:
    """(records/s with the counts, records/s without), medians of ``runs`` each."""
    import asyncio
    import tempfile

    import hostlog.spool.spool as spool_module
    from spool_write import make_records, write_run

    counting = spool_module.frame_counts
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(runs):
        for with_counts in (True, False):
            spool_module.frame_counts = counting if with_counts else (lambda batch: None)
            try:
                batch, _ = make_records(records)
                with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
                    times[with_counts].append(asyncio.run(write_run(batch, Path(d))))
            finally:
                spool_module.frame_counts = counting
    return records / statistics.median(times[True]), records / statistics.median(times[False])


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--baseline-runs", type=int, default=3)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--writer-runs", type=int, default=5)
    ap.add_argument("--writer-only", action="store_true", help="only what the counts cost the writer")
    args = ap.parse_args()
    if args.writer_only:
        on, off = writer_cost(1_000_000, args.writer_runs)
        print(f"spool writer: {on:,.0f} records/s with the counts, {off:,.0f} without "
              f"({(off - on) / off:.1%} slower)")
        return 0

    facts_file = args.data / "dataset.json"
    facts = json.loads(facts_file.read_text()) if facts_file.exists() and not args.rebuild else None
    if facts is None or facts.get("records") != args.records:
        records = args.records
        args.data.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(args.data.parent).free
        if records * BYTES_PER_RECORD > free * 0.8:
            records = int(free * 0.8 / BYTES_PER_RECORD) // 100_000 * 100_000
            print(f"only {free / 2**30:.1f} GiB free: scaled down to {records:,} records")
        print(f"building {records:,} records in {args.data} ...", flush=True)
        facts = build(args.data, records)
    print(json.dumps(facts, indent=1), flush=True)
    if args.build_only:
        return 0
    spool = args.data / "spool"
    # as installed: bytecode cached
    env = dict(os.environ, TZ="UTC", LC_ALL="C.UTF-8", PYTHONPATH=str(REPO / "src"),
               PYTHONPYCACHEPREFIX=str(args.data / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    hostlog = [sys.executable, "-m", "hostlog.cli.main"]
    day = f"@{facts['end_us'] // 10**6 - 86400}"
    load_before = load()

    counter = args.data / "counter.py"
    counter.write_text(COUNTER)
    pipeline = ["sh", "-c", f"{' '.join(hostlog)} query -D {spool} -o json --no-pager "
                            f"| {sys.executable} {counter}"]
    stats_cmd = hostlog + ["stats", "-D", str(spool), "-o", "json"]
    print("timing the piped query (a minute a run) ...", flush=True)
    base_s, base_out = timed(pipeline, env, args.baseline_runs)
    rows = []
    for name, extra in COUNTS:
        extra = [a.format(day=day) for a in extra]
        t, out = timed(stats_cmd + extra, env, args.runs)
        counted, read = engine_split(spool, extra)
        rows.append((name, extra, t, out, counted, read))
        print(f"  {name}: {fmt(t)} ({counted:,} frames from the index, {read:,} read)", flush=True)
    same = parsed(rows[0][3]) == parsed(base_out)
    on, off = writer_cost(1_000_000, args.writer_runs)
    print()
    print(f"machine: {machine()}; load average before/after: {load_before} / {load()}")
    print(f"dataset: {facts['records']:,} records, {facts['spool_segments']} segments, "
          f"{facts['spool_bytes'] / 1e9:.2f} GB")
    print(f"`hostlog query -o json | counter`: {fmt(base_s)} (median of {args.baseline_runs}); "
          f"counts equal to `hostlog stats --by SYSLOG_IDENTIFIER,PRIORITY`: {same}")
    print()
    print("| count | arguments | hostlog stats | frames from the index / read | vs query -o json \\| counter |")
    print("|---|---|---|---|---|")
    for name, extra, t, _, counted, read in rows:
        print(f"| {name} | `{' '.join(extra)}` | {fmt(t)} | {counted:,} / {read:,} | {base_s / t:,.0f}x |")
    print()
    print(f"spool writer (1M syslog records): {on:,.0f} records/s with the counts, {off:,.0f} without "
          f"({(off - on) / off:.1%} slower)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
