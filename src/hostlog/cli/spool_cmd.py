"""``hostlog spool verify|stats|rotate-key``."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from hostlog.cli.spool_location import spool_location
from hostlog.spool.inspect import collect_stats
from hostlog.spool.reader import SpoolReader


def _when(ns: int | None) -> str:
    if ns is None:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9).astimezone().isoformat(timespec="seconds")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def rotate_key(directory: Path, key_file: Path | None) -> int:
    """Append a new key to the key file (written whole to a temporary file and
    renamed: a crash leaves the old file or the new one, never half of one).
    Earlier keys stay: the segments written with them must stay readable."""
    from hostlog.spool.keys import add_key
    from hostlog.spool.reader import find_key_file

    path = key_file or find_key_file(directory)
    new_id = add_key(path)
    print(f"{path}: key {new_id} added; the agent writes new segments with it from its next "
          "start (restart it); segments written before keep their key, which stays in the file")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.spool_command in ("archive", "export", "import"):
        from hostlog.cli import archive_cmd
        return archive_cmd.run(args)
    directory, key_file = spool_location(args)
    if args.spool_command == "rotate-key":
        return rotate_key(directory, key_file)
    reader = SpoolReader.open(directory, key_file)
    verify = args.spool_command == "verify"
    stats = collect_stats(reader, verify=verify)
    if verify:
        print(f"{directory}: {stats.segments} segments, {stats.frames} frames, "
              f"{stats.records} records verified")
        for damage in stats.damage:
            print(f"damaged: {damage}")
        for expected, found in stats.gaps:
            print(f"gap: records {expected}..{found - 1} are missing")
        if stats.damage or stats.gaps:
            print(f"FAILED: {len(stats.damage)} damaged places, {len(stats.gaps)} gaps")
            return 1
        print("OK")
        return 0
    rows = [
        ("spool", str(directory)),
        ("segments", f"{stats.segments} ({stats.sealed} sealed)"),
        ("frames", str(stats.frames)),
        ("records", str(stats.records)),
        ("seq range", f"{stats.first_seq}..{stats.last_seq}" if stats.records else "-"),
        ("bytes on disk", f"{stats.bytes_on_disk} ({_size(stats.bytes_on_disk)})"),
        ("chunk bytes", f"{stats.chunk_bytes} ({_size(stats.chunk_bytes)}) before compression + AES-GCM"),
        ("compression", f"{stats.compression_ratio:.2f}:1"),
        ("first record", _when(stats.ts_min)),
        ("last record", _when(stats.ts_max)),
        ("damaged", str(len(stats.damage))),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k + ':':<{width + 1}} {v}")
    return 0
