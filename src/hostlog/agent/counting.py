"""The counting sink: records and message bytes per source, on the way to the spool."""

from __future__ import annotations

from typing import Any

from hostlog.collectors.base import Sink
from hostlog.record import Batch, OnDurable

__all__ = ["CountingSink"]


class CountingSink:
    """The spool writer, counting records and message bytes per source on the way in.

    A batch comes from one collector, so its first record names the source:
    one dict update per batch; the bytes are the batch's text size (Columns
    often know it for free) or one ``len`` per record. Counted after the
    writer took the batch, so a batch it refused is not counted as in.
    """

    def __init__(self, inner: Sink, metrics: Any) -> None:
        self.inner = inner
        self.metrics = metrics  # hostlog.agent.metrics.Metrics

    def _count(self, batch: Batch) -> None:
        if not len(batch):
            return
        self.metrics.count_batch(batch.source[0], len(batch), batch.text_bytes())

    def has_room(self) -> bool:
        return self.inner.has_room()

    async def wait_room(self) -> None:
        await self.inner.wait_room()

    async def write(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        await self.inner.write(batch, on_durable)
        self._count(batch)

    def submit(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        self.inner.submit(batch, on_durable)
        self._count(batch)

    def write_nowait(self, batch: Batch, on_durable: OnDurable | None = None) -> bool:
        accepted = self.inner.write_nowait(batch, on_durable)
        if accepted:
            self._count(batch)
        return accepted

    def __getattr__(self, name: str) -> Any:  # flush(), stats, ... of the writer
        return getattr(self.inner, name)
