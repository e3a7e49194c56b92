"""A TCP fault proxy on loopback: what a bad network does to a link, on demand.

The proxy listens on ``127.0.0.1`` and relays every connection to one
target port. What it does to the bytes is set at run time:

* ``pass``        relay both ways;
* ``cut``         reset (RST) every open connection both ways; new ones are
                  reset as soon as they are accepted, until set otherwise;
* ``blackhole``   accept and read, forward nothing, in one direction
                  (``up``: client to target, ``down``: target to client) or
                  both: one-way loss, or a half-open connection that neither
                  end is told about. What is read meanwhile is dropped, so a
                  connection that lost bytes is of no use afterwards (its
                  stream is broken; a TLS peer notices);
* ``slow``        a delay (latency, seconds) and a bandwidth limit
                  (bytes per second), each way;
* ``flap``        ``cut`` for ``down_s`` then ``pass`` for ``up_s``, again and
                  again, ``times`` times or until another mode is set.

:class:`FaultProxy` runs its event loop on a thread of the test's process;
``python -m tests.support.fault_proxy TARGET_PORT`` runs one as a child
that prints ``port N`` and takes the same commands one a line on stdin
(``pass``, ``cut``, ``blackhole up|down|both``, ``slow DELAY RATE``,
``flap DOWN UP TIMES``, ``stats``, ``quit``).

Every wait is bounded; the relay's queues are bounded (a slow link pushes
back on the sender, as TCP does).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["up", "down", "both"]

READ_SIZE = 1 << 16
#: Chunks queued per direction of a connection before the relay stops reading.
QUEUE_CHUNKS = 64


@dataclass
class ProxyStats:
    """What the proxy has seen and done, for a test's figures."""

    accepted: int = 0
    reset: int = 0  # connections reset (cut, or refused while cut)
    bytes_up: int = 0  # forwarded client -> target
    bytes_down: int = 0  # forwarded target -> client
    dropped_up: int = 0  # read and dropped (blackhole)
    dropped_down: int = 0
    flaps: int = 0
    open: int = 0  # connections open now

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Mode:
    kind: str = "pass"
    blackhole: set[str] = field(default_factory=set)
    delay: float = 0.0
    rate: float = 0.0  # bytes/s, 0: unlimited


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST: SO_LINGER zero, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """The proxy, on a thread of its own; every method is safe from any thread."""

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.stats = ProxyStats()
        self._mode = _Mode()
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._flapper: asyncio.Task[None] | None = None
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start within 10 s")
        assert self._server is not None
        self.port: int = self._server.sockets[0].getsockname()[1]

    # -- control (any thread) ------------------------------------------------
    def set_pass(self) -> None:
        self._call(self._set, _Mode())

    def cut(self) -> None:
        self._call(self._set, _Mode("cut"))

    def blackhole(self, direction: Direction = "both") -> None:
        ways: set[str] = {"up", "down"} if direction == "both" else {direction}
        self._call(self._set, _Mode("blackhole", blackhole=ways))

    def slow(self, delay: float, rate: float) -> None:
        """``delay`` seconds each way, ``rate`` bytes/s each way (0: no limit)."""
        self._call(self._set, _Mode("slow", delay=delay, rate=rate))

    def flap(self, down_s: float, up_s: float, times: int) -> None:
        """``times`` cycles of ``down_s`` cut then ``up_s`` pass, then pass."""
        self._call(self._start_flap, down_s, up_s, times)

    @property
    def mode(self) -> str:
        return self._mode.kind

    def close(self) -> None:
        if self._loop.is_closed():
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        fut.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop --------------------------------------------------------------
    def _call(self, fn: object, *args: object) -> None:
        async def run() -> None:
            fn(*args)  # type: ignore[operator]
        asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", 0, limit=READ_SIZE)
            self._ready.set()
        self._loop.run_until_complete(start())
        self._loop.run_forever()

    async def _shutdown(self) -> None:
        if self._flapper is not None:
            self._flapper.cancel()
        assert self._server is not None
        self._server.close()
        self._reset_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=5) if tasks else None

    def _set(self, mode: _Mode, *, from_flap: bool = False) -> None:
        if not from_flap and self._flapper is not None:
            self._flapper.cancel()
            self._flapper = None
        self._mode = mode
        if mode.kind == "cut":
            self._reset_all()

    def _reset_all(self) -> None:
        for client, upstream in list(self._conns):
            _reset(client)
            _reset(upstream)
            self.stats.reset += 1
        self._conns.clear()

    def _start_flap(self, down_s: float, up_s: float, times: int) -> None:
        if self._flapper is not None:
            self._flapper.cancel()

        async def flapping() -> None:
            try:
                for _ in range(times):
                    self._set(_Mode("cut"), from_flap=True)
                    self.stats.flaps += 1
                    await asyncio.sleep(down_s)
                    self._set(_Mode(), from_flap=True)
                    await asyncio.sleep(up_s)
            finally:
                if self._mode.kind == "cut":
                    self._set(_Mode(), from_flap=True)
        self._flapper = asyncio.ensure_future(flapping())

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        if self._mode.kind == "cut":
            _reset(writer)
            self.stats.reset += 1
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            _reset(writer)  # the target is down: the client sees a reset, as without a proxy
            self.stats.reset += 1
            return
        pair = (writer, up_writer)
        self._conns.add(pair)
        self.stats.open += 1
        try:
            await asyncio.gather(self._relay(reader, up_writer, "up"), self._relay(up_reader, writer, "down"),
                                 return_exceptions=True)
        finally:
            self.stats.open -= 1
            if pair in self._conns:
                self._conns.discard(pair)
                for w in pair:
                    w.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, way: str) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        pump = asyncio.ensure_future(self._deliver(queue, writer, way))
        try:
            while data := await reader.read(READ_SIZE):
                if pump.done():
                    return
                mode = self._mode
                if way in mode.blackhole:
                    if way == "up":
                        self.stats.dropped_up += len(data)
                    else:
                        self.stats.dropped_down += len(data)
                    continue
                await queue.put((time.monotonic() + mode.delay, data))
            await queue.put((0.0, b""))  # EOF after what is queued
            await asyncio.wait_for(pump, 30)
        except (OSError, TimeoutError):
            pass  # the connection ends: its other half is closed below
        finally:
            pump.cancel()
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()

    async def _deliver(self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter,
                       way: str) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            rate = self._mode.rate
            if rate > 0:
                await asyncio.sleep(len(data) / rate)
            if way in self._mode.blackhole:  # queued before the blackhole: lost too
                continue
            writer.write(data)
            await writer.drain()
            if way == "up":
                self.stats.bytes_up += len(data)
            else:
                self.stats.bytes_down += len(data)


def main(argv: list[str]) -> int:
    """A proxy in this process, driven by commands on stdin (see the module's doc)."""
    proxy = FaultProxy(int(argv[0]))
    print(f"port {proxy.port}", flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            cmd, args = words[0], words[1:]
            if cmd == "pass":
                proxy.set_pass()
            elif cmd == "cut":
                proxy.cut()
            elif cmd == "blackhole":
                way = args[0] if args else "both"
                if way not in ("up", "down", "both"):
                    print(f"error: blackhole {way}: up, down or both", flush=True)
                    continue
                proxy.blackhole(way)  # type: ignore[arg-type]
            elif cmd == "slow":
                proxy.slow(float(args[0]), float(args[1]))
            elif cmd == "flap":
                proxy.flap(float(args[0]), float(args[1]), int(args[2]))
            elif cmd == "stats":
                print(json.dumps(proxy.stats.as_dict()), flush=True)
                continue
            elif cmd == "quit":
                break
            else:
                print(f"error: unknown command {cmd}", flush=True)
                continue
            print("ok", flush=True)
    finally:
        proxy.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
