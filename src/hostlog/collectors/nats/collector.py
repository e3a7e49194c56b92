"""``[[source]] type = "nats"``: a central node that stores what agents
publish to a NATS JetStream stream (``[[forward]] type = "nats"``).

* A durable pull consumer (explicit acks, bounded batches): several central
  nodes with the same ``durable`` share the stream's messages.
* ``start()`` connects in the background: servers that are not reachable
  are tried again without end (the client's own reconnect, which also
  brings back the subscription and the acks not yet sent after a server
  restart), and never hold up the agent's start.
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
  held back (``nak`` with a delay) until it is, at most about three ack
  waits (a predecessor the stream never stored). The ack wait is short
  (:data:`ACK_WAIT_S`) so that this wait after a crash is short too; a
  message whose records wait long for the spool's sync is told "in
  progress" meanwhile, so it is not delivered again for being slow.
* A message that does not decode is logged, counted, ``term``-ed (never
  redelivered) and stored as a notice.
* :meth:`NatsCollector.status`: the connection, the counts, the marks and
  the consumer's own numbers (pending, ack pending: fetched every
  :data:`CONSUMER_INFO_S`), for ``hostlog ctl status`` and the metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
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
#: The ack wait of the consumer this input creates: a message not acked this long
#: after its delivery comes again. A message whose records wait longer than a third of
#: it for the spool's sync (a full spool, a slow disk) is told "in progress" meanwhile,
#: so what bounds the wait after a crash (what the dead process had been delivered
#: comes again after it) does not bound how long a sync may take.
ACK_WAIT_S = 5.0
#: Messages delivered and not acked at most (the consumer's max_ack_pending).
MAX_ACK_PENDING = 1024
#: A message whose predecessor is not taken comes back after this long ...
GAP_DELAY_S = 1.0
#: ... this many times at most (comfortably more than an ack wait), then it is taken.
GAP_DELIVERIES = 3 * int(ACK_WAIT_S / GAP_DELAY_S) + 1
STATE_SAVE_S = 0.5
CONNECT_TIMEOUT_S = 10.0
#: After the server failed a request (it restarts, say): wait this long before the next
#: (doubling up to RETRY_MAX_S while setting up the consumer fails).
RETRY_S = 0.5
RETRY_MAX_S = 10.0
#: How often the consumer's info (pending, ack pending, redelivered) is fetched for status.
CONSUMER_INFO_S = 2.0


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
        self.stats = {"messages": 0, "acked": 0, "records": 0, "duplicates": 0, "held_back": 0,
                      "redeliveries": 0, "bad_messages": 0, "errors": 0}
        self.last_error = ""
        self.consumer: dict[str, Any] | None = None  # the last consumer info (status), and when
        self._task: asyncio.Task[None] | None = None
        self._saver: asyncio.Task[None] | None = None
        self._info: asyncio.Task[None] | None = None
        self._ssl: ssl.SSLContext | None = None
        self._acks: set[asyncio.Task[None]] = set()
        self._pending: dict[int, _Taken] = {}  # message token -> taken, not yet durable
        self.ack_wait = ACK_WAIT_S  # the consumer's (one made earlier keeps its own)
        self.gap_deliveries = GAP_DELIVERIES
        self._tokens = itertools.count()
        self._dirty = False

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Bring the marks up to what the spool holds, then connect and consume
        in the background: a server that is not reachable yet is tried again
        without end (said in the log once per reason, and in status), and
        never holds up the agent's start."""
        if self.reader is not None:
            t0 = time.monotonic()
            n = await asyncio.to_thread(self.state.recover, self.reader())
            if n:
                log.info("%s: marks brought up to date from %d records written since the last "
                         "checkpoint (%.2f s)", self.name, n, time.monotonic() - t0)
        self.dedup = Dedup(self.state.origins)
        self.taken = dict(self.state.peers)
        self._ssl = self._ssl_context()  # unreadable certificates: this source does not start
        self._task = asyncio.create_task(self.context.guard(self.name, "consume", self._run()),
                                         name=f"{self.name} consume")
        self._saver = asyncio.create_task(self._save_loop(), name=f"{self.name} state")
        self._info = asyncio.create_task(self._info_loop(), name=f"{self.name} consumer info")

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not any(ep.scheme == "tls" for ep in self.config.endpoints()):
            return None
        from hostlog.forward.tls import client_context
        tls = self.tls
        return client_context(tls.ca if tls else None, tls.cert if tls else None, tls.key if tls else None)

    async def _run(self) -> None:
        await self._connect()
        backoff = RETRY_S
        while True:  # the stream and the consumer: JetStream may still be starting
            try:
                await self._subscribe()
                break
            except (nats.errors.Error, OSError) as exc:
                self._failed("JetStream", exc)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(RETRY_MAX_S, backoff * 2)
        self.last_error = ""
        log.info("%s: consuming stream %s (durable %s) on %s", self.name, self.config.stream,
                 self.config.durable, self.status()["server"])
        await self._consume()

    async def _connect(self) -> None:
        """Connect to one of the servers, trying again without end (and so after,
        when the connection is lost: the client reconnects, its subscriptions
        and unsent acks with it)."""
        servers = [f"{'tls' if ep.scheme == 'tls' else 'nats'}://"
                   f"{'[' + ep.host + ']' if ':' in (ep.host or '') else ep.host}:{ep.port}"
                   for ep in self.config.endpoints()]

        async def error(exc: Exception) -> None:
            self._failed("connection", exc)

        async def disconnected() -> None:
            if self.sub is not None:
                log.info("%s: NATS: disconnected; reconnecting", self.name)

        async def reconnected() -> None:
            log.info("%s: NATS: reconnected to %s", self.name, self.status()["server"])

        self.nc = NATS()
        await self.nc.connect(servers=servers, tls=self._ssl, connect_timeout=CONNECT_TIMEOUT_S,
                              allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=RETRY_S,
                              name=f"hostlog {self.context.hostname} {self.name}", error_cb=error,
                              disconnected_cb=disconnected, reconnected_cb=reconnected)

    async def _subscribe(self) -> None:
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
        info = await self.sub.consumer_info()
        ack_wait = float(info.config.ack_wait or ACK_WAIT_S)
        if ack_wait != ACK_WAIT_S:
            log.info("%s: the consumer %s keeps the ack wait it was made with: %g s", self.name,
                     config.durable, ack_wait)
        self.ack_wait = ack_wait
        self.gap_deliveries = 3 * max(1, int(ack_wait / GAP_DELAY_S)) + 1

    async def stop(self) -> None:
        for task in (self._task, self._info):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._info = None
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
        """What ``hostlog ctl status`` and the metrics show (copies only: a
        metrics scrape calls this from its own thread)."""
        nc = self.nc
        url = nc.connected_url if nc is not None else None
        return {"name": self.name, "type": "nats", "servers": list(self.config.servers),
                "server": f"{url.scheme}://{url.netloc}" if url is not None else None,
                "connected": url is not None, "stream": self.config.stream,
                "durable": self.config.durable, "subject": self.config.subject, **self.stats,
                "awaiting_durability": len(self._pending), "last_error": self.last_error,
                "origins": dict(self.dedup.marks), "consumer": self.consumer}

    def _failed(self, where: str, exc: BaseException) -> None:
        """A request the server failed (it restarts, the connection is back soon): counted, and
        logged once per reason."""
        reason = f"{where}: {exc or type(exc).__name__}"
        self.stats["errors"] += 1
        if reason != self.last_error:
            log.warning("%s: NATS: %s", self.name, reason)
        self.last_error = reason

    def _rescan_from(self) -> int:
        return min((t.after for t in list(self._pending.values())), default=self.accepted_seq())

    def _keep_pending(self) -> None:
        """Tell JetStream "in progress" for messages whose records have waited a
        third of the ack wait for the spool's sync: it does not deliver them again."""
        now = time.monotonic()
        for taken in list(self._pending.values()):
            if now - taken.since >= self.ack_wait / 3:
                taken.since = now
                self._ack(taken.msg, "progress")

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
                self._failed("fetch", exc)
                await asyncio.sleep(RETRY_S)
                continue
            self.last_error = ""
            for msg in msgs:
                await self._take(msg)

    async def _info_loop(self) -> None:
        """The consumer's own numbers, for status: one request every CONSUMER_INFO_S."""
        while True:
            sub = self.sub
            if sub is None:  # not subscribed yet
                await asyncio.sleep(0.1)
                continue
            try:
                info = await sub.consumer_info()
            except (nats.errors.Error, OSError) as exc:  # status keeps the last one, with its time
                log.debug("%s: consumer info: %s", self.name, exc or type(exc).__name__)
            else:
                self.consumer = {
                    "pending": info.num_pending or 0, "ack_pending": info.num_ack_pending or 0,
                    "redelivered": info.num_redelivered or 0, "waiting": info.num_waiting or 0,
                    "ack_floor": info.ack_floor.stream_seq if info.ack_floor else 0,
                    "at": round(time.time(), 3)}
            await asyncio.sleep(CONSUMER_INFO_S)

    def _ack(self, msg: Msg, how: str = "ack", delay: float | None = None) -> None:
        async def send() -> None:
            try:
                if how == "ack":
                    await msg.ack()
                    self.stats["acked"] += 1
                    self.context.count(self.name, Counted.ACKS)
                elif how == "nak":
                    await msg.nak(delay=delay)
                elif how == "progress":
                    await msg.in_progress()
                else:
                    await msg.term()
            except (nats.errors.Error, OSError) as exc:  # JetStream redelivers it: dropped then
                self._failed(how, exc)

        task = asyncio.get_running_loop().create_task(send())
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _take(self, msg: Msg) -> None:
        """Hand the rows not held yet to the spool writer; ack once durable."""
        stats = self.stats
        stats["messages"] += 1
        if _delivered(msg) > 1:
            stats["redeliveries"] += 1
        try:
            chunk = chunk_of(msg)
            if chunk.chunk_len > MAX_PAYLOAD:
                raise ChunkError(f"inflates to {chunk.chunk_len} bytes, over the limit of {MAX_PAYLOAD}")
            prev = (msg.headers or {}).get(H_PREV, "0")
            prev_seq = int(prev) if prev.isascii() and prev.isdigit() else 0
            if prev_seq > self.taken.get(chunk.origin, 0) and chunk.last > self.taken.get(chunk.origin, 0):
                delivered = _delivered(msg)
                if delivered < self.gap_deliveries:
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
        self._pending[token] = _Taken(self.accepted_seq(), msg, time.monotonic())

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
            self._keep_pending()
            if not self._dirty:
                continue
            self._dirty = False
            self.state.local_seq = self._rescan_from()
            try:
                await asyncio.to_thread(self.state.save, self.state.snapshot())
            except OSError as exc:
                self._dirty = True
                self.context.error(self.name, "state", exc)


class _Taken:
    """A message whose records are in the spool writer, not yet durable."""

    __slots__ = ("after", "msg", "since")

    def __init__(self, after: int, msg: Msg, since: float) -> None:
        self.after = after  # the local seq its rows come after (where a rescan starts)
        self.msg = msg
        self.since = since  # delivered, or last told "in progress", then (monotonic)


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
