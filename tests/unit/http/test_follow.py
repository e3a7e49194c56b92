"""The followers' hub: a subscription's queue (properties), the budget, and
the hub over a real spool: live records, resuming from a position without a
gap or a repeat, what a follower over budget is told, audit records, the
follower limit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.http import tail
from hostlog.http.budget import Budget
from hostlog.http.follow import (
    FollowersFull,
    Hub,
    Subscription,
    get_hub,
    parse_position,
    start_for_last,
)
from hostlog.http.look import Missed
from hostlog.query.build import build_query
from hostlog.query.filters import Query
from hostlog.record import Record
from tests.support.http import ServedSpool


def run(coro):
    return asyncio.run(coro)


def rec(i: int, app: str = "web", severity: int = 6, source: str = "syslog") -> Record:
    return Record(ts=1_800_000_000_000_000_000 + i, msg=f"line {i}", host="h1", app=app, severity=severity,
                  source=source)


def drain(sub: Subscription) -> tuple[list[int], list[Missed], list[tuple[str, object]]]:
    """Everything a subscription has now, in the order a follower would send it."""
    seqs: list[int] = []
    gaps: list[Missed] = []
    stream: list[tuple[str, object]] = []
    for _ in range(100_000):
        pairs, missed = sub.take()
        if missed is not None:
            gaps.append(missed)
            stream.append(("gap", missed))
        seqs += [s for s, _ in pairs]
        stream += [("rec", s) for s, _ in pairs]
        if not pairs and missed is None:
            break
    return seqs, gaps, stream


# -- the queue ---------------------------------------------------------------------------

OPS = st.lists(st.one_of(st.tuples(st.just("offer"), st.integers(0, 30)),
                         st.tuples(st.just("gap"), st.integers(1, 30)),
                         st.tuples(st.just("take"), st.just(0))), max_size=60)


@given(OPS, st.integers(1, 40))
@settings(max_examples=300, deadline=None)
def test_a_queue_keeps_records_and_gaps_in_order_and_accounts_for_every_position(ops, capacity) -> None:
    sub = Subscription(query=Query(), capacity=capacity, start=0, after=0)
    pos = 0
    offered: list[int] = []  # positions the hub delivered (or found the queue full for)
    counted: list[int] = []  # positions the hub counted without delivering
    out: list[tuple[str, object]] = []
    for op, k in ops:
        if op == "offer":
            pairs = [(pos + i + 1, rec(pos + i + 1)) for i in range(k)]
            offered += [s for s, _ in pairs]
            pos += k
            sub._push(pairs)
            assert sub._queued <= capacity
        elif op == "gap":
            counted += list(range(pos + 1, pos + k + 1))
            sub._note_gap(k, pos + 1, pos + k, True)
            pos += k
        else:
            out += drain(sub)[2]
    out += drain(sub)[2]
    got = [s for kind, s in out if kind == "rec"]
    gaps = [g for kind, g in out if kind == "gap"]
    assert got == sorted(got) and len(set(got)) == len(got)  # in order, never twice
    # a gap comes where it happened: between the records around it
    last = 0
    for kind, item in out:
        if kind == "rec":
            assert isinstance(item, int) and item > last
            last = item
        else:
            assert isinstance(item, Missed) and item.first > last
            last = item.last
    # every position is either sent or inside exactly one gap, whose count is exact
    told = sum(g.count for g in gaps)
    assert len(got) + told == pos
    for p in range(1, pos + 1):
        inside = [g for g in gaps if g.first <= p <= g.last]
        assert (p in got) != bool(inside) and len(inside) <= 1
    assert sub.missed_total >= told - len(counted) and sub.missed_total == told


def test_take_returns_the_gap_before_the_records_after_it() -> None:
    sub = Subscription(query=Query(), capacity=3, start=0, after=0)
    sub._push([(i, rec(i)) for i in range(1, 6)])  # 1-3 queued, 4-5 lost
    sub._push([(6, rec(6))])  # still full: lost too
    pairs, missed = sub.take()
    assert [s for s, _ in pairs] == [1, 2, 3] and missed is None
    pairs, missed = sub.take()  # the gap alone: nothing after it yet
    assert pairs == [] and missed == Missed(3, 4, 6, True)
    assert sub.take() == ([], None)
    sub._push([(7, rec(7))])
    pairs, missed = sub.take()
    assert missed is None and [s for s, _ in pairs] == [7]


def test_offer_applies_the_query_and_leaves_audit_records_out() -> None:
    sub = Subscription(query=build_query(priority="warning"), capacity=100, start=0, after=0)
    sub.offer([(1, rec(1, severity=3)), (2, rec(2, severity=6)), (3, rec(3, severity=4, source="audit"))])
    assert [s for s, _ in sub.take()[0]] == [1]
    audit = Subscription(query=build_query(sources=["audit"]), capacity=100, start=0, after=0)
    audit.offer([(1, rec(1, source="audit")), (2, rec(2))])
    assert [s for s, _ in audit.take()[0]] == [1]


# -- the budget ----------------------------------------------------------------------------

class Clocks:
    def __init__(self) -> None:
        self.now = 100.0
        self.cpu = 0.0

    def wall(self) -> float:
        return self.now

    def cpu_time(self) -> float:
        return self.cpu


def test_the_budget_follows_how_busy_ingest_is() -> None:
    c = Clocks()
    b = Budget(share_min=0.02, share_max=0.5, burst=0.2, clock=c.wall, cpu=c.cpu_time)
    assert b.records_allowed() > 0
    b.charge(0.3, 1000)  # a burst: over budget
    assert b.records_allowed() == 0
    # an idle agent: tokens come back at the largest share, up to 0.2 s of it
    c.now += 1.0
    c.cpu += 0.01
    b.refill()
    assert b.share == pytest.approx(0.5) and b.tokens == pytest.approx(0.1)
    # a busy one (a CPU of work that is not the followers'): the smallest share
    c.now += 1.0
    c.cpu += 1.0 + 0.05
    b.charge(0.05)
    b.refill()
    assert b.share == pytest.approx(0.02) and b.busy == pytest.approx(1.0)
    assert b.tokens <= 0.2 * 0.02  # what was saved at the larger share is cut
    # what the followers were charged is not counted as the agent's own work
    c.now += 1.0
    c.cpu += 0.4
    b.charge(0.39)
    b.refill()
    assert b.busy == pytest.approx(0.01) and b.share == pytest.approx(0.5)
    # a spool growing fast: the smallest share even if the CPU clock says little
    b.note_head(1_000)
    c.now += 1.0
    b.refill()
    b.note_head(1_000 + 500_000)
    c.now += 1.0
    b.refill()
    assert b.rate == pytest.approx(500_000) and b.share == pytest.approx(0.02)


def test_the_cost_of_a_record_is_measured() -> None:
    c = Clocks()
    b = Budget(clock=c.wall, cpu=c.cpu_time)
    for _ in range(20):
        b.charge(0.01, 1000)  # 10 µs a record
    assert b.cost == pytest.approx(10e-6, rel=0.01)
    assert b.spent == pytest.approx(0.2)


# -- the hub over a spool ------------------------------------------------------------------

def generous(hub: Hub) -> None:
    """A budget that never runs out (the tests of what is delivered, not of the budget)."""
    hub.budget = Budget(share_min=1.0, share_max=1.0, burst=1e6)


def starved(hub: Hub) -> None:
    """A budget that is always spent: every record is counted, none built."""
    hub.budget = Budget(share_min=0.0, share_max=0.0, burst=0.0)
    hub.budget.tokens = -1e9


class Collector:
    """What a subscription gives a follower, taken as it comes."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.seqs: list[int] = []
        self.gaps: list[Missed] = []
        self.records: list[Record] = []

    def take_all(self) -> None:
        for _ in range(100_000):
            pairs, missed = self.sub.take()
            if missed is not None:
                self.gaps.append(missed)
            self.seqs += [s for s, _ in pairs]
            self.records += [r for _, r in pairs]
            if not pairs and missed is None:
                return

    def told(self) -> int:
        return len(self.seqs) + sum(g.count for g in self.gaps)

    async def until_told(self, n: int, timeout: float = 10.0) -> None:
        """Take what comes until ``n`` records were given or told of."""
        deadline = time.monotonic() + timeout
        while True:
            self.take_all()
            if self.told() >= n:
                return
            assert time.monotonic() < deadline, f"told of {self.told()} of {n}"
            await asyncio.sleep(0.01)


def test_live_subscriptions_get_what_their_query_selects_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServedSpool(tmp_path, modules=[tail]) as served:
            hub = get_hub(served.server.ctx)
            generous(hub)
            await served.write([rec(i) for i in range(50)])  # before: not shown
            everything = Collector(await hub.subscribe(Query()))
            warnings = Collector(await hub.subscribe(build_query(priority="warning")))
            web = Collector(await hub.subscribe(build_query(units=["api"])))
            for k in range(5):
                await served.write([rec(100 + 10 * k + i, app="api" if i % 3 == 0 else "web",
                                        severity=4 if i % 2 else 6) for i in range(10)])
            await everything.until_told(50)
            await asyncio.sleep(0.2)
            for c in (everything, warnings, web):
                c.take_all()
                assert not c.gaps
            assert everything.seqs == list(range(51, 101))
            assert [r.msg for r in everything.records] == [f"line {100 + i}" for i in range(50)]
            assert warnings.seqs == [51 + i for i in range(50) if i % 10 % 2]
            assert web.seqs == [51 + i for i in range(50) if i % 10 % 3 == 0]
            assert all(r.app == "api" for r in web.records)
            for c in (everything, warnings, web):
                hub.unsubscribe(c.sub)
    run(main())


def test_resuming_from_a_position_gives_the_history_then_live_without_a_gap(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServedSpool(tmp_path, modules=[tail]) as served:
            ctx = served.server.ctx
            hub = get_hub(ctx)
            generous(hub)
            await served.write([rec(i) for i in range(300)])
            live = await hub.subscribe(Query())  # the hub runs; its position is 300
            sub = await hub.subscribe(Query(), after=120)
            assert not sub.live and sub.start == 300
            got: list[int] = []
            writer = asyncio.get_running_loop().create_task(
                served.write([rec(1000 + i) for i in range(200)]))  # while the history is read
            async for step in hub.catch_up(sub):
                assert step.missed is None
                got += [s for s, _ in step]
            await writer
            assert sub.live
            c = Collector(sub)
            await c.until_told(380 - len(got))
            got += c.seqs
            assert got == list(range(121, 501)) and not c.gaps
            hub.unsubscribe(sub)
            hub.unsubscribe(live)
    run(main())


def test_over_budget_every_record_is_counted_exactly_and_told(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServedSpool(tmp_path, modules=[tail]) as served:
            hub = get_hub(served.server.ctx)
            starved(hub)
            everything = Collector(await hub.subscribe(Query()))
            errors = Collector(await hub.subscribe(build_query(priority="err")))
            await served.write([rec(i, severity=3 if i % 7 == 0 else 6) for i in range(5000)])
            await served.write([rec(5000 + i, severity=6) for i in range(3000)])
            await everything.until_told(8000)
            await errors.until_told(715)
            assert everything.seqs == [] and everything.told() == 8000
            assert all(g.exact for g in everything.gaps)
            assert min(g.first for g in everything.gaps) == 1 and max(g.last for g in everything.gaps) == 8000
            # a filter the columns decide: counted exactly, only what it selects
            assert errors.seqs == [] and errors.told() == len(range(0, 5000, 7)) == 715
            assert all(g.exact for g in errors.gaps)
            hub.unsubscribe(everything.sub)
            hub.unsubscribe(errors.sub)
    run(main())


def test_a_full_queue_is_told_what_it_missed_and_others_are_not_held_back(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServedSpool(tmp_path, modules=[tail], extra_config="follower_buffer = 16\n") as served:
            hub = get_hub(served.server.ctx)
            generous(hub)
            slow = Collector(await hub.subscribe(Query()))  # never takes until the end
            fast = Collector(await hub.subscribe(Query()))
            for k in range(10):
                await served.write([rec(10 * k + i) for i in range(10)])
                await fast.until_told(10 * (k + 1))
            assert fast.seqs == list(range(1, 101)) and not fast.gaps
            await asyncio.sleep(0.3)
            slow.take_all()
            assert slow.seqs == list(range(1, 17))
            assert [(g.count, g.first, g.last, g.exact) for g in slow.gaps] == [(84, 17, 100, True)]
            hub.unsubscribe(slow.sub)
            hub.unsubscribe(fast.sub)
    run(main())


def test_audit_records_reach_only_who_asks_for_them(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServedSpool(tmp_path, modules=[tail]) as served:
            for budget in (generous, starved):
                hub = get_hub(served.server.ctx)
                budget(hub)
                everything = Collector(await hub.subscribe(Query()))
                audit = Collector(await hub.subscribe(build_query(sources=["audit"])))
                records = [rec(i) for i in range(40)]
                for i in range(0, 40, 4):
                    records[i] = Record(ts=records[i].ts, msg="GET /", app="hostlog-http", source="audit")
                await served.write(records)
                await everything.until_told(30)
                await audit.until_told(10)
                await asyncio.sleep(0.2)
                everything.take_all()
                audit.take_all()
                assert everything.told() == 30 and audit.told() == 10
                if budget is generous:
                    assert all(r.source != "audit" for r in everything.records)
                    assert [r.source for r in audit.records] == ["audit"] * 10
                hub.unsubscribe(everything.sub)
                hub.unsubscribe(audit.sub)
                await hub.close()
                served.server.ctx.extras.pop("tail_hub")
    run(main())


def test_beyond_max_followers_a_503(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServedSpool(tmp_path, modules=[tail], extra_config="max_followers = 2\n") as served:
            hub = get_hub(served.server.ctx)
            a = await hub.subscribe(Query())
            b = await hub.subscribe(Query())
            with pytest.raises(FollowersFull) as refused:
                await hub.subscribe(Query())
            assert refused.value.status == 503
            hub.unsubscribe(a)
            c = await hub.subscribe(Query())  # a place is free again
            hub.unsubscribe(b)
            hub.unsubscribe(c)
    run(main())


def test_positions_cursors_and_the_last_n(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServedSpool(tmp_path, modules=[tail]) as served:
            ctx = served.server.ctx
            records = [rec(i, severity=3 if i % 2 else 6) for i in range(20)]
            records[19] = Record(ts=1, msg="audit", app="hostlog-http", source="audit")
            # a record another node accepted: its cursor names that node
            records[5] = Record(ts=2, msg="from afar", origin="0" * 32, seq=77)
            await served.write(records)
            reader = ctx.reader()
            assert parse_position(ctx.agent_id, f"{ctx.agent_id}:12") == 12
            from hostlog.journal.fields import format_cursor
            foreign = format_cursor("0" * 32, 77)
            assert parse_position(ctx.agent_id, foreign, ctx.reader) == 6
            for bad in ("", "nope", f"{ctx.agent_id}:x", "abc:-1"):
                with pytest.raises(ValueError):
                    parse_position(ctx.agent_id, bad, ctx.reader)
            # the last 3 (the audit record at 20 does not count): after position 16
            assert start_for_last(reader, Query(), 3) == 16
            assert start_for_last(reader, build_query(priority="err"), 2) == 15  # 16 and 18
            assert start_for_last(reader, Query(), 500) == 0  # fewer: everything
    run(main())


def test_a_resume_too_far_behind_skips_the_oldest_and_says_so(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServedSpool(tmp_path, modules=[tail]) as served:
            hub = get_hub(served.server.ctx)
            generous(hub)
            await served.write([rec(i) for i in range(300)])
            sub = await hub.subscribe(Query(), after=10)
            sub.max_behind = 100
            steps = [step async for step in hub.catch_up(sub)]
            assert steps[0] == [] and steps[0].missed == Missed(190, 11, 200, False)
            assert [s for step in steps[1:] for s, _ in step] == list(range(201, 301))
            assert sub.live and sub.missed_total == 190
            hub.unsubscribe(sub)
    run(main())
