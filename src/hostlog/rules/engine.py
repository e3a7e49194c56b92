"""The rule engine: a batch in, the batch the rules leave out. Pure (no I/O).

Rules run in file order over a whole :class:`~hostlog.record.Columns`
batch. Each selects its rows with its ``match`` (:func:`select`, the code of
``hostlog query``) among the rows still there, then, on those rows:

1. ``drop`` drops them; ``sample = N`` drops all but one in N (counted
   across batches, so one in N of everything the rule ever matched);
2. on the rows left: ``parse`` adds the message's fields (or ``PARSE_ERROR``),
   then ``rename``, ``remove``, ``set``, ``priority_from``, ``redact`` (the
   message and the field values) and ``to`` (the route), in that order.

A rule sees what the rules before it did (a field parsed by one can be
matched by the next). Nothing is changed in place: a changed column is a
new list, a changed ``fields`` dict a new dict (the rows of a batch share
theirs, and the collectors keep using them), so the batch given is intact.

Accounting: every row given is either in the batch returned or counted as
dropped by exactly one rule (``RuleCounts.dropped`` / ``sampled_out``).

Containment: a rule that raises on a batch is applied again row by row;
a row it still fails on is kept as it was before that rule, with the field
``RULE_ERROR`` naming the rule (and, when the rule redacts, its message
withheld: a failed redaction must not let the secret through), and counted.
The batch is never lost. What failed is returned, for the caller to report
(the exception, never a record's content).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import compress
from typing import Any

from hostlog.config.rules import Rule
from hostlog.journal.fields import ABSENT_FIELD
from hostlog.query.build import build_query
from hostlog.query.filters import Query
from hostlog.record import Columns, Record
from hostlog.rules.parse import ParseFailed, Parser, make_parser
from hostlog.rules.redact import Redactor, compile_redactors
from hostlog.rules.select import BatchView, Plan, select

__all__ = ["PARSE_ERROR", "ROUTE_FIELD", "RULE_ERROR", "WITHHELD", "Outcome", "RuleCounts",
           "RuleEngine", "RuleFailure", "level_of"]

log = logging.getLogger("hostlog.rules")

#: The field a message that did not parse gets (the reason, never the content).
PARSE_ERROR = "PARSE_ERROR"
#: The field a record gets when a rule failed on it (the rule's name).
RULE_ERROR = "RULE_ERROR"
#: The destinations a routed record goes to (space-separated ``[[forward]]``
#: names); the sender reads it, and takes it off what it sends.
ROUTE_FIELD = "_HOSTLOG_ROUTE"
#: What a message becomes when a rule that redacts it failed on it.
WITHHELD = "[REDACTED: the rule that redacts this message failed on it]"

(_TS, _HOST, _SOURCE, _APP, _PID, _SEVERITY, _FACILITY, _MSG, _FIELDS, _ORIGIN, _SEQ) = range(11)

_LEVELS = {"emerg": 0, "emergency": 0, "panic": 0, "alert": 1, "crit": 2, "critical": 2, "fatal": 2,
           "err": 3, "error": 3, "eror": 3, "warn": 4, "warning": 4, "notice": 5, "info": 6,
           "information": 6, "informational": 6, "debug": 7, "trace": 7, "dbug": 7}


_SAME: Any = object()  # (a value redaction leaves as it is)


def level_of(value: Any) -> int | None:
    """The priority a field value names (``err``, ``WARNING``, ``4``, ...), or None."""
    if isinstance(value, list):
        value = value[-1] if value else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if len(text) == 1 and text in "01234567":
        return int(text)
    return _LEVELS.get(text)


@dataclass
class RuleCounts:
    """What one rule did, since the agent started (kept across reloads by name)."""

    matched: int = 0  # records its match selected
    dropped: int = 0  # by drop = true
    sampled_out: int = 0  # by sample
    parsed: int = 0
    parse_errors: int = 0  # kept, with PARSE_ERROR
    redacted: int = 0  # records with something redacted
    routed: int = 0
    errors: int = 0  # records it failed on (kept, with RULE_ERROR)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class RuleFailure:
    """A rule raised: reported by the caller (counted, logged once per kind)."""

    rule: str
    where: str  # "match" or "act"
    exc: BaseException
    records: int  # records it failed on, in this batch

    def describe(self) -> str:
        """The failure without the exception's message (which may quote a record)."""
        frames = traceback.extract_tb(self.exc.__traceback__)
        at = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
        return f"rule {self.rule}: {type(self.exc).__name__} in its {self.where}{at}"


@dataclass
class Outcome:
    """What :meth:`RuleEngine.apply` made of a batch."""

    batch: Columns  # the records that go on, in their order
    kept: list[int] | None  # their rows in the batch given (None: every row)
    dropped: dict[str, int] = field(default_factory=dict)  # rule -> records dropped or sampled out
    failures: list[RuleFailure] = field(default_factory=list)
    #: with ``explain``: row -> the rule that dropped it
    dropped_by: dict[int, str] = field(default_factory=dict)


class _Rule:
    """One ``[[rule]]``, compiled."""

    def __init__(self, rule: Rule) -> None:
        self.name = rule.name
        self.query: Query | None = build_query(**rule.query_words()) if rule.match else None
        self.plan = Plan(self.query) if self.query is not None else None
        self.drop = rule.drop
        self.sample = rule.sample
        self.parser: Parser | None = make_parser(rule.parse) if rule.parse is not None else None
        self.redactors: list[Redactor] = compile_redactors(rule.redact)
        self.rename = dict(rule.rename)
        self.remove = list(rule.remove)
        self.set_fields = dict(rule.set_fields)
        self.priority_from = rule.priority_from
        self.route = frozenset(rule.to) if rule.to else None
        self.route_value = " ".join(sorted(self.route)) if self.route else ""
        self._redacted: dict[str | bytes, Any] = {}  # short field value -> redacted (or _SAME)
        # what set and to add, when they are the only edits (made with parse's new dict)
        self.simple_extra: dict[str, str] | None = None
        if not (self.rename or self.remove or rule.redact):
            self.simple_extra = {**self.set_fields, **({ROUTE_FIELD: self.route_value} if self.route else {})}
        self.seen = 0  # rows matched so far (sample: which one of N is kept)
        self.edits_fields = bool(self.rename or self.remove or self.set_fields or self.route
                                 or self.redactors)
        self.per_row = self.parser is not None or self.priority_from is not None
        self.source = rule

    # -- fields --------------------------------------------------------------------------
    def edit(self, d: dict[str, Any], *, own: bool = False) -> tuple[dict[str, Any], bool]:
        """A fields dict after rename, remove, set, redact and route, and
        whether a value was redacted: ``d`` itself if nothing changes, else a
        new dict (``own``: ``d`` is this rule's own new dict, changed in place)."""
        out = d
        mine = own  # out may be changed in place
        for old, new in self.rename.items():
            if old in out:
                if not mine:
                    out, mine = dict(out), True
                out[new] = out.pop(old)
        for name in self.remove:
            if name in out:
                if not mine:
                    out, mine = dict(out), True
                del out[name]
        if self.set_fields and (mine or any(out.get(k) != v for k, v in self.set_fields.items())):
            if not mine:
                out, mine = dict(out), True
            out.update(self.set_fields)
        redacted = False
        if self.redactors:
            for key, value in list(out.items()):
                if key == ROUTE_FIELD:
                    continue
                new = self._redact_value(value)
                if new is not value:
                    if not mine:
                        out, mine = dict(out), True
                    out[key] = new
                    redacted = True
        if self.route is not None:
            had = out.get(ROUTE_FIELD)
            value = self.route_value if had is None else \
                " ".join(sorted(self.route | frozenset(had.split() if isinstance(had, str) else ())))
            if had != value:
                if not mine:
                    out, mine = dict(out), True
                out[ROUTE_FIELD] = value
        return out, redacted

    def _redact_value(self, value: Any) -> Any:
        """A field value with the rule's patterns redacted (the same object when none applies)."""
        if isinstance(value, (str, bytes)):
            # short values recur (a msgid, a level, a stream's name): their answer is kept
            known = self._redacted.get(value) if len(value) <= 128 else None
            if known is not None:
                return value if known is _SAME else known
            new = value
            for r in self.redactors:
                new = r.redact(new)
            if len(value) <= 128:
                if len(self._redacted) >= 4096:
                    self._redacted.clear()
                self._redacted[value] = _SAME if new == value else new
            return value if new == value else new
        if isinstance(value, list):
            items = [self._redact_value(v) for v in value]
            return value if all(a is b for a, b in zip(items, value)) else items
        return value


def _without_priority(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in d.items() if k != "PRIORITY"}
    absent = out.get(ABSENT_FIELD)
    if isinstance(absent, str) and "PRIORITY" in absent.split():
        rest = " ".join(w for w in absent.split() if w != "PRIORITY")
        if rest:
            out[ABSENT_FIELD] = rest
        else:
            del out[ABSENT_FIELD]
    return out


class RuleEngine:
    """The rules of one config, applied to batch after batch.

    ``counts`` (rule name -> :class:`RuleCounts`) may be shared with the
    engine of an earlier config (a reload), so that what a rule did is
    never forgotten while the agent runs (the metrics are counters).
    """

    def __init__(self, rules: Sequence[Rule], counts: dict[str, RuleCounts] | None = None) -> None:
        self.rules = [_Rule(r) for r in rules]
        self.counts: dict[str, RuleCounts] = counts if counts is not None else {}
        for r in self.rules:
            self.counts.setdefault(r.name, RuleCounts())

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rules]

    def carry_over(self, old: RuleEngine) -> None:
        """Keep the sampling position of the rules that are unchanged since ``old``."""
        before = {r.name: r for r in old.rules}
        for r in self.rules:
            prev = before.get(r.name)
            if prev is not None and prev.source == r.source:
                r.seen = prev.seen

    def dropped(self) -> dict[str, int]:
        """Records each rule dropped or sampled out, by rule name (removed rules too)."""
        # (a metrics scrape asks from its own thread: a copy, taken at once)
        return {name: c.dropped + c.sampled_out for name, c in list(self.counts.items())}

    # -- a batch -------------------------------------------------------------------------
    def apply(self, batch: Columns, *, explain: bool = False) -> Outcome:
        n = len(batch)
        if not n or not self.rules:
            return Outcome(batch, None)
        view = BatchView(batch)
        state = _State(view, explain)
        for rule in self.rules:
            if not state.left:
                break
            counts = self.counts[rule.name]
            rows = state.matched(rule, counts)
            if rows is not None and not rows:
                continue
            counts.matched += len(rows) if rows is not None else state.left
            rows = state.cull(rule, rows, counts)
            if rows is not None and not rows:
                continue
            if not (rule.per_row or rule.edits_fields):
                continue
            try:
                state.change(rule, rows, counts)
            except Exception as exc:
                self._row_by_row(state, rule, rows, counts, exc)
        if not state.touched:
            return Outcome(batch, None, state.dropped, state.failures, state.dropped_by)
        kept = None if state.alive is None else list(compress(range(n), state.alive))
        return Outcome(view.batch(state.alive, state.left), kept, state.dropped, state.failures,
                       state.dropped_by)

    def _row_by_row(self, state: _State, rule: _Rule, rows: list[int] | None, counts: RuleCounts,
                    exc: BaseException) -> None:
        """The rule failed on the batch: again one row at a time; the rows it
        still fails on keep what they were, marked."""
        failed: list[int] = []
        first: BaseException = exc
        done = _Changes()
        for i in state.alive_rows() if rows is None else rows:
            try:
                done.merge(state.changes(rule, [i]))
            except Exception as again:
                first = again if not failed else first
                failed.append(i)
        state.commit(done, counts)
        if failed:
            state.mark_failed(rule, failed)
            counts.errors += len(failed)
            state.failures.append(RuleFailure(rule.name, "act", first, len(failed)))


class _State:
    """One batch on its way through the rules."""

    def __init__(self, view: BatchView, explain: bool) -> None:
        self.view = view
        self.alive: bytearray | None = None  # 1 per row still there (None: all are)
        self.left = view.n
        self.touched = False  # anything dropped or changed
        self.dropped: dict[str, int] = {}
        self.failures: list[RuleFailure] = []
        self.explain = explain
        self.dropped_by: dict[int, str] = {}

    def alive_rows(self) -> list[int]:
        if self.alive is None:
            return list(range(self.view.n))
        return list(compress(range(self.view.n), self.alive))

    # -- selection -------------------------------------------------------------------------
    def matched(self, rule: _Rule, counts: RuleCounts) -> list[int] | None:
        """The rows still there that the rule's match selects (None: all of them)."""
        if rule.query is None or rule.plan is None:
            return None
        try:
            rows = select(rule.plan, self.view)
        except Exception as exc:
            rows = self._select_by_record(rule, rule.query, counts, exc)
        if self.alive is not None and rows:
            alive = self.alive
            rows = list(compress(rows, map(alive.__getitem__, rows)))
        return rows

    def _select_by_record(self, rule: _Rule, query: Query, counts: RuleCounts,
                          exc: BaseException) -> list[int]:
        """The columns failed: the record test alone, row by row; a row it
        fails on is not selected (and counted)."""
        rows, failed = [], 0
        test: Callable[[Record], bool] = query.record_test
        for i in self.alive_rows():
            try:
                if test(self.view.record(i)):
                    rows.append(i)
            except Exception:
                failed += 1
        counts.errors += failed
        self.failures.append(RuleFailure(rule.name, "match", exc, failed))
        return rows

    # -- drop and sample ---------------------------------------------------------------------
    def cull(self, rule: _Rule, rows: list[int] | None, counts: RuleCounts) -> list[int] | None:
        """Drop what ``drop`` and ``sample`` drop; the rows left."""
        if not rule.drop and rule.sample is None:
            return rows
        if rows is None:
            rows = self.alive_rows()
        if rule.drop:
            doomed, rest = rows, []
        else:
            every = rule.sample
            assert every is not None
            # the first of every N matched is kept, counted across batches
            start = (-rule.seen) % every
            rest = rows[start::every]
            rule.seen += len(rows)
            if len(rest) == len(rows):
                return rest
            keep = set(rest)
            doomed = [i for i in rows if i not in keep]
        if not doomed:
            return rest
        if self.alive is None:
            self.alive = bytearray(b"\x01") * self.view.n
        alive = self.alive
        for i in doomed:
            alive[i] = 0
        self.left -= len(doomed)
        self.touched = True
        if rule.drop:
            counts.dropped += len(doomed)
        else:
            counts.sampled_out += len(doomed)
        self.dropped[rule.name] = self.dropped.get(rule.name, 0) + len(doomed)
        if self.explain:
            for i in doomed:
                self.dropped_by[i] = rule.name
        return rest

    # -- changes ------------------------------------------------------------------------------
    def change(self, rule: _Rule, rows: list[int] | None, counts: RuleCounts) -> None:
        """Parse, edit fields, take the priority, redact and route ``rows``
        (None: every row still there). Computed first, then put in place:
        a rule that raises leaves the batch as it was."""
        if rows is None and rule.per_row:
            rows = self.alive_rows()
        self.commit(self.changes(rule, rows), counts)

    def changes(self, rule: _Rule, rows: list[int] | None) -> _Changes:
        view = self.view
        cols = view.columns
        fields, msgs = cols[_FIELDS], cols[_MSG]
        ch = _Changes()
        new_fields = ch.fields
        # 1. parse: a dict of its own per row
        own: set[int] = set()  # rows whose new dict is this rule's own (changed in place)
        done: set[int] = set()  # rows whose new dict has every edit made already
        if rule.parser is not None:
            assert rows is not None
            parse = rule.parser
            # set and route, in the same new dict, when nothing else is to be done to it
            extra = rule.simple_extra
            for i in rows:
                msg = msgs[i]
                text = msg if isinstance(msg, str) else msg.decode("utf-8", "replace")
                base = fields[i]
                try:
                    got = parse(text)
                except ParseFailed as exc:
                    got = {PARSE_ERROR: str(exc)}
                    ch.parse_errors += 1
                else:
                    ch.parsed += 1
                if extra is not None and ROUTE_FIELD not in base:
                    new_fields[i] = {**base, **got, **extra}
                elif got:
                    new_fields[i] = {**base, **got}
                    own.add(i)
            done = set(new_fields) - own  # (their edits are made)
        # 2. field edits, once per distinct dict
        if rule.edits_fields:
            memo: dict[int, tuple[dict[str, Any], bool]] = {}
            edit = rule.edit
            if rows is None:
                changed: set[int] = set()
                redacted_ids: set[int] = set()
                for d in view.dicts():
                    out, hit = memo[id(d)] = edit(d)
                    if out is not d:
                        changed.add(id(d))
                    if hit:
                        redacted_ids.add(id(d))
                if changed:
                    after = {k: v[0] for k, v in memo.items()}
                    ch.column = list(map(after.__getitem__, map(id, fields)))
                    ch.added = [after[k] for k in changed]
                if redacted_ids:
                    marks = list(map(redacted_ids.__contains__, map(id, fields)))
                    if self.alive is not None:
                        marks = [bool(h and a) for h, a in zip(marks, self.alive)]
                    ch.redacted.update(compress(range(view.n), marks))
            else:
                for i in rows:
                    if i in done:
                        continue
                    if i in own:
                        _, hit = edit(new_fields[i], own=True)
                    else:
                        base = fields[i]
                        key = id(base)
                        result = memo.get(key)
                        if result is None:
                            result = memo[key] = edit(base)
                        out, hit = result
                        if out is not base:
                            new_fields[i] = out
                    if hit:
                        ch.redacted.add(i)
        # 3. priority from a field
        if rule.priority_from is not None:
            assert rows is not None
            name, severity = rule.priority_from, cols[_SEVERITY]
            for i in rows:
                d = new_fields.get(i, fields[i])
                level = level_of(d.get(name))
                if level is None:
                    continue
                if level != severity[i]:
                    ch.severity[i] = level
                if "PRIORITY" in d or ABSENT_FIELD in d:
                    # the journal view's PRIORITY is the new one (a raw one would win over it)
                    new_fields[i] = _without_priority(d)
        # 4. the messages
        alive = self.alive
        for r in rule.redactors:
            for i in r.hits(view, rows, exact=False):
                if alive is not None and not alive[i]:
                    continue
                text = ch.msgs.get(i, msgs[i])
                redacted = r.sub_value(text)
                if redacted != text:
                    ch.msgs[i] = redacted
                    ch.redacted.add(i)
        if rule.route is not None:
            ch.routed = len(rows) if rows is not None else self.left
        return ch

    def commit(self, ch: _Changes, counts: RuleCounts) -> None:
        view = self.view
        cols = view.columns
        if ch.column is not None or ch.fields:
            column = ch.column if ch.column is not None else list(cols[_FIELDS])
            for i, d in ch.fields.items():
                column[i] = d
            self._put(_FIELDS, column, [*ch.added, *ch.fields.values()])
        for c, new in ((_MSG, ch.msgs), (_SEVERITY, ch.severity)):
            if new:
                values: list[Any] = list(cols[c])
                for i, value in new.items():
                    values[i] = value
                self._put(c, values)
        counts.parsed += ch.parsed
        counts.parse_errors += ch.parse_errors
        counts.redacted += len(ch.redacted)
        counts.routed += ch.routed

    def _put(self, c: int, column: list[Any], added: Sequence[dict[str, Any]] = ()) -> None:
        view = self.view
        if view.pool is not None:
            view.pool.extend(added)  # (a superset of the rows' dicts is what it promises)
        view.columns[c] = column
        view.changed(c)
        self.touched = True

    def mark_failed(self, rule: _Rule, failed: list[int]) -> None:
        """Rows ``failed`` as they were, marked with the rule that failed on them."""
        view = self.view
        fields = list(view.columns[_FIELDS])
        added = []
        for i in failed:
            fields[i] = {**fields[i], RULE_ERROR: rule.name}
            added.append(fields[i])
        self._put(_FIELDS, fields, added)
        if rule.redactors:
            msgs = list(view.columns[_MSG])
            for i in failed:
                msgs[i] = WITHHELD
            self._put(_MSG, msgs)


@dataclass
class _Changes:
    """What a rule changes in a batch, before it is put in place."""

    fields: dict[int, dict[str, Any]] = field(default_factory=dict)  # row -> its new dict
    column: list[dict[str, Any]] | None = None  # a whole new fields column (edits of every row)
    added: list[dict[str, Any]] = field(default_factory=list)  # the new dicts in ``column``
    msgs: dict[int, str | bytes] = field(default_factory=dict)
    severity: dict[int, int] = field(default_factory=dict)
    parsed: int = 0
    parse_errors: int = 0
    redacted: set[int] = field(default_factory=set)
    routed: int = 0

    def merge(self, other: _Changes) -> None:
        """Add the changes of one row (row by row: ``column`` is never set)."""
        self.fields.update(other.fields)
        self.msgs.update(other.msgs)
        self.severity.update(other.severity)
        self.parsed += other.parsed
        self.parse_errors += other.parse_errors
        self.redacted |= other.redacted
        self.routed += other.routed
