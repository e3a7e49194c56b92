"""``[[forward]] type = "nats"``: the spool's chunks published to a NATS
JetStream stream (docs/forwarding.md, "Other outputs: NATS JetStream").

* One message per spool chunk, its payload the chunk as the spool holds it
  (LZ4, never decoded and re-encoded here), on the subject
  ``<subject>.<origin>`` (one subject per agent), with the headers of
  :func:`message_headers`: ``Nats-Msg-Id = <origin>:<first>-<last>`` for the
  server's duplicate window, the chunk's fields, and ``Hostlog-Prev``, the
  last seq of the message before it on the subject (the input holds a
  message back until that one is stored: JetStream may redeliver out of
  order).
* Several publishes are in flight (the sender's ``window``): each one's
  acknowledgement from the stream is awaited and reported in order.
* ``open()`` returns the last seq of the last message of this origin's
  subject in the stream (the JetStream "get last message for subject" API):
  a restart resumes after it, so a resend never depends on the duplicate
  window (two minutes by default).
* The stream is created when absent (file storage, subjects
  ``<subject>.>``). ``tls://`` targets use ``[tls]``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from hostlog.config.endpoints import Endpoint
from hostlog.forward.output import Identity, Refused
from hostlog.forward.protocol import Chunk

log = logging.getLogger("hostlog.forward.nats")

__all__ = ["NatsOutput", "held_from_headers", "message_headers", "parse_msg_id", "subject_for"]

CONNECT_TIMEOUT_S = 10.0
#: JetStream API requests (stream info, get last message): at most this long.
API_TIMEOUT_S = 10.0
#: The client's buffer of unsent bytes (the sender's window bounds what is in flight).
PENDING_BYTES = 64 << 20

H_ORIGIN = "Hostlog-Origin"
H_FIRST = "Hostlog-First"
H_COUNT = "Hostlog-Count"
H_CHUNK_LEN = "Hostlog-Chunk-Len"
H_PREV = "Hostlog-Prev"
H_MSG_ID = "Nats-Msg-Id"


def subject_for(subject: str, origin: str) -> str:
    """The subject of one origin's messages."""
    return f"{subject}.{origin}"


def message_headers(chunk: Chunk, prev: int) -> dict[str, str]:
    """The headers of the message that carries ``chunk``; ``prev`` is the last
    seq of the message before it on the subject (0: none known)."""
    return {
        H_MSG_ID: f"{chunk.origin}:{chunk.first}-{chunk.last}",
        H_ORIGIN: chunk.origin,
        H_FIRST: str(chunk.first),
        H_COUNT: str(chunk.count),
        H_CHUNK_LEN: str(chunk.chunk_len),
        H_PREV: str(prev),
    }


def parse_msg_id(value: str) -> tuple[str, int, int] | None:
    """``origin:first-last`` -> (origin, first, last); None for anything else."""
    origin, sep, span = value.rpartition(":")
    first, dash, last = span.partition("-")
    if not (sep and dash and origin and first.isdigit() and last.isdigit()):
        return None
    lo, hi = int(first), int(last)
    return (origin, lo, hi) if 1 <= lo <= hi else None


def held_from_headers(headers: Mapping[str, str] | None, origin: str) -> int | None:
    """The last seq a stored message of ``origin`` carries: from its chunk's
    headers, else from its ``Nats-Msg-Id``; None when it says neither (a
    message some other publisher put on the subject)."""
    if not headers:
        return None
    first, count = headers.get(H_FIRST, ""), headers.get(H_COUNT, "")
    if headers.get(H_ORIGIN) == origin and first.isdigit() and count.isdigit() and int(count) >= 1:
        return int(first) + int(count) - 1
    parsed = parse_msg_id(headers.get(H_MSG_ID, ""))
    if parsed is not None and parsed[0] == origin:
        return parsed[2]
    return None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class NatsOutput:
    """One connection to a NATS server: chunks published to the stream, its acks in order."""

    def __init__(self, endpoint: Endpoint, identity: Identity,
                 ssl_context: Callable[[], ssl.SSLContext] | None, *, stream: str = "HOSTLOG",
                 subject: str = "hostlog") -> None:
        assert endpoint.host is not None and endpoint.port is not None
        self.endpoint = endpoint
        self.identity = identity
        self.ssl_context = ssl_context
        self.stream = stream
        self.subject = subject_for(subject, identity.agent)
        self.subjects = f"{subject}.>"
        self.nc: Any = None
        self.js: Any = None
        self.prev = 0  # the last seq of the last message published (or found) on the subject
        self.inflight: collections.deque[tuple[int, asyncio.Future[Any]]] = collections.deque()
        self._more = asyncio.Event()
        self._lost: asyncio.Future[None] | None = None  # fails when the connection is lost

    # -- the connection ------------------------------------------------------------
    def _url(self) -> str:
        host = f"[{self.endpoint.host}]" if ":" in (self.endpoint.host or "") else self.endpoint.host
        return f"{'tls' if self.endpoint.scheme == 'tls' else 'nats'}://{host}:{self.endpoint.port}"

    def _connection_lost(self, why: str) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_exception(ConnectionResetError(f"{self.endpoint.url}: {why}"))
            self._lost.exception()  # (retrieved: nobody may be waiting on it)

    async def open(self) -> int:
        self._lost = asyncio.get_running_loop().create_future()
        ctx = None
        if self.endpoint.scheme == "tls":  # never plain TCP for a tls:// target
            ctx = self.ssl_context() if self.ssl_context else ssl.create_default_context()

        async def disconnected() -> None:
            self._connection_lost("disconnected")

        async def error(exc: Exception) -> None:
            self._connection_lost(_reason(exc))

        try:
            self.nc = await nats.connect(
                servers=[self._url()], tls=ctx, tls_hostname=self.endpoint.host if ctx else None,
                allow_reconnect=False, connect_timeout=CONNECT_TIMEOUT_S, max_reconnect_attempts=0,
                pending_size=PENDING_BYTES, name=f"hostlog {self.identity.host}",
                disconnected_cb=disconnected, closed_cb=disconnected, error_cb=error)
            self.js = self.nc.jetstream(timeout=API_TIMEOUT_S)
            await self._ensure_stream()
            held = await self._held()
        except nats.js.errors.APIError as exc:
            raise Refused(f"JetStream says: {_reason(exc)}", rejected=False) from exc
        except nats.errors.Error as exc:
            raise ConnectionError(f"NATS: {_reason(exc)}") from exc
        self.prev = held
        return held

    async def _ensure_stream(self) -> None:
        try:
            await self.js.stream_info(self.stream)
            return
        except nats.js.errors.NotFoundError:
            pass
        try:
            await self.js.add_stream(name=self.stream, subjects=[self.subjects], storage=api.StorageType.FILE)
            log.info("forward: created the JetStream stream %s (subjects %s) on %s",
                     self.stream, self.subjects, self.endpoint.url)
        except nats.js.errors.BadRequestError:
            # another agent created it meanwhile: fine if it is there now
            await self.js.stream_info(self.stream)

    async def _held(self) -> int:
        """The last seq of the stream's last message on this origin's subject (0: none)."""
        try:
            msg = await self.js.get_last_msg(self.stream, self.subject)
        except nats.js.errors.NotFoundError:
            return 0
        held = held_from_headers(msg.headers, self.identity.agent)
        if held is None:
            log.warning("forward: the last message on %s in stream %s carries no chunk headers; "
                        "resuming from the cursor", self.subject, self.stream)
            return 0
        return held

    # -- sending -------------------------------------------------------------------
    async def send(self, chunk: Chunk) -> None:
        assert self.js is not None
        headers = message_headers(chunk, self.prev)
        try:
            future = await self.js.publish_async(self.subject, chunk.data, headers=headers, stream=self.stream)
        except nats.errors.MaxPayloadError as exc:
            raise Refused(f"a chunk of {len(chunk.data)} bytes (seq {chunk.first}..{chunk.last}) is over the "
                          f"server's max_payload: raise it in the server's config", rejected=True) from exc
        except nats.errors.Error as exc:
            raise ConnectionError(f"NATS: {_reason(exc)}") from exc
        self.prev = chunk.last
        self.inflight.append((chunk.last, future))
        self._more.set()

    async def drain(self) -> None:
        assert self._lost is not None
        if self._lost.done():
            self._lost.result()

    async def acks(self) -> AsyncIterator[int]:
        lost = self._lost
        assert lost is not None
        while True:
            if not self.inflight:
                self._more.clear()
                more: asyncio.Future[Any] = asyncio.ensure_future(self._more.wait())
                try:
                    await asyncio.wait([more, lost], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    more.cancel()
                if lost.done():
                    lost.result()
                continue
            last, future = self.inflight[0]
            await asyncio.wait([future, lost], return_when=asyncio.FIRST_COMPLETED)
            if not future.done():
                lost.result()  # (raises: the connection is gone)
            self.inflight.popleft()
            try:
                ack = future.result()
            except nats.js.errors.APIError as exc:
                raise Refused(f"JetStream says: {_reason(exc)}", rejected=False) from exc
            except nats.errors.Error as exc:  # no stream for the subject, ...
                raise ConnectionError(f"NATS: {_reason(exc)}") from exc
            if ack.stream != self.stream:
                raise Refused(f"stored in stream {ack.stream}, not {self.stream}", rejected=True)
            yield last

    async def close(self) -> None:
        for _, future in self.inflight:
            future.cancel()
        self.inflight.clear()
        if self.nc is None:
            return
        nc, self.nc = self.nc, None
        try:
            await asyncio.wait_for(nc.close(), 2.0)
        except (nats.errors.Error, OSError, TimeoutError, ssl.SSLError):
            pass
