"""The Fluent Forward collector: TCP and TLS listeners for Fluentd, Fluent Bit and
the fluent-logger clients.

The I/O half only: the protocol (handshake, event modes, times, options) is
the sans-IO ``protocol`` module. Each connection feeds it what it reads; the
events of one read become one batch, handed to the sink with an ``on_durable``
that sends ``{"ack": chunk}`` for every chunk id in it. So a client that asked
for acks hears back only once its events are durable in the spool, and one
that hears nothing sends them again: a connection lost before that costs a
resend, never a loss.

* Backpressure: when the sink has no room after a batch, the connection stops
  reading until it has, so TCP flow control slows the client.
* Malformed input (``FluentProtocolError``): the events before it are kept,
  the reason is logged once for the connection and counted with
  ``context.error("forward", "protocol", exc)``; the connection stops
  reading and is closed once the acks it still owes are sent.
* A failed handshake: the PONG that says why is sent, then the connection
  is closed (counted as ``<name>.auth_failed``).

How a record is mapped (``docs/collectors.md``, "Fluent Forward"):
:func:`to_columns`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from typing import Any, cast

from hostlog.collectors.base import CollectorContext
from hostlog.collectors.events import Counted
from hostlog.collectors.fluent.protocol import (
    Authenticated,
    Closed,
    Entries,
    FluentProtocolError,
    ForwardServerConnection,
    Rejected,
    ack_bytes,
)
from hostlog.errors import SinkError
from hostlog.record import Columns, Fields

log = logging.getLogger("hostlog.forward")

SOURCE = "forward"
#: How long a closing connection (stopping, or its client broke the protocol)
#: waits for the acks it still owes (durability of what it sent: one group
#: commit, normally milliseconds; longer only while the spool is full).
ACK_WAIT = 5.0

#: Common level names -> syslog severity (RFC 5424 6.2.1), lowercase.
LEVELS = {
    "emerg": 0, "emergency": 0, "panic": 0,
    "alert": 1,
    "crit": 2, "critical": 2, "fatal": 2,
    "err": 3, "error": 3,
    "warn": 4, "warning": 4,
    "notice": 5,
    "info": 6, "information": 6, "informational": 6,
    "debug": 7, "trace": 7,
}
_NUMBERS = {str(n): n for n in range(8)}
_SEVERITY_KEYS = ("level", "severity", "priority")
_HOST_KEYS = ("host", "hostname")
_MESSAGE_KEYS = ("message", "log")


# -- records ----------------------------------------------------------------------------

def to_columns(entries: list[Entries], host: str) -> Columns:
    """The events of some messages as one batch.

    ts is the event time, app the tag, host the record's ``host`` or
    ``hostname`` (else ``host``: the client's, from the handshake, or its
    address), msg the record's ``message`` or ``log`` (else the whole record as
    compact JSON), severity from ``level``, ``severity`` or ``priority`` when
    it is a syslog number or a common level name (else 6, info); every other
    key is a field, its value as it is (str, bytes) or JSON-encoded.
    """
    ts: list[int] = []
    hosts: list[str] = []
    apps: list[str] = []
    severities: list[int] = []
    msgs: list[str | bytes] = []
    fields_column: list[Fields] = []
    for entry in entries:
        app = _name(entry.tag)
        ts += entry.times
        apps += [app] * len(entry.times)
        for record in entry.records:
            fields: Fields = {}
            record_host = msg = severity = None
            for key, value in record.items():
                name = _name(key)
                if record_host is None and name in _HOST_KEYS and type(value) is str and value:
                    record_host = _name(value)
                elif msg is None and name in _MESSAGE_KEYS and value is not None:
                    msg = _text(value) if type(value) is str or type(value) is bytes else _json(value)
                elif severity is None and name in _SEVERITY_KEYS and (level := _severity(value)) is not None:
                    severity = level
                else:
                    fields[name] = _text(value) if type(value) is str or type(value) is bytes \
                        else _json(value)
            hosts.append(record_host or host)
            msgs.append(msg if msg is not None else _json(record))
            severities.append(6 if severity is None else severity)
            fields_column.append(fields)
    n = len(ts)
    return Columns([ts, hosts, [SOURCE] * n, apps, [None] * n, severities, [None] * n, msgs,
                    fields_column, [""] * n, [0] * n])


def _severity(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 7 else None
    if isinstance(value, str):
        lowered = value.strip().lower()
        return _NUMBERS.get(lowered, LEVELS.get(lowered))
    return None


def _text(value: str | bytes) -> str | bytes:
    """A message or field value: a str that was not UTF-8 on the wire (decoded
    with surrogateescape) becomes its bytes, as the record model keeps it."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value
    if value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")
    return value


def _name(value: str | bytes) -> str:
    """A tag, host or key: always str (bytes that are not UTF-8 get U+FFFD)."""
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode(errors="replace")


def _json(value: object) -> str | bytes:
    return _text(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default))


def _json_default(value: object) -> object:
    ns = getattr(value, "ns", None)  # EventTime
    if isinstance(ns, int):
        return ns
    to_nano = getattr(value, "to_unix_nano", None)  # msgpack.Timestamp
    if callable(to_nano):
        return to_nano()
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return repr(value)


# -- connections ----------------------------------------------------------------------------

class _Connection(asyncio.Protocol):
    """One client: the protocol state machine, fed by the transport."""

    def __init__(self, collector: FluentCollector) -> None:
        self.collector = collector
        source = collector.config
        self.protocol = ForwardServerConnection(
            max_message=collector.max_message, shared_key=source.shared_key,
            users=dict(source.users or {}), server_hostname=collector.context.hostname)
        self.transport: asyncio.Transport | None = None
        self.peer = "unknown"
        self.host = ""  # the client's host name (PING), else its address
        self.paused = False
        self.resume_task: asyncio.Task[None] | None = None  # waits for room in the sink
        self.closing = False  # stop reading; close once the acks owed are sent
        self.owed = 0  # batches with chunk ids whose acks are not sent yet
        self.settled = asyncio.Event()  # owed == 0
        self.settled.set()
        self.close_timer: asyncio.TimerHandle | None = None  # closes it if the acks owed never come

    # asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports do not subclass asyncio.Transport, but are one)
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer = str(peer[0])
        self.host = self.peer
        self.collector.connections.add(self)
        self.collector.context.count(self.collector.name, Counted.CONNECTIONS)
        self._send(self.protocol.data_to_send())  # HELO when a shared key is set

    def data_received(self, data: bytes) -> None:
        # Nothing may escape a protocol callback: the event loop would close
        # the connection and drop what it read (see collectors/base.py).
        if self.closing:
            return  # failed, refused or stopping: what still comes is not read
        try:
            self.protocol.receive_data(data)
            self._drain()
        except Exception as exc:
            self.collector.context.error(SOURCE, "connection", exc)
            self._close_when_settled()

    def eof_received(self) -> bool | None:
        if not self.closing:  # (a failed connection's reason is already said)
            try:
                self.protocol.receive_data(b"")
                self._drain()
            except Exception as exc:
                self.collector.context.error(SOURCE, "connection", exc)
        self.closing = True
        if self.owed and self.transport is not None and self.transport.get_extra_info("sslcontext") is None:
            return True  # half-closed: keep writing the acks owed, then close
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.collector.connections.discard(self)
        self.owed = 0
        self.settled.set()
        if self.resume_task is not None:
            self.resume_task.cancel()
            self.resume_task = None
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None

    # the protocol's events ----------------------------------------------------------------------
    def _drain(self) -> None:
        collector = self.collector
        entries: list[Entries] = []
        failure: FluentProtocolError | None = None
        try:
            for event in self.protocol.events():
                if type(event) is Entries:
                    if event.times or event.chunk is not None:
                        entries.append(event)
                elif type(event) is Authenticated:
                    self.host = event.client_hostname or self.peer
                    log.debug("%s: %s authenticated as %s (user %r)", collector.name, self.peer,
                              event.client_hostname, event.username)
                elif type(event) is Rejected:
                    collector.context.count(collector.name, Counted.AUTH_FAILED)
                    log.warning("%s: refused %s (%s): %s", collector.name, self.peer,
                                event.client_hostname, event.reason)
                    self.closing = True
                elif type(event) is Closed and event.incomplete:
                    collector.context.count(collector.name, Counted.INCOMPLETE)
                    log.warning("%s: %s closed the connection inside a message (%d bytes lost, "
                                "not acknowledged)", collector.name, self.peer, event.incomplete)
        except FluentProtocolError as exc:
            failure = exc
        self._send(self.protocol.data_to_send())  # a PONG
        if entries:
            self._submit(entries)
        if failure is not None:
            log.warning("%s: closing the connection from %s: %s", collector.name, self.peer, failure)
            collector.context.error(SOURCE, "protocol", failure)
            self._close_when_settled()
        elif self.closing:
            self._close_when_settled()

    def _submit(self, entries: list[Entries]) -> None:
        collector = self.collector
        batch = to_columns(entries, self.host)
        chunks = [e.chunk for e in entries if e.chunk is not None]
        on_durable: Callable[[int], None] | None = None
        if chunks:
            self.owed += 1
            self.settled.clear()

            def on_durable(seq: int) -> None:
                self._acknowledge(chunks)
        sink = collector.context.sink
        collector.context.count(collector.name, Counted.RECORDS, len(batch))
        try:
            sink.submit(batch, on_durable)
        except SinkError:
            # reported, and the agent is stopping with a failure: read no more
            self.pause()
            return
        if not sink.has_room() and not self.paused and not self.closing:
            self.pause()
            self.resume_task = asyncio.get_running_loop().create_task(self._resume_when_room())

    def _acknowledge(self, chunks: list[str | bytes]) -> None:
        """on_durable: the batch is in the spool, synced; tell the client."""
        try:
            if self.owed:
                self.owed -= 1
            if self.transport is not None and not self.transport.is_closing():
                self._send(b"".join(map(ack_bytes, chunks)))
                self.collector.context.count(self.collector.name, Counted.ACKS, len(chunks))
            if not self.owed:
                self.settled.set()
                if self.closing:
                    self.close()
        except Exception as exc:
            self.collector.context.error(SOURCE, "ack", exc)

    # the transport -----------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing() and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    async def _resume_when_room(self) -> None:
        await self.collector.context.sink.wait_room()
        self.resume_task = None
        self.paused = False
        if self.transport is not None and not self.transport.is_closing() and not self.closing:
            self.transport.resume_reading()

    def _close_when_settled(self) -> None:
        """Read no more; close as soon as every ack owed is sent."""
        self.closing = True
        self.pause()
        if not self.owed:
            self.close()
        elif self.close_timer is None:
            self.close_timer = asyncio.get_running_loop().call_later(ACK_WAIT, self.close)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()  # (after what is buffered for writing: the PONG, acks)


class FluentCollector:
    """One ``[[source]] type = "forward"``: all of its ``listen`` endpoints."""

    def __init__(self, config: Any, context: CollectorContext, tls: Any = None) -> None:
        self.name: str = config.name or "forward"
        self.config = config
        self.context = context
        self.tls = tls  # the agent's [tls] section, for tls:// listeners
        self.max_message: int = config.max_message
        self.servers: list[asyncio.AbstractServer] = []
        self.connections: set[_Connection] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for ep in self.config.endpoints():
                label = f"{self.name} {ep.scheme}://{ep.host}:{ep.port}"
                ssl_context = self._ssl_context(label) if ep.scheme == "tls" else None
                server = await loop.create_server(lambda: _Connection(self), ep.host, ep.port,
                                                  reuse_address=True, backlog=512, ssl=ssl_context)
                self.servers.append(server)
                log.info("%s: listening (Fluent Forward%s)", label,
                         ", shared key" if self.config.shared_key else "")
        except BaseException:
            await self._close_servers()
            raise

    def _ssl_context(self, label: str) -> ssl.SSLContext:
        """A TLS server with the [tls] certificate; client certificates checked
        against [tls] ca, and required when require_client_cert."""
        tls = self.tls
        if tls is None or tls.cert is None or tls.key is None:
            raise ValueError(f"{label}: a tls:// listener needs [tls] cert and key")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
        if tls.ca is not None:
            ctx.load_verify_locations(cafile=str(tls.ca))
            ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
        return ctx

    async def stop(self) -> None:
        """No new connections; read no more; send the acks owed for what is
        becoming durable (at most ACK_WAIT), then close every connection."""
        for server in self.servers:
            server.close()
        connections = list(self.connections)
        for conn in connections:
            conn.closing = True
            conn.pause()
        owed = [conn.settled.wait() for conn in connections if conn.owed]
        if owed:
            try:
                await asyncio.wait_for(asyncio.gather(*owed), timeout=ACK_WAIT)
            except TimeoutError:
                log.warning("%s: stopping with acks still owed (their clients will resend)", self.name)
        for conn in connections:
            conn.close()
        await self._close_servers()

    async def _close_servers(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()
