"""The collectors' shared edge: errors counted and logged once per kind, a
sink that fails made fatal and visible, never silent."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hostlog.collectors.base import CollectorContext, ErrorCounts, GuardedSink
from hostlog.errors import SinkError
from hostlog.record import Columns, Record


class BrokenSink:
    """A sink whose every call raises, as the metrics wrapper once did on Columns."""

    def __init__(self) -> None:
        self.calls = 0

    def has_room(self) -> bool:
        return True

    async def wait_room(self) -> None:
        return None

    def _fail(self, batch):
        self.calls += 1
        raise TypeError("'Columns' object is not subscriptable")

    async def write(self, batch, on_durable=None) -> None:
        self._fail(batch)

    def submit(self, batch, on_durable=None) -> None:
        self._fail(batch)

    def write_nowait(self, batch, on_durable=None) -> bool:
        self._fail(batch)
        return True


def columns(n: int, source: str = "syslog") -> Columns:
    return Columns.of([Record(ts=i, msg=f"m{i}", source=source) for i in range(n)])


def test_errors_are_counted_by_source_and_where_and_logged_once_per_kind(caplog):
    errors = ErrorCounts()
    caplog.set_level(logging.ERROR, logger="hostlog.errors")
    for _ in range(12):
        errors.report("syslog", "parse", ValueError("bad"))
    errors.report("syslog", "parse", KeyError("other kind"))
    errors.report("files", "pass", OSError("gone"))
    assert errors.counts == {("syslog", "parse"): 13, ("files", "pass"): 1}
    assert errors.total() == 14
    lines = [r.getMessage() for r in caplog.records]
    # the first of each kind with its traceback, then only at 10, 100, ...
    assert sum("ValueError" in str(r.exc_info) for r in caplog.records if r.exc_info) == 1
    assert [m for m in lines if "times so far" in m] == ["syslog: error in parse: bad (10 times so far)"]
    assert len(lines) == 4


def test_a_fatal_error_calls_on_fatal_and_others_do_not():
    seen: list[BaseException] = []
    errors = ErrorCounts(on_fatal=seen.append)
    errors.report("syslog", "parse", ValueError("contained"))
    assert seen == []
    exc = RuntimeError("writer gone")
    errors.report("agent", "sink", exc, fatal=True)
    assert seen == [exc]


@pytest.mark.parametrize("batch", [columns(3), columns(1, "journald")], ids=["syslog", "journald"])
def test_a_failing_sink_is_fatal_counted_and_raises_sink_error(batch):
    fatal: list[BaseException] = []
    errors = ErrorCounts(on_fatal=fatal.append)
    inner = BrokenSink()
    sink = GuardedSink(inner, errors)
    with pytest.raises(SinkError, match="did not take a batch"):
        sink.submit(batch)
    with pytest.raises(SinkError):
        sink.write_nowait(batch)
    with pytest.raises(SinkError):
        asyncio.run(sink.write(batch))
    source = batch.source[0]
    assert errors.counts == {(source, "sink"): 3}
    assert len(fatal) == 3 and all(isinstance(e, TypeError) for e in fatal)
    assert inner.calls == 3


def test_guard_ends_a_task_quietly_on_sink_error_and_reports_anything_else_as_fatal():
    fatal: list[BaseException] = []
    context = CollectorContext("h", sink=BrokenSink(), checkpoints=None,
                               errors=ErrorCounts(on_fatal=fatal.append))

    async def raises(exc: BaseException) -> None:
        raise exc

    asyncio.run(context.guard("files", "run", raises(SinkError("already reported"))))
    assert context.errors.counts == {} and fatal == []
    boom = ZeroDivisionError("bug")
    asyncio.run(context.guard("journald", "run", raises(boom)))
    assert context.errors.counts == {("journald", "run"): 1} and fatal == [boom]
