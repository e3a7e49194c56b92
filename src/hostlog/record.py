"""The record model and the columnar chunk codec.

Pure: no I/O, and no import from the rest of hostlog, so every other part
(collectors, spool, forwarders, query) can depend on it and nothing else.

A *chunk* is a batch of records encoded by column with msgpack (format in
docs/format.md). Columns compress far better than rows under LZ4, and a batch
costs one ``msgpack.packb`` call instead of one per record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from operator import sub
from typing import Sequence

import msgpack

__all__ = [
    "CHUNK_VERSION",
    "ChunkError",
    "Columns",
    "Record",
    "SEVERITY_NAMES",
    "decode_chunk",
    "encode_chunk",
    "encode_columns",
    "record_columns",
]

#: Bumped on any incompatible change of the chunk layout; readers refuse others.
CHUNK_VERSION = 1

#: syslog severities, index = numeric value (RFC 5424 section 6.2.1).
SEVERITY_NAMES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


class ChunkError(ValueError):
    """A chunk that does not decode: wrong version, wrong shape, bad msgpack."""


@dataclass(slots=True)
class Record:
    """One log event, whatever its source.

    ``msg`` is ``str`` when the source bytes were valid UTF-8 and ``bytes``
    otherwise, so nothing is lost or replaced. ``origin`` and ``seq`` are the
    identity of the record: the agent that first accepted it, and that agent's
    sequence number for it (1, 2, 3, ...; 0 means "not yet accepted").
    """

    ts: int  # event time, ns since the epoch, UTC
    msg: str | bytes
    host: str = ""
    source: str = ""
    app: str = ""
    pid: int | None = None
    severity: int = 6  # info
    facility: int | None = None
    # a field with several values (journald allows it) holds a list of them
    fields: dict[str, str | bytes | list[str | bytes]] = field(default_factory=dict)
    origin: str = ""
    seq: int = 0


def _deltas(values: list[int]) -> list[int]:
    # Timestamps and sequence numbers of one batch are close together: small
    # deltas pack into 1-3 bytes each instead of 9. (A C-level map: values[0]
    # minus itself, then each value minus the one before.)
    return list(map(sub, values, chain(values[:1], values)))


def _distinct(column: list) -> dict:
    """The column's values, each once, in order of first appearance."""
    # Source and origin (often host too) hold one value per batch: counting
    # that value is a pointer comparison per row, far cheaper than hashing.
    first = column[0]
    if column.count(first) == len(column):
        return {first: None}
    return dict.fromkeys(column)


def _undeltas(base: int, deltas: list[int]) -> list[int]:
    out = [0] * len(deltas)
    acc = base
    for i, d in enumerate(deltas):
        acc += d
        out[i] = acc
    return out


#: Record attributes in the order :func:`record_columns` returns them.
COLUMNS = ("ts", "host", "source", "app", "pid", "severity", "facility", "msg", "fields",
           "origin", "seq")


def record_columns(records: Sequence[Record]) -> list[list]:
    """The records' attributes as one list per attribute, in :data:`COLUMNS` order."""
    # (a list comprehension per attribute: faster than map(attrgetter) here)
    return [[r.ts for r in records], [r.host for r in records], [r.source for r in records],
            [r.app for r in records], [r.pid for r in records], [r.severity for r in records],
            [r.facility for r in records], [r.msg for r in records],
            [r.fields for r in records], [r.origin for r in records], [r.seq for r in records]]


class Columns:
    """A batch of records held as one list per attribute, in :data:`COLUMNS` order.

    What a fast collector hands the spool instead of a list of Records: it
    never makes an object per record, and the spool encodes the lists as they
    are. Several rows may share one ``fields`` dict, so rows are read-only;
    :meth:`records` makes Records of their own (with their own dicts).

    Two things the maker of a batch may know for free, and the spool would
    otherwise find with a pass over every row:

    * ``text_size``: the bytes of message text, or more (e.g. the size of
      the raw input the batch was read from); see :meth:`text_bytes`.
    * ``fields_pool``: dicts of which every row's ``fields`` is one (by
      identity); more dicts than that is fine. The spool's frame index (apps,
      severities) reads these instead of every row's.
    """

    __slots__ = ("columns", "text_size", "fields_pool")

    def __init__(self, columns: list[list], *, text_size: int | None = None,
                 fields_pool: list[dict] | None = None) -> None:
        if len(columns) != len(COLUMNS) or len(set(map(len, columns))) > 1:
            raise ValueError(f"Columns wants {len(COLUMNS)} lists of one length")
        self.columns = columns
        self.text_size = text_size
        self.fields_pool = fields_pool

    @classmethod
    def of(cls, records: Sequence[Record]) -> Columns:
        return cls(record_columns(records))

    def __len__(self) -> int:
        return len(self.columns[0])

    def __iter__(self):  # noqa: ANN204 - an iterator of Records
        return iter(self.records())

    def records(self) -> list[Record]:
        ts, host, source, app, pid, severity, facility, msg, fields, origin, seq = self.columns
        return list(map(Record, ts, msg, host, source, app, pid, severity, facility,
                        map(dict.copy, fields), origin, seq))

    def text_bytes(self) -> int:
        """Characters (or bytes) of message text, or the larger size the maker
        gave (``text_size``): what frame size limits count."""
        if self.text_size is None:
            self.text_size = sum(map(len, self.columns[7]))
        return self.text_size

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` rows (``text_size`` and ``fields_pool`` stay
        as they are: still at least what is left)."""
        for column in self.columns:
            del column[n:]

    def slice(self, start: int, stop: int) -> Columns:
        """Rows ``start`` to ``stop`` (exclusive) as a batch of their own: the
        column lists are copied, the rows' values (and shared ``fields``
        dicts) are not. ``fields_pool`` is kept (a bound of what the rows
        use); ``text_size`` is not, and is measured when asked for."""
        return Columns([column[start:stop] for column in self.columns],
                       fields_pool=self.fields_pool)

    def extend(self, other: Columns | Sequence[Record]) -> None:
        if isinstance(other, Columns):
            more, pool, size = other.columns, other.fields_pool, other.text_bytes()
        else:
            more, pool, size = record_columns(other), None, sum(len(r.msg) for r in other)
        self.text_size = self.text_bytes() + size
        self.fields_pool = None if pool is None or self.fields_pool is None \
            else self.fields_pool + pool
        for column, added in zip(self.columns, more):
            column.extend(added)


def encode_chunk(records: Sequence[Record]) -> bytes:
    """Encode records as one columnar chunk (see docs/format.md)."""
    if not records:
        return msgpack.packb([CHUNK_VERSION, 0])
    return encode_columns(record_columns(records))


def encode_columns(columns: list[list]) -> bytes:
    """:func:`encode_chunk` of records given as :func:`record_columns` (not empty).

    Per-record work is C-level (``map`` over the columns), so a batch costs
    a few passes over lists and one ``msgpack.packb`` call. A seq column
    given as a ``range`` (the spool stamps new records so) needs no delta pass.
    """
    ts, host, source, app, pid, severity, facility, msg, fields, origin, seq = columns
    # The string table: host, source, app and origin values, each once, in
    # order of first appearance (dict.fromkeys keeps it; update adds new keys
    # at the end and leaves the old ones in place).
    distinct = [_distinct(host), _distinct(source), _distinct(app), _distinct(origin)]
    table = distinct[0].copy()
    for d in distinct[1:]:
        table.update(d)
    index = dict(zip(table, range(len(table))))
    at = index.__getitem__
    n = len(ts)
    host_idx, source_idx, app_idx, origin_idx = (
        [at(next(iter(d)))] * n if len(d) == 1 else list(map(at, column))  # one value: no map
        for d, column in zip(distinct, (host, source, app, origin)))
    chunk = [
        CHUNK_VERSION,
        n,
        list(table),
        ts[0],
        _deltas(ts),
        host_idx,
        source_idx,
        app_idx,
        pid,
        bytes(severity),
        facility,
        msg,
        fields,
        origin_idx,
        seq[0],
        [0] + [1] * (n - 1) if type(seq) is range and seq.step == 1 else _deltas(seq),
    ]
    try:
        return msgpack.packb(chunk, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ChunkError(f"record does not encode: {exc}") from exc


def decode_chunk(data: bytes) -> list[Record]:
    """Decode a chunk made by :func:`encode_chunk`; raise ChunkError if it is not one."""
    try:
        columns = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ChunkError(f"chunk is not valid msgpack: {exc}") from exc
    if not isinstance(columns, list) or len(columns) < 2:
        raise ChunkError("chunk is not a column array")
    if columns[0] != CHUNK_VERSION:
        raise ChunkError(f"chunk version {columns[0]!r} is not supported (want {CHUNK_VERSION})")
    n = columns[1]
    if n == 0:
        return []
    if len(columns) != 16:
        raise ChunkError(f"chunk has {len(columns)} columns, want 16")
    (_, _, strings, ts_base, ts_deltas, host_idx, source_idx, app_idx, pids,
     severities, facilities, msgs, fields, origin_idx, seq_base, seq_deltas) = columns
    try:
        if any(len(c) != n for c in (ts_deltas, host_idx, source_idx, app_idx, pids,
                                     severities, facilities, msgs, fields, origin_idx,
                                     seq_deltas)):
            raise ChunkError("chunk columns differ in length")
        ts = _undeltas(ts_base, ts_deltas)
        seq = _undeltas(seq_base, seq_deltas)
        return [
            Record(ts=ts[i], msg=msgs[i], host=strings[host_idx[i]],
                   source=strings[source_idx[i]], app=strings[app_idx[i]],
                   pid=pids[i], severity=severities[i], facility=facilities[i],
                   fields=fields[i], origin=strings[origin_idx[i]], seq=seq[i])
            for i in range(n)
        ]
    except (TypeError, IndexError) as exc:
        raise ChunkError(f"chunk columns are malformed: {exc}") from exc
