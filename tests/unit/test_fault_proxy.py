"""The fault proxy of the network fault suite (tests/support/fault_proxy.py),
against a real echo server on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentproc import wait_for
from tests.support.fault_proxy import FaultProxy

REPO = Path(__file__).resolve().parents[2]


class Echo:
    """A TCP echo server that counts what it received."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.received = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            try:
                while data := conn.recv(1 << 16):
                    self.received += len(data)
                    conn.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.stopped = True
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: Echo) -> Iterator[FaultProxy]:
    with FaultProxy(echo.port) as p:
        yield p


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(5)
    return s


def roundtrip(s: socket.socket, data: bytes) -> bytes:
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        got += chunk
    return got


def test_pass_relays_both_ways(proxy: FaultProxy, echo: Echo) -> None:
    with connect(proxy.port) as s:
        payload = bytes(range(256)) * 1000
        assert roundtrip(s, payload) == payload
    # the relay counts a chunk after sending it on: the client may have it first
    deadline = time.monotonic() + 5
    while proxy.stats.bytes_down < len(payload) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.stats.bytes_up == proxy.stats.bytes_down == len(payload)
    assert echo.received == len(payload)


def test_cut_resets_open_and_new_connections(proxy: FaultProxy) -> None:
    s = connect(proxy.port)
    assert roundtrip(s, b"hello") == b"hello"
    proxy.cut()
    with pytest.raises(ConnectionResetError):
        s.sendall(b"x")
        s.recv(10)  # an RST, not an orderly EOF
        s.sendall(b"x")
    s.close()
    with pytest.raises(ConnectionResetError):  # accepted, then reset: at connect() or at the first read
        refused = connect(proxy.port)
        try:
            refused.recv(10)
            refused.sendall(b"x")
            refused.recv(10)
        finally:
            refused.close()
    assert proxy.stats.reset >= 2
    proxy.set_pass()
    with connect(proxy.port) as s2:
        assert roundtrip(s2, b"back") == b"back"


@pytest.mark.parametrize("way", ["up", "down", "both"])
def test_blackhole_drops_one_way_and_says_nothing(proxy: FaultProxy, echo: Echo, way: str) -> None:
    with connect(proxy.port) as s:
        assert roundtrip(s, b"before") == b"before"
        proxy.blackhole(way)  # type: ignore[arg-type]
        s.sendall(b"lost" * 100)
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):  # no echo, and no reset or EOF either
            s.recv(10)
        if way == "down":  # the target got it; its answer was dropped
            wait_for(lambda: echo.received == 6 + 400, timeout=5, what="the target to get the bytes")
            wait_for(lambda: proxy.stats.dropped_down == 400, timeout=5, what="the answer dropped")
        else:
            wait_for(lambda: proxy.stats.dropped_up == 400, timeout=5, what="the bytes dropped")
            assert echo.received == 6
    # a new connection after the fault works
    proxy.set_pass()
    with connect(proxy.port) as s2:
        assert roundtrip(s2, b"after") == b"after"


def test_slow_link_delays_and_limits(proxy: FaultProxy) -> None:
    with connect(proxy.port) as s:
        proxy.slow(delay=0.2, rate=0)
        started = time.monotonic()
        assert roundtrip(s, b"ping") == b"ping"
        assert time.monotonic() - started >= 0.4  # 0.2 s each way, at least
        proxy.slow(delay=0, rate=100_000)
        payload = b"z" * 50_000
        started = time.monotonic()
        assert roundtrip(s, payload) == payload
        assert time.monotonic() - started >= 0.9  # 50 kB each way at 100 kB/s, at least
    proxy.set_pass()
    assert proxy.mode == "pass"


def test_flap_cuts_and_restores_then_passes(proxy: FaultProxy) -> None:
    proxy.flap(down_s=0.2, up_s=0.2, times=3)
    resets = 0
    ok = 0
    deadline = time.monotonic() + 10
    while proxy.stats.flaps < 3 or proxy.mode != "pass":
        assert time.monotonic() < deadline, "the flap did not end"
        try:
            with connect(proxy.port) as s:
                if roundtrip(s, b"f") == b"f":
                    ok += 1
        except OSError:
            resets += 1
        time.sleep(0.05)
    assert resets > 0 and ok > 0, (resets, ok)
    assert proxy.stats.flaps == 3
    with connect(proxy.port) as s:
        assert roundtrip(s, b"steady") == b"steady"


def test_as_a_child_process(echo: Echo) -> None:
    child = subprocess.Popen([sys.executable, "-m", "tests.support.fault_proxy", str(echo.port)],
                             cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline().split()[1])
        with connect(port) as s:
            assert roundtrip(s, b"child") == b"child"
        for cmd in ("blackhole up", "pass", "slow 0.01 0", "flap 0.1 0.1 1", "pass", "cut"):
            child.stdin.write(cmd + "\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "ok", cmd
        child.stdin.write("nonsense\n")
        child.stdin.flush()
        assert child.stdout.readline().startswith("error:")
        child.stdin.write("stats\n")
        child.stdin.flush()
        stats = json.loads(child.stdout.readline())
        assert stats["bytes_up"] == 5 and stats["accepted"] == 1
        child.stdin.write("quit\n")
        child.stdin.flush()
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
