"""What a rule's ``match`` selects in a batch: ``hostlog query``'s own code
(:class:`hostlog.query.filters.Query`), run over a :class:`~hostlog.record.Columns`
batch instead of a stored chunk.

The match is the query :func:`hostlog.query.build.build_query` makes of its
words. :class:`Plan` splits it, as ``hostlog query`` splits its work, into
what whole columns decide and what needs a record:

* **severity and time** (``-p``): :meth:`Query.candidates`, the column
  selection ``hostlog query`` runs on a decrypted chunk, over the batch's
  columns (:class:`BatchView` offers them as a chunk's); ``-g``: the same
  message scan (``GrepScan``), restricted to the rows still selected, after
  a look for a text every match holds in the messages joined;
* **names and fields** (``-u``, ``-t``, ``--host``, ``--source``,
  ``FIELD=VALUE``): :meth:`Query.record_test`, the complete rule. It reads
  a handful of a record's attributes (the app for ``-t``, the host for
  ``--host``, ...) and its fields dict; the rows of a batch share their
  dicts (``Columns.fields_pool``) and have few distinct apps, so the test
  runs once per distinct *signature* (those attributes, and the dict when
  a dict holds a field the test reads), on a record of that signature, and
  the rows follow with C-level passes. Rows of systemd's own reporters,
  whose ``-u`` looks at more (their ``_PID``), are tested one by one.

Records with journal quirks the columns cannot see (a raw or missing
PRIORITY or MESSAGE) are tested with the complete rule, as ``hostlog
query`` verifies them. The outcome is what ``hostlog query`` with the same
words shows of these records; there is no second matcher.

Everything here is pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate, compress
from operator import add
from typing import Any, cast

from hostlog.chunk import FrameColumns
from hostlog.journal.fields import ABSENT_FIELD
from hostlog.query.filters import REPORTER_APPS, REPORTER_UNITS, GrepScan, Query
from hostlog.query.regex_shape import plain_text
from hostlog.record import Columns, Record

__all__ = ["BatchView", "Plan", "select"]

(_TS, _HOST, _SOURCE, _APP, _PID, _SEVERITY, _FACILITY, _MSG, _FIELDS, _ORIGIN, _SEQ) = range(11)

#: FIELD=VALUE on these reads record attributes (hostlog.journal.fields.field_values)
_ATTRS_OF: dict[str, tuple[int, ...]] = {
    "__REALTIME_TIMESTAMP": (_TS,), "_HOSTNAME": (_HOST,), "PRIORITY": (_SEVERITY,),
    "SYSLOG_FACILITY": (_FACILITY,), "SYSLOG_IDENTIFIER": (_APP,), "_PID": (_PID,), "MESSAGE": (_MSG,),
    "__CURSOR": (_ORIGIN, _SEQ), "_HOSTLOG_SOURCE": (_SOURCE,), "_HOSTLOG_ORIGIN": (_ORIGIN,),
    "_HOSTLOG_SEQ": (_SEQ,),
}
#: at most this many distinct signatures are looked up row by row (list.index)
_FEW = 64
#: answers of the record test kept per rule, by signature
_KNOWN = 4096
_UNSURE: Any = "unsure"  # (a reporter's record: tested row by row)


class BatchView:
    """A batch's columns as :class:`~hostlog.chunk.FrameColumns` offers a
    chunk's to :meth:`Query.candidates` (``n``, ``ts()``, ``severity()``),
    and the working state of the rules over the batch: ``columns`` (the
    batch's lists, replaced, never changed in place, when a rule changes a
    column), ``pool`` (a list holding every row's fields dict; None until
    needed when the batch's maker did not give one).

    What the view derives (the severities as bytes, the messages joined) is
    kept until :meth:`changed` says its column changed.
    """

    def __init__(self, batch: Columns) -> None:
        self.columns: list[list[Any]] = list(batch.columns)
        self.n = len(batch)
        self.pool: list[dict[str, Any]] | None = (
            list(batch.fields_pool) if batch.fields_pool is not None else None)
        self._severity: bytes | None = None
        self._joined: str | None = None
        self._texts: list[Any] = []
        self._starts: list[int] | None = None
        self._lowered: str | None = None
        self._shapes: dict[bytes, bytes | None] = {}

    # -- what Query.candidates reads of a chunk ---------------------------------------------
    def ts(self) -> list[int]:
        return self.columns[_TS]

    def severity(self) -> bytes:
        if self._severity is None:
            sev = self.columns[_SEVERITY]
            try:
                self._severity = bytes(sev)
            except (ValueError, TypeError):  # (not 0..7: the record test decides those)
                self._severity = bytes(s if isinstance(s, int) and 0 <= s < 8 else 255 for s in sev)
        return self._severity

    # -- the rules' own -------------------------------------------------------------------
    def msgs(self) -> list[Any]:
        return self.columns[_MSG]

    def dicts(self) -> Iterable[dict[str, Any]]:
        """Every distinct fields dict of the rows (perhaps a few more)."""
        if self.pool is None:
            fields = self.columns[_FIELDS]
            self.pool = list(dict(zip(map(id, fields), fields)).values())
        return self.pool

    def rows_of(self, test: Callable[[dict[str, Any]], bool]) -> list[int]:
        """The rows whose fields dict passes ``test`` (asked once per dict)."""
        ids = {id(d) for d in self.dicts() if d and test(d)}
        if not ids:
            return []
        return list(compress(range(self.n), map(ids.__contains__, map(id, self.columns[_FIELDS]))))

    def record(self, i: int) -> Record:
        """The record of row ``i``, sharing the row's fields dict (to be read, not changed)."""
        ts, host, source, app, pid, sev, fac, msg, fields, origin, seq = self.columns
        return Record(ts[i], msg[i], host[i], source[i], app[i], pid[i], sev[i], fac[i], fields[i],
                      origin[i], seq[i])

    def joined(self) -> str:
        """The messages joined with NUL, as text (binary ones decoded with replacement)."""
        if self._joined is None:
            msgs = self.columns[_MSG]
            try:
                self._joined = "\x00".join(msgs)
                self._texts = msgs
            except TypeError:
                self._texts = [m if isinstance(m, str) else m.decode("utf-8", "replace") for m in msgs]
                self._joined = "\x00".join(self._texts)
        return self._joined

    def starts(self) -> list[int]:
        """Where each message of :meth:`joined` starts (and, last, its length + 1)."""
        if self._starts is None:
            self.joined()
            lengths = list(map(len, self._texts))
            self._starts = list(map(add, accumulate(lengths, initial=0), range(len(lengths) + 1)))
        return self._starts

    def lowered(self) -> str | None:
        """:meth:`joined` in lower case when that keeps every character where
        it was (ASCII text), else None."""
        if self._lowered is None:
            joined = self.joined()
            if not joined.isascii():
                return None
            self._lowered = joined.lower()
        return self._lowered

    def shape(self, table: bytes) -> bytes | None:
        """:meth:`joined` as bytes mapped through ``table`` (a 256-byte
        ``bytes.translate`` table), when the text is ASCII (one byte a
        character, so positions stay), else None. Kept per table."""
        shapes = self._shapes
        if table not in shapes:
            joined = self.joined()
            shapes[table] = joined.encode("ascii").translate(table) if joined.isascii() else None
        return shapes[table]

    def changed(self, column: int) -> None:
        """Column ``column`` (an index of COLUMNS) was replaced: forget what came of it."""
        if column == _SEVERITY:
            self._severity = None
        elif column == _MSG:
            self._joined = self._lowered = self._starts = None
            self._shapes = {}

    def batch(self, alive: bytearray | None, kept: int) -> Columns:
        """The batch of the rows whose ``alive`` byte is 1 (``kept`` of them;
        None: every row), as they are now."""
        if alive is None or kept == self.n:
            return Columns(self.columns, fields_pool=self.pool)
        if not kept:
            return Columns.empty(fields_pool=[])
        out = []
        for col in self.columns:
            first = col[0]
            # a column of one value throughout (source, origin, seq): no pass to pick from it
            if col[-1] is first and col[len(col) // 2] is first and col.count(first) == len(col):
                out.append([first] * kept)
            else:
                out.append(list(compress(col, alive)))
        return Columns(out, fields_pool=self.pool)


def _replaced(m: bytes) -> str:
    return m.decode("utf-8", "replace")  # (a binary message, as -g reads it)


def _quirky(d: dict[str, Any]) -> bool:
    """A dict with what columns cannot see (``Query.verify`` looks at its record)."""
    return "PRIORITY" in d or ABSENT_FIELD in d


class Plan:
    """How :func:`select` runs one query over batches (made once per rule)."""

    def __init__(self, query: Query) -> None:
        self.query = query
        # -u, -t, --host, --source, FIELD=VALUE: the record test, once per signature
        record = dataclasses.replace(query, priorities=None, since_ns=None, until_ns=None, grep=None)
        self.record: Query | None = record if (record.units or record.identifiers or record.hosts
                                               or record.sources or record.matches) else None
        attrs: set[int] = set()
        keys: set[str] = set()
        if query.units:
            attrs.add(_APP)
            keys |= {"_SYSTEMD_UNIT", ABSENT_FIELD}
        if query.identifiers:
            attrs.add(_APP)
            keys |= {"SYSLOG_IDENTIFIER", ABSENT_FIELD}
        if query.hosts:
            attrs.add(_HOST)
        if query.sources:
            attrs.add(_SOURCE)
        for group in query.matches:
            for name in group:
                attrs.update(_ATTRS_OF.get(name, ()))
                keys |= {name, ABSENT_FIELD}
        self.attrs = sorted(attrs)
        self.keys = frozenset(keys)
        self.reporters = bool(query.units)  # -u reads more of systemd's own records
        self.known: dict[Any, Any] = {}  # signature -> the record test's answer (or _UNSURE)
        # -p (and a time range): the columns, as hostlog query reads a chunk's
        self.columns: Query | None = None
        if query.priorities is not None or query.since_ns is not None or query.until_ns is not None:
            self.columns = Query(priorities=query.priorities, since_ns=query.since_ns,
                                 until_ns=query.until_ns)
        self.grep = GrepScan(query.grep) if query.grep is not None else None
        literal = self.grep.literal if self.grep is not None else None
        self.grep_literal = literal.decode("utf-8", "surrogateescape") if literal is not None else None
        # a case-sensitive pattern of plain characters only: its search is ``in``
        self.grep_plain = (self.grep_literal is not None and query.grep is not None
                           and plain_text(query.grep) == self.grep_literal)


def _record_rows(plan: Plan, record: Query, view: BatchView) -> list[int] | None:
    """The rows that pass the record part (None: all of them)."""
    n = view.n
    columns = view.columns
    keys = plan.keys
    relevant = bool(keys) and any(not keys.isdisjoint(d) for d in view.dicts() if d)
    sig_columns: list[Sequence[Any]] = [columns[a] for a in plan.attrs]
    if relevant:
        sig_columns.append(list(map(id, columns[_FIELDS])))
    sig: Sequence[Any]
    if not sig_columns:  # every row alike: one record tells
        return None if record.record_test(view.record(0)) else []
    sig = sig_columns[0] if len(sig_columns) == 1 else list(zip(*sig_columns))
    distinct = set(sig)
    if len(distinct) <= _FEW:
        where = {s: sig.index(s) for s in distinct}
    else:
        where = dict(zip(sig, range(n)))
    test = record.record_test
    passed: set[Any] = set()
    unsure: set[Any] = set()
    # without a dict in the signature, a signature's answer holds for every
    # batch: kept (a few hundred of them at most), not asked again
    known = plan.known if not relevant else {}
    for s, i in where.items():
        answer = known.get(s)
        if answer is None:
            r = view.record(i)
            answer = _UNSURE if plan.reporters and _reporter(r) else test(r)
            if not relevant:
                if len(known) >= _KNOWN:
                    known.clear()
                known[s] = answer
        if answer is _UNSURE:
            unsure.add(s)
        elif answer:
            passed.add(s)
    if unsure:
        rows = [i for i in range(n) if (s := sig[i]) in passed or (s in unsure and test(view.record(i)))]
        return None if len(rows) == n else rows
    if not passed:
        return []
    if len(passed) == len(distinct):
        return None
    return list(compress(range(n), map(passed.__contains__, sig)))


def _reporter(r: Record) -> bool:
    """One of systemd's own records, whose ``-u`` reads its _PID and _UID too."""
    unit = r.fields.get("_SYSTEMD_UNIT") if r.fields else None
    return r.app in REPORTER_APPS or (isinstance(unit, str) and unit in REPORTER_UNITS) or \
        isinstance(unit, (list, bytes))


def select(plan: Plan, view: BatchView) -> list[int] | None:
    """The rows of the batch ``plan``'s query selects, ascending (None: every
    row): what ``hostlog query`` with the same words would show of these records."""
    n = view.n
    if n == 0:
        return []
    chosen: list[int] | None = None
    if plan.record is not None:
        chosen = _record_rows(plan, plan.record, view)
        if chosen == []:
            return chosen
    if plan.columns is None and plan.grep is None:
        return chosen
    # what the columns cannot see (a raw or missing PRIORITY or MESSAGE):
    # the complete rule decides those rows, as hostlog query's verify() does
    quirky = view.rows_of(_quirky)
    idx = chosen
    if plan.columns is not None:
        picked, _ = plan.columns.candidates(cast(FrameColumns, view))
        if idx is None:
            idx = picked if len(picked) < n else None
        else:
            inside = set(picked)
            idx = list(compress(idx, map(inside.__contains__, idx)))
    if plan.grep is not None and idx != []:
        if plan.grep_literal is not None and view.joined().rfind(plan.grep_literal) < 0:
            idx = []  # a text every match holds is in no message
        elif plan.grep_plain and idx is not None:
            text, msgs = plan.grep_literal, view.msgs()
            assert text is not None
            idx = [i for i in idx if text in (m if isinstance(m := msgs[i], str) else _replaced(m))]
        else:
            idx = plan.grep.select(view.msgs(), idx)
    if not quirky:
        return idx
    odd = set(quirky) if chosen is None else set(quirky).intersection(chosen)
    test = plan.query.record_test
    passing = {i for i in odd if test(view.record(i))}
    ruled = set(quirky)
    rows = [i for i in (range(n) if idx is None else idx) if i not in ruled]
    return sorted(passing.union(rows))
