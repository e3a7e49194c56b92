"""``hostlog query --around CURSOR [--window 30s]``: what happened around one record.

The record with that ``__CURSOR`` (``origin:seq``) is found; then every record
within ``window`` before and after its time, of every source (and, on a central
node, of every host), that the other selection options let through. Shown in
two groups, each in time order: first the records that share something with it
(the same host and pid, the same ``_SYSTEMD_UNIT``, or the same value of a trace
or request id field: :data:`SHARED_FIELDS`), then the others. The record itself
is in the first group.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import BinaryIO

from hostlog.config.units import parse_duration
from hostlog.query.build import build_query
from hostlog.query.filters import Query
from hostlog.query.run import iter_selected
from hostlog.record import Record
from hostlog.spool.reader import SpoolReader

__all__ = ["SHARED_FIELDS", "print_around", "related"]

#: Fields whose equal values tie two records together.
SHARED_FIELDS = ("_SYSTEMD_UNIT", "TRACE_ID", "trace_id", "traceId", "REQUEST_ID", "request_id",
                 "requestId", "X_REQUEST_ID", "SPAN_TRACE_ID")


def related(anchor: Record) -> Callable[[Record], bool]:
    """Does a record share the anchor's pid (on its host), unit, trace or request id?"""
    keys = {(name, anchor.fields[name]) for name in SHARED_FIELDS
            if isinstance(anchor.fields.get(name), str | bytes) and anchor.fields[name]}
    pid = anchor.pid

    def test(r: Record) -> bool:
        if pid is not None and r.pid == pid and r.host == anchor.host:
            return True
        return any(r.fields.get(name) == value for name, value in keys)

    return test


def print_around(reader: SpoolReader, query: Query, cursor: str, window: str,
                 format_record: Callable[[Record], bytes], out: BinaryIO, *, utc: bool = False) -> int:
    try:
        span = int(parse_duration(window) * 1e9)
        anchor_query = build_query(matches=[f"__CURSOR={cursor}"])
    except ValueError as exc:
        print(f"hostlog query: --around/--window: {exc}", file=sys.stderr)
        return 1
    anchor = next((r for _, r in iter_selected(reader, anchor_query)), None)
    if anchor is None:
        print(f"hostlog query: no record has the cursor {cursor}", file=sys.stderr)
        return 1
    lo, hi = anchor.ts - span, anchor.ts + span
    query.since_ns = lo if query.since_ns is None else max(query.since_ns, lo)
    query.until_ns = hi if query.until_ns is None else min(query.until_ns, hi)
    first: list[Record] = []
    rest: list[Record] = []
    near = related(anchor)
    for _, r in iter_selected(reader, query):
        is_anchor = r.origin == anchor.origin and r.seq == anchor.seq
        (first if is_anchor or near(r) else rest).append(r)
    for r in sorted(first, key=lambda r: r.ts) + sorted(rest, key=lambda r: r.ts):
        out.write(format_record(r))
    out.flush()
    return 0
