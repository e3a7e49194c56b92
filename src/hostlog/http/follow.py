"""Followers: every reader that follows the spool (``/api/v1/tail``,
``/entries?follow``, the viewer) is served by one :class:`Hub`.

The hub looks at the spool every ``poll_s`` (on the read threads, never on
the event loop). One look reads each frame appended since the last one once
(its chunk decrypted and decompressed once, its Records built once) for
every subscription: each subscription's query is tested on the frame's
index, then on its columns, and on the Records only where the columns
cannot decide, so a follower of one unit costs next to nothing in the frames
that do not hold it.

Bounded, and never in ingest's way:

* a subscription holds at most ``capacity`` records ([http]
  follower_buffer); what arrives while it is full is not queued but counted,
  and the subscriber is told: a :class:`Missed` with the positions it lost
  (it can read them again by paging from ``first``);
* the followers' work together (the hub's looks, the catch-ups, and what
  the route handlers charge for encoding and sending) is held to a share of
  one CPU: :class:`Budget`. The share is large while the agent has little
  else to do and small when ingest keeps it busy (the rate the spool grows
  at, and the process's CPU time besides the followers'). Over its budget, the hub does not build records: it
  counts what each subscription would have selected, from the frame index
  (and the columns where the index cannot tell), and hands it a Missed. The
  newest positions of a look are the ones delivered, so a follower that is
  told it missed records is still shown the live ones.

Order: a subscription's queue keeps records and gaps in spool order;
:meth:`Subscription.take` returns the gap before the records it returns.

Resuming: a subscription made with ``after`` (a position) is not live until
:meth:`Hub.catch_up` has read the history after it up to the hub's position,
step by step (the hub may move on meanwhile; the catch-up follows it), and
then switches it to live while no look is under way: no record is lost or
given twice between history and live. (A subscription with ``max_behind``,
the tail's resume, that is further behind skips the oldest, and is told.)

Cursors: a follower resumes after a position of this node's spool,
``<node id>:<n>`` (:func:`position_cursor`); for the records this node
accepted itself that is also their ``__CURSOR``.

Audit records (``source = "audit"``) reach only a subscription whose query
asks for that source: a follower of everything would otherwise be told of
its own reading, forever.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hostlog.http.budget import Budget
from hostlog.http.look import AUDIT_SOURCE, LookFrame, LookPlan, Missed, Pairs, excluded
from hostlog.query.filters import Query
from hostlog.query.run import FOLLOW_POLL_S, iter_selected, last_seq
from hostlog.record import Record

if TYPE_CHECKING:
    from hostlog.http.server import HttpContext
    from hostlog.spool.reader import SpoolReader

log = logging.getLogger("hostlog.http")

__all__ = ["CatchUp", "FollowersFull", "Hub", "Subscription", "get_hub", "parse_position",
           "position_cursor", "start_for_last"]

#: records one look may deliver to the followers: a burst beyond this is
#: read over the next looks (or counted), not in one long hold of the GIL;
#: and what the followers then encode together stays in the encoders' caches
SCAN_LIMIT = 2_000
#: positions one look may pass over (a frame only counted costs little)
LOOK_POSITIONS = 1_000_000
#: records a catch-up (resume from a cursor) reads per step
CATCHUP_STEP = 5_000
#: the longest the hub waits, over budget, before it looks again
IDLE_MAX_S = 1.0
#: a gap with no records after it yet is told after this long
GAP_NOTICE_S = 0.5


def position_cursor(node_id: str, seq: int) -> str:
    """The cursor of position ``seq`` in the spool of node ``node_id``."""
    return f"{node_id}:{seq}"


def parse_position(node_id: str, cursor: str, reader_factory: object = None) -> int:
    """The spool seq a cursor names on this node. A cursor of another origin
    (a record a central node received) is looked up by its identity: the
    spool seq of that record (ValueError when the spool does not hold it).
    Blocking when it looks up: call it on the read threads."""
    origin, sep, seq_text = cursor.rpartition(":")
    if not sep or not seq_text.isascii() or not seq_text.isdigit():
        raise ValueError(f"not a cursor: {cursor!r}")
    seq = int(seq_text)
    if origin == node_id:
        return seq
    if reader_factory is None:
        raise ValueError(f"cursor {cursor!r} is not of this node ({node_id})")
    reader = reader_factory()  # type: ignore[operator]
    query = Query(matches=[{"__CURSOR": {cursor.encode()}}])
    for spool_seq, _ in iter_selected(reader, query, identity=True):
        return spool_seq
    raise ValueError(f"no record with cursor {cursor!r} in this spool")


def start_for_last(reader: SpoolReader, query: Query, n: int) -> int:
    """The position to follow after so that the last ``n`` records ``query``
    selects come first (``hostlog query -f -n N``): the position before the
    n-th newest, or before the oldest held when there are fewer. Blocking."""
    with_audit = AUDIT_SOURCE in query.sources
    found = 0
    seq = 0
    if n > 0:
        for seq, record in iter_selected(reader, query, reverse=True):
            if excluded(record, with_audit):
                continue
            found += 1
            if found >= n:
                return seq - 1
    for _, entry in reader.frames_quick():
        return entry.first_seq - 1  # fewer than n: everything held
    return 0


class CatchUp(list[tuple[int, Record]]):
    """One step of :meth:`Hub.catch_up`: (spool seq, Record) pairs, and in
    ``missed`` what was lost before them (None: nothing)."""

    missed: Missed | None = None


class FollowersFull(web.HTTPServiceUnavailable):
    """[http] max_followers are being served: 503 (raised by :meth:`Hub.subscribe`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(text=f"{limit} followers are served already ([http] max_followers); "
                              "try again later\n", headers={"Retry-After": "5"})


@dataclass(eq=False)
class Subscription:
    query: Query
    capacity: int
    start: int  # positions up to this are history (read by catch-up), after it live
    after: int  # the subscriber has everything up to this position (history)
    closed: bool = False
    with_audit: bool = False
    live: bool = True  # False until catch_up() has read the history after ``after``
    #: a catch-up further behind than this many positions skips the oldest (and tells)
    max_behind: int | None = None
    delivered: int = 0  # records queued for it, in all
    missed_total: int = 0  # records it was told it missed, in all
    # queued records in spool order, in parts: the gap before each part
    _parts: deque[tuple[Missed | None, Pairs]] = field(default_factory=deque)
    _queued: int = 0
    _gap: list[Any] | None = None  # count, first, last, exact: after the last part
    _gap_since: float = 0.0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.with_audit = AUDIT_SOURCE in self.query.sources

    @property
    def room(self) -> int:
        return self.capacity - self._queued

    def offer(self, pairs: Pairs) -> None:
        """New records (on the event loop): the ones this query selects are queued."""
        test = self.query.record_test
        self._push([(seq, r) for seq, r in pairs if not excluded(r, self.with_audit) and test(r)])
        self._wake.set()

    def _push(self, pairs: Pairs) -> None:
        """Queue records the query selects; beyond ``capacity``, count them."""
        if not pairs:
            return
        room = self.capacity - self._queued
        if room < len(pairs):
            kept, lost = pairs[:max(room, 0)], pairs[max(room, 0):]
            self._push(kept)
            self._note_gap(len(lost), lost[0][0], lost[-1][0], True)
            return
        if self._gap is None and self._parts:
            self._parts[-1][1].extend(pairs)
        else:
            self._parts.append((self._close_gap(), list(pairs)))
        self._queued += len(pairs)
        self.delivered += len(pairs)

    def _note_gap(self, count: int, first: int, last: int, exact: bool) -> None:
        self.missed_total += count
        gap = self._gap
        if gap is None:
            self._gap = [count, first, last, exact]
            self._gap_since = time.monotonic()
        else:
            gap[0] += count
            gap[1] = min(gap[1], first)
            gap[2] = max(gap[2], last)
            gap[3] = gap[3] and exact

    def _close_gap(self) -> Missed | None:
        gap, self._gap = self._gap, None
        return None if gap is None else Missed(*gap)

    def take(self) -> tuple[Pairs, Missed | None]:
        """The next queued records (oldest first) and the gap before them
        (None: none). Records after a further gap stay queued for the next
        call (the subscription stays woken); a gap with no records after it
        yet comes with an empty list."""
        if self._parts:
            missed, pairs = self._parts.popleft()
            self._queued -= len(pairs)
        else:
            missed, pairs = self._close_gap(), []
        if not self._parts and self._gap is None:
            self._wake.clear()
        return pairs, missed

    def wake(self) -> None:
        """Make :meth:`wait` return (a closing connection, a shutdown)."""
        self._wake.set()

    async def wait(self, timeout: float | None = None) -> None:
        """Until there is something to take (or a wake()), at most ``timeout`` seconds."""
        if self._wake.is_set():
            return
        timer = None if timeout is None else asyncio.get_running_loop().call_later(timeout, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            if timer is not None:
                timer.cancel()


@dataclass
class _Look:
    scanned: int
    built: int
    cpu: float
    more: bool
    head: int


class Hub:
    """One poller of the spool for every follower of one HTTP server."""

    def __init__(self, ctx: HttpContext, poll_s: float = FOLLOW_POLL_S, budget: Budget | None = None) -> None:
        self.ctx = ctx
        self.poll_s = poll_s
        self.budget = budget if budget is not None else Budget()
        self.subscriptions: set[Subscription] = set()
        self.scanned = 0  # every position up to this has been offered
        self._reader = ctx.reader()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # held while a look is under way and applied
        self._bloom: dict[bytes, int] = {}
        http = ctx.config.http
        self.capacity = http.follower_buffer if http is not None else 10_000
        self.max_followers = http.max_followers if http is not None else 256

    async def subscribe(self, query: Query, after: int | None = None) -> Subscription:
        """A subscription to what ``query`` selects after position ``after``
        (None: from now on). With ``after``, run :meth:`catch_up` for the
        history first; the subscription is live when it ends. Raises
        :class:`FollowersFull` (a 503) beyond [http] max_followers."""
        async with self._lock:
            if len(self.subscriptions) >= self.max_followers:
                self.ctx.count("followers_refused")
                raise FollowersFull(self.max_followers)
            if self._task is None or self._task.done():
                self.scanned = await self.ctx.read(last_seq, self._reader)
                self._task = asyncio.get_running_loop().create_task(self._run(), name="hostlog-http-follow")
            start = self.scanned
            begin = start if after is None else min(after, start)
            sub = Subscription(query=query, capacity=self.capacity, start=start, after=begin,
                               live=begin >= start)
            self.subscriptions.add(sub)
            self.ctx.counters["followers"] = len(self.subscriptions)
            return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        self.subscriptions.discard(sub)
        self.ctx.counters["followers"] = len(self.subscriptions)

    async def catch_up(self, sub: Subscription) -> AsyncIterator[CatchUp]:
        """The history a resumed subscription asked for: what its query
        selects after ``sub.after``, in steps, until it meets the hub's
        position; then the subscription is live. Each step waits for the
        followers' budget. A subscription with ``max_behind`` that is
        further behind than that skips the oldest positions, and is told
        (a step with no records and a Missed, ``exact`` False)."""
        query = dataclasses.replace(sub.query)  # its own: the hub's thread uses sub.query
        reader = self.ctx.reader()
        while not sub.closed and not sub.live:
            target = self.scanned
            if sub.after >= target:
                async with self._lock:  # no look under way: the switch loses nothing
                    if sub.after >= self.scanned:
                        sub.start = self.scanned
                        sub.after = self.scanned
                        sub.live = True
                        return
                continue
            if sub.max_behind is not None and target - sub.after > sub.max_behind:
                skip_to = target - sub.max_behind  # as a live follower's full queue would lose
                gap = CatchUp()
                gap.missed = Missed(skip_to - sub.after, sub.after + 1, skip_to, False)
                sub.after = skip_to
                sub.missed_total += gap.missed.count
                yield gap
            while self.budget.records_allowed() <= 0 and not sub.closed:
                await asyncio.sleep(self.poll_s)
            step, reached, cpu = await self.ctx.read(self._history, reader, query, sub.with_audit,
                                                     sub.after, target)
            self.budget.charge(cpu, len(step))
            sub.after = reached
            if step or step.missed is not None:
                if step.missed is not None:
                    sub.missed_total += step.missed.count
                yield step

    @staticmethod
    def _history(reader: SpoolReader, query: Query, with_audit: bool, after: int,
                 until: int) -> tuple[CatchUp, int, float]:
        """Up to CATCHUP_STEP records after ``after`` (up to ``until``), the
        position reached, and the CPU time it took. What cannot be read
        (positions retention removed, damaged frames) is the step's ``missed``."""
        t0 = time.thread_time()
        out = CatchUp()
        gaps: list[Missed] = []
        for _, entry in reader.frames_quick(after_seq=after):
            if entry.first_seq > after + 1:  # positions after ``after`` are gone
                gaps.append(Missed(entry.first_seq - after - 1, after + 1, entry.first_seq - 1, False))
            break
        damage_before = len(reader.damage)
        reached = until
        for seq, record in iter_selected(reader, query, after_seq=after):
            if seq > until:
                break
            if excluded(record, with_audit):
                continue
            out.append((seq, record))
            if len(out) >= CATCHUP_STEP:
                reached = seq
                break
        for damage in reader.damage[damage_before:]:
            log.warning("http: catching a follower up: %s", damage)
            if damage.first_seq is not None and damage.count:
                gaps.append(Missed(damage.count, damage.first_seq, damage.first_seq + damage.count - 1,
                                   False))
        del reader.damage[damage_before:]
        if gaps:
            out.missed = Missed(sum(g.count for g in gaps), min(g.first for g in gaps),
                                max(g.last for g in gaps), False)
        return out, reached, time.thread_time() - t0

    def _look(self, after: int, plans: list[LookPlan], allowed: int) -> _Look:
        """One look at the spool after position ``after`` (on a read thread).

        What the budget allows (``allowed`` records) is delivered, the newest
        first: when more than that came since the last look, the older
        positions are counted (each plan is told what it missed there) and
        the newest ``allowed`` delivered. One look delivers SCAN_LIMIT
        positions at most (and passes LOOK_POSITIONS at most): the rest is
        for the next look, at once."""
        t0 = time.thread_time()
        reader = self._reader
        head = last_seq(reader)
        if head <= after:
            return _Look(after, 0, time.thread_time() - t0, False, head)
        skip_to = max(after, head - allowed)  # after..skip_to: over budget, counted
        end = min(head, after + LOOK_POSITIONS, skip_to + SCAN_LIMIT)
        deliver_from = min(skip_to, end)
        allowed = min(allowed, SCAN_LIMIT)
        built = 0
        if plans:
            for seg, entry in reader.frames_quick(after_seq=after):
                first = entry.first_seq
                if first > end:
                    break
                fr = LookFrame(reader, seg, entry, max(after + 1, first), min(entry.last_seq, end), self._bloom)
                over = built >= allowed
                for plan in plans:
                    plan.frame(fr, deliver_from, over)
                built += fr.built
                if fr.hi >= end:
                    break
        return _Look(end, built, time.thread_time() - t0, end < head, head)

    async def _run(self) -> None:
        while self.subscriptions:
            allowed = self.budget.records_allowed()
            if allowed <= 0:
                # over budget: what comes meanwhile is counted by the next look, in one go
                budget = self.budget
                await asyncio.sleep(min(IDLE_MAX_S, max(self.poll_s, -budget.tokens / max(budget.share, 1e-3))))
                self._tell_gaps()
                allowed = self.budget.records_allowed()
            async with self._lock:
                plans = [LookPlan(sub) for sub in self.subscriptions if sub.live]
                try:
                    look = await self.ctx.read(self._look, self.scanned, plans, allowed)
                except Exception as exc:  # a damaged frame, a segment gone: said, and tried again
                    self.ctx.count("follow_errors")
                    log.warning("http: following the spool: %s", exc)
                    look = None
                if look is not None:
                    self.scanned = look.scanned
                    self._apply(plans)
            if look is None:
                await asyncio.sleep(1.0)
                continue
            self.budget.charge(look.cpu, look.built)
            self.budget.note_head(look.head)
            self._tell_gaps()
            self._show()
            if not look.more:
                await asyncio.sleep(self.poll_s)
        self._task = None

    def _show(self) -> None:
        """The followers in ``hostlog ctl status`` (the http section)."""
        counters = self.ctx.counters
        counters["followers"] = len(self.subscriptions)
        counters["follow_cpu_ms"] = round(self.budget.spent * 1000)
        counters["follow_share_pct"] = round(self.budget.share * 100)
        counters["follow_busy_pct"] = round(self.budget.busy * 100)
        counters["follow_cost_us"] = round(self.budget.cost * 1e6)
        counters["follow_spool_rate"] = round(self.budget.rate)

    def _tell_gaps(self) -> None:
        """Wake the subscriptions whose gap (with no records after it) has
        waited GAP_NOTICE_S: gaps are told when records follow them, or then."""
        now = time.monotonic()
        for sub in self.subscriptions:
            if sub._gap is not None and now - sub._gap_since >= GAP_NOTICE_S:
                sub.wake()

    def _apply(self, plans: list[LookPlan]) -> None:
        delivered = missed = 0
        for plan in plans:
            sub = plan.sub
            if sub.closed or not plan.items:
                continue
            got = 0
            for pairs, gap in plan.items:
                if gap is not None:
                    sub._note_gap(gap.count, gap.first, gap.last, gap.exact)
                    missed += gap.count
                else:
                    sub._push(pairs)
                    got += len(pairs)
            if got:
                sub.wake()
            delivered += got
        if delivered:
            self.ctx.count("follow_records", delivered)
        if missed:
            self.ctx.count("follow_missed", missed)

    async def close(self) -> None:
        for sub in list(self.subscriptions):
            self.unsubscribe(sub)
            sub.wake()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def get_hub(ctx: HttpContext) -> Hub:
    """The server's hub (made at first use)."""
    hub = ctx.extras.get("tail_hub")
    if hub is None:
        hub = ctx.extras["tail_hub"] = Hub(ctx)
    assert isinstance(hub, Hub)
    return hub
