"""``[[source]] type = "nats"``: a central node that stores what agents
publish to a NATS JetStream stream (``[[forward]] type = "nats"``).

* A durable pull consumer (explicit acks, bounded batches): several central
  nodes with the same ``durable`` share the stream's messages.
* Each message is one spool chunk of an agent, as its spool holds it; its
  records go to this spool, and the message is acked only once they are
  durable (the durability callback of the batch), never before.
* Exactly once, whatever JetStream redelivers: :class:`Dedup` drops the rows
  whose ``(origin, seq)`` this spool holds already. The marks are
  checkpointed in ``state/nats-<name>.json`` (:class:`ReceiverState`, as the
  receiver's) and brought up to what the spool holds at start, so a crash
  between the data and the checkpoint costs a rescan, never a duplicate.
* Order: after a restart JetStream delivers new messages at once and the
  unacked ones only when their ack wait ends, so a message can come before
  one it follows. A message says the last seq of the one before it on its
  subject (``Hostlog-Prev``); one whose predecessor is not taken yet is
  held back (``nak`` with a delay) until it is, at most
  :data:`GAP_DELIVERIES` times (a predecessor the stream never stored).
* A message that does not decode is logged, counted, ``term``-ed (never
  redelivered) and stored as a notice.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from hostlog.chunk import decode_columns
from hostlog.collectors.base import CollectorContext
from hostlog.collectors.events import Counted
from hostlog.errors import ChunkError, FrameError
from hostlog.forward.dedup import Dedup
from hostlog.forward.nats_out import H_CHUNK_LEN, H_COUNT, H_FIRST, H_ORIGIN, H_PREV
from hostlog.forward.protocol import Chunk
from hostlog.forward.receiver import ReceiverState
from hostlog.record import Columns
from hostlog.spool.frame import MAX_PAYLOAD, decompress_chunk
from hostlog.spool.reader import SpoolReader

log = logging.getLogger("hostlog.collectors.nats")

__all__ = ["NatsCollector", "chunk_of"]

#: Messages asked for at a time, and how long a fetch waits for the first.
FETCH_BATCH = 64
FETCH_TIMEOUT_S = 1.0
#: The consumer's ack wait: a message not acked this long after its delivery comes again.
ACK_WAIT_S = 15.0
#: Messages delivered and not acked at most (the consumer's max_ack_pending).
MAX_ACK_PENDING = 1024
#: A message whose predecessor is not taken comes back after this long ...
GAP_DELAY_S = 1.0
#: ... this many times at most (comfortably more than an ack wait), then it is taken.
GAP_DELIVERIES = 3 * int(ACK_WAIT_S / GAP_DELAY_S) + 1
STATE_SAVE_S = 0.5
CONNECT_TIMEOUT_S = 10.0
#: After the server failed a request (it restarts, say): wait this long before the next.
RETRY_S = 0.5


def _int(headers: dict[str, str], key: str, low: int) -> int:
    value = headers.get(key, "")
    if not (value.isascii() and value.isdigit()) or int(value) < low:
        raise ChunkError(f"header {key} is {value!r}, not an int >= {low}")
    return int(value)


def chunk_of(msg: Msg) -> Chunk:
    """The spool chunk a message carries, from its headers and payload."""
    headers = dict(msg.headers or {})
    origin = headers.get(H_ORIGIN, "")
    if not origin:
        raise ChunkError(f"no {H_ORIGIN} header")
    return Chunk(origin=origin, first=_int(headers, H_FIRST, 1), count=_int(headers, H_COUNT, 1),
                 chunk_len=_int(headers, H_CHUNK_LEN, 0), data=bytes(msg.data))


class NatsCollector:
    """Consumes ``stream`` with the durable pull consumer ``durable``."""

    def __init__(self, config: Any, context: CollectorContext, *, tls: Any = None,
                 state_path: Path | None = None, reader: Callable[[], SpoolReader] | None = None,
                 accepted_seq: Callable[[], int] | None = None) -> None:
        self.config = config  # hostlog.config.sources.NatsSource
        self.tls = tls  # hostlog.config.Tls | None
        self.context = context
        self.name: str = config.name or "nats"
        # what the agent's spool writer (behind the sink) offers, unless given
        spool = getattr(context.sink, "spool", None)
        if state_path is None:
            if spool is None:
                raise ValueError(f"source {self.name}: no spool to keep the state in")
            state_path = Path(spool.directory) / "state" / f"nats-{self.name}.json"
        if reader is None and spool is not None:
            reader = lambda: SpoolReader(spool.directory, spool.keyring)  # noqa: E731
        if accepted_seq is None:
            sink = context.sink
            accepted_seq = lambda: int(getattr(sink, "accepted_seq", 0))  # noqa: E731
        self.state = ReceiverState.load(state_path)
        self.reader = reader
        self.accepted_seq = accepted_seq
        self.dedup = Dedup()
        self.taken: dict[str, int] = {}  # per publisher: the last chunk seq taken into the writer
        self.nc: Any = None
        self.sub: Any = None
        self.stats = {"messages": 0, "records": 0, "duplicates": 0, "held_back": 0, "bad_messages": 0}
        self._task: asyncio.Task[None] | None = None
        self._saver: asyncio.Task[None] | None = None
        self._acks: set[asyncio.Task[None]] = set()
        self._pending: dict[int, int] = {}  # message token -> local seq its rows come after
        self._tokens = itertools.count()
        self._dirty = False

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        if self.reader is not None:
            t0 = time.monotonic()
            n = await asyncio.to_thread(self.state.recover, self.reader())
            if n:
                log.info("%s: marks brought up to date from %d records written since the last "
                         "checkpoint (%.2f s)", self.name, n, time.monotonic() - t0)
        self.dedup = Dedup(self.state.origins)
        self.taken = dict(self.state.peers)
        try:
            await self._connect()
        except nats.errors.Error as exc:
            await self._close_connection()
            raise OSError(f"source {self.name}: NATS: {exc or type(exc).__name__}") from exc
        self._task = asyncio.create_task(self.context.guard(self.name, "consume", self._consume()),
                                         name=f"{self.name} consume")
        self._saver = asyncio.create_task(self._save_loop(), name=f"{self.name} state")
        log.info("%s: consuming stream %s (durable %s) on %s", self.name, self.config.stream,
                 self.config.durable, ", ".join(self.config.servers))

    async def _connect(self) -> None:
        ctx = None
        endpoints = self.config.endpoints()
        if any(ep.scheme == "tls" for ep in endpoints):
            from hostlog.forward.tls import client_context
            tls = self.tls
            ctx = client_context(tls.ca if tls else None, tls.cert if tls else None, tls.key if tls else None)
        servers = [f"{'tls' if ep.scheme == 'tls' else 'nats'}://"
                   f"{'[' + ep.host + ']' if ':' in (ep.host or '') else ep.host}:{ep.port}" for ep in endpoints]

        async def error(exc: Exception) -> None:
            log.info("%s: NATS: %s", self.name, exc or type(exc).__name__)

        self.nc = await nats.connect(servers=servers, tls=ctx, connect_timeout=CONNECT_TIMEOUT_S,
                                     allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                     name=f"hostlog {self.context.hostname} {self.name}", error_cb=error)
        js = self.nc.jetstream(timeout=CONNECT_TIMEOUT_S)
        config = self.config
        try:
            await js.stream_info(config.stream)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(name=config.stream, subjects=[config.subject], storage=api.StorageType.FILE)
                log.info("%s: created the JetStream stream %s (subjects %s)", self.name, config.stream,
                         config.subject)
            except nats.js.errors.BadRequestError:
                await js.stream_info(config.stream)  # created meanwhile by another node
        self.sub = await js.pull_subscribe(
            config.subject, durable=config.durable, stream=config.stream,
            config=api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_S,
                                      max_ack_pending=MAX_ACK_PENDING,
                                      deliver_policy=api.DeliverPolicy.ALL))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        # what was taken becomes durable when the writer syncs; its acks go
        # out while the connection lasts (else JetStream redelivers: dropped)
        if self._pending:
            deadline = time.monotonic() + 5.0
            while self._pending and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        if self._acks:
            await asyncio.wait(list(self._acks), timeout=2.0)
        if self._saver is not None:
            self._saver.cancel()
            await asyncio.gather(self._saver, return_exceptions=True)
            self._saver = None
        await self._close_connection()
        self.state.local_seq = self._rescan_from()
        await asyncio.to_thread(self.state.save, self.state.snapshot())

    async def _close_connection(self) -> None:
        nc, self.nc, self.sub = self.nc, None, None
        if nc is None:
            return
        try:
            await asyncio.wait_for(nc.close(), 5.0)
        except (nats.errors.Error, OSError, TimeoutError, ssl.SSLError):
            pass

    def status(self) -> dict[str, Any]:
        return {"stream": self.config.stream, "durable": self.config.durable, **self.stats,
                "connected": bool(self.nc is not None and self.nc.is_connected)}

    def _rescan_from(self) -> int:
        return min(self._pending.values(), default=self.accepted_seq())

    # -- consuming ---------------------------------------------------------------
    async def _consume(self) -> None:
        while True:
            sub = self.sub
            assert sub is not None
            try:
                msgs = await sub.fetch(batch=FETCH_BATCH, timeout=FETCH_TIMEOUT_S)
            except nats.errors.TimeoutError:
                continue
            except (nats.errors.Error, OSError) as exc:  # the server restarts, the connection is back soon
                log.debug("%s: fetch: %s", self.name, exc or type(exc).__name__)
                await asyncio.sleep(RETRY_S)
                continue
            for msg in msgs:
                await self._take(msg)

    def _ack(self, msg: Msg, how: str = "ack", delay: float | None = None) -> None:
        async def send() -> None:
            try:
                if how == "ack":
                    await msg.ack()
                    self.context.count(self.name, Counted.ACKS)
                elif how == "nak":
                    await msg.nak(delay=delay)
                else:
                    await msg.term()
            except (nats.errors.Error, OSError) as exc:  # JetStream redelivers it: dropped then
                log.debug("%s: %s not sent: %s", self.name, how, exc or type(exc).__name__)

        task = asyncio.get_running_loop().create_task(send())
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _take(self, msg: Msg) -> None:
        """Hand the rows not held yet to the spool writer; ack once durable."""
        stats = self.stats
        stats["messages"] += 1
        try:
            chunk = chunk_of(msg)
            if chunk.chunk_len > MAX_PAYLOAD:
                raise ChunkError(f"inflates to {chunk.chunk_len} bytes, over the limit of {MAX_PAYLOAD}")
            prev = (msg.headers or {}).get(H_PREV, "0")
            prev_seq = int(prev) if prev.isascii() and prev.isdigit() else 0
            if prev_seq > self.taken.get(chunk.origin, 0) and chunk.last > self.taken.get(chunk.origin, 0):
                delivered = _delivered(msg)
                if delivered < GAP_DELIVERIES:
                    stats["held_back"] += 1
                    self._ack(msg, "nak", GAP_DELAY_S)
                    return
                log.warning("%s: origin %s: the message before seq %d (up to seq %d) never came; going on",
                            self.name, chunk.origin, chunk.first, prev_seq)
            batch = decode_columns(decompress_chunk(chunk.data, chunk.chunk_len))
            if len(batch) != chunk.count:
                raise ChunkError(f"holds {len(batch)} records, its headers say {chunk.count}")
        except (ChunkError, FrameError, ValueError) as exc:
            stats["bad_messages"] += 1
            self.context.error(self.name, "message", exc)
            self._ack(msg, "term")
            meta = _where(msg)
            kept: Columns = Columns.of([self.context.notice(
                "hostlog", f"a NATS message ({meta}) does not decode and was skipped: {exc}", severity=3,
                FORWARD_ORIGIN=(msg.headers or {}).get(H_ORIGIN, ""))])
            await self.context.sink.write(kept)
            return
        kept, dropped = self.dedup.take(batch)
        stats["duplicates"] += dropped
        stats["records"] += len(kept)
        if kept:
            self.context.count(self.name, Counted.RECORDS, len(kept))
        marks = {o: self.dedup.held(o) for o in set(batch.origin)}
        sender, last = chunk.origin, chunk.last
        if last > self.taken.get(sender, 0):
            self.taken[sender] = last
        token = next(self._tokens)
        self._pending[token] = self.accepted_seq()

        def durable(seq: int) -> None:
            self._pending.pop(token, None)
            state = self.state
            for origin, mark in marks.items():
                if mark > state.origins.get(origin, 0):
                    state.origins[origin] = mark
            if last > state.peers.get(sender, 0):
                state.peers[sender] = last
            self._dirty = True
            self._ack(msg)

        # (a SinkError ends the task: reported, the agent stops; nothing unstored was acked)
        await self.context.sink.write(kept, durable)

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(STATE_SAVE_S)
            if not self._dirty:
                continue
            self._dirty = False
            self.state.local_seq = self._rescan_from()
            try:
                await asyncio.to_thread(self.state.save, self.state.snapshot())
            except OSError as exc:
                self._dirty = True
                self.context.error(self.name, "state", exc)


def _delivered(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered or 1)
    except (ValueError, TypeError, AttributeError):
        return 1


def _where(msg: Msg) -> str:
    try:
        return f"subject {msg.subject}, stream seq {msg.metadata.sequence.stream}"
    except (ValueError, TypeError, AttributeError):
        return f"subject {msg.subject}"
