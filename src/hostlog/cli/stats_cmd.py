"""``hostlog stats``: counts and rates of the records ``hostlog query`` would
select, by fields and time buckets (docs/stats.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hostlog.cli import query_cmd

OUTPUTS = ("table", "json", "csv")
#: At most this many buckets in a terminal's sparkline when --every is not given.
AUTO_BUCKETS = 48
_NICE_SPANS_S = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400,
                 7 * 86400, 30 * 86400, 365 * 86400)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("stats", help="count records by fields and time, with rates",
                       description="Count the records hostlog query would select, grouped by "
                                   "fields (--by) and time buckets (--every), with rates.")
    query_cmd.add_selection_options(p)
    p.add_argument("--by", metavar="FIELD[,FIELD...]",
                   help="group by these journal fields (SYSLOG_IDENTIFIER, PRIORITY, _HOSTNAME, "
                        "_HOSTLOG_SOURCE, _SYSTEMD_UNIT or any other; app, priority, host, "
                        "source, unit for short)")
    p.add_argument("--every", metavar="DURATION",
                   help="one count per time bucket of this length (30s, 5min, 1h, 1d)")
    p.add_argument("--top", type=_positive, metavar="N", help="only the N largest groups")
    p.add_argument("-o", "--output", default="table", choices=OUTPUTS, metavar="FORMAT",
                   help="table (default), json (one object per line), csv")
    p.add_argument("--sum", action="append", default=[], metavar="FIELD",
                   help="the sum of a numeric field per group and bucket (repeatable)")
    p.add_argument("--p99", action="append", default=[], metavar="FIELD",
                   help="the 99th percentile of a numeric field per group and bucket (repeatable)")
    p.add_argument("--sparkline", choices=("auto", "always", "never"), default="auto",
                   help="table: a sparkline per group over time (auto: on a terminal)")
    p.add_argument("--no-index", action="store_true",
                   help="read every frame instead of counting from the index (also reports "
                        "frames damaged on disk since they were written)")
    p.add_argument("-q", "--quiet", action="store_true", help="no informational messages")
    p.set_defaults(run_stats=run)


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value!r}")
    return n


def run(args: argparse.Namespace) -> int:
    from hostlog.cli.spool_location import spool_location
    from hostlog.query import stats
    from hostlog.spool.reader import SpoolReader

    try:
        query = query_cmd.build_query(args)
        spec = stats.StatsSpec(
            by=stats.parse_by(args.by),
            every_ns=stats.parse_every(args.every) if args.every else None,
            sum_fields=tuple(stats.parse_field(f, "--sum") for f in args.sum),
            p99_fields=tuple(stats.parse_field(f, "--p99") for f in args.p99),
            use_index=not args.no_index)
    except ValueError as exc:  # PriorityError and TimeSpecError are ValueErrors
        print(f"hostlog stats: {exc}", file=sys.stderr)
        return 1
    if args.directory:
        directory, key_file = Path(args.directory), Path(args.key_file) if args.key_file else None
    else:
        directory, key_file = spool_location(args)
    reader = SpoolReader.open(directory, key_file, archive=not args.no_archive)
    spark = args.output == "table" and (args.sparkline == "always" or (
        args.sparkline == "auto" and sys.stdout.isatty()))
    if spark and spec.every_ns is None:
        span = _range(reader, query)
        if span is not None:
            import dataclasses
            spec = dataclasses.replace(spec, every_ns=_auto_every(span))
    result = stats.compute(reader, query, spec)
    for damage in result.damage:
        print(f"hostlog stats: damaged data: {damage}", file=sys.stderr)
    out = sys.stdout
    if not result.counts:
        if not args.quiet:
            print("-- No entries --", file=sys.stderr)
        return 0
    if args.output == "json":
        out.writelines(stats.render_json(stats.rows(result, top=args.top), spec))
    elif args.output == "csv":
        out.write(stats.render_csv(stats.rows(result, top=args.top), spec))
    else:
        out.write(stats.render_table(result, top=args.top, spark=spark))
    out.flush()
    return 0


def _range(reader, query) -> int | None:  # type: ignore[no-untyped-def]
    """The length (ns) of the time range a terminal's sparkline spans: -S..-U,
    else as far as the spool's frames reach."""
    lo, hi = query.since_ns, query.until_ns
    if lo is None or hi is None:
        first = last = None
        for _, entry in reader.frames_quick(since_ns=lo, until_ns=hi):
            first = entry.ts_min if first is None else min(first, entry.ts_min)
            last = entry.ts_max if last is None else max(last, entry.ts_max)
        if first is None or last is None:
            return None
        lo = first if lo is None else lo
        hi = last if hi is None else hi
    return max(0, hi - lo)


def _auto_every(span_ns: int) -> int:
    for s in _NICE_SPANS_S:
        if span_ns <= s * 10**9 * AUTO_BUCKETS:
            return s * 10**9
    return _NICE_SPANS_S[-1] * 10**9
