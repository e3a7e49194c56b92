"""What a file source's ``parse`` costs a line: the sans-IO line parser
(hostlog.collectors.files.parse) over real lines, each mode, one core.

    .venv/bin/python bench/patterns_files.py [--lines 200000] [--runs 5]

The lines are bench/file_tail.py's (the loghub Linux, OpenSSH and Apache
samples, repeated), decoded, parsed in runs of 1,000 as the collector hands
them over. Prints lines/s and µs a line per mode (median of ``--runs``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from file_tail import content  # noqa: E402
from hostlog.collectors.files.parse import LineParser  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    lines: list[str | bytes] = [ln.decode("utf-8", "replace") for ln in content(args.lines).split(b"\n") if ln]
    runs = [lines[i:i + 1000] for i in range(0, len(lines), 1000)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    base = {"path": "/var/log/app.log"}
    for mode in ("none", "auto", "json", "syslog"):
        times = []
        for _ in range(args.runs):
            parser = LineParser(mode)
            t0 = time.perf_counter()
            for run in runs:
                parser.parse(run, time.time_ns(), base)
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        print(f"parse = {mode!r}: {len(lines) / t:,.0f} lines/s, {t / len(lines) * 1e6:.2f} µs a line")


if __name__ == "__main__":
    main()
