"""``hostlog query``: journalctl's options over the spool."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from hostlog.cli.spool_location import add_spool_location, spool_location
from hostlog.query.modes import MODES as OUTPUT_MODES

DEFAULT_PAGER = "less"
DEFAULT_LESS = "FRSXMK"  # journalctl's: quit at one screen, raw colours, chop long lines


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("query", help="read the spool, like journalctl",
                       description="Show records from the spool, oldest first (like journalctl).")
    add_selection_options(p)
    p.add_argument("-n", "--lines", nargs="?", type=_lines, const=10, default=None, metavar="N",
                   help="the last N records (10 if N is left out, 'all' for no limit)")
    p.add_argument("-r", "--reverse", action="store_true", help="newest first")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    p.add_argument("-o", "--output", default="short", choices=OUTPUT_MODES, metavar="MODE",
                   help=", ".join(OUTPUT_MODES))
    p.add_argument("--output-fields", metavar="LIST", help="fields to show (json, verbose, export)")
    p.add_argument("-F", "--field", metavar="NAME", help="the distinct values of a field")
    p.add_argument("--list-apps", action="store_true", help="the apps in the spool")
    p.add_argument("--list-hosts", action="store_true", help="the hosts in the spool")
    p.add_argument("--disk-usage", action="store_true", help="bytes the spool takes on disk")
    p.add_argument("--all", "-a", dest="all_fields", action="store_true",
                   help="show long and binary fields in full")
    p.add_argument("--no-pager", action="store_true", help="never start a pager")
    p.add_argument("-q", "--quiet", action="store_true", help="no informational messages")
    p.add_argument("--around", metavar="CURSOR",
                   help="the records of every source around the one with that __CURSOR, those "
                        "sharing its pid, unit, trace or request id first")
    p.add_argument("--window", default="30s", metavar="DURATION",
                   help="with --around: how far before and after it (default 30s)")


def add_selection_options(p: argparse.ArgumentParser) -> None:
    """The options that say which records (and which spool): `hostlog query`
    and `hostlog stats` share them, and build_query() reads them."""
    add_spool_location(p)
    p.add_argument("matches", nargs="*", metavar="FIELD=VALUE",
                   help="field matches; the same field twice is OR, different fields AND, '+' OR")
    p.add_argument("-u", "--unit", action="append", default=[], metavar="APP",
                   help="an app or systemd unit (globs allowed; repeatable)")
    p.add_argument("-t", "--identifier", action="append", default=[], metavar="ID",
                   help="a syslog identifier, exactly (repeatable)")
    p.add_argument("-p", "--priority", metavar="LEVEL",
                   help="a level (this or more important) or a range FROM..TO")
    p.add_argument("-S", "--since", metavar="TIME", help="on or newer than (systemd.time syntax)")
    p.add_argument("-U", "--until", metavar="TIME", help="on or older than")
    p.add_argument("-g", "--grep", metavar="REGEX",
                   help="messages matching (case-insensitive unless it has capitals)")
    p.add_argument("--case-sensitive", nargs="?", const="yes", default=None, metavar="BOOL",
                   help="force case (in)sensitive --grep")
    p.add_argument("--host", action="append", default=[], help="records of this host")
    p.add_argument("--source", action="append", default=[],
                   help="records of this source (syslog, journald, file, process, ...)")
    p.add_argument("--utc", action="store_true", help="times in UTC")
    p.add_argument("--no-archive", action="store_true",
                   help="read the spool's segments only, not its archive tier")
    # `-S -1h`, `-U -5min`: journalctl takes a relative time after an option
    # as its value; argparse would take anything starting with "-" for an
    # option unless it looks like a negative number, so make "-<digit>..." one.
    p._negative_number_matcher = re.compile(r"^-\d")


ALL_LINES = -1  # -n all


def _lines(value: str) -> int:
    if value == "all":
        return ALL_LINES
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of lines: {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"invalid number of lines: {value!r}")
    return n


def build_query(args: argparse.Namespace):  # -> hostlog.query.filters.Query
    from hostlog.query.build import build_query as build

    case = args.case_sensitive
    return build(units=args.unit, identifiers=args.identifier, hosts=args.host, sources=args.source,
                 matches=args.matches, priority=args.priority, since=args.since, until=args.until,
                 grep=args.grep, utc=args.utc,
                 case_sensitive=None if case is None else case.lower() in ("yes", "true", "1", "on"))


@contextmanager
def pager(enabled: bool) -> Iterator[BinaryIO]:
    """stdout, or the stdin of ``$PAGER`` (default ``less -FRSXMK``) on a terminal."""
    if not enabled:
        yield sys.stdout.buffer
        return
    import shlex
    import subprocess

    command = os.environ.get("HOSTLOG_PAGER") or os.environ.get("PAGER") or DEFAULT_PAGER
    env = dict(os.environ)
    env.setdefault("LESS", DEFAULT_LESS)
    try:
        proc = subprocess.Popen(shlex.split(command), stdin=subprocess.PIPE, env=env)
    except (OSError, ValueError):
        yield sys.stdout.buffer  # no pager to be had: print directly, as journalctl does
        return
    assert proc.stdin is not None
    try:
        yield proc.stdin  # type: ignore[misc]
    except BrokenPipeError:
        pass  # the user quit the pager
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        proc.wait()


def run(args: argparse.Namespace) -> int:
    from hostlog.query.output import Formatter
    from hostlog.spool.reader import SpoolReader

    try:
        query = build_query(args)
    except ValueError as exc:  # PriorityError and TimeSpecError are ValueErrors
        print(f"hostlog query: {exc}", file=sys.stderr)
        return 1
    if args.directory:  # no need to load (and import) the config machinery
        from pathlib import Path
        directory = Path(args.directory)
        key_file = Path(args.key_file) if args.key_file else None
    else:
        directory, key_file = spool_location(args)
    if args.disk_usage:
        total = sum(p.stat().st_size for p in (directory / "segments").glob("*.seg"))
        if not args.no_archive:
            from hostlog.spool.archive import archive_dir
            total += sum(p.stat().st_size for p in archive_dir(directory).glob("*.seg"))
        from hostlog.query.output import format_bytes
        print(f"Spool {directory} takes up {format_bytes(total)} in the file system.")
        return 0
    reader = SpoolReader.open(directory, key_file, archive=not args.no_archive)
    tty = sys.stdout.isatty()
    if args.field or args.list_apps or args.list_hosts:
        return _distinct(reader, query, args)
    fields = args.output_fields.split(",") if args.output_fields else None
    formatter = Formatter(args.output, utc=args.utc, output_fields=fields,
                          all_fields=args.all_fields, color=tty)
    format_record = formatter.format
    if tty and query.grep is not None:
        format_record = _highlighting(formatter, query.grep)
    if args.around:
        if args.follow:
            print("hostlog query: --around shows a window that has ended: not with -f", file=sys.stderr)
            return 1
        from hostlog.query.around import print_around
        with pager(tty and not args.no_pager) as out:
            return print_around(reader, query, args.around, args.window, format_record, out, utc=args.utc)
    from hostlog.query import engine
    lines = None if args.lines == ALL_LINES else args.lines
    lines, reverse = engine.effective(lines=lines, reverse=args.reverse, follow=args.follow,
                                      grep=query.grep is not None)
    with pager(tty and not args.no_pager and not args.follow) as out:
        status = _print(reader, query, args, lines, reverse, formatter, format_record, out, tty)
    return status


def _print(reader, query, args, lines, reverse, formatter, format_record, out: BinaryIO,
           tty: bool) -> int:
    from hostlog.query import engine
    from hostlog.query.run import Printer

    # short and cat print neither cursor nor origin: records can come without
    identity = not (args.output.startswith("short") or args.output == "cat")
    boot_lines = not args.quiet and (args.output.startswith("short") or args.output == "verbose")
    fast = formatter.fast_path() if format_record == formatter.format else None
    columns = formatter.short_columns if fast is not None else None

    def make_printer() -> Printer:
        return Printer(format_record, boot_lines=boot_lines, color=tty, fast=fast, columns=columns)

    printer = make_printer()
    top, newest = engine.write(out, reader, query, lines=lines, reverse=reverse, identity=identity,
                               make_printer=make_printer, columnar=columns is not None,
                               parallel=not args.follow)
    for damage in reader.damage:
        print(f"hostlog query: skipped damaged data: {damage}", file=sys.stderr)
    if not top and not args.follow:
        if not args.quiet:
            print("-- No entries --", file=sys.stderr if args.output != "short" else sys.stdout)
        return 1 if query.grep is not None else 0
    if args.follow:
        import asyncio
        asyncio.run(_follow(reader, query, max(top, newest), printer, out))
    return 0


async def _follow(reader, query, after_seq: int, printer, out: BinaryIO) -> None:
    """-f: print what arrives until SIGTERM or SIGINT."""
    import asyncio

    from hostlog.query import engine
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        async for record in engine.follow(reader, query, after_seq):
            out.write(printer.record(record))
            out.flush()
    except asyncio.CancelledError:
        pass


def _highlighting(formatter, grep):
    def format_record(record) -> bytes:
        msg = record.msg
        if isinstance(msg, str):
            m = grep.search(msg)
            if m:
                start = len(msg[:m.start()].encode())
                return formatter.format(record, highlight=(start, start + len(m.group().encode())))
        return formatter.format(record)
    return format_record


def _distinct(reader, query, args) -> int:
    """-F FIELD, --list-apps, --list-hosts: distinct values, in order of first sight."""
    from hostlog.journal.fields import field_values
    from hostlog.query.run import iter_selected

    seen: dict[bytes, None] = {}
    identity = args.field in ("__CURSOR", "_HOSTLOG_ORIGIN", "_HOSTLOG_SEQ")
    for _, r in iter_selected(reader, query, identity=identity):
        if args.list_apps:
            values = [r.app.encode()]
        elif args.list_hosts:
            values = [r.host.encode()]
        else:
            values = field_values(r, args.field)
        for v in values:
            seen.setdefault(v, None)
    out = sys.stdout.buffer
    out.write(b"".join(v + b"\n" for v in seen))
    out.flush()
    return 0
