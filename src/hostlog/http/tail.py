"""``/api/v1/tail``: the live tail, over WebSocket or Server-Sent Events
(docs/tail.md).

A WebSocket upgrade request gets a WebSocket; ``Accept: text/event-stream``
gets SSE; anything else 406. The parameters are the filters of ``hostlog
query`` (:mod:`hostlog.http.params`) and

* ``cursor``: resume after this record (or position): the history after it
  first, then live, without a gap or a repeat (SSE: ``Last-Event-ID`` does
  the same, so a browser's EventSource resumes by itself);
* ``n``: the last N records first, then live (``hostlog query -f -n N``).

Each message is one record, the JSON object of :func:`hostlog.http.records.record_json`
(one WebSocket text message; one SSE event whose ``id`` is its cursor). A
follower that fell behind is told what it missed, at the place in the stream
where it happened: ``{"dropped": N, "first_cursor": ..., "last_cursor": ...,
"exact": true}`` (WebSocket) or ``event: dropped`` with that object (SSE).

Serving many followers cheaply: one :class:`~hostlog.http.follow.Hub` reads
the spool for all of them; a record is encoded once for all (the encoded
message is kept by position for the followers after the first); a follower
is written in batches, one write of many messages at a time (WebSocket
frames are framed here, :func:`ws_text_frame`: a server's frames are
unmasked, so a batch of them is a plain byte string). The time spent
encoding and writing is charged to the hub's budget. A follower whose
connection does not take what is written (its send buffer over
:data:`HIGH_WATER`) is not written to until it does: its queue fills, and it
is told what it missed; one that takes nothing for :data:`STALL_S` is
disconnected. Nothing here waits on a follower but that follower.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from dataclasses import dataclass
from itertools import islice
from typing import Any

from aiohttp import web

from hostlog.http.follow import Hub, Subscription, get_hub, parse_position, position_cursor, start_for_last
from hostlog.http.look import Missed
from hostlog.http.params import ParamError, query_from_params
from hostlog.http.records import record_json
from hostlog.http.server import CTX, HttpContext, Route, note_records
from hostlog.query.filters import Query
from hostlog.record import Record

log = logging.getLogger("hostlog.http")

__all__ = ["Encoder", "TailParams", "dropped_message", "encode_record", "parse_tail_params", "routes",
           "sse_event", "ws_text_frame"]

PATH = "/api/v1/tail"
#: bytes waiting in a follower's send buffer beyond which nothing more is written to it
HIGH_WATER = 1 << 20
#: a follower that takes nothing for this long is disconnected
STALL_S = 30.0
#: how often an idle stream shows it is alive (SSE comment; WebSocket ping)
KEEPALIVE_S = 15.0
#: records written at once (one write, one charge to the budget)
BATCH = 500
#: encoded messages kept (per format) for the followers after the first
CACHE_RECORDS = 8192
N_MAX = 100_000
_DRAIN_POLL_S = 0.02
_SSE_TYPES = ("text/event-stream",)


# -- formats (pure) ---------------------------------------------------------------------

def ws_text_frame(payload: bytes) -> bytes:
    """One unfragmented WebSocket text frame from a server (RFC 6455 5.2:
    FIN, opcode 1, no mask) carrying ``payload`` (UTF-8)."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def sse_event(data: bytes, *, event: str | None = None, event_id: str | None = None) -> bytes:
    """One Server-Sent Event: ``data`` must be one line (JSON text is)."""
    if b"\n" in data or b"\r" in data:
        raise ValueError("an SSE data line cannot hold a line break")
    head = b""
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


def encode_record(record: Record, cursor: str, tags: dict[str, str] | None = None) -> bytes:
    """A record's JSON text (:func:`record_json`), UTF-8, compact, one line."""
    obj = record_json(record, cursor, tags)
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escaped, still valid JSON and UTF-8
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


def dropped_message(missed: Missed, node_id: str) -> dict[str, Any]:
    """What a follower is told of records it did not get."""
    return {"dropped": missed.count, "first_cursor": position_cursor(node_id, missed.first),
            "last_cursor": position_cursor(node_id, missed.last), "exact": missed.exact}


@dataclass(frozen=True, slots=True)
class TailParams:
    query: Query
    n: int
    cursor: str | None


def parse_tail_params(params: list[tuple[str, str]], last_event_id: str | None = None) -> TailParams:
    """The filter, ``n`` and ``cursor`` of a tail request; ParamError names
    a parameter that cannot be used."""
    query = query_from_params(params, allowed=("n", "cursor"))
    n_values = [v for k, v in params if k == "n"]
    cursors = [v for k, v in params if k == "cursor"]
    if len(n_values) > 1 or len(cursors) > 1:
        raise ParamError("parameter 'n' or 'cursor' given twice")
    n = 0
    if n_values:
        text = n_values[0]
        if not (text.isascii() and text.isdigit()) or int(text) > N_MAX:
            raise ParamError(f"parameter 'n': a number of records from 0 to {N_MAX}, not {text!r}")
        n = int(text)
    if not cursors and last_event_id:  # an EventSource reconnecting: resume, whatever n said
        return TailParams(query, 0, last_event_id)
    cursor = cursors[0] if cursors else None
    if cursor is not None and n_values:
        raise ParamError("parameters 'cursor' and 'n': give one (resume after a cursor, or the last n)")
    if cursor is not None and not cursor:
        raise ParamError("parameter 'cursor' is empty")
    return TailParams(query, n, cursor)


class Encoder:
    """The encoded messages of records, made once for every follower: kept
    by spool position (the newest :data:`CACHE_RECORDS` per format)."""

    def __init__(self, node_id: str, tags: dict[str, str] | None, limit: int = CACHE_RECORDS) -> None:
        self.node_id = node_id
        self.tags = tags or None
        self.limit = limit
        self._ws: dict[int, bytes] = {}
        self._sse: dict[int, bytes] = {}
        self.encoded = 0  # records encoded (not taken from the cache)

    def _keep(self, cache: dict[int, bytes], seq: int, data: bytes) -> None:
        if len(cache) >= self.limit:
            for old in list(islice(cache, max(1, self.limit // 8))):
                del cache[old]
        cache[seq] = data

    def ws(self, seq: int, record: Record) -> bytes:
        data = self._ws.get(seq)
        if data is None:
            self.encoded += 1
            data = ws_text_frame(encode_record(record, position_cursor(self.node_id, seq), self.tags))
            self._keep(self._ws, seq, data)
        return data

    def sse(self, seq: int, record: Record) -> bytes:
        data = self._sse.get(seq)
        if data is None:
            self.encoded += 1
            cursor = position_cursor(self.node_id, seq)
            data = sse_event(encode_record(record, cursor, self.tags), event_id=cursor)
            self._keep(self._sse, seq, data)
        return data


def get_encoder(ctx: HttpContext) -> Encoder:
    enc = ctx.extras.get("tail_encoder")
    if enc is None:
        enc = ctx.extras["tail_encoder"] = Encoder(ctx.agent_id, ctx.config.agent.tags)
    assert isinstance(enc, Encoder)
    return enc


# -- the connection ---------------------------------------------------------------------

class _Out:
    """A follower's connection: batches of messages written, the buffer watched."""

    def __init__(self, request: web.Request, hub: Hub, encoder: Encoder) -> None:
        self.request = request
        self.transport = request.transport
        self.hub = hub
        self.encoder = encoder
        self.sent = 0
        self.stalled = False
        self.closed_by_client = False

    @property
    def gone(self) -> bool:
        t = self.transport
        return self.closed_by_client or t is None or t.is_closing()

    def _frame(self, seq: int, record: Record) -> bytes:
        raise NotImplementedError

    def _notice(self, message: dict[str, Any]) -> bytes:
        raise NotImplementedError

    async def _write(self, data: bytes) -> bool:
        raise NotImplementedError

    async def _drained(self) -> bool:
        """Wait while the send buffer is over HIGH_WATER; False: the client
        is gone, or took nothing for STALL_S."""
        t = self.transport
        deadline = None
        while t is not None and t.get_write_buffer_size() > HIGH_WATER:
            if self.gone:
                return False
            now = time.monotonic()
            deadline = deadline or now + STALL_S
            if now >= deadline:
                self.stalled = True
                return False
            await asyncio.sleep(_DRAIN_POLL_S)
        return not self.gone

    async def records(self, pairs: list[tuple[int, Record]]) -> bool:
        frame = self._frame
        for start in range(0, len(pairs), BATCH):
            if not await self._drained():
                return False
            t0 = time.thread_time()
            piece = pairs[start:start + BATCH]
            data = b"".join([frame(seq, r) for seq, r in piece])
            ok = await self._write(data)
            self.hub.budget.charge(time.thread_time() - t0)
            if not ok:
                return False
            self.sent += len(piece)
            note_records(self.request, len(piece))
            # the other followers' turn (they go through the same records,
            # which stay in the encoder's cache), and the collectors'
            await asyncio.sleep(0)
        return True

    async def dropped(self, missed: Missed) -> bool:
        if not await self._drained():
            return False
        return await self._write(self._notice(dropped_message(missed, self.encoder.node_id)))

    async def keepalive(self) -> bool:
        return not self.gone


class _WsOut(_Out):
    def _frame(self, seq: int, record: Record) -> bytes:
        return self.encoder.ws(seq, record)

    def _notice(self, message: dict[str, Any]) -> bytes:
        return ws_text_frame(json.dumps(message, separators=(",", ":")).encode())

    async def _write(self, data: bytes) -> bool:
        t = self.transport
        if t is None or t.is_closing():
            return False
        t.write(data)  # whole frames, between aiohttp's own (pings, close): one writer, the loop
        return True


class _SseOut(_Out):
    def __init__(self, request: web.Request, hub: Hub, encoder: Encoder, response: web.StreamResponse) -> None:
        super().__init__(request, hub, encoder)
        self.response = response

    def _frame(self, seq: int, record: Record) -> bytes:
        return self.encoder.sse(seq, record)

    def _notice(self, message: dict[str, Any]) -> bytes:
        return sse_event(json.dumps(message, separators=(",", ":")).encode(), event="dropped")

    async def _write(self, data: bytes) -> bool:
        if self.gone:
            return False
        try:
            await asyncio.wait_for(self.response.write(data), STALL_S)
        except TimeoutError:
            self.stalled = True
            return False
        except (ConnectionError, RuntimeError):  # the client went away (aiohttp: reset, closing)
            return False
        return True

    async def keepalive(self) -> bool:
        return await self._write(b": keepalive\n\n")

    async def open(self) -> bool:
        """The first bytes: how long an EventSource waits before it reconnects (ms)."""
        return await self._write(b"retry: 2000\n\n")


async def _stream(hub: Hub, sub: Subscription, out: _Out) -> None:
    """History after the cursor, then live, until the client or the hub goes."""
    async for step in hub.catch_up(sub):
        if step.missed is not None and not await out.dropped(step.missed):
            return
        if not await out.records(step):
            return
    idle_since = time.monotonic()
    while not sub.closed and not out.gone:
        await sub.wait(1.0)
        pairs, missed = sub.take()
        if missed is not None:
            if not await out.dropped(missed):
                return
            idle_since = time.monotonic()
        if pairs:
            if not await out.records(pairs):
                return
            idle_since = time.monotonic()
        elif missed is None and time.monotonic() - idle_since >= KEEPALIVE_S:
            if not await out.keepalive():
                return
            idle_since = time.monotonic()


async def _read_client(ws: web.WebSocketResponse, sub: Subscription, out: _Out) -> None:
    """What the client sends is not used; reading it answers pings and sees the close."""
    try:
        async for _ in ws:
            pass
    finally:
        out.closed_by_client = True
        sub.wake()


async def tail(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    ws = web.WebSocketResponse(compress=False, heartbeat=KEEPALIVE_S, max_msg_size=1 << 16, timeout=2.0)
    is_ws = ws.can_prepare(request).ok
    try:  # the parameters first: a plain GET shows what is wrong with them
        params = parse_tail_params(list(request.query.items()),
                                   None if is_ws else request.headers.get("Last-Event-ID"))
    except ParamError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    accept = request.headers.get("Accept", "")
    if not is_ws and not any(t in accept for t in _SSE_TYPES):
        raise web.HTTPNotAcceptable(text="the live tail is a WebSocket (an upgrade request) or "
                                         "Server-Sent Events (Accept: text/event-stream)\n")
    after: int | None = None
    if params.cursor is not None:
        try:
            after = await ctx.read(parse_position, ctx.agent_id, params.cursor, ctx.reader)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"parameter 'cursor': {exc}\n") from None
    elif params.n:
        after = await ctx.read(start_for_last, ctx.reader(), params.query, params.n)
    hub = get_hub(ctx)
    sub = await hub.subscribe(params.query, after)
    if params.cursor is not None:  # a resume: at most what a live follower's queue holds
        sub.max_behind = hub.capacity
    ctx.count("tail_followers")
    try:
        if is_ws:
            await ws.prepare(request)
            out: _Out = _WsOut(request, hub, get_encoder(ctx))
            reading = asyncio.get_running_loop().create_task(_read_client(ws, sub, out))
            try:
                await _stream(hub, sub, out)
            finally:
                if out.stalled:
                    ctx.count("tail_stalled")
                    log.info("http: a follower took nothing for %.0f s: disconnected", STALL_S)
                    await ws.close(code=1008, message=b"too slow", drain=False)
                else:
                    await ws.close(code=1001 if sub.closed else 1000)
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
            return ws
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                               "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        sse = _SseOut(request, hub, get_encoder(ctx), response)
        if await sse.open():
            await _stream(hub, sub, sse)
        if sse.stalled:
            ctx.count("tail_stalled")
            if request.transport is not None:
                request.transport.close()
        return response
    finally:
        hub.unsubscribe(sub)


def routes(ctx: HttpContext) -> list[Route]:
    return [Route("GET", PATH, tail, scope="read")]
