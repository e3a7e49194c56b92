"""The sender: ships this agent's spool to one ``[[forward]]`` destination.

The one place every output goes through: it reads the spool from the
destination's cursor, keeps a window of chunks in flight, advances the
cursor only on an ack and persists it, reconnects with jittered backoff, and
reports its lag. What it sends are the spool's frames as they are on disk,
decrypted but still LZ4-compressed (no decode or re-encode on the way).

* Only what is durable in the spool is sent: a frame the writer has written
  but not yet synced could be cut off by a crash and its seqs given again to
  other records, which the receiver would then drop as already held.
* The cursor (``state/cursors/<name>.json``, ``{"acked_seq": N}``) is what
  retention keeps the spool for: it is created when the destination is first
  configured, so nothing it has not acknowledged is deleted (unless
  ``on_full = "drop_oldest"``), and written after acks, at most every
  ``CURSOR_SAVE_S`` — a crash loses at most that much of the cursor, and the
  receiver's mark (its Welcome) puts the sender back where it was.
* Modes: one target; ``failover`` (one link walks the targets in order and
  goes back to the first after ``FAILBACK_S`` on another); ``replicate`` (a
  link, with its own cursor, per target; a dead one never holds up the
  others, and catches up from the spool when it returns).

The peer protocol is :mod:`hostlog.forward.protocol` (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import re
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostlog.config.endpoints import Endpoint
from hostlog.errors import ChunkError, FrameError, PeerRefusedError, ProtocolError, RemoteProtocolError
from hostlog.forward.output import Identity, Output, Refused
from hostlog.forward.protocol import Chunk
from hostlog.spool.frame import decompress_chunk
from hostlog.spool.reader import SpoolReader
from hostlog.spool.segment import Damage
from hostlog.spool.state import read_json, write_json

log = logging.getLogger("hostlog.forward")

__all__ = ["ChunkSource", "Cursor", "Destination", "Identity", "Link", "build_destination", "cursor_name",
           "cursor_names"]

#: Bytes in flight without an ack, per link, whatever ``window`` (in chunks) says.
WINDOW_BYTES = 32 << 20
#: Frames read from the spool at a time (bounded by the window too).
READ_FRAMES = 16
#: How often an idle link looks for newly durable records.
IDLE_POLL_S = 0.05
CONNECT_TIMEOUT_S = 10.0
HELLO_TIMEOUT_S = 10.0
#: Chunks in flight and no ack for this long: the link is dead, reconnect
#: (``[[forward]] ack_timeout``). The same bound holds a write the peer
#: does not read (``drain``): a half-open connection, whichever way it broke,
#: is given up after it, full window or not.
ACK_TIMEOUT_S = 60.0
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 30.0
#: After a receiver said "rejected" (wrong token, version): try again this late.
REJECTED_BACKOFF_S = 60.0
#: A failover link on a target other than the first goes back after this long.
FAILBACK_S = 30.0
CURSOR_SAVE_S = 0.2


def cursor_name(destination: str, endpoint: Endpoint | None = None) -> str:
    """The cursor file's stem: the destination's name, and for a replica its target."""
    if endpoint is None:
        return destination
    return f"{destination}@" + re.sub(r"[^A-Za-z0-9._-]", "_", f"{endpoint.host}_{endpoint.port}")


class Cursor:
    """The last seq a destination (or one replica of it) has acknowledged, persisted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.acked = 0
        self._saved = -1  # what the file holds (-1: no file yet)
        self._lock = threading.Lock()
        try:
            value = read_json(path, None)
        except ValueError:  # torn by a crash: retention keeps everything for it meanwhile
            log.warning("cursor %s is unreadable; resuming from the receiver's mark", path)
            value = None
        if isinstance(value, dict) and isinstance(value.get("acked_seq"), int):
            self.acked = self._saved = value["acked_seq"]

    def advance(self, seq: int) -> bool:
        if seq > self.acked:
            self.acked = seq
            return True
        return False

    @property
    def dirty(self) -> bool:
        return self.acked != self._saved

    def save(self) -> None:
        """Atomic replace (blocking: call from a thread on the loop). One save
        at a time: a save cancelled on the loop still runs on its thread, and
        two atomic replaces of one file share its temporary name."""
        with self._lock:
            acked = self.acked
            if acked == self._saved:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, {"acked_seq": acked})
            self._saved = acked


@dataclass(frozen=True, slots=True)
class Sent:
    """One chunk in flight."""

    last: int
    nbytes: int
    ts_min: int


class ChunkSource:
    """The spool's frames after a seq, as protocol chunks. Its own reader:
    the writer's thread appends while this reads (segments are append-only).

    With a ``destination`` (a ``[[forward]]`` name), records that rules
    routed elsewhere are left out (hostlog.rules.route): a chunk holding a
    routed record is decoded and sent without the records not for it; one
    with none for it is not sent (its seqs count as sent)."""

    def __init__(self, reader: SpoolReader, origin: str, destination: str | None = None) -> None:
        self.reader = reader
        self.origin = origin
        self.destination = destination
        # the link reads on a thread; status (the control socket, a metrics
        # scrape's thread) asks too, and a SpoolReader is one reader's state
        self.lock = threading.Lock()
        self.damaged_records = 0  # frames that did not authenticate: skipped
        self.missing_records = 0  # deleted by retention (drop_oldest) before they were sent
        self.routed_away = 0  # records rules routed to other destinations: not sent here
        self.routing = False  # the spool may hold routed records (seen once, kept)

    def read(self, after: int, upto: int, *, max_frames: int,
             max_bytes: int) -> tuple[list[tuple[Chunk, int]], int]:
        """Chunks (with each one's earliest timestamp) holding records in
        ``(after, upto]``, at most ``max_frames`` of them and about
        ``max_bytes``; and the seq read up to (past damaged frames, which
        are reported and skipped: retrying them would stop the destination
        for good)."""
        with self.lock:
            return self._read(after, upto, max_frames=max_frames, max_bytes=max_bytes)

    def _read(self, after: int, upto: int, *, max_frames: int,
              max_bytes: int) -> tuple[list[tuple[Chunk, int]], int]:
        chunks: list[tuple[Chunk, int]] = []
        reached = after
        size = 0
        with closing(self.reader.frames_quick(after_seq=after)) as frames:
            for seg, entry in frames:
                if entry.last_seq > upto or len(chunks) >= max_frames or size >= max_bytes:
                    break
                if entry.first_seq > reached + 1:
                    gap = entry.first_seq - reached - 1
                    self.missing_records += gap
                    log.warning("forward: seq %d..%d left the spool before it was sent "
                                "(retention, on_full = drop_oldest)", reached + 1, entry.first_seq - 1)
                data = seg.read_compressed(entry)
                reached = entry.last_seq
                if isinstance(data, Damage):
                    self.damaged_records += entry.count
                    log.error("forward: skipping a damaged frame: %s", data)
                    continue
                chunk = Chunk(self.origin, entry.first_seq, entry.count, entry.chunk_len, data)
                if self.destination is not None and self._may_route():
                    routed = self._routed(chunk)
                    if routed is None:
                        continue  # nothing in it for this destination
                    chunk = routed
                chunks.append((chunk, entry.ts_min))
                size += len(chunk.data)
        self.reader.damage.clear()  # (reported above, per frame)
        return chunks, reached

    def _may_route(self) -> bool:
        """Whether the spool may hold routed records (its agent has routed)."""
        if not self.routing:
            from hostlog.rules.route import routing_marker
            self.routing = routing_marker(self.reader.directory).exists()
        return self.routing

    def _routed(self, chunk: Chunk) -> Chunk | None:
        """The chunk as this destination is sent it (None: nothing of it)."""
        from hostlog.rules.route import for_destination, may_be_routed
        assert self.destination is not None
        try:
            raw = decompress_chunk(chunk.data, chunk.chunk_len)
            if not may_be_routed(raw):
                return chunk
            routed = for_destination(raw, self.destination)
        except (FrameError, ChunkError) as exc:  # (it authenticated: a bug, or a chunk of a newer layout)
            self.damaged_records += chunk.count
            log.error("forward: skipping a frame whose records cannot be routed (seq %d..%d): %s",
                      chunk.first, chunk.last, exc)
            return None
        if routed is None:
            self.routed_away += chunk.count
            return None
        data, chunk_len, count = routed
        self.routed_away += chunk.count - count
        return Chunk(self.origin, chunk.last - count + 1, count, chunk_len, data)

    def oldest_after(self, seq: int) -> int | None:
        """The earliest timestamp (ns) of the first frame after ``seq``."""
        with self.lock, closing(self.reader.frames_quick(after_seq=seq)) as frames:
            for _, entry in frames:
                return entry.ts_min
        return None


@dataclass
class LinkStats:
    connects: int = 0
    chunks: int = 0
    records: int = 0
    bytes: int = 0
    errors: int = 0
    last_error: str = ""


class Link:
    """One connection at a time to the targets of one cursor: sends the
    spool from the cursor on, in a window, and moves the cursor on acks."""

    def __init__(self, name: str, endpoints: list[Endpoint], cursor: Cursor, source: ChunkSource,
                 output: Callable[[Endpoint], Output], *, durable: Callable[[], int], window: int,
                 report: Callable[[str, BaseException], None], ack_timeout: float = ACK_TIMEOUT_S) -> None:
        self.name = name
        self.endpoints = endpoints
        self.cursor = cursor
        self.source = source
        self.output = output  # one per connection
        self.durable = durable
        self.window = window
        self.ack_timeout = ack_timeout
        self.report = report  # an unexpected error (a bug): counted by the agent
        self.stats = LinkStats()
        self.target: Endpoint | None = None  # the one connected to
        self.connected_since: float | None = None
        self.inflight: collections.deque[Sent] = collections.deque()
        self._progress = 0.0  # monotonic time of the last ack, or of the first chunk sent after it
        self._output: Output | None = None  # the current (or last) connection's
        self._task: asyncio.Task[None] | None = None
        self._saver: asyncio.Task[None] | None = None
        self._stopping = False
        self._space = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        # the file exists from now on: retention keeps what this destination
        # has not acknowledged, even before its first ack
        await asyncio.to_thread(self.cursor.save)
        self._task = asyncio.create_task(self._run(), name=f"forward {self.name}")
        self._saver = asyncio.create_task(self._save_loop(), name=f"forward {self.name} cursor")

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._task, self._saver):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._task = self._saver = None
        await asyncio.to_thread(self.cursor.save)

    # -- status ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        durable = self.durable()
        behind = max(0, durable - self.cursor.acked)
        lag_s = 0.0
        if behind:
            try:
                oldest: int | None = self.inflight[0].ts_min
            except IndexError:  # (none in flight, or acked meanwhile: status may run on another thread)
                oldest = self.source.oldest_after(self.cursor.acked)
            if oldest is not None:
                lag_s = max(0.0, time.time() - oldest / 1e9)
        return {
            "name": self.name,
            "target": self.target.url if self.target is not None else None,
            "targets": [ep.url for ep in self.endpoints],
            "connected": self.connected_since is not None,
            "acked_seq": self.cursor.acked,
            "lag_records": behind,
            "lag_seconds": round(lag_s, 3),
            "in_flight": len(self.inflight),
            "chunks_sent": self.stats.chunks,
            "records_sent": self.stats.records,
            "bytes_sent": self.stats.bytes,
            "connects": self.stats.connects,
            "errors": self.stats.errors,
            "last_error": self.stats.last_error,
            "output": self._output_counts(),
        }

    def _output_counts(self) -> dict[str, int]:
        counts = getattr(self._output, "counts", None)
        return dict(counts()) if callable(counts) else {}

    # -- the loop ----------------------------------------------------------------
    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        index = 0
        while not self._stopping:
            endpoint = self.endpoints[index]
            wait = backoff
            try:
                back_to_first = await self._session(endpoint, failback=index > 0)
                backoff = BACKOFF_MIN_S
                index = 0 if back_to_first else index
                continue
            except asyncio.CancelledError:
                raise
            except Refused as exc:
                self._failed(endpoint, exc)
                wait = REJECTED_BACKOFF_S if exc.rejected else backoff
            except (OSError, EOFError, TimeoutError, ssl.SSLError, ProtocolError, PeerRefusedError) as exc:
                self._failed(endpoint, exc)
            except Exception as exc:  # a bug: counted and logged by the agent; the spool keeps the data
                self._failed(endpoint, exc)
                self.report("session", exc)
            finally:
                self.target = None
                self.connected_since = None
                self.inflight.clear()
            if index + 1 < len(self.endpoints):
                index += 1  # failover: the next target at once
                continue
            index = 0
            backoff = min(BACKOFF_MAX_S, backoff * 2)
            await asyncio.sleep(wait * random.uniform(0.5, 1.0))  # jitter: a fleet does not come back at once

    def _failed(self, endpoint: Endpoint, exc: BaseException) -> None:
        reason = str(exc) or type(exc).__name__
        self.stats.errors += 1
        if reason != self.stats.last_error:  # once per reason, not once per retry
            log.warning("forward %s: %s: %s", self.name, endpoint.url, reason)
        self.stats.last_error = reason

    async def _session(self, endpoint: Endpoint, *, failback: bool) -> bool:
        """Open the output, and send until the connection fails (raises) or,
        on a failover target other than the first, until it is time to go
        back (returns True)."""
        out = self._output = self.output(endpoint)
        acks: asyncio.Task[None] | None = None
        try:
            held = await asyncio.wait_for(out.open(), CONNECT_TIMEOUT_S + HELLO_TIMEOUT_S)
            if held is not None and self.cursor.advance(held):
                log.info("forward %s: %s holds up to seq %d: going on from there",
                         self.name, endpoint.url, held)
            self.target, self.connected_since = endpoint, time.monotonic()
            self.stats.connects += 1
            if self.stats.last_error:
                log.info("forward %s: connected to %s", self.name, endpoint.url)
                self.stats.last_error = ""
            sent_upto = self.cursor.acked
            self._progress = time.monotonic()
            acks = asyncio.create_task(self._take_acks(out, lambda: sent_upto))
            started = time.monotonic()
            while not self._stopping:
                if acks.done():
                    acks.result()  # raises what ended it
                    raise ConnectionResetError(f"{endpoint.url} closed the connection")
                self._check_acks()
                if failback and time.monotonic() - started > FAILBACK_S:
                    await self._drain(acks)
                    log.info("forward %s: going back to %s", self.name, self.endpoints[0].url)
                    return True
                room = self.window - len(self.inflight)
                in_flight_bytes = sum(s.nbytes for s in self.inflight)
                if room <= 0 or in_flight_bytes >= WINDOW_BYTES:
                    await self._wait_space(acks)
                    continue
                upto = self.durable()
                if upto <= sent_upto:
                    if not self.inflight and self.cursor.acked < sent_upto:
                        # what is left was skipped (damaged, or gone): nothing will ack it
                        self.cursor.advance(sent_upto)
                    await asyncio.wait([acks], timeout=IDLE_POLL_S)
                    continue
                chunks, reached = await asyncio.to_thread(
                    self.source.read, sent_upto, upto, max_frames=min(room, READ_FRAMES),
                    max_bytes=WINDOW_BYTES - in_flight_bytes)
                for chunk, ts_min in chunks:
                    if not self.inflight:  # the ack clock runs from the first unacked chunk
                        self._progress = time.monotonic()
                    # in flight, and counted as sent, before send() returns: an
                    # output that awaits in send() may see its ack come first
                    self.inflight.append(Sent(chunk.last, len(chunk.data), ts_min))
                    sent_upto = max(sent_upto, chunk.last)
                    await out.send(chunk)
                    self.stats.chunks += 1
                    self.stats.records += chunk.count
                    self.stats.bytes += len(chunk.data)
                sent_upto = max(sent_upto, reached)
                try:  # a peer that reads nothing (half-open) must not hold the link for ever
                    await asyncio.wait_for(out.drain(), self.ack_timeout)
                except TimeoutError:
                    raise TimeoutError(f"the peer took no data for {self.ack_timeout:g} s "
                                       f"with {len(self.inflight)} chunks in flight") from None
            return False
        finally:
            if acks is not None:
                acks.cancel()
            await out.close()

    async def _take_acks(self, out: Output, sent_upto: Callable[[], int]) -> None:
        """Move the cursor on each ack the output reports (cumulative seqs)."""
        async for seq in out.acks():
            if seq > sent_upto():
                raise RemoteProtocolError(f"ack of seq {seq}, which was not sent")
            while self.inflight and self.inflight[0].last <= seq:
                self.inflight.popleft()
            self._progress = time.monotonic()
            self.cursor.advance(seq)
            self._space.set()

    def _check_acks(self) -> None:
        """Chunks in flight and no ack for ``ack_timeout``: the connection is
        dead though the socket says nothing (half-open, or acks lost on the
        way back). Checked whether the window is full or not, so a link with
        a few chunks out and nothing new to send does not wait for ever."""
        if self.inflight and time.monotonic() - self._progress > self.ack_timeout:
            raise TimeoutError(f"no ack for {self.ack_timeout:g} s with {len(self.inflight)} chunks in flight")

    async def _wait_space(self, acks: asyncio.Task[None]) -> None:
        self._space.clear()
        space = asyncio.ensure_future(self._space.wait())
        try:
            left = max(0.0, self._progress + self.ack_timeout - time.monotonic()) if self.inflight else None
            done, _ = await asyncio.wait([space, acks], timeout=left if left is not None else self.ack_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            space.cancel()
        if not done:
            raise TimeoutError(f"no ack for {self.ack_timeout:g} s with {len(self.inflight)} chunks in flight")

    async def _drain(self, acks: asyncio.Task[None]) -> None:
        deadline = time.monotonic() + self.ack_timeout
        while self.inflight and not acks.done() and time.monotonic() < deadline:
            await self._wait_space(acks)

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(CURSOR_SAVE_S)
            if self.cursor.dirty:
                try:
                    await asyncio.to_thread(self.cursor.save)
                except OSError as exc:  # the disk: retried at the next tick, and counted
                    self.report("cursor", exc)


@dataclass
class Destination:
    """One ``[[forward]]``: its links (one, or one per replica) and their status."""

    name: str
    mode: str
    min_acks: int
    links: list[Link] = field(default_factory=list)

    async def start(self) -> None:
        for link in self.links:
            await link.start()

    async def stop(self) -> None:
        await asyncio.gather(*(link.stop() for link in self.links))

    def delivered_seq(self) -> int:
        """Seq every record up to which ``min_acks`` targets hold (failover: the one cursor)."""
        acked = sorted((link.cursor.acked for link in self.links), reverse=True)
        return acked[min(self.min_acks, len(acked)) - 1]

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "min_acks": self.min_acks,
                "delivered_seq": self.delivered_seq(),
                "links": [link.status() for link in self.links]}


def build_destination(forward: Any, *, cursors: Path, source: Callable[[], ChunkSource], identity: Identity,
                      durable: Callable[[], int], ssl_context: Callable[[], ssl.SSLContext] | None,
                      report: Callable[[str, BaseException], None]) -> Destination:
    """The destination of one ``[[forward]]`` section (``hostlog.config.Forward``).
    ``source`` makes each link its own spool reader (links read on threads)."""
    output = output_factory(forward, Identity(identity.agent, identity.host, forward.token), ssl_context)
    dest = Destination(forward.name, _mode(forward), forward.min_acks)
    for stem, group in _links(forward):
        chunks = source()
        chunks.destination = forward.name  # records routed elsewhere are left out
        dest.links.append(Link(stem, group, Cursor(cursors / f"{stem}.json"), chunks, output,
                               durable=durable, window=forward.window, report=report,
                               ack_timeout=getattr(forward, "ack_timeout", ACK_TIMEOUT_S)))
    return dest


def output_factory(forward: Any, identity: Identity,
                   ssl_context: Callable[[], ssl.SSLContext] | None) -> Callable[[Endpoint], Output]:
    """What makes one connection's output for ``forward.type``."""
    kind = getattr(forward, "type", "hostlog")
    if kind == "hostlog":
        from hostlog.forward.hostlog_out import HostlogOutput
        return lambda endpoint: HostlogOutput(endpoint, identity, ssl_context)
    if kind == "syslog":
        from hostlog.forward.syslog_out import SyslogOutput
        return lambda endpoint: SyslogOutput(endpoint, identity, ssl_context)
    if kind == "fluent":
        from hostlog.forward.fluent import FluentOutput
        return lambda endpoint: FluentOutput(endpoint, identity, ssl_context, shared_key=forward.shared_key,
                                             username=forward.username, password=forward.password,
                                             compress=forward.compress)
    if kind == "otlp":
        from hostlog.forward.otlp import OtlpOutput
        return lambda endpoint: OtlpOutput(endpoint, identity, ssl_context, encoding=forward.encoding,
                                           gzip=forward.gzip, headers=dict(forward.headers))
    if kind == "nats":
        from hostlog.forward.nats_out import NatsOutput
        return lambda endpoint: NatsOutput(endpoint, identity, ssl_context, stream=forward.stream,
                                           subject=forward.subject)
    raise ValueError(f"forward {forward.name}: type {kind!r} is not available yet")


def cursor_names(forward: Any) -> list[str]:
    """The cursor files (stems) of one ``[[forward]]``, as its mode has them."""
    return [stem for stem, _ in _links(forward)]


def _mode(forward: Any) -> str:
    n = len(forward.targets)
    return "replicate" if forward.mode == "replicate" and n > 1 else "failover" if n > 1 else "single"


def _links(forward: Any) -> list[tuple[str, list[Endpoint]]]:
    endpoints = forward.endpoints()
    if _mode(forward) == "replicate":
        return [(cursor_name(forward.name, ep), [ep]) for ep in endpoints]
    return [(cursor_name(forward.name), endpoints)]
