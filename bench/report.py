"""``hostlog report`` of the last day beside the commands it stands for.

    .venv/bin/python bench/report.py [--data DIR] [--records 2000000] [--runs 5]

1. Builds, once, bench/stats.py's spool (bench/query.py's 14 days of
   journald entries from 17 services, real loghub lines, frames of 1,000
   records, 64 MiB segments), of ``--records`` records, in ``--data``
   (default ``/var/tmp/hostlog-bench-report``; reused, ``--rebuild`` starts
   again).
2. Times, as command lines (process start included, output read to the end
   through a pipe), ``hostlog report -S @<end - 1 day> -U @<end>`` in each
   format, with the default baseline (7 days) and with ``--baseline 0``,
   beside what a person would run to get the same figures one by one:
   ``hostlog stats`` by source, by app, by level and by level per 30 min,
   ``hostlog patterns -p err`` over the day, ``hostlog patterns --new`` over
   the day and its baseline, ``hostlog spool stats``. The median of
   ``--runs`` runs after a warm-up, the report and the commands taking turns.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from query import load, machine  # noqa: E402
from stats import build  # noqa: E402

DEFAULT_DATA = Path("/var/tmp/hostlog-bench-report")
HOSTLOG = [sys.executable, "-m", "hostlog.cli.main"]


def run_once(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True, timeout=3600)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    facts_path = args.data / "dataset.json"
    if args.rebuild or not facts_path.exists():
        print(f"building {args.records:,} records in {args.data} ...", flush=True)
        facts = build(args.data, args.records)
    else:
        facts = json.loads(facts_path.read_text())
    spool = str(args.data / "spool")
    end_s = facts["end_us"] // 10**6 + 1
    day = ["-S", f"@{end_s - 86400}", "-U", f"@{end_s}"]
    base = ["-D", spool]
    reports = {
        "report -o json": [*HOSTLOG, "report", *base, *day, "-o", "json"],
        "report -o html": [*HOSTLOG, "report", *base, *day, "-o", "html"],
        "report -o md": [*HOSTLOG, "report", *base, *day, "-o", "md"],
        "report -o json --baseline 0": [*HOSTLOG, "report", *base, *day, "-o", "json", "--baseline", "0"],
    }
    parts = {
        "stats --by _HOSTLOG_SOURCE": [*HOSTLOG, "stats", *base, *day, "--by", "_HOSTLOG_SOURCE", "-o", "json"],
        "stats --by SYSLOG_IDENTIFIER": [*HOSTLOG, "stats", *base, *day, "--by", "SYSLOG_IDENTIFIER", "-o", "json"],
        "stats --by PRIORITY": [*HOSTLOG, "stats", *base, *day, "--by", "PRIORITY", "-o", "json"],
        "stats --by PRIORITY --every 30min": [*HOSTLOG, "stats", *base, *day, "--by", "PRIORITY", "--every",
                                              "30min", "-o", "json"],
        "patterns -p err": [*HOSTLOG, "patterns", *base, *day, "-p", "err", "-o", "json"],
        "patterns --new (7 d baseline)": [*HOSTLOG, "patterns", *base, "-S", f"@{end_s - 8 * 86400}", "-U",
                                          f"@{end_s}", "--new", f"@{end_s - 86400}", "-o", "json"],
        "spool stats": [*HOSTLOG, "spool", "stats", *base],
    }
    everything = {**reports, **parts}
    for cmd in everything.values():  # warm-up (bytecode, page cache)
        run_once(cmd)
    times: dict[str, list[float]] = {name: [] for name in everything}
    for _ in range(args.runs):
        for name, cmd in everything.items():
            times[name].append(run_once(cmd))
    print(f"machine: {machine()}; load average {load()}")
    print(f"dataset: {facts['records']:,} records over {facts['days']} days, {facts['spool_bytes']:,} bytes, "
          f"{facts['spool_segments']} segments; the day: @{end_s - 86400}..@{end_s}")
    print("| command | median | runs |")
    print("|---|---|---|")
    for name in everything:
        print(f"| `hostlog {name}` | {statistics.median(times[name]) * 1000:,.0f} ms | {len(times[name])} |")
    total = sum(statistics.median(times[name]) for name in parts)
    print(f"| the seven commands, one after the other | {total * 1000:,.0f} ms | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
