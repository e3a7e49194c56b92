"""``hostlog report``: what the last 24 hours (or ``-S``..``-U``) of the spool
looked like, as Markdown, JSON or a self-contained HTML page (docs/report.md)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hostlog.cli import query_cmd

FORMATS = ("md", "json", "html")
_SUFFIXES = {".md": "md", ".markdown": "md", ".json": "json", ".html": "html", ".htm": "html"}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("report", help="a report of a period: volume, errors, drops, lag, restarts",
                       description="A report of what hostlog query would select in a period (the "
                                   "last 24 hours unless -S says otherwise): volume by source, app "
                                   "and level over time, top error and new templates, anomalies, "
                                   "drops and rate limits, the spool, forwarding lag, restarts.")
    query_cmd.add_selection_options(p)
    p.add_argument("-o", "--output", choices=FORMATS, default=None, metavar="FORMAT",
                   help="md (default), json (one object) or html (one self-contained page); "
                        "default from --output-file's suffix")
    p.add_argument("--output-file", metavar="FILE",
                   help="write the report to FILE (replaced atomically) instead of standard output")
    p.add_argument("--top", type=_positive, default=10, metavar="N",
                   help="templates and apps shown (default 10; JSON keeps every app)")
    p.add_argument("--baseline", default="7d", metavar="DURATION",
                   help="how far before the period a template counts as already seen (default 7d)")
    p.set_defaults(run_report=run)


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value!r}")
    return n


def parse_span(text: str, option: str) -> int:
    """A systemd.time span (``7d``, ``12h``; ``0`` for none) in ns."""
    from hostlog.query.timespec import _parse_sec  # systemd's parse_sec(), as -S and --every use

    usec = _parse_sec(text)
    if usec is None or usec < 0 or usec >= 1 << 62:
        raise ValueError(f"{option}: {text!r} is not a time span (e.g. 0, 12h, 7d)")
    return usec * 1000


def run(args: argparse.Namespace) -> int:
    from hostlog.cli.spool_location import spool_location
    from hostlog.query import report, report_html, report_text
    from hostlog.spool.reader import SpoolReader
    from hostlog.spool.state import atomic_write

    fmt = args.output
    if fmt is None:
        fmt = _SUFFIXES.get(Path(args.output_file).suffix.lower(), "md") if args.output_file else "md"
    try:
        query = query_cmd.build_query(args)
        baseline = parse_span(args.baseline, "--baseline")
    except ValueError as exc:  # PriorityError and TimeSpecError are ValueErrors
        print(f"hostlog report: {exc}", file=sys.stderr)
        return 1
    reader = SpoolReader.open(*spool_location(args), archive=not args.no_archive)
    built = report.build(reader, query, now_ns=time.time_ns(), baseline_ns=baseline, top=args.top)
    for damage in built.damage:
        print(f"hostlog report: damaged data: {damage}", file=sys.stderr)
    if fmt == "json":
        text = report_text.render_json(built)
    elif fmt == "html":
        text = report_html.render_html(built, top=args.top)
    else:
        text = report_text.render_markdown(built, top=args.top)
    if args.output_file:
        atomic_write(args.output_file, text.encode(), mode=0o640)  # record text, in the clear
        return 0
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0
