"""``hostlog spool archive|export|import``.

``archive``: one pass of compaction and archiving, offline. The agent does
the same in the background (spool/archive.py); this runs one pass over a
spool no agent is writing (it takes the spool's lock), with the policy of a
config (``-c``) or of the options.

``export`` writes the records a query selects to stdout; ``import`` appends
an export file to a spool no agent is writing, without the records it holds
already (spool/transfer.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hostlog.cli.spool_location import add_spool_location, spool_location

__all__ = ["add_parsers", "run"]


def add_parsers(spool_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = spool_sub.add_parser("archive", help="compact and archive sealed segments now (one pass; "
                                             "the agent must not be running)")
    add_spool_location(p)
    p.add_argument("--after", metavar="DURATION",
                   help="archive sealed segments whose newest record is older than this "
                        "(default: [spool.archive] after of -c FILE; none: no archiving)")
    p.add_argument("--keep", metavar="DURATION",
                   help="delete archived segments whose newest record is older (default: "
                        "[spool.archive] keep, else 365d; 0: never)")
    p.add_argument("--compression", type=int, metavar="LEVEL", help="zstd level (default 19)")
    p.add_argument("--archive-dir", metavar="DIR", help="the archive directory (default DIR/archive)")
    p.add_argument("--no-compact", action="store_true", help="do not compact small-framed segments")

    from hostlog.cli.query_cmd import add_selection_options
    p = spool_sub.add_parser("export", help="write the selected records to stdout, lossless "
                                            "(Journal Export Format or JSON lines)")
    add_selection_options(p)
    p.add_argument("-o", "--output", choices=("export", "json"), default="export",
                   help="export: the Journal Export Format; json: JSON lines")
    p = spool_sub.add_parser("import", help="append the records of an export file to a spool "
                                            "(the agent must not be running); held ones are skipped")
    add_spool_location(p)
    p.add_argument("file", metavar="FILE", help="an export file (export or json), or - for stdin")


def run(args: argparse.Namespace) -> int:
    if args.spool_command == "export":
        return export(args)
    if args.spool_command == "import":
        return import_(args)
    return archive(args)


def export(args: argparse.Namespace) -> int:
    import sys

    from hostlog.cli.query_cmd import build_query
    from hostlog.query.run import iter_selected
    from hostlog.spool.reader import SpoolReader
    from hostlog.spool.transfer import export_records

    try:
        query = build_query(args)
    except ValueError as exc:
        print(f"hostlog spool export: {exc}", file=sys.stderr)
        return 1
    reader = SpoolReader.open(*spool_location(args), archive=not args.no_archive)
    out = sys.stdout.buffer
    n = export_records((r for _, r in iter_selected(reader, query)), out, args.output)
    out.flush()
    for damage in reader.damage:
        print(f"damaged (not exported): {damage}", file=sys.stderr)
    print(f"exported {n} records", file=sys.stderr)
    return 1 if reader.damage else 0


def import_(args: argparse.Namespace) -> int:
    import sys

    from hostlog.errors import ExportFormatError
    from hostlog.spool.keys import Keyring
    from hostlog.spool.reader import SpoolReader, find_key_file
    from hostlog.spool.spool import Spool
    from hostlog.spool.transfer import HeldSeqs, import_file

    directory, key_file = spool_location(args)
    key_file = key_file or find_key_file(directory)
    spool = Spool.open(directory, Keyring.load_or_create(key_file), key_file=key_file)
    problem = None
    try:
        held = HeldSeqs.of_spool(SpoolReader.open(directory, key_file))
        stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
        with stream:
            try:
                report = import_file(spool, stream, held)
            except ExportFormatError as exc:
                problem = exc
                report = None
        spool.sync()
    finally:
        spool.close()
    if report is None:
        print(f"hostlog spool import: {args.file}: {problem}; the records before it are imported",
              file=sys.stderr)
        return 1
    print(f"{args.file}: {report.read} records read, {report.imported} imported, "
          f"{report.duplicates} held already (same origin and seq)")
    return 0


def archive(args: argparse.Namespace) -> int:
    from hostlog.config import load_config, parse_duration
    from hostlog.spool.archive import ArchivePolicy, Archiver, policy_of
    from hostlog.spool.keys import Keyring
    from hostlog.spool.reader import find_key_file
    from hostlog.spool.spool import Spool

    directory, key_file = spool_location(args)
    policy = policy_of(load_config(args.config).spool) if args.config else ArchivePolicy(
        frame_records=_frame_records(), frame_bytes=_frame_bytes())
    changes: dict[str, object] = {}
    if args.after is not None:
        changes.update(archive=True, after_s=parse_duration(args.after))
    if args.keep is not None:
        changes["keep_s"] = parse_duration(args.keep) or float("inf")
    if args.compression is not None:
        if not 1 <= args.compression <= 22:
            raise ValueError("--compression must be 1..22")
        changes["level"] = args.compression
    if args.archive_dir is not None:
        changes["dir"] = Path(args.archive_dir).absolute()
    if args.no_compact:
        changes["compact"] = False
    policy = ArchivePolicy(**{**_fields(policy), **changes})  # type: ignore[arg-type]
    keyring = Keyring.load(key_file or find_key_file(directory))
    spool = Spool.open(directory, keyring, key_file=key_file or find_key_file(directory))
    try:
        report = Archiver(spool, policy).run_once()
    finally:
        spool.close()
    for r in report.compacted:
        print(f"compacted {r.name}: {r.records} records, {r.frames_in} -> {r.frames_out} frames, "
              f"{r.bytes_in} -> {r.bytes_out} bytes")
    for r in report.archived:
        print(f"archived {r.name}: {r.records} records, {r.frames_in} -> {r.frames_out} frames, "
              f"{r.bytes_in} -> {r.bytes_out} bytes")
    for name in report.expired:
        print(f"expired {name}")
    for name in report.held:
        print(f"kept {name}: past keep, but a forward destination has not acknowledged it")
    for problem in report.refused:
        print(f"not rewritten: {problem}")
    return 1 if report.refused else 0


def _fields(policy: object) -> dict[str, object]:
    return {name: getattr(policy, name) for name in policy.__slots__}  # type: ignore[attr-defined]


def _frame_records() -> int:
    from hostlog.spool.writer import FRAME_RECORDS
    return FRAME_RECORDS


def _frame_bytes() -> int:
    from hostlog.spool.writer import FRAME_BYTES
    return FRAME_BYTES
