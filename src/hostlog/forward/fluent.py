"""``[[forward]] type = "fluent"``: the Fluent Forward protocol v1, to Fluentd's
``in_forward`` or Fluent Bit's ``forward`` input, over TCP or TLS.

Two parts: :class:`FluentClient`, sans I/O (the handshake's state machine,
the messages out, the acks in: bytes in, bytes out, no socket, no clock), and
:class:`FluentOutput`, the :class:`hostlog.forward.output.Output` that drives
it over an asyncio connection (a protocol: what the server sends reaches the
client as it arrives, even just before the server resets the connection).

* **Handshake**, only when the server asks for it (Fluentd's ``<security>``):
  the server speaks first, ``["HELO", {nonce, auth, keepalive}]``; the client
  answers ``["PING", hostname, salt, sha512_hex(salt + hostname + nonce +
  shared_key), username, sha512_hex(auth + username + password)]`` and the
  server ``["PONG", ok, reason, server_hostname, sha512_hex(salt +
  server_hostname + nonce + shared_key)]``, which proves it holds the key too.
  A server without a shared key sends nothing first, so without ``shared_key``
  nothing is awaited; with it, the HELO is (:data:`HELO_TIMEOUT_S`).
* **Messages**: a hostlog chunk (one spool frame) becomes one PackedForward
  message per tag (``[tag, bin of concatenated [EventTime, record], {"chunk":
  id, "size": n}]``; CompressedPackedForward, the entries gzipped and
  ``"compressed": "gzip"``, with ``compress``), more than one for a tag whose
  entries pass :data:`MAX_ENTRIES_BYTES`.
* **Acks**: the server answers ``{"ack": id}`` per message once it holds it;
  a chunk's last seq is reported (so the cursor moves) once every message of
  it and of every earlier chunk is acknowledged.

What a record becomes: the tag is its app (``hostlog`` when it has none; a
character outside ``[A-Za-z0-9_.-]`` becomes ``_``), the time its ``ts`` as
EventTime (seconds and nanoseconds), and the record a map: ``message``,
``host``, ``source``, ``severity``, ``pid`` and ``facility`` (when known),
every field, ``hostlog_origin`` and ``hostlog_seq``. A field named like one of
those keys is sent as ``field_<name>``. Messages that are not UTF-8 (and byte
values of fields) are msgpack bin.

Delivery is at least once: a chunk resent after a reconnect may repeat
messages of it the server had acknowledged; ``hostlog_origin`` and
``hostlog_seq`` identify each record for deduplication downstream.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import enum
import gzip
import hashlib
import hmac
import os
import re
import ssl
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack

from hostlog.config.endpoints import Endpoint
from hostlog.errors import LocalProtocolError, RemoteProtocolError
from hostlog.forward.output import Identity, Refused, decode_chunk
from hostlog.forward.protocol import Chunk
from hostlog.record import Columns

__all__ = [
    "FluentAuthError",
    "FluentClient",
    "FluentOutput",
    "FluentProtocolError",
    "RESERVED_KEYS",
    "encode_messages",
    "event_time",
    "packed_forward",
    "password_digest",
    "record_map",
    "shared_key_digest",
    "tag_of",
]

CONNECT_TIMEOUT_S = 10.0
#: With ``shared_key``: the server's HELO must come within this after connecting.
HELO_TIMEOUT_S = 5.0
#: ... and its PONG within this after the PING.
PONG_TIMEOUT_S = 5.0
READ_SIZE = 1 << 16
#: A tag's entries per Forward message, at most (before gzip): a chunk of the
#: spool is about 1 MiB of text, Fluent Bit's in_forward takes 6 MB by default.
MAX_ENTRIES_BYTES = 1 << 20
#: The largest message taken from the server (a HELO, a PONG, an ack are small).
MAX_SERVER_MESSAGE = 1 << 16
#: msgpack ext type of EventTime.
EVENT_TIME_EXT = 0
_EVENT_TIME = struct.Struct(">II")
_U32 = 2**32 - 1
_TAG_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_NS = 1_000_000_000

#: The keys of a record map that are not fields.
RESERVED_KEYS = frozenset(("message", "host", "source", "severity", "pid", "facility",
                           "hostlog_origin", "hostlog_seq"))


class FluentProtocolError(RemoteProtocolError):
    """The server broke the Forward protocol: garbage, a message out of turn,
    an ack for a chunk id that was not sent (or was acked already)."""


class FluentAuthError(Refused):
    """The handshake failed: the server refused this side's key or user, its
    PONG does not prove it holds the shared key, or one side wants a shared
    key the other does not have. A configuration matter: not retried soon."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, rejected=True)


# -- the pieces of the protocol ------------------------------------------------------

def _raw(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def shared_key_digest(salt: str | bytes, hostname: str, nonce: str | bytes, shared_key: str) -> str:
    """``sha512_hex(salt + hostname + nonce + shared_key)``, over the raw bytes:
    the PING's digest (the client's hostname), and the PONG's (the server's)."""
    return hashlib.sha512(_raw(salt) + hostname.encode() + _raw(nonce) + shared_key.encode()).hexdigest()


def password_digest(auth_salt: str | bytes, username: str, password: str) -> str:
    """``sha512_hex(auth_salt + username + password)``: the PING's user proof."""
    return hashlib.sha512(_raw(auth_salt) + username.encode() + password.encode()).hexdigest()


def event_time(ts_ns: int) -> msgpack.ExtType:
    """EventTime (ext type 0: big-endian uint32 seconds, uint32 nanoseconds) of
    a time in ns since the epoch; outside what 32 bits of seconds hold
    (before 1970, after 2106), clamped."""
    sec, nsec = divmod(ts_ns, _NS)
    if sec < 0:
        sec, nsec = 0, 0
    elif sec > _U32:
        sec, nsec = _U32, _NS - 1
    return msgpack.ExtType(EVENT_TIME_EXT, _EVENT_TIME.pack(sec, nsec))


def tag_of(app: str) -> str:
    """The Fluent tag of a record's app."""
    return _TAG_CHARS.sub("_", app) if app else "hostlog"


def record_map(msg: str | bytes, host: str, source: str, severity: int, pid: int | None,
               facility: int | None, fields: dict[str, Any], origin: str, seq: int) -> dict[str, Any]:
    """The Fluent record of one hostlog record (see the module's doc)."""
    rec: dict[str, Any] = {"message": msg, "host": host, "source": source, "severity": severity}
    if pid is not None:
        rec["pid"] = pid
    if facility is not None:
        rec["facility"] = facility
    for name, value in fields.items():
        key = name
        while key in rec or key in RESERVED_KEYS:
            key = "field_" + key
        rec[key] = value
    rec["hostlog_origin"] = origin
    rec["hostlog_seq"] = seq
    return rec


def new_chunk_id() -> str:
    """A chunk option's value: 16 random bytes, base64 (as the spec says)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def packed_forward(tag: str, entries: bytes, size: int, chunk_id: str, *, compress: bool) -> bytes:
    """One PackedForward message (CompressedPackedForward with ``compress``)
    of ``size`` entries, concatenated msgpack ``[time, record]`` arrays."""
    option: dict[str, Any] = {"size": size, "chunk": chunk_id}
    if compress:
        entries = gzip.compress(entries, compresslevel=6, mtime=0)
        option["compressed"] = "gzip"
    message: bytes = msgpack.packb([tag, entries, option], use_bin_type=True)
    return message


def encode_messages(columns: Columns, *, compress: bool,
                    new_id: Callable[[], str] = new_chunk_id) -> list[tuple[str, bytes]]:
    """The Forward messages of a batch, each with its chunk id: one per tag
    (in the order tags first appear), more for a tag past :data:`MAX_ENTRIES_BYTES`.
    Pure (no state): it may run on a thread."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    pack = packer.pack
    tags: dict[str, str] = {}
    groups: dict[str, list[bytes]] = {}
    sizes: dict[str, int] = {}
    out: list[tuple[str, bytes]] = []

    def flush(tag: str) -> None:
        entries = groups.pop(tag)
        del sizes[tag]
        chunk_id = new_id()
        out.append((chunk_id, packed_forward(tag, b"".join(entries), len(entries), chunk_id, compress=compress)))

    for ts, host, source, app, pid, severity, facility, msg, fields, origin, seq in zip(*columns.columns):
        tag = tags.get(app)
        if tag is None:
            tag = tags[app] = tag_of(app)
        entry = pack([event_time(ts), record_map(msg, host, source, severity, pid, facility, fields, origin, seq)])
        size = sizes.get(tag, 0)
        if size and size + len(entry) > MAX_ENTRIES_BYTES:
            flush(tag)
            size = 0
        groups.setdefault(tag, []).append(entry)
        sizes[tag] = size + len(entry)
    for tag in list(groups):
        flush(tag)
    return out


# -- the client's state machine ------------------------------------------------------

class State(enum.Enum):
    HELO = "waiting for HELO"
    PONG = "waiting for PONG"
    ESTABLISHED = "established"


@dataclass
class _Pending:
    """One hostlog chunk in flight: the ids of its messages not acked yet."""

    last: int
    waiting: set[str] = field(default_factory=set)


class FluentClient:
    """The client side of a Forward connection, sans I/O.

    ``receive_data(bytes)`` takes what the server sent and returns what to
    send back (the PING, during the handshake); ``encode_chunk`` (or
    :func:`encode_messages` then ``add_chunk``) gives the bytes of a chunk's
    messages; ``acked()`` the chunks' last seqs that are acknowledged now, in
    order. Raises :class:`FluentAuthError` and :class:`FluentProtocolError`.
    ``salt`` is for tests (default: 16 random bytes, hex).
    """

    def __init__(self, hostname: str, *, shared_key: str | None = None, username: str | None = None,
                 password: str | None = None, compress: bool = False, salt: str | None = None) -> None:
        self.hostname = hostname
        self.shared_key = shared_key
        self.username = username
        self.password = password
        self.compress = compress
        self.salt = salt if salt is not None else os.urandom(16).hex()
        self.state = State.HELO if shared_key is not None else State.ESTABLISHED
        self.nonce: bytes = b""
        self.keepalive: bool | None = None  # what the HELO said
        self.server_hostname: str | None = None  # what the PONG said
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_SERVER_MESSAGE)
        self._chunks: collections.deque[_Pending] = collections.deque()
        self._by_id: dict[str, _Pending] = {}

    @property
    def established(self) -> bool:
        return self.state is State.ESTABLISHED

    @property
    def in_flight(self) -> int:
        """Messages sent and not acknowledged."""
        return len(self._by_id)

    # -- bytes in -------------------------------------------------------------
    def receive_data(self, data: bytes) -> bytes:
        """What the server sent; returns the bytes to send it (maybe none)."""
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull as exc:
            raise FluentProtocolError(f"the server sent a message of more than {MAX_SERVER_MESSAGE} bytes") from exc
        out: list[bytes] = []
        while True:
            try:
                message = next(self._unpacker)
            except StopIteration:
                break
            except (ValueError, msgpack.UnpackException) as exc:
                raise FluentProtocolError(f"the server sent what is not msgpack: {exc}") from exc
            reply = self._handle(message)
            if reply:
                out.append(reply)
        return b"".join(out)

    def connection_closed(self) -> None:
        """The server closed the connection: an error before the handshake's end."""
        if not self.established:
            raise ConnectionResetError(f"the server closed the connection {self.state.value}")

    def _handle(self, message: Any) -> bytes:
        if message is None:  # a heartbeat
            return b""
        if self.state is State.HELO:
            return self._helo(message)
        if self.state is State.PONG:
            self._pong(message)
            return b""
        if isinstance(message, dict) and "ack" in message:
            self._ack(message["ack"])
            return b""
        if isinstance(message, list) and message and message[0] == "HELO":
            raise FluentAuthError("the server asks for the shared-key handshake (HELO): "
                                  "set shared_key for this destination" if self.shared_key is None
                                  else "the server sent a second HELO")
        raise FluentProtocolError(f"unexpected message from the server: {_show(message)}")

    def _helo(self, message: Any) -> bytes:
        if not (isinstance(message, list) and len(message) == 2 and message[0] == "HELO"
                and isinstance(message[1], dict)):
            raise FluentProtocolError(f"expected HELO from the server, got {_show(message)}")
        options = message[1]
        nonce, auth, keepalive = options.get("nonce"), options.get("auth", b""), options.get("keepalive")
        if not isinstance(nonce, str | bytes) or not isinstance(auth, str | bytes) \
                or not isinstance(keepalive, bool | None):
            raise FluentProtocolError(f"malformed HELO: {_show(message)}")
        assert self.shared_key is not None
        self.nonce, self.keepalive = _raw(nonce), keepalive
        username = password = ""
        if auth and self.username is not None and self.password is not None:
            username, password = self.username, password_digest(auth, self.username, self.password)
        self.state = State.PONG
        ping: bytes = msgpack.packb(["PING", self.hostname, self.salt,
                                     shared_key_digest(self.salt, self.hostname, self.nonce, self.shared_key),
                                     username, password], use_bin_type=True)
        return ping

    def _pong(self, message: Any) -> None:
        if not (isinstance(message, list) and len(message) == 5 and message[0] == "PONG"
                and isinstance(message[1], bool) and all(isinstance(v, str) for v in message[2:])):
            raise FluentProtocolError(f"expected PONG from the server, got {_show(message)}")
        _, ok, reason, server_hostname, digest = message
        if not ok:
            raise FluentAuthError(f"the server refused the handshake: {reason or 'no reason given'}")
        if server_hostname == self.hostname:
            raise FluentAuthError(f"the server's hostname is this agent's own ({server_hostname!r}): "
                                  "Fluentd takes that for a configuration error")
        assert self.shared_key is not None
        expected = shared_key_digest(self.salt, server_hostname, self.nonce, self.shared_key)
        if not hmac.compare_digest(digest.encode(), expected.encode()):
            raise FluentAuthError(f"the server's PONG does not prove it holds the shared key "
                                  f"(digest mismatch, server {server_hostname!r})")
        self.server_hostname = server_hostname
        self.state = State.ESTABLISHED

    def _ack(self, value: Any) -> None:
        chunk_id = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        pending = self._by_id.pop(chunk_id, None) if isinstance(chunk_id, str) else None
        if pending is None:
            raise FluentProtocolError(f"ack for chunk id {_show(value)}, which was not sent or was acked already")
        pending.waiting.discard(chunk_id)

    # -- bytes out ------------------------------------------------------------
    def encode_chunk(self, last: int, columns: Columns) -> bytes:
        """The messages of one hostlog chunk whose last seq is ``last``."""
        return self.add_chunk(last, encode_messages(columns, compress=self.compress))

    def add_chunk(self, last: int, messages: Iterable[tuple[str, bytes]]) -> bytes:
        """Take the messages of a chunk (:func:`encode_messages`) in flight; their bytes."""
        if not self.established:
            raise LocalProtocolError(f"records to send {self.state.value}")
        if self._chunks and last <= self._chunks[-1].last:
            raise LocalProtocolError(f"chunk up to seq {last} after one up to {self._chunks[-1].last}")
        pending = _Pending(last)
        data = []
        for chunk_id, message in messages:
            if chunk_id in self._by_id or chunk_id in pending.waiting:
                raise LocalProtocolError(f"chunk id {chunk_id!r} is in flight already")
            pending.waiting.add(chunk_id)
            data.append(message)
        for chunk_id in pending.waiting:
            self._by_id[chunk_id] = pending
        self._chunks.append(pending)
        return b"".join(data)

    def acked(self) -> list[int]:
        """The last seqs of the chunks acknowledged in full since the last call,
        each only once every earlier chunk is too."""
        done = []
        while self._chunks and not self._chunks[0].waiting:
            done.append(self._chunks.popleft().last)
        return done


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# -- the output --------------------------------------------------------------------

class _Stream(asyncio.Protocol):
    """The connection's protocol: what the server sends goes to the client at
    once, as it arrives (a HELO the server sends before it drops a client
    without the shared key is seen even though it resets the connection)."""

    def __init__(self, client: FluentClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.failure: BaseException | None = None  # what the server's bytes raised
        self.lost: BaseException | None = None  # why the connection ended, if it did with an error
        self.closed = False
        self.changed = asyncio.Event()  # something to look at: acks, the handshake, the end
        self._paused = False
        self._resumed: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (a stream transport: uvloop's are not subclasses of asyncio's)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.failure is not None:
            return
        try:
            reply = self.client.receive_data(data)
        except Exception as exc:  # the protocol's errors: kept for whoever waits next
            self.failure = exc
            assert self.transport is not None
            self.transport.abort()
        else:
            if reply and self.transport is not None:
                self.transport.write(reply)
        self.changed.set()

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lost = exc
        self._wake()
        self.changed.set()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def _wake(self) -> None:
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        self._resumed = None

    def check(self) -> None:
        """Raise what went wrong, if something did (an error of the server's, or the end)."""
        if self.failure is not None:
            raise self.failure
        if self.closed:
            raise ConnectionResetError(f"the server closed the connection{f': {self.lost}' if self.lost else ''}")

    async def drain(self) -> None:
        self.check()
        if self._paused:
            self._resumed = asyncio.get_running_loop().create_future()
            await self._resumed
            self.check()


class FluentOutput:
    """One connection to a Fluent Forward server: handshake if it asks, then
    chunks out as PackedForward messages, acks in."""

    def __init__(self, endpoint: Endpoint, identity: Identity,
                 ssl_context: Callable[[], ssl.SSLContext] | None, *, shared_key: str | None = None,
                 username: str | None = None, password: str | None = None, compress: bool = False) -> None:
        assert endpoint.host is not None and endpoint.port is not None
        self.endpoint = endpoint
        self.host, self.port = endpoint.host, endpoint.port
        self.identity = identity
        self.ssl_context = ssl_context
        self.client = FluentClient(identity.host, shared_key=shared_key, username=username,
                                   password=password, compress=compress)
        self.stream: _Stream | None = None
        # sends under way: acks wait for them to end, so that a seq reported
        # never passes what the sender has seen sent (it checks acks against that)
        self._sending = 0

    async def open(self) -> None:
        ep = self.endpoint
        ctx = None
        if ep.scheme == "tls":
            if self.ssl_context is not None:
                ctx = self.ssl_context()
            else:
                from hostlog.forward.tls import client_context
                ctx = client_context(None, None, None)
        loop = asyncio.get_running_loop()
        transport, stream = await asyncio.wait_for(
            loop.create_connection(lambda: _Stream(self.client), self.host, self.port, ssl=ctx,
                                   server_hostname=self.host if ctx else None),
            CONNECT_TIMEOUT_S)
        self.stream = stream
        if ctx is not None:
            from hostlog.forward.tls import check_peer
            check_peer(transport.get_extra_info("ssl_object"), role="server")
        if self.client.shared_key is not None:
            await self._handshake(stream)
        return None  # a Fluent server cannot say what it holds

    async def _handshake(self, stream: _Stream) -> None:
        """Until the PONG is checked (the PING goes out as the HELO comes in)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HELO_TIMEOUT_S
        waiting_helo = True
        while not self.client.established:
            if stream.failure is None and stream.closed:
                self.client.connection_closed()  # (says in which step)
            stream.check()
            if waiting_helo and self.client.state is not State.HELO:
                waiting_helo = False
                deadline = loop.time() + PONG_TIMEOUT_S
            stream.changed.clear()
            try:
                await asyncio.wait_for(stream.changed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                if self.client.state is State.HELO:
                    raise FluentAuthError(f"no HELO from {self.endpoint.url} within {HELO_TIMEOUT_S:g} s: the "
                                          "server does not ask for a shared key (or is not a Fluent Forward "
                                          "server); remove shared_key or set one on the server") from None
                if not self.client.established:
                    raise TimeoutError(f"no PONG from {self.endpoint.url} within {PONG_TIMEOUT_S:g} s") from None
        stream.check()

    async def send(self, chunk: Chunk) -> None:
        stream = self.stream
        assert stream is not None and stream.transport is not None
        stream.check()
        compress = self.client.compress
        self._sending += 1
        try:
            # decoding and encoding a chunk (about 1 MiB of text: tens of ms) off the loop
            messages = await asyncio.to_thread(lambda: encode_messages(decode_chunk(chunk), compress=compress))
            stream.check()
            stream.transport.write(self.client.add_chunk(chunk.last, messages))
        finally:
            self._sending -= 1
            stream.changed.set()  # (acks held back, or a chunk of no records: acked as it is sent)

    async def drain(self) -> None:
        assert self.stream is not None
        await self.stream.drain()

    async def acks(self) -> AsyncIterator[int]:
        stream = self.stream
        assert stream is not None
        while True:
            stream.changed.clear()
            if not self._sending:
                for seq in self.client.acked():
                    yield seq
            if stream.failure is not None:
                raise stream.failure
            if stream.closed:
                return
            await stream.changed.wait()

    async def close(self) -> None:
        stream = self.stream
        if stream is None or stream.transport is None or stream.closed:
            return
        stream.transport.close()
        try:
            await asyncio.wait_for(_closed(stream), 2.0)
        except TimeoutError:
            stream.transport.abort()


async def _closed(stream: _Stream) -> None:
    while not stream.closed:
        stream.changed.clear()
        await stream.changed.wait()
