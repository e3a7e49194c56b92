"""Saving a replayable source's position once what it covers is durable.

A collector hands each batch to the sink with ``on_durable=checkpoint.on_durable(value)``,
where ``value`` is its position just after that batch (a journal cursor, file
offsets). The callback runs on the loop when the batch is durable; the save
itself (a temp file, two fsyncs and a rename) runs on a worker thread so the
loop does not stall on the disk. Saves are coalesced: while one is running,
newer positions replace each other and only the newest is written next.
The position saved last is always that of the newest durable batch, because
the sink reports durability in the order batches were written.

:meth:`close` (the collector has stopped) first waits, boundedly, for the
collector's last batch to be durable, so a source stopped and started again
with the spool writer still running (a config reload) resumes from its true
position instead of repeating what it read. After it, saves happen at once on
the calling thread: when the agent stops the spool writer next and it reports
the last batches durable, the final position is on disk before the agent exits.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from hostlog.collectors.base import CheckpointStore, Sink
from hostlog.record import Columns

log = logging.getLogger("hostlog.checkpoint")

_UNSET = object()

#: Seconds a stopping collector waits for its last batches to become durable.
STOP_WAIT = 10.0


class DurableCheckpoint:
    def __init__(self, store: CheckpointStore, name: str) -> None:
        self.store = store
        self.name = name
        self._lock = threading.Lock()  # one save at a time: they share a temp file name
        self._latest: Any = _UNSET     # newest durable position not yet saved
        self._running: asyncio.Future[None] | None = None
        self._closed = False
        self.saves = 0

    def load(self) -> Any:
        return self.store.load(self.name)

    def on_durable(self, value: Any) -> Callable[[int], None]:
        """The ``on_durable`` callback for a batch whose end position is ``value``."""
        def durable(_seq: int) -> None:
            self._latest = value
            if self._closed:
                self._save_latest()
            elif self._running is None:
                self._start()
        # the spool writer records this position with the frame's seq before
        # writing it, so a restart after kill -9 resumes exactly there
        durable.position = (self.name, value)  # type: ignore[attr-defined]
        return durable

    def _start(self) -> None:
        value, self._latest = self._latest, _UNSET
        loop = asyncio.get_running_loop()
        self._running = loop.run_in_executor(None, self._save, value)
        self._running.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[None]) -> None:
        self._running = None
        if not fut.cancelled() and fut.exception() is not None:
            log.error("checkpoint %s not saved: %s", self.name, fut.exception())
        if self._latest is not _UNSET:
            if self._closed:
                self._save_latest()
            else:
                self._start()

    def _save_latest(self) -> None:
        value, self._latest = self._latest, _UNSET
        if value is not _UNSET:
            try:
                self._save(value)
            except OSError as exc:
                log.error("checkpoint %s not saved: %s", self.name, exc)

    def _save(self, value: Any) -> None:
        with self._lock:
            self.store.save(self.name, value)
            self.saves += 1

    async def close(self, sink: Sink | None = None, timeout: float = STOP_WAIT) -> None:
        """Called by a stopping collector once it has handed ``sink`` its last batch.

        Waits (at most ``timeout`` s) until that batch is durable, so the last
        position is saved before this source starts again (a config reload
        restarts it at once, with the spool writer still running); then waits
        for a running save, and from now on saves at once (see module doc).
        """
        if sink is not None:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[int] = loop.create_future()

            def durable(seq: int) -> None:
                if not done.done():
                    done.set_result(seq)

            try:
                await asyncio.wait_for(sink.write(Columns.empty(), on_durable=durable), timeout)
                await asyncio.wait_for(asyncio.shield(done), timeout)
            except TimeoutError:
                log.info("checkpoint %s: the last batches are not durable yet; "
                         "their position is saved when they are", self.name)
        self._closed = True
        if self._running is not None:
            try:
                await asyncio.shield(self._running)
            except OSError:
                pass  # logged by _done
        self._save_latest()
