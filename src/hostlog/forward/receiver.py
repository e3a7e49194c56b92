"""The receiver: ``[receiver]`` makes this agent a central node that stores
what other agents send (docs/protocol.md).

* A peer on ``tls://`` shows a client certificate of ``[tls] ca`` with the
  clientAuth usage before anything it sends is read (unless the operator
  set ``require_client_cert = false``); with ``token``, its Hello carries it.
  A peer that breaks the protocol is told why (Error) and disconnected; it
  never stalls the others.
* A chunk is acked only once its records are durable in this spool: the ack
  is the durability callback of the batch handed to the spool writer.
* Nothing is stored twice: :class:`hostlog.forward.dedup.Dedup` drops the
  rows whose ``(origin, seq)`` is held already. The marks are kept with the
  data: ``state/receiver.json`` is a checkpoint of them (per record origin,
  and per sender the last seq acked), written after durability; at start the
  frames written since that checkpoint are read to bring the marks up to
  what the spool holds, so a crash between the data and the checkpoint
  costs a rescan, never a duplicate.
* Records keep their origin host, origin and seq: ``hostlog query --host``
  on the central node shows one machine's records.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostlog.chunk import ORIGIN, FrameColumns, decode_columns
from hostlog.collectors.base import CollectorContext
from hostlog.errors import ChunkError, FrameError, PeerRefusedError, ProtocolError, RemoteProtocolError, SinkError
from hostlog.forward.dedup import Dedup
from hostlog.forward.protocol import MAX_FRAME, Ack, Chunk, Connection, Error, Hello, Role, Welcome
from hostlog.record import Columns
from hostlog.spool.frame import MAX_PAYLOAD, decompress_chunk
from hostlog.spool.reader import SpoolReader
from hostlog.spool.segment import Damage
from hostlog.spool.state import read_json, write_json

log = logging.getLogger("hostlog.receiver")

__all__ = ["Receiver", "ReceiverState"]

HELLO_TIMEOUT_S = 10.0
STATE_SAVE_S = 0.5
_SAVING = threading.Lock()
READ_SIZE = 1 << 20


@dataclass
class ReceiverState:
    """The checkpoint of the marks (``state/receiver.json``)."""

    path: Path
    origins: dict[str, int] = field(default_factory=dict)  # durable: highest seq per record origin
    peers: dict[str, int] = field(default_factory=dict)  # durable: last seq acked per sending agent
    local_seq: int = 0  # every row of this spool after it may be missing from the marks

    @classmethod
    def load(cls, path: Path) -> ReceiverState:
        try:
            value = read_json(path, {}) or {}
        except ValueError:
            log.warning("%s is unreadable: the marks are rebuilt from the whole spool", path)
            value = {}
        return cls(path, dict(value.get("origins", {})), dict(value.get("peers", {})),
                   int(value.get("local_seq", 0)))

    def save(self, snapshot: dict[str, Any]) -> None:
        # one save at a time (see Cursor.save): the saver's thread may still run at stop
        with _SAVING:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, snapshot)

    def snapshot(self) -> dict[str, Any]:
        return {"origins": dict(self.origins), "peers": dict(self.peers), "local_seq": self.local_seq}

    def recover(self, reader: SpoolReader) -> int:
        """Bring the origin marks up to what the spool holds after
        ``local_seq``; returns the records read."""
        n = 0
        with closing(reader.frames_quick(after_seq=self.local_seq)) as frames:
            for seg, entry in frames:
                chunk = seg.read_chunk(entry)
                if isinstance(chunk, Damage):
                    continue  # unreadable here, and to every query: not held
                try:  # two columns of the chunk, not its messages
                    columns = FrameColumns(chunk)
                    if not columns.n:
                        continue
                    strings = columns.strings
                    origins = [strings[i] for i in columns.column(ORIGIN)]
                    seqs = columns.seq()
                except (ChunkError, IndexError, TypeError):
                    continue
                n += len(seqs)
                for origin, seq in zip(origins, seqs):
                    if seq > self.origins.get(origin, 0):
                        self.origins[origin] = seq
        for agent, seq in self.origins.items():
            # An agent's own records carry its spool's seq, which its cursor
            # counts; the spool is durable as a prefix and a chunk's rows are
            # stored in order, so all it sent before that record is held.
            self.peers[agent] = max(self.peers.get(agent, 0), seq)
        return n


@dataclass
class ReceiverStats:
    connections: int = 0
    refused: int = 0
    protocol_errors: int = 0
    chunks: int = 0
    records: int = 0
    duplicates: int = 0
    bad_chunks: int = 0
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)  # agent -> host, address, since


class Receiver:
    """Listens on ``[receiver] listen`` and stores what peers send."""

    name = "receiver"

    def __init__(self, config: Any, tls: Any, context: CollectorContext, *, agent_id: str,
                 state_path: Path, reader: Callable[[], SpoolReader],
                 accepted_seq: Callable[[], int]) -> None:
        self.config = config  # hostlog.config.Receiver
        self.tls = tls  # hostlog.config.Tls | None
        self.context = context
        self.agent_id = agent_id
        self.state = ReceiverState.load(state_path)
        self.reader = reader
        self.accepted_seq = accepted_seq
        self.dedup = Dedup()
        self.stats = ReceiverStats()
        self.listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._ssl: ssl.SSLContext | None = None
        self.sessions: set[asyncio.Task[None]] = set()
        self._pending: dict[int, int] = {}  # chunk token -> local seq its rows come after
        self._tokens = itertools.count()
        self._dirty = False
        self._saver: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        reader = self.reader()
        t0 = time.monotonic()
        n = await asyncio.to_thread(self.state.recover, reader)
        if n:
            log.info("receiver: marks brought up to date from %d records written since the "
                     "last checkpoint (%.2f s)", n, time.monotonic() - t0)
        self.dedup = Dedup(self.state.origins)
        endpoint = self.config.endpoint()
        # TLS is started per connection, not by the server: a peer refused in
        # the handshake (no certificate, another CA, expired) is then logged
        # and counted here, not left to the event loop.
        self._ssl = self._ssl_context() if endpoint.scheme == "tls" else None
        family = socket.AF_INET6 if ":" in (endpoint.host or "") else socket.AF_INET
        self.listener = socket.create_server((endpoint.host or "", endpoint.port), family=family, backlog=128)
        self.listener.setblocking(False)
        self._acceptor = asyncio.create_task(self._accept(), name="receiver accept")
        self._saver = asyncio.create_task(self._save_loop(), name="receiver state")
        log.info("receiver listening on %s", endpoint.url)

    @property
    def port(self) -> int:
        assert self.listener is not None
        return int(self.listener.getsockname()[1])

    async def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.cancel()
            await asyncio.gather(self._acceptor, return_exceptions=True)
            self._acceptor = None
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        sessions = list(self.sessions)
        for task in sessions:
            task.cancel()
        # (a session ends on CancelledError without raising; anything else it
        # raised was counted inside it)
        await asyncio.gather(*sessions, return_exceptions=True)
        if self._saver is not None:
            self._saver.cancel()
            self._saver = None
        self.state.local_seq = self._rescan_from()
        await asyncio.to_thread(self.state.save, self.state.snapshot())

    def _rescan_from(self) -> int:
        # Rows of a chunk not yet durable may already sit in frames before
        # the durable seq (the writer splits batches at frame limits): the
        # checkpoint says to rescan from below them.
        return min(self._pending.values(), default=self.accepted_seq())

    def _ssl_context(self) -> ssl.SSLContext:
        from hostlog.forward.tls import server_context
        tls = self.tls
        if tls is None or tls.cert is None or tls.key is None:
            raise ValueError("a tls:// receiver needs [tls] cert and key")
        require = self.config.require_client_cert
        if require and tls.ca is None:
            raise ValueError("a tls:// receiver demands client certificates: [tls] ca is needed "
                             "(or [receiver] require_client_cert = false)")
        return server_context(tls.ca, tls.cert, tls.key, require_client_cert=require)

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {"listen": self.config.listen, "connections": s.connections, "refused": s.refused,
                "protocol_errors": s.protocol_errors, "chunks": s.chunks, "records": s.records,
                "duplicates": s.duplicates, "bad_chunks": s.bad_chunks,
                "peers": [dict(v, agent=k, held=self.state.peers.get(k, 0)) for k, v in sorted(s.peers.items())]}

    # -- one peer ----------------------------------------------------------------
    async def _accept(self) -> None:
        """Accept connections; each gets its TLS handshake and its session in
        a task of its own. The handshake is awaited here, not left to the
        server: a peer refused in it (no certificate, another CA, expired) is
        logged and counted, which a server with ``ssl=`` would not tell."""
        loop = asyncio.get_running_loop()
        assert self.listener is not None
        while True:
            try:
                sock, _ = await loop.sock_accept(self.listener)
            except OSError as exc:  # out of fds, say: counted, and accepting goes on
                self.context.error("receiver", "accept", exc)
                await asyncio.sleep(0.5)
                continue
            task = loop.create_task(self._connection(sock), name="receiver session")
            self.sessions.add(task)
            task.add_done_callback(self.sessions.discard)

    async def _connection(self, sock: socket.socket) -> None:
        try:
            address = sock.getpeername()
        except OSError:
            sock.close()
            return
        where = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_SIZE)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=self._ssl,
                ssl_handshake_timeout=HELLO_TIMEOUT_S if self._ssl is not None else None)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            self.stats.refused += 1
            log.warning("receiver: refused %s: TLS handshake failed: %s", where,
                        getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
                        or str(exc) or type(exc).__name__)
            sock.close()
            return
        await self._session(reader, asyncio.StreamWriter(transport, protocol, reader, loop), where)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str) -> None:
        conn = Connection(Role.SERVER, max_frame=MAX_FRAME)
        hello: Hello | None = None
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            if ssl_object is not None and (self.config.require_client_cert
                                           or ssl_object.getpeercert(binary_form=True)):
                from hostlog.forward.tls import check_peer
                where = f"{check_peer(ssl_object, role='client')} ({where})"
            hello = await asyncio.wait_for(self._hello(conn, reader), HELLO_TIMEOUT_S)
            token = self.config.token
            if token is not None and not hmac.compare_digest((hello.token or "").encode(), token.encode()):
                raise PeerRefusedError("wrong or missing token")
            self.stats.connections += 1
            self.stats.peers[hello.agent] = {"host": hello.host, "address": where,
                                             "connected": True, "since": time.time()}
            writer.write(conn.send(Welcome(agent=self.agent_id, held=self.state.peers.get(hello.agent, 0))))
            log.info("receiver: %s (%s, agent %s) connected", hello.host, where, hello.agent)
            while True:
                data = await reader.read(READ_SIZE)
                conn.receive_data(data)
                for event in conn.events():
                    if not isinstance(event, Chunk):
                        raise RemoteProtocolError(f"unexpected {type(event).__name__} from a sender")
                    if event.origin != hello.agent:
                        raise RemoteProtocolError(f"chunk of origin {event.origin}, but the peer said "
                                                  f"hello as {hello.agent}")
                    await self._store(event, hello, conn, writer)
                if not data:
                    return
        except PeerRefusedError as exc:
            self.stats.refused += 1
            log.warning("receiver: refused %s: %s", where, exc)
            self._tell(conn, writer, Error("rejected", str(exc)))
        except RemoteProtocolError as exc:
            self.stats.protocol_errors += 1
            log.warning("receiver: disconnected %s: %s", where, exc)
            self._tell(conn, writer, Error("rejected", str(exc)))
        except (OSError, EOFError, TimeoutError, ssl.SSLError, ProtocolError) as exc:
            log.info("receiver: connection %s ended: %s", where, str(exc) or type(exc).__name__)
        except SinkError:
            pass  # reported; the agent is stopping. Nothing unstored was acked.
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug: counted; nothing unstored was acked, the sender resends
            self.context.error("receiver", "session", exc)
        finally:
            if hello is not None and hello.agent in self.stats.peers:
                self.stats.peers[hello.agent]["connected"] = False
            writer.close()

    @staticmethod
    async def _hello(conn: Connection, reader: asyncio.StreamReader) -> Hello:
        while True:
            for event in conn.events():
                if isinstance(event, Hello):
                    return event
                raise RemoteProtocolError(f"expected hello, got {type(event).__name__}")
            data = await reader.read(READ_SIZE)
            if not data:
                raise EOFError("closed before its hello")
            conn.receive_data(data)

    @staticmethod
    def _tell(conn: Connection, writer: asyncio.StreamWriter, error: Error) -> None:
        if writer.is_closing():
            return
        try:  # (the protocol takes one Error even after the peer broke it: to say why)
            writer.write(conn.send(error))
        except (ProtocolError, OSError):
            pass

    async def _store(self, chunk: Chunk, hello: Hello, conn: Connection, writer: asyncio.StreamWriter) -> None:
        """Hand the rows not held yet to the spool writer; ack once durable."""
        stats = self.stats
        stats.chunks += 1
        try:
            if chunk.chunk_len > MAX_PAYLOAD:  # (a frame's limit: never inflate a peer's claim past it)
                raise ChunkError(f"inflates to {chunk.chunk_len} bytes, over the limit of {MAX_PAYLOAD}")
            batch = decode_columns(decompress_chunk(chunk.data, chunk.chunk_len))
            if len(batch) != chunk.count:
                raise ChunkError(f"holds {len(batch)} records, its frame says {chunk.count}")
        except (ChunkError, FrameError) as exc:
            # Reported and skipped, visibly: the records are unreadable
            # anyway, and refusing would stop that sender for good.
            stats.bad_chunks += 1
            self.context.error("receiver", "chunk", exc)
            kept: Columns = Columns.of([self.context.notice(
                "hostlog", f"a chunk from {hello.host} (origin {chunk.origin}, seq {chunk.first}.."
                f"{chunk.last}) does not decode and was skipped: {exc}", severity=3,
                FORWARD_ORIGIN=chunk.origin)])
            marks: dict[str, int] = {}
        else:
            kept, dropped = self.dedup.take(batch)
            stats.duplicates += dropped
            stats.records += len(kept)
            marks = {o: self.dedup.held(o) for o in set(batch.origin)}
        token = next(self._tokens)
        self._pending[token] = self.accepted_seq()
        sender, last = chunk.origin, chunk.last

        def durable(seq: int) -> None:
            self._pending.pop(token, None)
            state = self.state
            for origin, mark in marks.items():
                if mark > state.origins.get(origin, 0):
                    state.origins[origin] = mark
            if last > state.peers.get(sender, 0):
                state.peers[sender] = last
            self._dirty = True
            if not conn.closed and not writer.is_closing():
                try:
                    writer.write(conn.send(Ack(sender, last)))
                except (ProtocolError, OSError) as exc:
                    log.info("receiver: ack to %s not sent: %s", hello.host, exc)

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
                self.context.error("receiver", "state", exc)

