"""Template mining: how fast the miner files records, and how well it groups them.

    .venv/bin/python bench/patterns.py --corpus DIR [--runs 5] [--systems Apache,BGL,...]

``--corpus`` (or HOSTLOG_CORPORA) names the directory that holds ``loghub/``
(the raw ``*_2k.log`` samples and ``loghub/structured/`` with their ground
truth). The process is pinned to one CPU. Each system is its own app; every
figure is the median of ``--runs`` runs:

* records/s, batch (``Miner.add_many`` per system, the whole sample at once):
  - "cold": a new miner for each run, which learns every pattern on the way;
  - "warm": a miner that has seen the first half of each sample files the
    second half (patterns known, values new: the steady state of an agent);
  - each with the header split included (``split_header`` on the raw line,
    then the miner on the message) and without it (messages split beforehand,
    as the syslog collector hands them over), and ``split_header`` alone;
* grouping accuracy (loghub's definition) per system and mean, on the raw
  lines through ``split_header``; for reference also on the raw lines as they
  are and on loghub's Content column;
* the state: ``to_bytes()`` size and the miner's memory after all samples.

Prints Markdown.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from hostlog.patterns import Miner, split_header

SYSTEMS = ("Apache", "BGL", "HDFS", "Hadoop", "HealthApp", "Linux", "Mac", "Spark")


def grouping_accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """loghub's grouping accuracy (as in tests/unit/patterns/test_accuracy.py)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for line, group in enumerate(predicted):
        groups[group].append(line)
    sizes = Counter(truth)
    correct = sum(len(lines) for lines in groups.values()
                  if len({truth[i] for i in lines}) == 1 and sizes[truth[lines[0]]] == len(lines))
    return correct / len(truth)


def load(corpus: Path, system: str) -> tuple[list[str], list[str], list[str]]:
    """The raw lines, loghub's Content and EventId of one system."""
    raw = (corpus / "loghub" / f"{system}_2k.log").read_text(errors="replace").splitlines()
    with open(corpus / "loghub" / "structured" / f"{system}_2k.log_structured.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(raw):
        raise SystemExit(f"{system}: {len(raw)} lines but {len(rows)} rows of ground truth")
    return raw, [r["Content"] for r in rows], [r["EventId"] for r in rows]


def median_rate(records: int, runs: int, once: Callable[[], None], setup: Callable[[], None] = lambda: None) -> float:
    times = []
    for _ in range(runs):
        setup()
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return records / statistics.median(times)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()}, {model}, nproc {os.cpu_count()}, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=os.environ.get("HOSTLOG_CORPORA"),
                    help="directory holding loghub/ (or HOSTLOG_CORPORA)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    args = ap.parse_args()
    if args.corpus is None:
        ap.error("--corpus DIR (or HOSTLOG_CORPORA) is required")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    systems = args.systems.split(",")
    data = {s: load(args.corpus, s) for s in systems}
    raw = {s: d[0] for s, d in data.items()}
    messages = {s: [line[split_header(line).message_start:] for line in lines] for s, lines in raw.items()}
    total = sum(len(lines) for lines in raw.values())
    half = {s: len(lines) // 2 for s, lines in raw.items()}
    second_half = sum(len(lines) - half[s] for s, lines in raw.items())

    state: dict[str, Miner] = {}

    def fresh() -> None:
        state["miner"] = Miner()

    def warmed() -> None:
        miner = state["miner"] = Miner()
        for s, msgs in messages.items():
            miner.add_many(s, msgs[:half[s]])

    def with_header() -> None:
        miner = state["miner"]
        for s, lines in raw.items():
            miner.add_many(s, [line[split_header(line).message_start:] for line in lines])

    def without_header() -> None:
        miner = state["miner"]
        for s, msgs in messages.items():
            miner.add_many(s, msgs)

    def warm_with_header() -> None:
        miner = state["miner"]
        for s, lines in raw.items():
            miner.add_many(s, [line[split_header(line).message_start:] for line in lines[half[s]:]])

    def warm_without_header() -> None:
        miner = state["miner"]
        for s, msgs in messages.items():
            miner.add_many(s, msgs[half[s]:])

    def header_only() -> None:
        for lines in raw.values():
            for line in lines:
                split_header(line)

    print(f"machine: {machine()}; pinned to one CPU; {total:,} lines of {len(systems)} loghub samples; "
          f"medians of {args.runs} runs\n")
    print("| records/s, batch, one core | header split included | without header split |")
    print("|---|---|---|")
    print(f"| cold (a new miner learns every pattern) | {median_rate(total, args.runs, with_header, fresh):,.0f} "
          f"| {median_rate(total, args.runs, without_header, fresh):,.0f} |")
    print(f"| warm (patterns known: second half of each sample) "
          f"| {median_rate(second_half, args.runs, warm_with_header, warmed):,.0f} "
          f"| {median_rate(second_half, args.runs, warm_without_header, warmed):,.0f} |")
    print(f"| `split_header` alone | {median_rate(total, args.runs, header_only):,.0f} | |")

    print("\n| grouping accuracy | " + " | ".join(systems) + " | mean |")
    print("|---|" + "---|" * (len(systems) + 1))
    variants: dict[str, Callable[[str], list[str]]] = {
        "raw lines, `split_header` then the miner": lambda s: messages[s],
        "raw lines as they are": lambda s: raw[s],
        "loghub's Content column": lambda s: data[s][1],
    }
    for label, inputs in variants.items():
        scores = []
        for s in systems:
            matches = Miner().add_many(s, inputs(s))
            scores.append(grouping_accuracy([m.pattern_id for m in matches], data[s][2]))
        print(f"| {label} | " + " | ".join(f"{a:.3f}" for a in scores) + f" | **{statistics.mean(scores):.3f}** |")

    tracemalloc.start()
    miner = Miner()
    for s, msgs in messages.items():
        miner.add_many(s, msgs)
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    patterns = sum(len(miner.patterns(s)) for s in systems)
    size = len(miner.to_bytes())
    print(f"\nafter all samples: {patterns:,} patterns; state {size:,} bytes ({size / patterns:,.0f} per pattern); "
          f"miner in memory {memory / 1e6:.1f} MB with its caches ({memory / patterns / 1e3:.1f} kB per pattern)")


if __name__ == "__main__":
    main()
