"""Chunk layout version 1: a batch encoded by column with msgpack.

The layout is in docs/format.md ("The chunk"): one msgpack array of
``[version, n, strings, ts_base, ts_deltas, host, source, app, pid,
severity, facility, msg, fields, origin, seq_base, seq_deltas]``. This module
and :mod:`hostlog.chunk.v1_columns` are the only places that know it.
Columns compress far better than rows under LZ4, and a batch costs one
``msgpack.packb`` call instead of one per record.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from operator import sub
from typing import Any, TypeVar

import msgpack

from hostlog.errors import ChunkError
from hostlog.record import Columns, Record, record_columns

__all__ = ["CHUNK_VERSION", "decode_chunk", "decode_columns", "encode_chunk", "encode_columns"]

#: Bumped on any incompatible change of the chunk layout; readers refuse others.
CHUNK_VERSION = 1

T = TypeVar("T")


def _deltas(values: Sequence[int]) -> list[int]:
    # Timestamps and sequence numbers of one batch are close together: small
    # deltas pack into 1-3 bytes each instead of 9. (A C-level map: values[0]
    # minus itself, then each value minus the one before.)
    return list(map(sub, values, chain(values[:1], values)))


def _distinct(column: Sequence[T]) -> dict[T, None]:
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


def encode_chunk(records: Sequence[Record]) -> bytes:
    """Encode records as one columnar chunk (see docs/format.md)."""
    if not records:
        empty: bytes = msgpack.packb([CHUNK_VERSION, 0])
        return empty
    return encode_columns(record_columns(records))


def encode_columns(columns: Sequence[Sequence[Any]]) -> bytes:
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
        packed: bytes = msgpack.packb(chunk, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ChunkError(f"record does not encode: {exc}") from exc
    return packed


def _unpack(data: bytes) -> tuple[int, list[Any]]:
    """The chunk's record count and its 16 columns (checked for shape);
    ChunkError if it is not a version 1 chunk."""
    try:
        columns = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ChunkError(f"chunk is not valid msgpack: {exc}") from exc
    if not isinstance(columns, list) or len(columns) < 2:
        raise ChunkError("chunk is not a column array")
    if columns[0] != CHUNK_VERSION:
        raise ChunkError(f"chunk version {columns[0]!r} is not supported (want {CHUNK_VERSION})")
    n = columns[1]
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ChunkError(f"chunk record count {n!r} is not a count")
    if n == 0:
        return 0, columns
    if len(columns) != 16:
        raise ChunkError(f"chunk has {len(columns)} columns, want 16")
    (_, _, strings, ts_base, ts_deltas, host_idx, source_idx, app_idx, pids,
     severities, facilities, msgs, fields, origin_idx, seq_base, seq_deltas) = columns
    try:
        if any(len(c) != n for c in (ts_deltas, host_idx, source_idx, app_idx, pids,
                                     severities, facilities, msgs, fields, origin_idx,
                                     seq_deltas)):
            raise ChunkError("chunk columns differ in length")
    except TypeError as exc:
        raise ChunkError(f"chunk columns are malformed: {exc}") from exc
    # (fuzzed chunks: a string table that is a map, a fields row that is not one)
    if not isinstance(strings, list) or any(type(row) is not dict for row in fields):
        raise ChunkError("chunk string table or fields column is malformed")
    return n, columns


def decode_chunk(data: bytes) -> list[Record]:
    """Decode a chunk made by :func:`encode_chunk`; raise ChunkError if it is not one."""
    n, columns = _unpack(data)
    if n == 0:
        return []
    (_, _, strings, ts_base, ts_deltas, host_idx, source_idx, app_idx, pids,
     severities, facilities, msgs, fields, origin_idx, seq_base, seq_deltas) = columns
    try:
        ts = _undeltas(ts_base, ts_deltas)
        seq = _undeltas(seq_base, seq_deltas)
        return [
            Record(ts=ts[i], msg=msgs[i], host=strings[host_idx[i]],
                   source=strings[source_idx[i]], app=strings[app_idx[i]],
                   pid=pids[i], severity=severities[i], facility=facilities[i],
                   fields=fields[i], origin=strings[origin_idx[i]], seq=seq[i])
            for i in range(n)
        ]
    except (TypeError, IndexError, KeyError) as exc:  # (KeyError: an index column that is a map)
        raise ChunkError(f"chunk columns are malformed: {exc}") from exc


def decode_columns(data: bytes) -> Columns:
    """Decode a chunk into a batch (the columns of :class:`hostlog.record.Columns`),
    without a Record per row: what a receiver of forwarded chunks hands its
    spool writer. ChunkError if it is not a chunk."""
    n, columns = _unpack(data)
    if n == 0:
        return Columns.empty()
    (_, _, strings, ts_base, ts_deltas, host_idx, source_idx, app_idx, pids,
     severities, facilities, msgs, fields, origin_idx, seq_base, seq_deltas) = columns
    try:
        pick = strings.__getitem__
        return Columns([
            _undeltas(ts_base, ts_deltas), list(map(pick, host_idx)), list(map(pick, source_idx)),
            list(map(pick, app_idx)), pids, severities, facilities, msgs, fields,
            list(map(pick, origin_idx)), _undeltas(seq_base, seq_deltas)])
    except (TypeError, IndexError, KeyError) as exc:  # (KeyError: an index column that is a map)
        raise ChunkError(f"chunk columns are malformed: {exc}") from exc
