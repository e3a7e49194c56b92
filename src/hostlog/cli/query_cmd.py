"""``hostlog query``: journalctl's options over the spool."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from hostlog.cli.main import add_spool_location, spool_location

from hostlog.query.output import MODES as OUTPUT_MODES


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("query", help="read the spool, like journalctl",
                       description="Show records from the spool, oldest first (like journalctl).")
    add_spool_location(p)
    p.add_argument("matches", nargs="*", metavar="FIELD=VALUE",
                   help="field matches; the same field twice is OR, different fields AND, '+' OR")
    p.add_argument("-u", "--unit", action="append", default=[], metavar="APP",
                   help="an app or systemd unit (globs allowed; repeatable)")
    p.add_argument("-t", "--identifier", action="append", default=[], metavar="ID",
                   help="a syslog identifier (the app), exactly (repeatable)")
    p.add_argument("-p", "--priority", metavar="LEVEL",
                   help="a level (this or more important) or a range FROM..TO")
    p.add_argument("-S", "--since", metavar="TIME", help="on or newer than (systemd.time syntax)")
    p.add_argument("-U", "--until", metavar="TIME", help="on or older than")
    p.add_argument("-g", "--grep", metavar="REGEX",
                   help="messages matching (case-insensitive unless it has capitals)")
    p.add_argument("--host", action="append", default=[], help="records of this host")
    p.add_argument("--source", action="append", default=[],
                   help="records of this source (syslog, journald, file, process, ...)")
    p.add_argument("-n", "--lines", nargs="?", type=int, const=10, default=None, metavar="N",
                   help="the last N records (10 if N is left out)")
    p.add_argument("-r", "--reverse", action="store_true", help="newest first")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    p.add_argument("-o", "--output", default="short", choices=OUTPUT_MODES, metavar="MODE",
                   help=", ".join(OUTPUT_MODES))
    p.add_argument("--output-fields", metavar="LIST", help="fields to show (json, verbose, export)")
    p.add_argument("--utc", action="store_true", help="times in UTC")
    p.add_argument("--all", "-a", dest="all_fields", action="store_true",
                   help="show long and binary fields in full")
    p.add_argument("--no-pager", action="store_true", help="never start a pager")
    p.add_argument("-q", "--quiet", action="store_true", help="no informational messages")


def build_query(args: argparse.Namespace):  # -> Query
    from hostlog.query.filters import Query, compile_grep, parse_matches
    from hostlog.query.priority import parse_priority, selects_all
    from hostlog.query.timespec import parse_timestamp

    now = time.time_ns()
    query = Query(units=args.unit, identifiers=args.identifier, hosts=args.host,
                  sources=args.source, matches=parse_matches(args.matches))
    if args.priority is not None:
        allowed = parse_priority(args.priority)
        # all eight levels: journalctl adds no match, so records without a priority show too
        query.priorities = None if selects_all(allowed) else allowed
    if args.since:
        query.since_ns = parse_timestamp(args.since, now_ns=now, utc=args.utc)
    if args.until:
        query.until_ns = parse_timestamp(args.until, now_ns=now, utc=args.utc)
    if query.since_ns is not None and query.until_ns is not None and query.since_ns > query.until_ns:
        raise ValueError("--since= must be before --until=.")
    if args.grep:
        query.grep = compile_grep(args.grep)
    return query


def run(args: argparse.Namespace) -> int:
    from hostlog.query.output import Formatter
    from hostlog.query.run import follow, select, write_records
    from hostlog.spool.reader import SpoolReader

    try:
        query = build_query(args)
    except ValueError as exc:
        print(f"hostlog query: {exc}", file=sys.stderr)
        return 1
    directory, key_file = spool_location(args)
    reader = SpoolReader.open(directory, key_file)
    out = sys.stdout.buffer
    fields = args.output_fields.split(",") if args.output_fields else None
    formatter = Formatter(args.output, utc=args.utc, output_fields=fields,
                          all_fields=args.all_fields, color=False)
    lines = args.lines
    if args.follow and lines is None:
        lines = 10  # journalctl -f shows the last 10 first
    pairs, newest = select(reader, query, lines=lines, reverse=args.reverse)
    top = write_records(out, pairs, formatter.format)
    for damage in reader.damage:
        if not args.quiet:
            print(f"hostlog query: skipped damaged data: {damage}", file=sys.stderr)
    if args.follow:
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))

        def emit(record) -> None:
            out.write(formatter.format(record))
            out.flush()

        follow(reader, query, max(top, newest), emit, should_stop=lambda: stop["now"])
    return 0
