"""``hostlog patterns``: the templates of the records ``hostlog query`` would
select, with counts, first and last seen, a sparkline over the range and an
example (docs/patterns.md, "hostlog patterns").

The templates are mined from the selected records as they are read, by the
same miner (``hostlog.patterns``) with its default settings, per app; a
pattern's id is fixed when it is created, its template is the one it has
once every record was read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass, field

from hostlog.cli import query_cmd

OUTPUTS = ("table", "json")
BUCKETS = 24  # sparkline columns over the selected range


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("patterns", help="the templates of the selected records, with counts",
                       description="Mine the templates of the records hostlog query would select: "
                                   "count, first and last seen, a sparkline and an example each.")
    query_cmd.add_selection_options(p)
    p.add_argument("-o", "--output", default="table", choices=OUTPUTS, metavar="FORMAT",
                   help="table (default) or json (one object per line)")
    p.add_argument("--new", metavar="TIME",
                   help="only templates first seen at or after TIME (systemd.time syntax)")
    p.add_argument("--top", type=int, metavar="N", help="only the N most frequent templates")


@dataclass
class Seen:
    """What the selected records of one pattern were."""

    app: str
    pattern_id: str
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    example: str = ""
    seconds: dict[int, int] = field(default_factory=dict)  # records per second, for the sparkline


def mine(records: object) -> tuple[dict[tuple[str, str], Seen], dict[tuple[str, str], str]]:
    """(what each pattern saw, its final template) over ``records`` ((seq, Record) pairs)."""
    from hostlog.patterns import Miner

    miner = Miner()
    seen: dict[tuple[str, str], Seen] = {}
    for _, record in records:  # type: ignore[attr-defined]
        msg = record.msg if isinstance(record.msg, str) else record.msg.decode("utf-8", "replace")
        app = record.app or "-"
        match = miner.add(app, msg)
        key = (app, match.pattern_id)
        s = seen.get(key)
        if s is None:
            s = seen[key] = Seen(app, match.pattern_id, first_ns=record.ts, example=msg)
        s.count += 1
        s.first_ns = min(s.first_ns, record.ts)
        s.last_ns = max(s.last_ns, record.ts)
        second = record.ts // 1_000_000_000
        s.seconds[second] = s.seconds.get(second, 0) + 1
    templates = {(app, pid): t for app in miner.apps() for pid, t in miner.patterns(app).items()}
    return seen, templates


def sparkline(seconds: dict[int, int], lo_ns: int, hi_ns: int, buckets: int = BUCKETS) -> list[int]:
    """The records per second of ``seconds``, counted in ``buckets`` equal
    parts of the range [lo_ns, hi_ns]."""
    counts = [0] * buckets
    lo, hi = lo_ns // 1_000_000_000, hi_ns // 1_000_000_000
    span = hi - lo + 1
    for second, n in seconds.items():
        counts[min(buckets - 1, max(0, (second - lo) * buckets // span))] += n
    return counts


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(args: argparse.Namespace) -> int:
    from hostlog.cli.spool_location import spool_location
    from hostlog.query.run import iter_selected
    from hostlog.query.stats import sparkline as bars  # the block characters of hostlog stats
    from hostlog.spool.reader import SpoolReader

    try:
        query = query_cmd.build_query(args)
        new_since = None
        if args.new:
            import time

            from hostlog.query.timespec import parse_timestamp
            new_since = parse_timestamp(args.new, now_ns=time.time_ns(), utc=args.utc)
    except ValueError as exc:
        print(f"hostlog patterns: {exc}", file=sys.stderr)
        return 1
    if args.top is not None and args.top < 1:
        print("hostlog patterns: --top takes a number of templates, 1 or more", file=sys.stderr)
        return 1
    reader = SpoolReader.open(*spool_location(args))
    seen, templates = mine(iter_selected(reader, query))
    for damage in reader.damage:
        print(f"hostlog patterns: damaged, passed over: {damage}", file=sys.stderr)
    rows = sorted(seen.values(), key=lambda s: (-s.count, s.app, s.pattern_id))
    lo = min((s.first_ns for s in rows), default=0)
    hi = max((s.last_ns for s in rows), default=0)
    if new_since is not None:
        rows = [s for s in rows if s.first_ns >= new_since]
    if args.top is not None:
        rows = rows[:args.top]
    out = sys.stdout
    if args.output == "json":
        for s in rows:
            out.write(json.dumps({"app": s.app, "pattern_id": s.pattern_id,
                                  "template": templates.get((s.app, s.pattern_id), s.example),
                                  "count": s.count, "first": _iso(s.first_ns), "last": _iso(s.last_ns),
                                  "sparkline": sparkline(s.seconds, lo, hi), "example": s.example},
                                 ensure_ascii=False) + "\n")
        return 0
    out.write(f"{'COUNT':>8}  {'FIRST':<20}  {'LAST':<20}  {'APP':<16}  {'PATTERN_ID':<16}  "
              f"{'OVER TIME':<{BUCKETS}}  TEMPLATE\n")
    for s in rows:
        template = templates.get((s.app, s.pattern_id), s.example).replace("\n", "⏎")
        out.write(f"{s.count:>8}  {_iso(s.first_ns):<20}  {_iso(s.last_ns):<20}  {s.app[:16]:<16}  "
                  f"{s.pattern_id:<16}  {bars(sparkline(s.seconds, lo, hi))}  {template}\n")
    return 0
