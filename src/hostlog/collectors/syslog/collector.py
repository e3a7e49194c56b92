"""The syslog collector: UDP, TCP, TLS (RFC 5425) and unix socket listeners.

The I/O half only. Framing (RFC 6587) and parsing (RFC 5424 / RFC 3164) are
the sans-IO modules ``framing``, ``parse`` (one message) and ``parse_batch``
(batches, the entry points used here); this module feeds them bytes and
hands what they return to the sink as batches (what a faster parse path
leaves to a slower one it counts as its ``slow_blocks`` and ``slow_messages``
events, see :meth:`SyslogCollector.slow_path`):

* UDP and unix datagrams: read in batches (``recvmmsg`` in the compiled
  helper, see ``syslog_datagram``), each sender's datagrams of one wake-up
  as one block of octet-counted frames that ``parse_block`` reads in place,
  and handed on as one batch. A datagram sender cannot be slowed down: a
  full sink drops the batch, and the kernel drops what the receive buffer
  cannot hold; both are counted (``<source>.dropped``) and said once a
  second in a notice record.
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
from hostlog.collectors.events import Counted
from hostlog.collectors.ratelimit import RateLimiter, TokenBucket
from hostlog.collectors.syslog.datagram import DatagramReceiver, Group, by_sender
from hostlog.collectors.syslog.framing import (
    LineBlock,
    OctetBlock,
    SyslogFramer,
    TruncatedFrame,
)
from hostlog.collectors.syslog.parse_batch import SLOW_KINDS, parse_block, parse_columns
from hostlog.errors import SinkError
from hostlog.record import Columns, Record

log = logging.getLogger("hostlog.syslog")

UDP_RCVBUF = 4 << 20  # rsyslog loses 30% of a burst with the default 208 KiB


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
        self.datagram_receivers: list[DatagramReceiver] = []
        self.drops_task: asyncio.Task[None] | None = None
        # messages of each datagram listener (by label) dropped because the
        # sink was full, not yet said in a notice
        self.sink_dropped: dict[str, int] = {}
        self.connections: set[_StreamReceiver] = set()
        self.unix_paths: list[Path] = []
        self.slow_kinds: set[str] = set()  # the kinds of slow_path() already logged

    def slow_path(self, kind: str, n: int) -> None:
        """The parser's ``slow`` callback: ``n`` inputs of ``kind`` a faster
        parse path left to a slower one (by design, not a failure: nothing
        is lost). Counted as the collector's events; each kind logged once."""
        self.context.count(self.name, Counted.SLOW_BLOCKS if kind == "block"
                           else Counted.SLOW_MESSAGES, n)
        if kind not in self.slow_kinds:
            self.slow_kinds.add(kind)
            log.info("syslog source %s: %s (counted in hostlog_collector_events_total, event %s)",
                     self.name, SLOW_KINDS.get(kind, kind),
                     "slow_blocks" if kind == "block" else "slow_messages")

    def parse(self, frames: list[bytes], peer: str | None) -> Columns:
        # a frame the framer cut at max_message is a TruncatedFrame, and the
        # parser marks its record fields["truncated"] = "true"
        return self._admit(parse_columns(frames, received_ns=time.time_ns(),
                                         default_host=self.context.hostname, peer=peer,
                                         slow=self.slow_path), peer)

    def parse_stream(self, frames: list[bytes], framer: SyslogFramer,
                     peer: str | None) -> Columns | None:
        """What SyslogFramer.feed_blocks returned (frames, and blocks of
        frames read in place where parse_block can) as one batch, in order."""
        if not frames:
            return None
        now, host, batches, loose = time.time_ns(), self.context.hostname, [], []
        slow = self.slow_path
        for frame in frames:
            if type(frame) is LineBlock or type(frame) is OctetBlock:
                batch = parse_block(frame, received_ns=now, default_host=host, peer=peer,
                                    max_message=self.max_message, slow=slow)
                if batch is None:
                    loose += framer.split_block(frame)
                    continue
                if loose:
                    batches.append(parse_columns(loose, received_ns=now, default_host=host,
                                                 peer=peer, slow=slow))
                    loose = []
                batches.append(batch)
            else:
                loose.append(frame)
        if loose:
            batches.append(parse_columns(loose, received_ns=now, default_host=host, peer=peer,
                                         slow=slow))
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
        fields: dict[str, str | bytes | list[str | bytes]] = {
            "parse_error": f"internal error: {type(exc).__name__}: {exc}"}
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
                self.context.count(self.name, Counted.RATE_LIMITED, n - allowed)
                batch.truncate(allowed)
        if self.app_default:
            apps = batch.app
            default = self.app_default
            batch.app = [app or default for app in apps]
        self.context.count(self.name, Counted.RECORDS, len(batch))
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
                self.context.sink.write_nowait(Columns.of(notices))

    def deliver_datagrams(self, groups: list[Group], receiver: DatagramReceiver) -> None:
        """What a datagram listener read in one wake-up (see
        ``syslog_datagram.Group``): parsed per sender, handed to the sink as
        one batch; dropped and counted when the sink has no room."""
        batch: Columns | None = None
        for peer, block, _, truncated in by_sender(groups):
            try:
                more = self.parse_datagrams(block, truncated, peer, receiver.slot)
            except Exception as exc:  # a parser bug: keep every datagram unparsed
                self.context.error(self.name, "parse", exc)
                more = self._unparsed_datagrams(block, exc, peer)
            if batch is None:
                batch = more
            else:
                batch.extend(more)
        if not batch:
            return
        try:
            taken = self.context.sink.write_nowait(batch)
        except SinkError:  # reported, and the agent is stopping with a failure: read no more
            receiver.pause()
            return
        if not taken:
            self.context.count(self.name, Counted.DROPPED, len(batch))
            label = receiver.label
            self.sink_dropped[label] = self.sink_dropped.get(label, 0) + len(batch)

    def parse_datagrams(self, block: bytes, truncated: list[int], peer: str | None,
                        max_message: int) -> Columns:
        """One sender's datagrams (an octet-counted block) as one batch: read
        in place by the compiled splitter where it can, else frame by frame."""
        now, host = time.time_ns(), self.context.hostname
        batch = None
        if not truncated:
            batch = parse_block(OctetBlock(block), received_ns=now, default_host=host,
                                peer=peer, max_message=max_message, slow=self.slow_path)
        if batch is None:
            frames = SyslogFramer(max_message).split_block(OctetBlock(block))
            for i in truncated:  # the kernel cut it at max_message
                frames[i] = TruncatedFrame(frames[i])
            batch = parse_columns(frames, received_ns=now, default_host=host, peer=peer,
                                  slow=self.slow_path)
        return self._admit(batch, peer)

    def _unparsed_datagrams(self, block: bytes, exc: Exception, peer: str | None) -> Columns:
        """Each datagram of a block as a record with a parse error."""
        try:
            frames = SyslogFramer(max(1, len(block))).split_block(OctetBlock(block))
        except Exception as exc2:  # (the block's form is ours: this is not expected to fail)
            self.context.error(self.name, "parse_split", exc2)
            frames = [block]
        batch = self.unparsed(frames[0], exc, peer) if frames else Columns.empty()
        for frame in frames[1:]:
            batch.extend(self.unparsed(frame, exc, peer))
        return batch

    async def _report_dropped(self) -> None:
        """Once a second, one record per datagram listener that lost
        datagrams: to the kernel (the receive buffer was full) or to a full
        sink. A notice the sink cannot take yet is said again later."""
        async def every_second() -> None:
            while True:
                await asyncio.sleep(1.0)
                self._notice_dropped()

        await self.context.guard(self.name, "drop_notice", every_second())

    def _notice_dropped(self) -> None:
        notices = []
        said: list[tuple[DatagramReceiver, int, int]] = []
        for receiver in self.datagram_receivers:
            receiver.poll_drops()
            kernel, full = receiver.unreported, self.sink_dropped.get(receiver.label, 0)
            if kernel:
                notices.append(self.context.notice(
                    "hostlog", f"Dropped {kernel} datagrams on {receiver.label} (syslog source "
                               f"{self.name}): the socket's receive buffer was full",
                    severity=4, dropped=str(kernel), listen=receiver.label, reason="kernel"))
            if full:
                notices.append(self.context.notice(
                    "hostlog", f"Dropped {full} messages on {receiver.label} (syslog source "
                               f"{self.name}): the spool was full",
                    severity=4, dropped=str(full), listen=receiver.label, reason="spool_full"))
            if kernel or full:
                said.append((receiver, kernel, full))
        if not notices:
            return
        try:
            taken = self.context.sink.write_nowait(Columns.of(notices))
        except SinkError:  # reported, and the agent is stopping with a failure
            return
        if taken:
            for receiver, kernel, full in said:
                receiver.unreported -= kernel
                if full:
                    self.sink_dropped[receiver.label] -= full

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
                self._listen_datagrams(sock, label)
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
                self._listen_datagrams(sock, label)
                self.unix_paths.append(path)
            else:
                raise ValueError(f"{label}: transport {ep.scheme!r} is not supported yet")
            log.info("%s: listening", label)
        if self.limiter is not None:
            self.report_task = asyncio.get_running_loop().create_task(self._report_suppressed())
        if self.datagram_receivers:
            self.drops_task = loop.create_task(self._report_dropped())

    def _listen_datagrams(self, sock: socket.socket, label: str) -> None:
        receiver = DatagramReceiver(sock, label, self.name, self.max_message, self.context,
                                    self.deliver_datagrams)
        receiver.start()
        self.datagram_receivers.append(receiver)

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
        if self.drops_task is not None:
            self.drops_task.cancel()
            await asyncio.gather(self.drops_task, return_exceptions=True)
            self.drops_task = None
        for receiver in self.datagram_receivers:
            # what the socket already holds is taken, not left to be lost
            if receiver.reading:
                receiver.pause()
                receiver.on_readable()
        if self.datagram_receivers:
            self._notice_dropped()  # (drops seen since the last notice)
        for receiver in self.datagram_receivers:
            receiver.close()
        for path in self.unix_paths:
            path.unlink(missing_ok=True)
        self.servers.clear()
        self.datagram_receivers.clear()
        self.unix_paths.clear()
