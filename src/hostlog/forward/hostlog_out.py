"""``[[forward]] type = "hostlog"`` (the default): the peer protocol
(docs/protocol.md) to another hostlog agent's ``[receiver]``, over TCP or TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable

from hostlog.config.endpoints import Endpoint
from hostlog.errors import RemoteProtocolError
from hostlog.forward.output import Identity, Refused
from hostlog.forward.protocol import Ack, Chunk, Connection, Error, Hello, Role, Welcome

__all__ = ["HostlogOutput"]

CONNECT_TIMEOUT_S = 10.0
HELLO_TIMEOUT_S = 10.0
READ_SIZE = 1 << 16


class HostlogOutput:
    """One connection to a receiver: hello, welcome, chunks out, acks in."""

    def __init__(self, endpoint: Endpoint, identity: Identity,
                 ssl_context: Callable[[], ssl.SSLContext] | None) -> None:
        assert endpoint.host is not None and endpoint.port is not None
        self.endpoint = endpoint
        self.identity = identity
        self.ssl_context = ssl_context
        self.conn = Connection(Role.CLIENT)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> int:
        ep = self.endpoint
        ctx = None
        if ep.scheme == "tls":  # never plain TCP for a tls:// target: the system's CAs at least
            ctx = self.ssl_context() if self.ssl_context else ssl.create_default_context()
        self.reader, writer = await asyncio.wait_for(
            asyncio.open_connection(ep.host, ep.port, ssl=ctx, server_hostname=ep.host if ctx else None,
                                    limit=1 << 20),
            CONNECT_TIMEOUT_S)
        self.writer = writer
        if ctx is not None:
            from hostlog.forward.tls import check_peer
            check_peer(writer.get_extra_info("ssl_object"), role="server")
        ident = self.identity
        writer.write(self.conn.send(Hello(agent=ident.agent, host=ident.host, token=ident.token)))
        welcome = await asyncio.wait_for(self._first_event(), HELLO_TIMEOUT_S)
        if isinstance(welcome, Error):
            raise Refused(f"receiver says {welcome.kind}: {welcome.reason}", rejected=welcome.kind == "rejected")
        if not isinstance(welcome, Welcome):
            raise RemoteProtocolError(f"expected welcome, got {type(welcome).__name__}")
        return welcome.held

    async def _first_event(self) -> object:
        assert self.reader is not None
        while True:
            events = self.conn.events()
            if events:
                return events[0]
            data = await self.reader.read(READ_SIZE)
            self.conn.receive_data(data)
            if not data and not self.conn.events():
                raise ConnectionResetError("receiver closed the connection before its welcome")

    async def send(self, chunk: Chunk) -> None:
        assert self.writer is not None
        self.writer.write(self.conn.send(chunk))

    async def drain(self) -> None:
        assert self.writer is not None
        await self.writer.drain()

    async def acks(self) -> AsyncIterator[int]:
        assert self.reader is not None
        origin = self.identity.agent
        while True:
            data = await self.reader.read(READ_SIZE)
            self.conn.receive_data(data)
            for event in self.conn.events():
                if isinstance(event, Ack):
                    if event.origin != origin:
                        raise RemoteProtocolError(f"ack for origin {event.origin}, not this agent's")
                    yield event.seq
                elif isinstance(event, Error):
                    raise Refused(f"receiver says {event.kind}: {event.reason}",
                                  rejected=event.kind == "rejected")
                else:
                    raise RemoteProtocolError(f"unexpected {type(event).__name__} from the receiver")
            if not data:
                return

    async def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)
        except (OSError, TimeoutError, ssl.SSLError):
            pass
