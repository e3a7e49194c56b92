"""What mining at ingest costs the syslog TCP ingest rate: the same load into the
same agent with ``[patterns] enabled = true`` (the default) and ``false``.

    .venv/bin/python bench/patterns_ingest.py [--messages 1000000] [--runs 3]

The load and the clock are bench/syslog_tcp.py's (N RFC 5424 messages down one
TCP connection, the clock from the first byte sent until all N are in the
spool's frame index). Runs alternate (on, off, on, ...); prints the medians and
the on/off ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from syslog_tcp import build_load, run_hostlog  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    n = args.messages
    data = build_load(n)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"load: {n} RFC 5424 messages, {len(data) / n:.0f} B each, LF-framed")
    modes = (("patterns on", "[patterns]\nenabled = true\n"), ("patterns off", "[patterns]\nenabled = false\n"))
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in modes}
    for _ in range(args.runs):
        for name, extra in modes:
            runs[name].append(run_hostlog(data, n, extra))
    rates = {}
    for name, _ in modes:
        wall = statistics.median(r[0] for r in runs[name])
        cpu = statistics.median(r[1] for r in runs[name])
        rates[name] = n / wall
        print(f"{name}: {n / wall:,.0f} msg/s, {cpu / n * 1e6:.2f} µs CPU/msg (median of {args.runs}; runs: "
              + ", ".join(f"{r[0]:.2f}s/{r[1] / n * 1e6:.2f}µs" for r in runs[name]) + ")")
    print(f"ratio on/off msg/s: {rates['patterns on'] / rates['patterns off']:.2f}")


if __name__ == "__main__":
    main()
