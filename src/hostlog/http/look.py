"""One look of the hub at the frames appended since the last: each frame's
chunk, columns and Records made once (:class:`LookFrame`), and what the
look gives each subscription (:class:`LookPlan`): records, or a
:class:`Missed` for what it passed over."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hostlog.chunk import SOURCE, ChunkError, FrameColumns
from hostlog.query.filters import Query
from hostlog.record import Record
from hostlog.spool.index import app_bloom_bits

if TYPE_CHECKING:
    from hostlog.http.follow import Subscription
    from hostlog.spool.frame import IndexEntry
    from hostlog.spool.reader import SpoolReader
    from hostlog.spool.segment import SegmentReader

log = logging.getLogger("hostlog.http")

__all__ = ["AUDIT_APP", "AUDIT_SOURCE", "LookFrame", "LookPlan", "Missed", "Pairs", "excluded"]

AUDIT_SOURCE = "audit"
AUDIT_APP = "hostlog-http"  # the app of the HTTP server's audit records

Pairs = list[tuple[int, Record]]


@dataclass(frozen=True, slots=True)
class Missed:
    """Records a subscription did not get: positions ``first``..``last`` were
    passed over, ``count`` of them selected by its query. ``exact`` False:
    ``count`` is at most that many (positions that were not read: damaged
    frames, or removed by retention before a catch-up reached them)."""

    count: int
    first: int
    last: int
    exact: bool = True


def excluded(record: Record, with_audit: bool) -> bool:
    return record.source == AUDIT_SOURCE and not with_audit


def _selects_all(q: Query) -> bool:
    return not (q.units or q.identifiers or q.priorities is not None or q.since_ns is not None
                or q.until_ns is not None or q.grep is not None or q.matches or q.hosts or q.sources)


class LookFrame:
    """One frame in a look: its chunk, columns and Records made once, when
    a subscription first needs them."""

    __slots__ = ("reader", "seg", "entry", "lo", "hi", "_cols", "_read", "_records", "built",
                 "_audit", "_bloom", "_all")

    def __init__(self, reader: SpoolReader, seg: SegmentReader, entry: IndexEntry, lo: int, hi: int,
                 bloom: dict[bytes, int]) -> None:
        self.reader, self.seg, self.entry, self.lo, self.hi = reader, seg, entry, lo, hi
        self._cols: FrameColumns | None = None
        self._read = False
        self._records: dict[int, Record] = {}
        self.built = 0
        self._audit: set[int] | None = None
        self._bloom = bloom
        self._all: dict[tuple[int, int], Pairs] = {}

    def may_hold_audit(self) -> bool:
        key = self.seg.keys.bloom_key
        bits = self._bloom.get(key)
        if bits is None:
            bits = self._bloom[key] = app_bloom_bits(key, AUDIT_APP)
        return self.entry.app_bloom & bits == bits

    def columns(self) -> FrameColumns | None:
        """The frame's columns; None when it cannot be read (damage, recorded by the reader)."""
        if not self._read:
            self._read = True
            chunk = self.reader.read_chunk(self.seg, self.entry)
            if chunk is not None:
                try:
                    self._cols = FrameColumns(chunk)
                except ChunkError as exc:
                    log.warning("http: following: frame at %s:%d: %s", self.seg.path.name,
                                self.entry.offset, exc)
        return self._cols

    def audit_idx(self) -> set[int]:
        """Indices of the frame's audit records (by the source column)."""
        if self._audit is None:
            cols = self.columns()
            self._audit = set()
            if cols is not None and self.may_hold_audit():
                strings = cols.strings
                self._audit = {i for i, s in enumerate(cols.column(SOURCE)) if strings[s] == AUDIT_SOURCE}
        return self._audit

    def everything(self, lo: int, hi: int) -> Pairs:
        """Positions lo..hi as (seq, Record) pairs, audit records left out
        (what a follower of everything is given), made once per range."""
        key = (lo, hi)
        pairs = self._all.get(key)
        if pairs is None:
            first = self.entry.first_seq
            idx = list(range(lo - first, hi - first + 1))
            if self.may_hold_audit():
                audit = self.audit_idx()
                idx = [i for i in idx if i not in audit]
            # (Query.verify passes every record when there is no -p and no -g)
            pairs = self._all[key] = [(first + i, r) for i, r in zip(idx, self.records(idx))]
        return pairs

    def records(self, idx: list[int]) -> list[Record]:
        cols = self.columns()
        assert cols is not None
        have = self._records
        missing = [i for i in idx if i not in have]
        if missing:
            for i, record in zip(missing, cols.records(missing, identity=True)):
                have[i] = record
            self.built += len(missing)
        return [have[i] for i in idx]


class LookPlan:
    """What one look does for one subscription: the records and gaps it gets."""

    __slots__ = ("sub", "query", "all", "with_audit", "room", "items")

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.query = sub.query
        self.all = _selects_all(sub.query)
        self.with_audit = sub.with_audit
        self.room = sub.room
        self.items: list[tuple[Pairs, Missed | None]] = []  # in order: records, or a gap

    def gap(self, count: int, first: int, last: int, exact: bool = True) -> None:
        if count > 0:
            self.items.append(([], Missed(count, first, last, exact)))

    def give(self, pairs: Pairs) -> None:
        if not pairs:
            return
        room = max(self.room, 0)
        if len(pairs) > room:
            lost = pairs[room:]
            pairs = pairs[:room]
            if pairs:
                self.items.append((pairs, None))
            self.gap(len(lost), lost[0][0], lost[-1][0])
        else:
            self.items.append((pairs, None))
        self.room -= len(pairs)

    def frame(self, fr: LookFrame, deliver_from: int, over: bool) -> None:
        """``deliver_from``: a follower of everything is given the positions
        after it (the newest of the look); ``over``: the records the look may
        build are built (a filtered follower, which builds only what it
        selects, is given records until then)."""
        if not self.query.frame_test(fr.seg, fr.entry):
            return  # the index says: nothing of this frame is selected
        lo, hi = fr.lo, fr.hi
        if self.all:
            split = min(max(lo, deliver_from + 1), hi + 1)  # lo..split-1 counted, split..hi delivered
        else:
            split = hi + 1 if over else lo
        if split > lo:
            self.count(fr, lo, split - 1)
        if split <= hi:
            if self.room <= 0:
                self.count(fr, split, hi)
            else:
                self.deliver(fr, split, hi)

    def _candidates(self, fr: LookFrame, cols: FrameColumns, lo: int, hi: int) -> tuple[list[int], bool]:
        first = fr.entry.first_seq
        q = self.query
        if self.all:
            idx, need = list(range(lo - first, hi - first + 1)), False
        else:
            if not q.chunk_test(cols.chunk):
                return [], False
            idx, need = q.candidates(cols, fr.entry)
            if lo > first or hi < fr.entry.last_seq:
                idx = [i for i in idx if lo <= first + i <= hi]
        if not self.with_audit and idx and fr.may_hold_audit():
            audit = fr.audit_idx()
            if audit:
                idx = [i for i in idx if i not in audit]
        return idx, need

    def count(self, fr: LookFrame, lo: int, hi: int) -> None:
        """What this subscription would select in lo..hi, as a gap (no Records built)."""
        if self.all and not fr.may_hold_audit():
            self.gap(hi - lo + 1, lo, hi)
            return
        cols = fr.columns()
        if cols is None:
            self.gap(hi - lo + 1, lo, hi, exact=False)
            return
        idx, need = self._candidates(fr, cols, lo, hi)
        if idx:
            first = fr.entry.first_seq
            self.gap(len(idx), first + idx[0], first + idx[-1], exact=not need)

    def deliver(self, fr: LookFrame, lo: int, hi: int) -> None:
        cols = fr.columns()
        if cols is None:
            self.gap(hi - lo + 1, lo, hi, exact=False)
            return
        if self.all:  # the same for every follower of everything: made once
            self.give(fr.everything(lo, hi))
            return
        idx, need = self._candidates(fr, cols, lo, hi)
        if not idx:
            return
        first = fr.entry.first_seq
        test = self.query.record_test if need else self.query.verify
        records = fr.records(idx)
        self.give([(first + i, r) for i, r in zip(idx, records)
                   if test(r) and not excluded(r, self.with_audit)])
