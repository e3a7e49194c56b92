"""The record model and the batch.

Pure: no I/O, and no import from the rest of hostlog, so every other part
(chunk, collectors, spool, forwarders, query) can depend on it.

A :class:`Record` is one log event; a batch (:class:`Columns`, also named
:data:`Batch`) holds records by column, one list per attribute, read by
name (``batch.app``, ``batch.msg``, ...), with a row view (:meth:`Columns.records`)
for code that wants Records. How a batch is encoded on disk is the chunk
codec's business (``hostlog.chunk``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast, overload

T = TypeVar("T")

__all__ = [
    "COLUMNS",
    "Batch",
    "Columns",
    "FieldValue",
    "Fields",
    "OnDurable",
    "Record",
    "SEVERITY_NAMES",
    "record_columns",
]

#: syslog severities, index = numeric value (RFC 5424 section 6.2.1).
SEVERITY_NAMES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

#: The value of one of :attr:`Record.fields`: a field with several values
#: (journald allows it) holds a list of them.
FieldValue = str | bytes | list[str | bytes]
#: What :attr:`Record.fields` holds.
Fields = dict[str, FieldValue]


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
    fields: Fields = field(default_factory=dict)
    origin: str = ""
    seq: int = 0


#: Record attributes in the order :func:`record_columns` returns them.
COLUMNS = ("ts", "host", "source", "app", "pid", "severity", "facility", "msg", "fields",
           "origin", "seq")


def record_columns(records: Sequence[Record]) -> list[list[Any]]:
    """The records' attributes as one list per attribute, in :data:`COLUMNS` order."""
    # (a list comprehension per attribute: faster than map(attrgetter) here)
    return [[r.ts for r in records], [r.host for r in records], [r.source for r in records],
            [r.app for r in records], [r.pid for r in records], [r.severity for r in records],
            [r.facility for r in records], [r.msg for r in records],
            [r.fields for r in records], [r.origin for r in records], [r.seq for r in records]]


class _Column(Generic[T]):
    """A named view of one column of a :class:`Columns` (read and replace)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.__doc__ = f"column {COLUMNS[index]!r}"

    @overload
    def __get__(self, batch: None, owner: type) -> _Column[T]: ...
    @overload
    def __get__(self, batch: Columns, owner: type) -> list[T]: ...
    def __get__(self, batch: Columns | None, owner: type) -> list[T] | _Column[T]:
        if batch is None:
            return self
        return batch.columns[self.index]

    def __set__(self, batch: Columns, value: Sequence[T]) -> None:
        # a list, or a range (the spool's stamped seq, which the codec reads
        # as it is and nothing extends): stored as it is, typed as the lists
        batch.columns[self.index] = cast("list[Any]", value)


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

    # The columns by name (each a list, one value per row; ``seq`` may be a
    # range once the spool has stamped the batch). Code outside the chunk
    # codec reads and replaces columns through these, never by position.
    ts = _Column[int](0)
    host = _Column[str](1)
    source = _Column[str](2)
    app = _Column[str](3)
    pid = _Column[int | None](4)
    severity = _Column[int](5)
    facility = _Column[int | None](6)
    msg = _Column[str | bytes](7)
    fields = _Column[dict[str, Any]](8)
    origin = _Column[str](9)
    seq = _Column[int](10)

    def __init__(self, columns: list[list[Any]], *, text_size: int | None = None,
                 fields_pool: list[dict[str, Any]] | None = None) -> None:
        if len(columns) != len(COLUMNS) or len(set(map(len, columns))) > 1:
            raise ValueError(f"Columns wants {len(COLUMNS)} lists of one length")
        self.columns = columns
        self.text_size = text_size
        self.fields_pool = fields_pool

    @classmethod
    def of(cls, records: Sequence[Record]) -> Columns:
        """Records as a batch (the row view's inverse)."""
        return cls(record_columns(records))

    @classmethod
    def empty(cls, *, fields_pool: list[dict[str, Any]] | None = None) -> Columns:
        """A batch of no rows (what carries a durability callback alone)."""
        return cls([[] for _ in COLUMNS], text_size=0, fields_pool=fields_pool)

    def __len__(self) -> int:
        return len(self.columns[0])

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records())

    def records(self) -> list[Record]:
        ts, host, source, app, pid, severity, facility, msg, fields, origin, seq = self.columns
        return list(map(Record, ts, msg, host, source, app, pid, severity, facility,
                        map(dict.copy, fields), origin, seq))

    def text_bytes(self) -> int:
        """Characters (or bytes) of message text, or the larger size the maker
        gave (``text_size``): what frame size limits count."""
        if self.text_size is None:
            self.text_size = sum(map(len, self.msg))
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

    def extend(self, other: Columns) -> None:
        """Append the rows of another batch."""
        size, pool = other.text_bytes(), other.fields_pool
        self.text_size = self.text_bytes() + size
        self.fields_pool = None if pool is None or self.fields_pool is None \
            else self.fields_pool + pool
        for column, added in zip(self.columns, other.columns):
            column.extend(added)


#: The one batch type that flows from collectors to the spool writer.
Batch = Columns

#: Called on the loop with the spool's durable seq once a batch's last record is durable.
OnDurable = Callable[[int], None]
