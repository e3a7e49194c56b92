"""The one small interface every collector has.

A collector is built from its config section and a :class:`CollectorContext`,
and then only ever ``start()``-ed and ``stop()``-ed by the agent. It hands
batches of records to ``context.sink`` (never one record at a time) and, if its
source can replay, saves its position with ``context.checkpoints`` from the
``on_durable`` callback of the batch that reached it — never earlier.

A callback made by :class:`hostlog.collectors.checkpoint.DurableCheckpoint`
also carries ``.position = (name, value)``: the spool writer records it with
the seq its frame ends at before writing the frame, so that after kill -9 the
source resumes exactly where the spool ends (``agent/checkpoints.py``).

Collectors do not import the spool: the sink and the checkpoint store are
given to them, so a test can give them a fake of each.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from hostlog.record import Columns, Record

OnDurable = Callable[[int], None]
#: A batch: a list of Records, or the same held by column (iterating Columns
#: gives its Records, so a sink that only collects may treat both alike).
Batch = list[Record] | Columns


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


@dataclass
class CollectorContext:
    hostname: str
    sink: Sink
    checkpoints: CheckpointStore
    # counters a collector keeps: name -> value (exported as metrics)
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

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
