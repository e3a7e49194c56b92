"""The syslog collector: UDP, TCP, TLS (RFC 5425) and unix socket listeners.

The I/O half only. Framing (RFC 6587) and parsing (RFC 5424 / RFC 3164) are
the sans-IO modules ``syslog_framing`` and ``syslog_parse``; this module feeds
them bytes and hands what they return to the sink as batches:

* UDP and unix datagrams: every datagram received during one turn of the
  event loop is parsed as one batch. A full sink drops the batch and counts it
  (a datagram sender cannot be slowed down).
* TCP: every ``data_received`` is framed and parsed as one batch (runs of
  whole frames come from the framer as one block, read in place by
  ``parse_block``); when the sink is full the transport stops reading until
  it has room, so the kernel's flow control slows the sender instead of
  memory growing.

Batches go to the sink as :class:`~hostlog.record.Columns` (no object per
message: ``parse_columns``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from hostlog.collectors.base import CollectorContext
from hostlog.collectors.ratelimit import RateLimiter, TokenBucket
from hostlog.collectors.syslog_framing import LineBlock, OctetBlock, SyslogFramer
from hostlog.collectors.syslog_parse import parse_block, parse_columns
from hostlog.errors import SinkError
from hostlog.record import Columns, Record

log = logging.getLogger("hostlog.syslog")

UDP_RCVBUF = 4 << 20  # rsyslog loses 30% of a burst with the default 208 KiB


class _DatagramBatcher(asyncio.DatagramProtocol):
    def __init__(self, collector: SyslogCollector, label: str) -> None:
        self.collector = collector
        self.label = label
        self.pending: list[tuple[bytes, str | None]] = []
        self.scheduled = False

    def datagram_received(self, data: bytes, addr: Any) -> None:
        peer = addr[0] if isinstance(addr, tuple) and addr else None
        self.pending.append((data, peer))
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        pending, self.pending = self.pending, []
        if pending:
            self.collector.deliver_datagrams(pending)

    def error_received(self, exc: Exception) -> None:
        log.warning("%s: receive error: %s", self.label, exc)


class _StreamReceiver(asyncio.Protocol):
    def __init__(self, collector: SyslogCollector) -> None:
        self.collector = collector
        self.framer = SyslogFramer(max_message=collector.max_message)
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) and peer else None
        self.collector.connections.add(self)

    def data_received(self, data: bytes) -> None:
        # Nothing may escape a protocol callback: the event loop would close
        # the connection and the data with it (see collectors/base.py).
        collector = self.collector
        try:
            batch = collector.parse_stream(self.framer.feed_blocks(data), self.framer, self.peer)
        except Exception as exc:
            collector.context.error(collector.name, "parse", exc)
            # the framer's state is unknown after a failure: start over, and
            # keep what arrived as one unparsed record rather than lose it
            self.framer = SyslogFramer(max_message=collector.max_message)
            batch = collector.unparsed(data, exc, self.peer)
        if batch:  # (a block of empty lines holds no message)
            self._submit(batch)

    def eof_received(self) -> bool | None:
        try:
            frames = self.framer.finish()
        except Exception as exc:
            self.collector.context.error(self.collector.name, "parse", exc)
            return None
        self._deliver(frames)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.collector.connections.discard(self)

    def _deliver(self, frames: list[bytes]) -> None:
        if not frames:
            return
        collector = self.collector
        try:
            batch = collector.parse(frames, self.peer)
        except Exception as exc:
            collector.context.error(collector.name, "parse", exc)
            batch = collector.unparsed(b"\n".join(frames), exc, self.peer)
        self._submit(batch)

    def _submit(self, batch: Columns) -> None:
        sink = self.collector.context.sink
        try:
            sink.submit(batch)
        except SinkError:
            # reported, and the agent is stopping with a failure: read no more
            if self.transport is not None and not self.transport.is_closing():
                self.transport.pause_reading()
            return
        if not sink.has_room() and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
            asyncio.get_running_loop().create_task(self._resume_when_room())

    async def _resume_when_room(self) -> None:
        await self.collector.context.sink.wait_room()
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class SyslogCollector:
    """One ``[[source]] type = "syslog"``: all of its ``listen`` endpoints."""

    def __init__(self, config: Any, context: CollectorContext, tls: Any = None) -> None:
        self.name: str = config.name
        self.config = config
        self.context = context
        self.tls = tls  # the agent's [tls] section, for tls:// listeners
        self.limiter: RateLimiter | None = None
        if config.rate_limit or config.per_host_rate_limit:
            rl, ph = config.rate_limit, config.per_host_rate_limit
            self.limiter = RateLimiter(
                source=TokenBucket(rl.rate, rl.burst) if rl else None,
                per_host=(ph.rate, ph.burst) if ph else None)
        self.report_task: asyncio.Task[None] | None = None
        self.max_message: int = getattr(config, "max_message", 65536)
        self.app_default: str | None = getattr(config, "app", None)
        self.servers: list[asyncio.AbstractServer] = []
        self.transports: list[asyncio.BaseTransport] = []
        self.connections: set[_StreamReceiver] = set()
        self.unix_paths: list[Path] = []

    def parse(self, frames: list[bytes], peer: str | None) -> Columns:
        # a frame the framer cut at max_message is a TruncatedFrame, and the
        # parser marks its record fields["truncated"] = "true"
        return self._admit(parse_columns(frames, received_ns=time.time_ns(),
                                         default_host=self.context.hostname, peer=peer), peer)

    def parse_stream(self, frames: list[bytes], framer: SyslogFramer,
                     peer: str | None) -> Columns | None:
        """What SyslogFramer.feed_blocks returned (frames, and blocks of
        frames read in place where parse_block can) as one batch, in order."""
        if not frames:
            return None
        now, host, batches, loose = time.time_ns(), self.context.hostname, [], []
        for frame in frames:
            if type(frame) is LineBlock or type(frame) is OctetBlock:
                batch = parse_block(frame, received_ns=now, default_host=host, peer=peer,
                                    max_message=self.max_message)
                if batch is None:
                    loose += framer.split_block(frame)
                    continue
                if loose:
                    batches.append(parse_columns(loose, received_ns=now, default_host=host,
                                                 peer=peer))
                    loose = []
                batches.append(batch)
            else:
                loose.append(frame)
        if loose:
            batches.append(parse_columns(loose, received_ns=now, default_host=host, peer=peer))
        if not batches:
            return None
        batch = batches[0]
        for more in batches[1:]:
            batch.extend(more)
        return self._admit(batch, peer)

    def unparsed(self, data: bytes, exc: Exception, peer: str | None) -> Columns:
        """What arrived, as one record with a parse error, when parsing it
        failed unexpectedly: kept, never dropped."""
        try:
            msg: str | bytes = data.decode()
        except UnicodeDecodeError:
            msg = bytes(data)
        fields = {"parse_error": f"internal error: {type(exc).__name__}: {exc}"}
        if peer is not None:
            fields["peer"] = peer
        return self._admit(Columns.of([Record(time.time_ns(), msg, self.context.hostname,
                                              "syslog", self.app_default or "", fields=fields)]),
                           peer)

    def _admit(self, batch: Columns, peer: str | None) -> Columns:
        """Rate limits, the source's default app, the count."""
        n = len(batch)
        if self.limiter is not None:
            allowed = self.limiter.admit(peer or "local", n, time.monotonic())
            if allowed < n:
                self.context.count(f"{self.name}.rate_limited", n - allowed)
                batch.truncate(allowed)
        if self.app_default:
            apps = batch.columns[3]
            default = self.app_default
            batch.columns[3] = [app or default for app in apps]
        self.context.count(f"{self.name}.records", len(batch))
        return batch

    async def _report_suppressed(self) -> None:
        """Once a second, one record per host that went over the rate limit."""
        assert self.limiter is not None
        while True:
            await asyncio.sleep(1.0)
            notices = [self.context.notice(
                "hostlog", f"Suppressed {n} messages from {host} (syslog source {self.name}: "
                           f"rate limit)", severity=4, suppressed=str(n), peer=host)
                for host, n in sorted(self.limiter.report().items())]
            if notices:
                self.context.sink.write_nowait(notices)

    def deliver_datagrams(self, datagrams: list[tuple[bytes, str | None]]) -> None:
        by_peer: dict[str | None, list[bytes]] = {}
        for data, peer in datagrams:
            by_peer.setdefault(peer, []).append(data)
        batches = [self.parse(raws, peer) for peer, raws in by_peer.items()]
        batch = batches[0]
        for more in batches[1:]:
            batch.extend(more)
        if not self.context.sink.write_nowait(batch):
            self.context.count(f"{self.name}.dropped", len(batch))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for ep in self.config.endpoints():
            label = f"{self.name} {ep.scheme}://{ep.path or f'{ep.host}:{ep.port}'}"
            if ep.scheme == "udp":
                family = socket.AF_INET6 if ":" in ep.host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
                sock.bind((ep.host, ep.port))
                transport, _ = await loop.create_datagram_endpoint(
                    lambda label=label: _DatagramBatcher(self, label), sock=sock)
                self.transports.append(transport)
            elif ep.scheme in ("tcp", "tls"):
                ssl_context = self._ssl_context(label) if ep.scheme == "tls" else None
                server = await loop.create_server(lambda: _StreamReceiver(self), ep.host,
                                                  ep.port, reuse_address=True, backlog=512,
                                                  ssl=ssl_context)
                self.servers.append(server)
            elif ep.scheme == "unix-stream":
                path = self._unix_path(ep.path)
                server = await loop.create_unix_server(lambda: _StreamReceiver(self), str(path))
                os.chmod(path, 0o666)
                self.servers.append(server)
                self.unix_paths.append(path)
            elif ep.scheme == "unix":
                path = self._unix_path(ep.path)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
                sock.bind(str(path))
                os.chmod(path, 0o666)  # like /dev/log: every local process may log
                transport, _ = await loop.create_datagram_endpoint(
                    lambda label=label: _DatagramBatcher(self, label), sock=sock)
                self.transports.append(transport)
                self.unix_paths.append(path)
            else:
                raise ValueError(f"{label}: transport {ep.scheme!r} is not supported yet")
            log.info("%s: listening", label)
        if self.limiter is not None:
            self.report_task = asyncio.get_running_loop().create_task(self._report_suppressed())

    @staticmethod
    def _unix_path(name: str) -> Path:
        path = Path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket():
            path.unlink()  # left by an agent that was killed: nobody listens on it
        return path

    def _ssl_context(self, label: str) -> ssl.SSLContext:
        """RFC 5425: TLS server with the [tls] certificate; client certificates
        verified against [tls] ca, and required when require_client_cert."""
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
        if self.report_task is not None:
            self.report_task.cancel()
            self.report_task = None
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for server in self.servers:
            await server.wait_closed()
        for transport in self.transports:
            for proto in [transport.get_protocol()]:
                if isinstance(proto, _DatagramBatcher):
                    proto.flush()
            transport.close()
        for path in self.unix_paths:
            path.unlink(missing_ok=True)
        self.servers.clear()
        self.transports.clear()
        self.unix_paths.clear()
