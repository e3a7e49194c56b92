"""``hostlog stats``: counts of the records a query selects, by fields and
time buckets, with rates, sums and 99th percentiles.

The same selection as ``hostlog query`` (a :class:`~hostlog.query.filters.Query`,
the same reader and frame code), read as cheaply as each frame allows:

1. **Index** (a sealed segment's footer counts, ``hostlog.spool.index``): when
   the grouping is by app, priority, host, source or unit only, the filters
   are among ``-u``, ``-t``, ``-p``, ``--host``, ``--source``, ``-S``, ``-U``,
   and the frame lies wholly inside the time range (and inside one bucket
   with ``--every``), its counts come from the footer and the frame is not
   read at all. Each count row keeps what decides the filters and the
   grouping (the raw fields that override a record's app, priority or host
   in its journal view, the fields of systemd's reports about units), and
   the rule applied to it is the query's own, on a record made of that row:
   exact, not an estimate. A segment wholly inside the range, without
   ``--every``, is counted from its footer's totals.
2. **Columns** (``run.frame_selected``, as ``hostlog query`` reads a frame):
   every other frame is read; when its columns decide the selection and the
   grouping is by app, priority, host or source, the count is taken from the
   columns; records are built only for the few whose field maps could change
   the answer, and for everything else (other fields, ``--sum``, ``--p99``,
   ``-g`` or ``FIELD=VALUE`` that the columns do not decide).

Long reads (64 frames or more) are shared by forked workers, one per CPU, as
``hostlog query`` does (``HOSTLOG_QUERY_WORKERS``).

A group's value for a field is what ``hostlog query -o json --all`` prints
for it: one value as text (or an array of bytes when it is not printable
UTF-8), several as an array, none as null.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import math
import os
import pickle
import re
import struct
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from operator import floordiv
from pathlib import Path
from typing import Any

from hostlog.chunk import APP, FIELDS, HOST, SOURCE, FrameColumns
from hostlog.journal.fields import field_values, is_printable
from hostlog.query.filters import Query
from hostlog.query.run import ColumnPick, frame_selected, roomy_heap
from hostlog.record import Record
from hostlog.spool.frame import IndexEntry
from hostlog.spool.index import SegmentCounts
from hostlog.spool.reader import SpoolReader
from hostlog.spool.segment import Damage, SegmentReader

__all__ = ["ALIASES", "INDEX_FIELDS", "Row", "StatsResult", "StatsSpec", "compute", "group_value",
           "parse_by", "parse_every", "render_csv", "render_json", "render_table", "rows",
           "sparkline"]

#: Fields a count can be grouped by from the footer counts.
INDEX_FIELDS = frozenset({"SYSLOG_IDENTIFIER", "PRIORITY", "_HOSTNAME", "_HOSTLOG_SOURCE",
                          "_SYSTEMD_UNIT"})
#: Fields a count can be grouped by from a frame's columns.
COLUMN_FIELDS = frozenset({"SYSLOG_IDENTIFIER", "PRIORITY", "_HOSTNAME", "_HOSTLOG_SOURCE"})
#: Short names accepted by ``--by`` (and ``--sum``/``--p99``).
ALIASES = {"app": "SYSLOG_IDENTIFIER", "identifier": "SYSLOG_IDENTIFIER", "priority": "PRIORITY",
           "host": "_HOSTNAME", "source": "_HOSTLOG_SOURCE", "unit": "_SYSTEMD_UNIT"}
_IDENTITY_FIELDS = frozenset({"__CURSOR", "_HOSTLOG_ORIGIN", "_HOSTLOG_SEQ"})
_FIELD_NAME = re.compile(r"[A-Z0-9_]+")
#: A scan of fewer frames than this is read in the one process.
MIN_PARALLEL_FRAMES = 64

#: A group: for each ``--by`` field, its raw values in the record's journal view.
GroupKey = tuple[tuple[bytes, ...], ...]
_REJECTED: Any = object()


@dataclass(frozen=True)
class StatsSpec:
    """What to count: group fields, bucket width (ns), fields to sum and to
    take the 99th percentile of; ``use_index=False`` reads every frame."""

    by: tuple[str, ...] = ()
    every_ns: int | None = None
    sum_fields: tuple[str, ...] = ()
    p99_fields: tuple[str, ...] = ()
    use_index: bool = True

    @property
    def numeric(self) -> tuple[str, ...]:
        return self.sum_fields + self.p99_fields


@dataclass
class StatsResult:
    """Counts by (group, bucket); the bucket is the bucket's index
    (start = index * every_ns), or None without ``--every``."""

    spec: StatsSpec
    counts: dict[tuple[GroupKey, int | None], int] = field(default_factory=dict)
    sums: dict[tuple[GroupKey, int | None], list[float]] = field(default_factory=dict)
    values: dict[tuple[GroupKey, int | None], list[array[float]]] = field(default_factory=dict)
    #: the time range rates are taken over: -S/-U, else the spool's first and last record
    range_ns: tuple[int, int] | None = None
    frames_counted: int = 0  # frames whose counts came from the index
    frames_read: int = 0
    damage: list[Damage] = field(default_factory=list)

    def merge(self, other: StatsResult) -> None:
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        for key, sums in other.sums.items():
            mine = self.sums.setdefault(key, [0.0] * len(sums))
            for i, v in enumerate(sums):
                mine[i] += v
        for key, values in other.values.items():
            have = self.values.get(key)
            if have is None:
                self.values[key] = values
            else:
                for a, b in zip(have, values):
                    a.extend(b)
        self.frames_counted += other.frames_counted
        self.frames_read += other.frames_read


@dataclass(frozen=True)
class Row:
    """One line of output: a group (and bucket), its count and rate."""

    group: GroupKey
    time_ns: int | None  # the bucket's start
    count: int
    rate: float | None  # per second, over the bucket or the range
    sums: tuple[float | None, ...] = ()
    p99s: tuple[float | None, ...] = ()
    buckets: tuple[int, ...] = ()  # the group's counts per bucket (table sparklines)


# --- arguments ---------------------------------------------------------------------

def parse_by(text: str | None) -> tuple[str, ...]:
    """``--by A,B``: journal field names (or :data:`ALIASES`), in order, each once."""
    if not text:
        return ()
    names = [ALIASES.get(n.strip(), n.strip()) for n in text.split(",")]
    for n in names:
        if not _FIELD_NAME.fullmatch(n):
            raise ValueError(f"--by: {n!r} is not a field name (A-Z, 0-9, _; or one of "
                             f"{', '.join(ALIASES)})")
    return tuple(dict.fromkeys(names))


def parse_field(name: str, option: str) -> str:
    name = ALIASES.get(name.strip(), name.strip())
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(f"{option}: {name!r} is not a field name (A-Z, 0-9, _)")
    return name


def parse_every(text: str) -> int:
    """``--every 1m``: a systemd.time span (``30s``, ``5min``, ``1h``, ``1d``) in ns."""
    from hostlog.query.timespec import _parse_sec  # systemd's parse_sec(), as -S uses

    usec = _parse_sec(text)
    if usec is None or usec <= 0 or usec >= 1 << 62:
        raise ValueError(f"--every: {text!r} is not a time span (e.g. 30s, 5min, 1h, 1d)")
    return usec * 1000


# --- the engine ----------------------------------------------------------------------

def compute(reader: SpoolReader, query: Query, spec: StatsSpec, *,
            workers: int | None = None) -> StatsResult:
    """Count what ``query`` selects in the spool, as ``spec`` says. Damage
    met on the way is in ``result.damage`` (and ``reader.damage``)."""
    # pinned: the frames listed first are read (by forked workers too) from
    # the files they were listed in, whatever a compaction or an archiving does
    with reader.pinned():
        return _compute(reader, query, spec, workers=workers)


def _compute(reader: SpoolReader, query: Query, spec: StatsSpec, *,
             workers: int | None = None) -> StatsResult:
    roomy_heap()
    result = StatsResult(spec)
    engine = _Engine(query, spec)
    lo, hi = query.since_ns, query.until_ns
    spool_lo: int | None = None
    spool_hi: int | None = None
    to_read: list[tuple[Path, IndexEntry]] = []
    damage_from = len(reader.damage)
    for seg in reader.open_segments():
        index = seg.index()
        reader.damage.extend(index.damage)
        entries = index.entries
        if not entries:
            continue
        first = min(e.ts_min for e in entries)
        last = max(e.ts_max for e in entries)
        spool_lo = first if spool_lo is None else min(spool_lo, first)
        spool_hi = last if spool_hi is None else max(spool_hi, last)
        if (lo is not None and last < lo) or (hi is not None and first > hi):
            continue  # the whole segment is outside the time range
        counts: SegmentCounts | None = None
        if engine.index_answers and index.sealed:
            found = seg.counts(index)
            if isinstance(found, Damage):
                reader.damage.append(found)  # nothing lost: its frames are read instead
            else:
                counts = found
        inside = (lo is None or first >= lo) and (hi is None or last <= hi)
        if counts is not None and counts.totals is not None and inside and spec.every_ns is None:
            engine.add_rows(result, seg, counts, counts.totals, None)
            result.frames_counted += len(entries)
            continue
        frame_rows: list[list[int] | None] | None = None
        if counts is not None:
            try:
                frame_rows = counts.frames
            except ValueError as exc:
                reader.damage.append(Damage(seg.path.name, index.end, f"footer counts unusable "
                                                                      f"({exc}); its frames are read instead"))
        every = spec.every_ns
        for pos, entry in enumerate(entries):
            if not query.frame_test(seg, entry):
                continue
            rows_of = frame_rows[pos] if frame_rows is not None else None
            if (rows_of is not None and (lo is None or entry.ts_min >= lo)
                    and (hi is None or entry.ts_max <= hi)
                    and (every is None or entry.ts_min // every == entry.ts_max // every)):
                engine.add_rows(result, seg, counts, rows_of,  # type: ignore[arg-type]
                                None if every is None else entry.ts_min // every)
                result.frames_counted += 1
            else:
                to_read.append((seg.path, entry))
    engine.flush_rows(result)
    n_workers = _worker_count() if workers is None else workers
    if n_workers > 1 and len(to_read) >= MIN_PARALLEL_FRAMES:
        _read_parallel(reader, engine, to_read, result, n_workers)
    else:
        _read_frames(reader, engine, to_read, result)
    result.range_ns = None
    start = lo if lo is not None else spool_lo
    end = hi if hi is not None else spool_hi
    if start is not None and end is not None:
        result.range_ns = (start, end)
    result.damage = reader.damage[damage_from:]
    return result


class _Engine:
    """What one query and spec need, derived once; counts rows and frames."""

    def __init__(self, query: Query, spec: StatsSpec) -> None:
        self.query = query
        self.spec = spec
        self.by = spec.by
        self.index_answers = (spec.use_index and not spec.numeric and INDEX_FIELDS.issuperset(spec.by)
                              and query.grep is None and not query.matches)
        # the rule applied to a count row: the query without its time range
        # (a frame counted from the index lies wholly inside it)
        self.row_query = dataclasses.replace(query, since_ns=None, until_ns=None)
        self.from_columns = not spec.numeric and COLUMN_FIELDS.issuperset(spec.by)
        self.identity = not _IDENTITY_FIELDS.isdisjoint(spec.by + spec.numeric)
        # what in a record's field map can make its journal view of the --by
        # fields differ from its columns, or make Query.verify() drop it (a
        # raw or missing PRIORITY for -p, a missing MESSAGE for -g): such
        # records are built and looked at one by one
        needles = [name.encode() for name in ("PRIORITY", "SYSLOG_IDENTIFIER", "_HOSTNAME")
                   if name in spec.by]
        if query.priorities is not None and b"PRIORITY" not in needles:
            needles.append(b"PRIORITY")
        if needles or query.grep is not None:
            needles.append(b"_HOSTLOG_ABSENT")
        self.needles = needles
        # per segment (by its salt): count row -> group key, or _REJECTED
        self._row_cache: dict[bytes, dict[tuple[int, ...], Any]] = {}
        # what add_rows() counted, by bucket and group, until flush_rows()
        self._by_bucket: dict[int | None, dict[GroupKey, int]] = {}

    # -- 1. count rows from the index ------------------------------------------
    def add_rows(self, result: StatsResult, seg: SegmentReader, counts: SegmentCounts,
                 flat: list[int], bucket: int | None) -> None:
        cache = self._row_cache.setdefault(seg.header.salt, {})
        get = cache.get
        here = self._by_bucket.setdefault(bucket, {})
        here_get = here.get
        it = iter(flat)
        for h, s, a, sev, u, x, n in zip(it, it, it, it, it, it, it):  # index.ROW_WIDTH values
            key = (h, s, a, sev, u, x)
            group = get(key)
            if group is None:
                group = cache[key] = self._decide(counts, key)
            if group is not _REJECTED:
                here[group] = here_get(group, 0) + n

    def flush_rows(self, result: StatsResult) -> None:
        """Add what add_rows() gathered to the result's counts."""
        out = result.counts
        for bucket, groups in self._by_bucket.items():
            for group, n in groups.items():
                cell = (group, bucket)
                out[cell] = out.get(cell, 0) + n
        self._by_bucket.clear()

    def _decide(self, counts: SegmentCounts, key: tuple[int, ...]) -> Any:
        """The group of a count row's records, or _REJECTED if the query does
        not select them: the query's own rule, on a record made of the row."""
        record = _row_record(counts, key)
        if not self.row_query.record_test(record):
            return _REJECTED
        return tuple(tuple(field_values(record, name)) for name in self.by)

    # -- 2. frames read ---------------------------------------------------------
    def add_frame(self, result: StatsResult, reader: SpoolReader, seg: SegmentReader,
                  entry: IndexEntry) -> None:
        result.frames_read += 1
        piece = frame_selected(reader, seg, entry, self.query, columnar=self.from_columns,
                               identity=self.identity)
        if isinstance(piece, ColumnPick):
            if piece.idx:
                self._add_columns(result, piece)
            return
        self._add_records(result, (r for _, r in piece))

    def _add_columns(self, result: StatsResult, pick: ColumnPick) -> None:
        cols, idx = pick.cols, pick.idx
        special = cols.holding(FIELDS, self.needles) if self.needles else set()
        if special:
            plain = [i for i in idx if i not in special]
            odd = [i for i in idx if i in special]
        else:
            plain, odd = idx, []
        every = self.spec.every_ns
        parts: list[Iterable[Any]] = []
        for name in self.by:
            column = _column_for(cols, name)
            parts.append(map(column.__getitem__, plain))
        if every is not None:
            ts = cols.ts()
            parts.append(map(floordiv, map(ts.__getitem__, plain), repeat(every)))
        counted: Counter[Any] = Counter(zip(*parts)) if parts else Counter({(): len(plain)})
        out = result.counts
        names: dict[tuple[str, Any], tuple[bytes, ...]] = {}
        strings = cols.strings
        for ids, n in counted.items():
            group = []
            for name, value in zip(self.by, ids):
                got = names.get((name, value))
                if got is None:
                    got = names[(name, value)] = _column_value(strings, name, value)
                group.append(got)
            cell = (tuple(group), ids[-1] if every is not None else None)
            out[cell] = out.get(cell, 0) + n
        if odd:
            records = cols.records(odd, identity=self.identity)
            self._add_records(result, (r for r in records if pick.verify(r)))

    def _add_records(self, result: StatsResult, records: Iterable[Record]) -> None:
        by, every = self.by, self.spec.every_ns
        counts, sums, values = result.counts, result.sums, result.values
        n_sum = len(self.spec.sum_fields)
        numeric = self.spec.numeric
        for r in records:
            group = tuple(tuple(field_values(r, name)) for name in by)
            cell = (group, None if every is None else r.ts // every)
            counts[cell] = counts.get(cell, 0) + 1
            if numeric:
                nums = [_number(field_values(r, name)) for name in numeric]
                if n_sum:
                    have = sums.get(cell)
                    if have is None:
                        have = sums[cell] = [0.0] * n_sum
                    for i in range(n_sum):
                        v = nums[i]
                        if v is not None:
                            have[i] += v
                if len(nums) > n_sum:
                    arrays = values.get(cell)
                    if arrays is None:
                        arrays = values[cell] = [array("d") for _ in self.spec.p99_fields]
                    for a, v in zip(arrays, nums[n_sum:]):
                        if v is not None:
                            a.append(v)


def _row_record(counts: SegmentCounts, key: tuple[int, ...]) -> Record:
    host, source, app, severity, unit, extra = key
    strings = counts.strings
    fields: dict[str, Any] = {}
    if extra >= 0:
        fields.update(counts.extras[extra])
    if unit >= 0:
        fields["_SYSTEMD_UNIT"] = strings[unit]
    return Record(0, "", strings[host], strings[source], strings[app], None, severity, None, fields)


def _column_for(cols: FrameColumns, name: str) -> Any:
    if name == "SYSLOG_IDENTIFIER":
        return cols.column(APP)
    if name == "PRIORITY":
        return cols.severity()
    if name == "_HOSTNAME":
        return cols.column(HOST)
    return cols.column(SOURCE)  # _HOSTLOG_SOURCE


def _column_value(strings: list[str], name: str, value: Any) -> tuple[bytes, ...]:
    """What field_values() gives for a record whose field map does not
    override ``name``: from its column value (a string index, or the severity)."""
    if name == "PRIORITY":
        return (str(value).encode(),)
    text = strings[value]
    if name == "_HOSTLOG_SOURCE":
        return (text.encode("utf-8", "surrogateescape"),)
    return (text.encode("utf-8", "surrogateescape"),) if text else ()


def _number(values: list[bytes]) -> float | None:
    """A field's (last) value as a number, or None if it is not one."""
    if not values:
        return None
    try:
        v = float(values[-1].decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _read_frames(reader: SpoolReader, engine: _Engine, frames: list[tuple[Path, IndexEntry]],
                 result: StatsResult) -> None:
    seg_path: Path | None = None
    seg: SegmentReader | None = None
    try:
        for path, entry in frames:
            if path != seg_path:
                if seg is not None:
                    seg.close()
                seg, seg_path = reader.open_segment(path), path
            if seg is None:
                continue  # removed by retention since it was listed (as for hostlog query)
            engine.add_frame(result, reader, seg, entry)
    finally:
        if seg is not None:
            seg.close()


# --- forked workers --------------------------------------------------------------------

_LENGTH = struct.Struct("<Q")


def _worker_count() -> int:
    from hostlog.query.parallel import worker_count
    return worker_count()


def _read_parallel(reader: SpoolReader, engine: _Engine, frames: list[tuple[Path, IndexEntry]],
                   result: StatsResult, workers: int) -> None:
    """Frames shared by ``workers`` forked processes (worker w: every w-th
    run of 8 frames); each sends back its counts, pickled, and the parent
    merges them. A worker that fails makes the whole count fail."""
    from hostlog.query.parallel import BATCH_FRAMES, QueryWorkerError, _read_exact, _reap, _write_all

    runs = [frames[i:i + BATCH_FRAMES] for i in range(0, len(frames), BATCH_FRAMES)]
    workers = max(1, min(workers, len(runs)))
    pids: list[int] = []
    fds: list[int] = []
    done = False
    try:
        for w in range(workers):
            rfd, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker
                os.close(rfd)
                for fd in fds:
                    os.close(fd)
                status = 1
                try:
                    part = StatsResult(engine.spec)
                    mine = [f for run in runs[w::workers] for f in run]
                    damage_from = len(reader.damage)
                    try:
                        _read_frames(reader, engine, mine, part)
                        reply: tuple[str, Any] = ("ok", (part, [str(d) for d in reader.damage[damage_from:]]))
                    except Exception as exc:  # reported to the parent, which fails
                        reply = ("error", f"{type(exc).__name__}: {exc}")
                    data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
                    _write_all(wfd, _LENGTH.pack(len(data)) + data)
                    status = 0
                finally:
                    os._exit(status)
            os.close(wfd)
            pids.append(pid)
            fds.append(rfd)
        for fd in fds:
            head = _read_exact(fd, _LENGTH.size)
            if len(head) < _LENGTH.size:
                raise QueryWorkerError("a stats worker ended without its counts")
            (size,) = _LENGTH.unpack(head)
            data = _read_exact(fd, size)
            if len(data) < size:
                raise QueryWorkerError("a stats worker's counts were cut short")
            status, payload = pickle.loads(data)  # from our own child, through our own pipe
            if status != "ok":
                raise QueryWorkerError(f"stats worker: {payload}")
            part, damage = payload
            result.merge(part)
            reader.damage.extend(_NotedDamage("", 0, text) for text in damage)
        done = True
    finally:
        for fd in fds:
            os.close(fd)
        for pid in pids:
            _reap(pid, kill=not done)


@dataclass(frozen=True, slots=True)
class _NotedDamage(Damage):
    """Damage a worker reported, as its text."""

    def __str__(self) -> str:
        return self.reason


# --- results -----------------------------------------------------------------------

def rows(result: StatsResult, *, top: int | None = None) -> list[Row]:
    """The result as output lines: groups by their total count, largest
    first (ties in the order of their values), each group's buckets oldest
    first; ``top``: the first N groups only."""
    spec = result.spec
    totals: dict[GroupKey, int] = {}
    for (group, _), n in result.counts.items():
        totals[group] = totals.get(group, 0) + n
    order = sorted(totals, key=lambda g: (-totals[g], g))
    if top is not None:
        order = order[:top]
    by_group: dict[GroupKey, list[int | None]] = {}
    for group, bucket in result.counts:
        by_group.setdefault(group, []).append(bucket)
    span_s = None
    if result.range_ns is not None and result.range_ns[1] > result.range_ns[0]:
        span_s = (result.range_ns[1] - result.range_ns[0]) / 1e9
    every = spec.every_ns
    out = []
    for group in order:
        buckets = sorted(b for b in by_group[group] if b is not None)
        for bucket in (buckets if every is not None else [None]):
            cell = (group, bucket)
            n = result.counts[cell]
            if every is not None:
                rate: float | None = n / (every / 1e9)
            else:
                rate = n / span_s if span_s else None
            sums = result.sums.get(cell)
            values = result.values.get(cell)
            out.append(Row(group, None if bucket is None or every is None else bucket * every, n, rate,
                           tuple(sums) if sums is not None else tuple(0.0 for _ in spec.sum_fields),
                           tuple(_p99(a) for a in values) if values is not None
                           else tuple(None for _ in spec.p99_fields)))
    return out


def group_rows(result: StatsResult, *, top: int | None = None) -> list[Row]:
    """One line per group (its total count, rate over the range), with its
    counts per bucket (for a sparkline) when there are buckets."""
    lines = rows(result, top=top)
    spec = result.spec
    if spec.every_ns is None:
        return lines
    first = min((r.time_ns for r in lines if r.time_ns is not None), default=0)
    last = max((r.time_ns for r in lines if r.time_ns is not None), default=0)
    width = (last - first) // spec.every_ns + 1
    span_s = None
    if result.range_ns is not None and result.range_ns[1] > result.range_ns[0]:
        span_s = (result.range_ns[1] - result.range_ns[0]) / 1e9
    merged: dict[GroupKey, list[Row]] = {}
    for r in lines:
        merged.setdefault(r.group, []).append(r)
    values: dict[GroupKey, list[array[float]]] = {}
    for (group, _), arrays in result.values.items():
        if group in merged:
            have = values.setdefault(group, [array("d") for _ in spec.p99_fields])
            for a, b in zip(have, arrays):
                a.extend(b)
    out = []
    for group, parts in merged.items():
        counts = [0] * width
        for r in parts:
            counts[(r.time_ns - first) // spec.every_ns] += r.count  # type: ignore[operator]
        total = sum(r.count for r in parts)
        sums = tuple(sum(r.sums[i] or 0.0 for r in parts) for i in range(len(spec.sum_fields)))
        p99s = tuple(_p99(a) for a in values[group]) if group in values else \
            tuple(None for _ in spec.p99_fields)
        out.append(Row(group, None, total, total / span_s if span_s else None, sums, p99s,
                       tuple(counts)))
    return out


def _p99(values: array[float]) -> float | None:
    """The 99th percentile (nearest rank: the smallest value with at least
    99% of the values at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def group_value(values: tuple[bytes, ...]) -> Any:
    """A group's value for one field, as ``hostlog query -o json --all`` prints it."""
    if not values:
        return None
    shown = [v.decode("utf-8") if is_printable(v) else list(v) for v in values]
    return shown[0] if len(shown) == 1 else shown


def _rfc3339(ns: int) -> str:
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        stamp += f".{frac:09d}".rstrip("0")
    return stamp + "Z"


def _obj(row: Row, spec: StatsSpec) -> dict[str, Any]:
    obj: dict[str, Any] = {name: group_value(v) for name, v in zip(spec.by, row.group)}
    if spec.every_ns is not None and row.time_ns is not None:
        obj["time"] = _rfc3339(row.time_ns)
    obj["count"] = row.count
    obj["rate"] = row.rate
    for name, v in zip(spec.sum_fields, row.sums):
        obj[f"sum_{name}"] = v
    for name, v in zip(spec.p99_fields, row.p99s):
        obj[f"p99_{name}"] = v
    return obj


def render_json(lines: list[Row], spec: StatsSpec) -> Iterator[str]:
    """JSON lines: one object per group and bucket."""
    for row in lines:
        yield json.dumps(_obj(row, spec), ensure_ascii=False, separators=(",", ":")) + "\n"


def render_csv(lines: list[Row], spec: StatsSpec) -> str:
    """CSV with a header line; a value that is not one text is written as JSON."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = list(spec.by) + (["time"] if spec.every_ns is not None else []) + ["count", "rate"]
    header += [f"sum_{n}" for n in spec.sum_fields] + [f"p99_{n}" for n in spec.p99_fields]
    writer.writerow(header)
    for row in lines:
        obj = _obj(row, spec)
        writer.writerow(["" if obj.get(h) is None else obj[h] if isinstance(obj[h], (str, int, float))
                         else json.dumps(obj[h]) for h in header])
    return buf.getvalue()


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(counts: tuple[int, ...] | list[int], width: int = 48) -> str:
    """Counts per bucket as a line of block characters (a blank for none),
    scaled to the largest; more buckets than ``width`` are summed in runs."""
    if not counts:
        return ""
    step = max(1, math.ceil(len(counts) / width))
    cells = [sum(counts[i:i + step]) for i in range(0, len(counts), step)]
    top = max(cells)
    if top <= 0:
        return " " * len(cells)
    return "".join(" " if c <= 0 else _BARS[min(len(_BARS) - 1, (c * len(_BARS) - 1) // top)]
                   for c in cells)


def render_table(result: StatsResult, *, top: int | None = None, spark: bool = False) -> str:
    """A table, one line per group: its fields, count, rate per second over
    the range, sums and 99th percentiles; with ``spark`` and ``--every``, a
    sparkline of its counts per bucket."""
    spec = result.spec
    lines = group_rows(result, top=top) if spark and spec.every_ns is not None else rows(result, top=top)
    header = list(spec.by) + (["TIME"] if spec.every_ns is not None and not spark else [])
    header += ["COUNT", "RATE/S"] + [f"SUM({n})" for n in spec.sum_fields]
    header += [f"P99({n})" for n in spec.p99_fields]
    show_spark = spark and spec.every_ns is not None
    if show_spark:
        header.append(f"PER {_span_text(spec.every_ns)}")  # type: ignore[arg-type]
    table = [header]
    for row in lines:
        cells = [_cell(group_value(v)) for v in row.group]
        if spec.every_ns is not None and not spark:
            cells.append(_rfc3339(row.time_ns) if row.time_ns is not None else "")
        cells += [str(row.count), _num(row.rate)] + [_num(v) for v in row.sums] + [_num(v) for v in row.p99s]
        if show_spark:
            cells.append(sparkline(row.buckets))
        table.append(cells)
    numeric_from = len(spec.by) + (1 if spec.every_ns is not None and not spark else 0)
    numeric_to = len(header) - (1 if show_spark else 0)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out = []
    for r in table:
        parts = [c.rjust(w) if numeric_from <= i < numeric_to else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(parts).rstrip() + "\n")
    return "".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value)


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e6 else f"{v:.4f}".rstrip("0").rstrip(".")


def _span_text(ns: int) -> str:
    for unit, size in (("d", 86400 * 10**9), ("h", 3600 * 10**9), ("min", 60 * 10**9), ("s", 10**9),
                       ("ms", 10**6)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"
