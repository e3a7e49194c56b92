"""Journal entries -> :class:`~hostlog.record.Columns`, a batch at a time.

Pure (no I/O): the journald collector's mapping step, kept apart so it can
be tested against :func:`hostlog.journal.fields.journal_to_record`,
whose answer it gives for every entry (same attributes, same ``fields`` in
the same order).

Why a second implementation: ``journal_to_record`` costs ~15 µs an entry
(a Python loop over every field, a Record, then columns again in the spool),
four times what ``journalctl -o export`` needs for the whole entry. Here the
common entry -- every field once, all of it UTF-8, the core fields
well-formed -- costs a few C-level passes per batch:

* every value of a chunk of entries is joined with NUL and decoded once
  (UTF-8 is self-synchronising, so the joined bytes decode exactly when
  each value does; a value holding a NUL shows as one part too many);
* the decoded parts are zipped back onto the entries' field names, one dict
  per entry, and the core fields are popped out of those dicts into columns;
* core values repeat (hosts, identifiers, pids, facilities): each distinct
  one is checked once.

Whatever does not fit -- a repeated field (libsystemd returns a list), bytes
that are not UTF-8, a reserved name, a core field that is missing, empty or
not canonical -- goes through ``journal_to_record`` itself, entry by entry,
so the rules live in one place.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from itertools import chain, repeat
from operator import mul

from hostlog.journal.fields import journal_to_record
from hostlog.record import Columns

__all__ = ["CHUNK_ENTRIES", "JournalEntry", "columns_of", "entries_to_columns"]

#: A raw entry as libsystemd gives it (``Reader._get_all``): field name ->
#: value, or the list of values of a repeated field.
JournalEntry = dict[str, "bytes | list[bytes]"]

#: Entries decoded together; an entry the joined decode refuses sends only
#: its own chunk down the entry-by-entry path.
CHUNK_ENTRIES = 512

_SEVERITIES = {str(i): i for i in range(8)}  # PRIORITY as journal_to_record reads it
_CANONICAL_UINT = re.compile(r"0|[1-9][0-9]{0,18}")
_BAD = -1  # a core value the fast path cannot take as it is


def entries_to_columns(entries: Sequence[JournalEntry], realtime: Sequence[int],
                       monotonic: Sequence[int], hostname: str) -> Columns:
    """The records ``journal_to_record`` makes of ``entries`` (``source`` =
    ``journald``; ``host`` = ``hostname`` when the entry has none), as Columns.

    ``realtime`` and ``monotonic`` are each entry's ``__REALTIME_TIMESTAMP``
    and ``__MONOTONIC_TIMESTAMP`` in µs (libsystemd keeps them outside the
    entry's fields). Each row has a ``fields`` dict of its own.
    """
    n = len(entries)
    if not (len(realtime) == len(monotonic) == n):
        raise ValueError("entries, realtime and monotonic differ in length")
    out: list[list] = [[] for _ in range(8)]  # ts, host, app, pid, severity, facility, msg, fields
    for start in range(0, n, CHUNK_ENTRIES):
        end = min(start + CHUNK_ENTRIES, n)
        args = (entries[start:end], realtime[start:end], monotonic[start:end], hostname)
        part = _fast(*args)
        if part is None:  # one entry spoiled the joined decode: each on its own
            part = [[] for _ in range(8)]
            for one in zip(*args[:3]):
                single = _fast([one[0]], [one[1]], [one[2]], hostname) or _slow(*one, hostname)
                for column, value in zip(part, single):
                    column.extend(value)
        for column, added in zip(out, part):
            column.extend(added)
    ts, host, app, pid, severity, facility, msg, fields = out
    return Columns([ts, host, ["journald"] * n, app, pid, severity, facility, msg, fields,
                    [""] * n, [0] * n])


def columns_of(ts: list[int], host: list, app: list, pid: list, severity: list,
               facility: list, msg: list, fields: list,
               redo: Sequence[tuple[int, JournalEntry, int, int]], hostname: str) -> Columns:
    """Columns of rows read elsewhere (the compiled reader), with the rows
    it left to ``journal_to_record`` -- ``redo``: (row, raw entry, realtime,
    monotonic) -- mapped here."""
    columns = [ts, host, app, pid, severity, facility, msg, fields]
    for row, entry, realtime, monotonic in redo:
        for column, value in zip(columns, _slow(entry, realtime, monotonic, hostname)):
            column[row] = value[0]
    n = len(ts)
    return Columns([ts, host, ["journald"] * n, app, pid, severity, facility, msg, fields,
                    [""] * n, [0] * n])


def _fast(entries: Sequence[JournalEntry], realtime: Sequence[int], monotonic: Sequence[int],
          hostname: str) -> list[list] | None:
    """The columns of ``entries``, or None when their values do not decode
    together (then no entry of them is taken here)."""
    values = list(chain.from_iterable(map(dict.values, entries)))
    try:
        # TypeError: a list (a repeated field)
        text = b"\x00".join(values).decode("utf-8")  # type: ignore[arg-type]
    except (TypeError, UnicodeDecodeError):
        return None
    parts = text.split("\x00")
    if len(parts) != len(values):  # a value holds a NUL (or there are no values)
        return None
    names = "\x00" + "\x00".join(chain.from_iterable(entries))
    if "\x00__" in names or "\x00_HOSTLOG_" in names:  # names journal_to_record drops
        return None
    # zip stops at the end of each entry's names without taking from `parts`
    parts_left = iter(parts)
    fields: list[dict] = list(map(dict, map(zip, entries, repeat(parts_left))))
    taken = [list(map(dict.pop, fields, repeat(name), repeat(None)))
             for name in ("_HOSTNAME", "SYSLOG_IDENTIFIER", "_PID", "PRIORITY",
                          "SYSLOG_FACILITY", "MESSAGE")]
    hosts, apps, pids, prios, facilities, msgs = taken
    severity = list(map(_SEVERITIES.get, prios))
    pid = list(map(_uints(pids, 1 << 64).__getitem__, pids))
    facility = list(map(_uints(facilities, 23).__getitem__, facilities))
    # Rows journal_to_record must map: it keeps raw values in fields, lists
    # absent core fields, or falls back to _COMM for the app.
    slow: set[int] = set()
    for column, odd in ((hosts, ""), (apps, None), (apps, ""), (msgs, None), (severity, None),
                        (pid, _BAD), (facility, _BAD)):
        if odd in column:
            slow.update(i for i, v in enumerate(column) if v is odd or v == odd)
    if None in hosts:
        hosts = [hostname if h is None else h for h in hosts]
    ts = list(map(mul, realtime, repeat(1000)))
    # kept in fields, after the entry's own (where journal_to_record puts it)
    deque(map(dict.__setitem__, fields, repeat("__MONOTONIC_TIMESTAMP"), map(str, monotonic)), 0)
    columns = [ts, hosts, apps, pid, severity, facility, msgs, fields]
    for i in slow:
        for column, value in zip(columns, _slow(entries[i], realtime[i], monotonic[i], hostname)):
            column[i] = value[0]
    return columns


def _uints(values: list[str | None], most: int) -> dict[str | None, int | None]:
    """Each distinct value -> its number; _BAD when not a canonical number up
    to ``most``; None (the field is missing) -> None."""
    out: dict[str | None, int | None] = {None: None}
    for v in set(values):
        if v is not None:
            out[v] = int(v) if _CANONICAL_UINT.fullmatch(v) and int(v) <= most else _BAD
    return out


def _slow(entry: JournalEntry, realtime: int, monotonic: int, hostname: str) -> list[list]:
    """One entry through journal_to_record, as one-row columns."""
    record = journal_to_record({**entry, "__REALTIME_TIMESTAMP": realtime,
                                "__MONOTONIC_TIMESTAMP": monotonic})
    return [[record.ts], [record.host or hostname], [record.app], [record.pid],
            [record.severity], [record.facility], [record.msg], [record.fields]]
