"""``hostlog patterns``: the templates of the records ``hostlog query`` would
select, with counts, first and last seen, a sparkline over the range and an
example (docs/patterns.md, "hostlog patterns").

A record mined at ingest counts under the ``PATTERN_ID`` it carries (with
the latest ``PATTERN`` seen for it); the others are mined from the selected
records as they are read, by the same miner (``hostlog.patterns``) with its
default settings, per app; a pattern's id is fixed when it is created, its
template is the one it has once every record was read. ``--with ID`` lists
the templates that occur near that one's records (co-occurrence).
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import sys
from dataclasses import dataclass, field

from hostlog.cli import query_cmd
from hostlog.config.units import parse_duration

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
    p.add_argument("--with", dest="with_id", metavar="PATTERN_ID",
                   help="the templates that occur within --window of that one's records, most often first")
    p.add_argument("--window", default="30s", metavar="DURATION",
                   help="with --with: how far from one of its records a record counts (default 30s)")


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
    """(what each pattern saw, its final template) over ``records`` ((seq, Record) pairs).

    A record mined at ingest counts under the ``PATTERN_ID`` it carries, with
    the latest ``PATTERN`` seen for it; the others are mined here."""
    from hostlog.patterns import Miner

    miner = Miner()
    seen: dict[tuple[str, str], Seen] = {}
    stored: dict[tuple[str, str], str] = {}  # templates the records carry
    for _, record in records:  # type: ignore[attr-defined]
        msg = record.msg if isinstance(record.msg, str) else record.msg.decode("utf-8", "replace")
        app = record.app or "-"
        pid = record.fields.get("PATTERN_ID")
        if isinstance(pid, str) and pid:
            template = record.fields.get("PATTERN")
            if isinstance(template, str):
                stored[(app, pid)] = template
        else:
            pid = miner.add(app, msg).pattern_id
        key = (app, pid)
        s = seen.get(key)
        if s is None:
            s = seen[key] = Seen(app, pid, first_ns=record.ts, example=msg)
        s.count += 1
        s.first_ns = min(s.first_ns, record.ts)
        s.last_ns = max(s.last_ns, record.ts)
        second = record.ts // 1_000_000_000
        s.seconds[second] = s.seconds.get(second, 0) + 1
    templates = {(app, pid): t for app in miner.apps() for pid, t in miner.patterns(app).items()}
    templates.update(stored)
    return seen, templates


def cooccurring(seconds: dict[int, int], anchors: list[int], window: int) -> int:
    """Records of a pattern (counts by second) within ``window`` seconds of
    one of the ``anchors`` (sorted seconds)."""
    n = 0
    for t, count in seconds.items():
        i = bisect.bisect_left(anchors, t - window)
        if i < len(anchors) and anchors[i] <= t + window:
            n += count
    return n


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
    reader = SpoolReader.open(*spool_location(args), archive=not args.no_archive)
    seen, templates = mine(iter_selected(reader, query))
    for damage in reader.damage:
        print(f"hostlog patterns: damaged, passed over: {damage}", file=sys.stderr)
    rows = sorted(seen.values(), key=lambda s: (-s.count, s.app, s.pattern_id))
    near: dict[tuple[str, str], int] | None = None
    if args.with_id:
        try:
            window = parse_duration(args.window)
        except ValueError as exc:
            print(f"hostlog patterns: --window: {exc}", file=sys.stderr)
            return 1
        anchors = sorted({t for s in rows if s.pattern_id == args.with_id for t in s.seconds})
        if not anchors:
            print(f"hostlog patterns: no selected record has the pattern {args.with_id}", file=sys.stderr)
            return 1
        near = {(s.app, s.pattern_id): n for s in rows if s.pattern_id != args.with_id
                and (n := cooccurring(s.seconds, anchors, int(window)))}
        rows = sorted((s for s in rows if (s.app, s.pattern_id) in near),
                      key=lambda s: (-near[(s.app, s.pattern_id)], -near[(s.app, s.pattern_id)] / s.count,
                                     s.app, s.pattern_id))
    lo = min((s.first_ns for s in rows), default=0)
    hi = max((s.last_ns for s in rows), default=0)
    if new_since is not None:
        rows = [s for s in rows if s.first_ns >= new_since]
    if args.top is not None:
        rows = rows[:args.top]
    out = sys.stdout
    if args.output == "json":
        for s in rows:
            row = {"app": s.app, "pattern_id": s.pattern_id,
                   "template": templates.get((s.app, s.pattern_id), s.example),
                   "count": s.count, "first": _iso(s.first_ns), "last": _iso(s.last_ns),
                   "sparkline": sparkline(s.seconds, lo, hi), "example": s.example}
            if near is not None:
                row["with_count"] = near[(s.app, s.pattern_id)]  # of count, within the window
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        return 0
    out.write(f"{'COUNT':>8}  {'FIRST':<20}  {'LAST':<20}  {'APP':<16}  {'PATTERN_ID':<16}  "
              f"{'OVER TIME':<{BUCKETS}}  TEMPLATE\n")
    for s in rows:
        template = templates.get((s.app, s.pattern_id), s.example).replace("\n", "⏎")
        count = s.count if near is None else near[(s.app, s.pattern_id)]
        out.write(f"{count:>8}  {_iso(s.first_ns):<20}  {_iso(s.last_ns):<20}  {s.app[:16]:<16}  "
                  f"{s.pattern_id:<16}  {bars(sparkline(s.seconds, lo, hi))}  {template}\n")
    return 0
