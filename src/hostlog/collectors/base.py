"""The one small interface every collector has.

A collector is built from its config section and a :class:`CollectorContext`,
and then only ever ``start()``-ed and ``stop()``-ed by the agent. It hands
batches of records to ``context.sink`` (never one record at a time) and, if its
source can replay, saves its position with ``context.checkpoints`` from the
``on_durable`` callback of the batch that reached it — never earlier.

A callback made by :class:`hostlog.collectors.checkpoint.DurableCheckpoint`
also carries ``.position = (name, value)``: the spool writer records it with
the seq its frame ends at before writing the frame, so that after kill -9 the
source resumes exactly where the spool ends (``spool/checkpoints.py``).

Collectors do not import the spool: the sink and the checkpoint store are
given to them, so a test can give them a fake of each.

Errors at a collector's edge (a protocol callback, a reading task) are never
left to the event loop, which would log them and drop the data with the
connection: the collector catches them and reports them with
``context.error(source, where, exc)`` (counted as
``hostlog_errors_total{source,where}``, logged once per kind). A failure of
the sink itself is fatal: :class:`GuardedSink` reports it, stops the agent
with a failure and raises :class:`~hostlog.errors.SinkError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hostlog.collectors.events import Counted
from hostlog.errors import SinkError
from hostlog.record import Batch, OnDurable, Record

log = logging.getLogger("hostlog.errors")




class Sink(Protocol):
    """Where batches go (the agent's spool writer)."""

    def has_room(self) -> bool: ...
    async def wait_room(self) -> None: ...
    async def write(self, batch: Batch, on_durable: OnDurable | None = None) -> None: ...
    def submit(self, batch: Batch, on_durable: OnDurable | None = None) -> None: ...
    def write_nowait(self, batch: Batch, on_durable: OnDurable | None = None) -> bool: ...


class CheckpointStore(Protocol):
    def load(self, name: str) -> Any: ...
    def save(self, name: str, value: Any) -> None: ...


class ErrorCounts:
    """Errors by ``(source, where)``: counted, logged once per kind.

    The first error of a kind (source, where, exception type) is logged with
    its traceback; later ones of the same kind only when the count reaches
    10, 100, 1000, ... so a flood of one bug cannot fill the log, and none
    goes unseen. ``on_fatal`` is called for fatal ones (the agent stops).
    """

    def __init__(self, on_fatal: Callable[[BaseException], None] | None = None) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.on_fatal = on_fatal
        self._seen: dict[tuple[str, str, type], int] = {}

    def report(self, source: str, where: str, exc: BaseException, *, fatal: bool = False) -> None:
        key = (source, where)
        self.counts[key] = self.counts.get(key, 0) + 1
        kind = (source, where, type(exc))
        seen = self._seen[kind] = self._seen.get(kind, 0) + 1
        if seen == 1:
            log.error("%s: error in %s%s: %s", source, where, " (fatal)" if fatal else "",
                      exc, exc_info=exc)
        elif _power_of_ten(seen):
            log.error("%s: error in %s: %s (%d times so far)", source, where, exc, seen)
        if fatal and self.on_fatal is not None:
            self.on_fatal(exc)

    def total(self) -> int:
        return sum(self.counts.values())


def _power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


class GuardedSink:
    """The sink collectors are given: the spool writer (possibly wrapped),
    with every failure to take a batch made fatal and visible.

    A sink that raises (the writer has failed, or a bug in a wrapper such as
    the metrics count) has not stored the batch; going on would lose it and
    every later one without a trace. So: count it as
    ``(source, "sink")``, stop the agent (``ErrorCounts.on_fatal``), and
    raise :class:`SinkError` for the collector to stop on.
    """

    def __init__(self, inner: Sink, errors: ErrorCounts) -> None:
        self.inner = inner
        self.errors = errors

    def _failed(self, batch: Batch, exc: Exception) -> SinkError:
        source = _batch_source(batch) or "agent"
        self.errors.report(source, "sink", exc, fatal=True)
        return SinkError(f"the spool writer did not take a batch of {len(batch)} "
                         f"records from {source}: {exc}")

    def has_room(self) -> bool:
        return self.inner.has_room()

    async def wait_room(self) -> None:
        await self.inner.wait_room()

    async def write(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        try:
            await self.inner.write(batch, on_durable)
        except Exception as exc:
            raise self._failed(batch, exc) from exc

    def submit(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        try:
            self.inner.submit(batch, on_durable)
        except Exception as exc:
            raise self._failed(batch, exc) from exc

    def write_nowait(self, batch: Batch, on_durable: OnDurable | None = None) -> bool:
        try:
            return self.inner.write_nowait(batch, on_durable)
        except Exception as exc:
            raise self._failed(batch, exc) from exc

    def __getattr__(self, name: str) -> Any:  # flush(), stats, ... of the writer
        return getattr(self.inner, name)


def _batch_source(batch: Batch) -> str:
    """The source of a batch's first record ('' for an empty batch)."""
    return str(batch.source[0]) if len(batch) else ""


@dataclass
class CollectorContext:
    hostname: str
    sink: Sink
    checkpoints: CheckpointStore
    # what collectors count, by (collector name, event) (collectors/events.py; exported as metrics)
    counters: dict[tuple[str, Counted], int] = field(default_factory=dict)
    # errors at the collectors' edges, by (source, where); see ErrorCounts
    errors: ErrorCounts = field(default_factory=ErrorCounts)

    def count(self, collector: str, event: Counted, n: int = 1) -> None:
        key = (collector, event)
        self.counters[key] = self.counters.get(key, 0) + n

    def error(self, source: str, where: str, exc: BaseException, *, fatal: bool = False) -> None:
        """Report an error caught at a collector's edge (see :class:`ErrorCounts`)."""
        self.errors.report(source, where, exc, fatal=fatal)

    async def guard(self, source: str, where: str, work: Awaitable[None]) -> None:
        """Run a collector's long-lived task: a :class:`SinkError` ends it
        quietly (already reported; the agent is stopping), any other
        exception is reported as fatal, since the task stops collecting."""
        try:
            await work
        except SinkError:
            pass
        except Exception as exc:
            self.error(source, where, exc, fatal=True)

    def notice(self, app: str, msg: str, *, severity: int = 5, **fields: str) -> Record:
        """A record the agent itself says (drops, suppressions, restarts)."""
        return Record(ts=time.time_ns(), msg=msg, host=self.hostname, source="hostlog",
                      app=app, severity=severity, fields=dict(fields))


class Collector(Protocol):
    name: str

    async def start(self) -> None:
        """Begin collecting; returns once listening/reading has started."""

    async def stop(self) -> None:
        """Stop collecting; everything read so far has been handed to the sink."""


async def finish_task(task: asyncio.Task[None] | None, timeout: float = 10.0) -> None:
    """Let a stopping collector's task write what it has read; cancel it after
    ``timeout`` (only a spool that stays full keeps a write waiting that long:
    what was not written is read again after the restart, from the checkpoint)."""
    if task is None:
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=timeout)
    except TimeoutError:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
