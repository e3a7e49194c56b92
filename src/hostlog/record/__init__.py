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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COLUMNS",
    "Batch",
    "Columns",
    "OnDurable",
    "Record",
    "SEVERITY_NAMES",
    "record_columns",
]

#: syslog severities, index = numeric value (RFC 5424 section 6.2.1).
SEVERITY_NAMES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


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


def _column(i: int) -> Any:
    """A named view of column ``i`` of a :class:`Columns` (get and replace)."""
    def get(self: Columns) -> list:
        return self.columns[i]

    def put(self: Columns, value: list) -> None:
        self.columns[i] = value
    return property(get, put, doc=f"column {COLUMNS[i]!r}")


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
    ts: list[int] = _column(0)  # type: ignore[assignment]
    host: list[str] = _column(1)  # type: ignore[assignment]
    source: list[str] = _column(2)  # type: ignore[assignment]
    app: list[str] = _column(3)  # type: ignore[assignment]
    pid: list[int | None] = _column(4)  # type: ignore[assignment]
    severity: list[int] = _column(5)  # type: ignore[assignment]
    facility: list[int | None] = _column(6)  # type: ignore[assignment]
    msg: list[str | bytes] = _column(7)  # type: ignore[assignment]
    fields: list[dict[str, Any]] = _column(8)  # type: ignore[assignment]
    origin: list[str] = _column(9)  # type: ignore[assignment]
    seq: list[int] = _column(10)  # type: ignore[assignment]

    def __init__(self, columns: list[list], *, text_size: int | None = None,
                 fields_pool: list[dict] | None = None) -> None:
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
    def empty(cls, *, fields_pool: list[dict] | None = None) -> Columns:
        """A batch of no rows (what carries a durability callback alone)."""
        return cls([[] for _ in COLUMNS], text_size=0, fields_pool=fields_pool)

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
