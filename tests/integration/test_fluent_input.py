"""The Fluent Forward input into a real spool: the real @fluent-org/logger client,
and raw sockets for what no well-behaved client sends.

The npm client (``npm install @fluent-org/logger`` into a temp dir, once per
session) is driven by a small node script that emits N records in each event
mode it has, with and without ack (``requireAck``: its ``chunk`` option), and
through the shared-key handshake with and without user auth. Every record
must arrive exactly once with its tag and fields, and an emit with ack must
not resolve before the spool said its batch is durable. Without npm the npm
tests fail when CI=true, else they are skipped.

Every test runs on asyncio and on uvloop; every wait is bounded; every
process started here is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import msgpack
import pytest

from hostlog.agent.agent import build_collector
from hostlog.collectors.base import CollectorContext
from hostlog.collectors.events import Counted
from hostlog.collectors.fluent import collector as fluent_collector
from hostlog.collectors.fluent.collector import FluentCollector
from hostlog.collectors.fluent.protocol import digest
from hostlog.config import parse_config
from hostlog.record import Batch, OnDurable, Record
from tests.agentproc import free_port
from tests.conftest import need
from tests.integration.helpers import SpoolHarness, wait_until
from tests.integration.loops import arun, event_loop_kind  # noqa: F401 (autouse: both loops)
from tests.tlsutil import make_pki

NPM_PACKAGE = "@fluent-org/logger@1.0.10"  # the version the corpus transcripts were captured with


def config(port: int, extra: str = "", scheme: str = "tcp", before: str = "") -> Any:
    return parse_config(f'{before}[[source]]\ntype = "forward"\nname = "fw"\n'
                        f'listen = ["{scheme}://127.0.0.1:{port}"]\n{extra}')


def source(port: int, extra: str = "") -> Any:
    return config(port, extra).sources[0]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class DurableGate:
    """The harness's sink, with the durability reports held back until ``open()``:
    the spool writes and syncs as usual, the collector hears of it only when
    the test says so. ``room`` closed makes the sink look full."""

    def __init__(self, inner: Any, *, held: bool = False) -> None:
        self.inner = inner
        self.released = asyncio.Event()
        if not held:
            self.released.set()
        self.room = asyncio.Event()
        self.room.set()
        self.durable: list[int] = []  # seqs the spool reported, in order
        self.delivered: list[int] = []  # seqs passed on to the collector

    def _wrap(self, on_durable: OnDurable | None) -> OnDurable | None:
        if on_durable is None:
            return None
        callback: OnDurable = on_durable

        def durable(seq: int) -> None:
            self.durable.append(seq)
            if self.released.is_set():
                self.delivered.append(seq)
                callback(seq)
            else:
                asyncio.get_running_loop().create_task(self._later(callback, seq))
        return durable

    async def _later(self, callback: OnDurable, seq: int) -> None:
        await self.released.wait()
        self.delivered.append(seq)
        callback(seq)

    def has_room(self) -> bool:
        return self.room.is_set() and self.inner.has_room()

    async def wait_room(self) -> None:
        await self.room.wait()
        await self.inner.wait_room()

    def submit(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        self.inner.submit(batch, self._wrap(on_durable))

    async def write(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        await self.inner.write(batch, self._wrap(on_durable))

    def write_nowait(self, batch: Batch, on_durable: OnDurable | None = None) -> bool:
        return bool(self.inner.write_nowait(batch, self._wrap(on_durable)))


def gated(context: CollectorContext, **kw: Any) -> DurableGate:
    gate = DurableGate(context.sink, **kw)
    context.sink = gate
    return gate


class Client:
    """A raw Forward client on a socket: what it sends, the objects it gets back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.unpacker = msgpack.Unpacker(raw=False)

    @classmethod
    async def connect(cls, port: int, ssl_context: ssl.SSLContext | None = None) -> Client:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ssl_context), 10)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self, timeout: float = 10.0) -> Any:
        """The next object from the server; EOFError when it closed the connection."""
        async def read() -> Any:
            while True:
                for obj in self.unpacker:
                    return obj
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError
                self.unpacker.feed(data)
        return await asyncio.wait_for(read(), timeout)

    async def nothing_for(self, seconds: float) -> bool:
        """True if the server sends nothing (and keeps the connection) for ``seconds``."""
        try:
            await self.receive(seconds)
        except TimeoutError:
            return True
        except EOFError:
            return False
        return False

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        try:
            while True:
                await self.receive(timeout)
        except EOFError:
            return True

    def close(self) -> None:
        self.writer.close()


def forward_records(harness: SpoolHarness) -> list[Record]:
    return harness.records("forward")


# -- records --------------------------------------------------------------------------------------

MAPPING_CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    # (record sent, what the stored Record has)
    ({"message": "hello", "n": 1},
     dict(msg="hello", host="127.0.0.1", severity=6, fields={"n": "1"})),
    ({"log": "from fluent-bit\n", "stream": "stdout", "host": "web-1"},
     dict(msg="from fluent-bit\n", host="web-1", severity=6, fields={"stream": "stdout"})),
    ({"message": "m", "log": "kept as a field", "hostname": "db-2", "level": "WARN"},
     dict(msg="m", host="db-2", severity=4, fields={"log": "kept as a field"})),
    ({"message": "m", "severity": 3}, dict(msg="m", severity=3, fields={})),
    ({"message": "m", "priority": "7"}, dict(msg="m", severity=7, fields={})),
    ({"message": "m", "level": "critical"}, dict(msg="m", severity=2, fields={})),
    ({"message": "m", "level": "verbose", "severity": "error"},  # not a level: a field; the next key decides
     dict(msg="m", severity=3, fields={"level": "verbose"})),
    ({"message": "m", "level": 42}, dict(msg="m", severity=6, fields={"level": "42"})),
    ({"message": "m", "level": True}, dict(msg="m", severity=6, fields={"level": "true"})),
    ({"message": "m", "host": 5}, dict(msg="m", host="127.0.0.1", fields={"host": "5"})),
    ({"message": {"structured": [1, 2]}}, dict(msg='{"structured":[1,2]}', fields={})),
    ({"message": b"raw \xff bytes", "blob": b"\x00\x01", "text_bin": b"plain"},
     dict(msg=b"raw \xff bytes", fields={"blob": "\x00\x01", "text_bin": "plain"})),
    ({"a": 1, "b": "two", "c": None, "d": [1, {"e": "ü"}], "f": 1.5},
     dict(msg='{"a":1,"b":"two","c":null,"d":[1,{"e":"ü"}],"f":1.5}',
          fields={"a": "1", "b": "two", "c": "null", "d": '[1,{"e":"ü"}]', "f": "1.5"})),
    ({"message": "ünïcödé ✓", "ключ": "значение"}, dict(msg="ünïcödé ✓", fields={"ключ": "значение"})),
]


def test_records_map_tag_time_host_message_severity_and_fields(tmp_path: Path) -> None:
    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        context = harness.open()
        collector = FluentCollector(source(port), context)
        await collector.start()
        try:
            client = await Client.connect(port)
            for i, (record, _) in enumerate(MAPPING_CASES):
                await client.send(pack([f"app.case{i}", msgpack.ExtType(0, (1500000000 + i).to_bytes(4, "big")
                                                                        + (123 + i).to_bytes(4, "big")), record]))
            # a str that is not UTF-8 on the wire (Ruby sends such): its bytes are kept
            await client.send(b"\x93\xa3raw\x01\x81\xa7message\xa4ab\xff\xfe")
            await wait_until(lambda: len(forward_records(harness)) >= len(MAPPING_CASES) + 1, 15, "records")
            client.close()
        finally:
            await collector.stop()
            await harness.close()
        got = forward_records(harness)
        assert len(got) == len(MAPPING_CASES) + 1
        for i, ((_, want), record) in enumerate(zip(MAPPING_CASES, got)):
            assert record.app == f"app.case{i}"
            assert record.source == "forward"
            assert record.ts == (1500000000 + i) * 10**9 + 123 + i
            expected = dict(host="127.0.0.1", severity=6) | want  # (no host key: the peer's address)
            assert (record.msg, record.host, record.severity, record.fields) == \
                (expected["msg"], expected["host"], expected["severity"], expected["fields"]), i
        assert (got[-1].app, got[-1].ts, got[-1].msg) == ("raw", 10**9, b"ab\xff\xfe")

    arun(main(), 60)


# -- acks and durability ----------------------------------------------------------------------------

def test_acks_come_only_after_the_spool_reports_the_batch_durable(tmp_path: Path) -> None:
    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        gate = gated(harness.open(), held=True)
        collector = FluentCollector(source(port), collector_context(harness))
        await collector.start()
        try:
            client = await Client.connect(port)
            await client.send(pack(["t", 1500000000, {"message": "one"}, {"chunk": "c-1"}])
                              + pack(["t", [[1500000001, {"message": "two"}]], {"chunk": "c-2\n"}])
                              + pack(["t", 1500000002, {"message": "no ack wanted"}]))
            await wait_until(lambda: len(forward_records(harness)) == 3, 15, "records in the spool")
            await wait_until(lambda: gate.durable, 15, "the spool's durability report")
            assert await client.nothing_for(0.5), "an ack before the collector heard of durability"
            assert not gate.delivered
            gate.released.set()
            acks = [await client.receive(), await client.receive()]
            assert sorted(a["ack"] for a in acks) == ["c-1", "c-2\n"]  # echoed byte for byte
            assert gate.delivered
            assert await client.nothing_for(0.3)  # nothing for the message without a chunk
            client.close()
        finally:
            await collector.stop()
            await harness.close()
        assert collector.context.counters[("fw", Counted.ACKS)] == 2

    arun(main(), 60)


def test_stop_sends_the_acks_owed_before_it_closes_the_connections(tmp_path: Path) -> None:
    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        gate = gated(harness.open(), held=True)
        collector = FluentCollector(source(port), collector_context(harness))
        await collector.start()
        try:
            client = await Client.connect(port)
            await client.send(pack(["t", 1, {"message": "in flight"}, {"chunk": "owed"}]))
            await wait_until(lambda: gate.durable, 15, "the spool's durability report")
            stopping = asyncio.create_task(collector.stop())
            await asyncio.sleep(0.2)
            assert not stopping.done()  # waiting for the ack it owes
            gate.released.set()
            assert await client.receive() == {"ack": "owed"}
            assert await client.closed_by_server()
            await asyncio.wait_for(stopping, 10)
        finally:
            await collector.stop()
            await harness.close()
        assert [r.msg for r in forward_records(harness)] == ["in flight"]

    arun(main(), 60)


def test_the_agent_builds_this_collector_for_type_forward(tmp_path: Path) -> None:
    cfg = config(free_port(), 'shared_key = "k"')
    context = CollectorContext(hostname="h", sink=DurableGate(None), checkpoints=SpoolHarness(tmp_path).checkpoints)
    collector = build_collector(cfg.sources[0], context, cfg)
    assert isinstance(collector, FluentCollector)
    assert (collector.name, collector.config.shared_key) == ("fw", "k")


def collector_context(harness: SpoolHarness) -> CollectorContext:
    assert harness.context is not None
    return harness.context


def test_a_connection_closed_mid_message_loses_only_the_unacknowledged_part(tmp_path: Path) -> None:
    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        collector = FluentCollector(source(port), harness.open())
        await collector.start()
        try:
            client = await Client.connect(port)
            await client.send(pack(["t", 1, {"message": "whole"}, {"chunk": "a"}]))
            assert await client.receive() == {"ack": "a"}
            partial = pack(["t", 2, {"message": "cut short " * 50}, {"chunk": "b"}])
            await client.send(partial[: len(partial) // 2])
            client.close()
            await wait_until(lambda: collector.context.counters.get(("fw", Counted.INCOMPLETE)), 15, "the EOF")
            await wait_until(lambda: not collector.connections, 15, "the connection to close")
        finally:
            await collector.stop()
            await harness.close()
        assert [r.msg for r in forward_records(harness)] == ["whole"]

    arun(main(), 60)


# -- malformed clients ----------------------------------------------------------------------------------

def test_a_malformed_client_is_closed_with_its_reason_and_the_others_are_served(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path, expect_errors=True)
        collector = FluentCollector(source(port), harness.open())
        await collector.start()
        try:
            good = await Client.connect(port)
            bad = await Client.connect(port)
            await bad.send(pack(["bad", 1, {"message": "before"}, {"chunk": "kept"}]))
            assert await bad.receive() == {"ack": "kept"}
            # a good message and then garbage in one write: the message is stored and
            # acknowledged before the connection is closed
            await bad.send(pack(["bad", 2, {"message": "just before"}, {"chunk": "also-kept"}])
                           + pack(["bad", 3, "not a map"]) + b"\xc1junk")
            assert await bad.receive() == {"ack": "also-kept"}
            assert await bad.closed_by_server()
            for i in range(50):
                await good.send(pack(["good", 10 + i, {"message": f"good {i}"}, {"chunk": f"g{i}"}]))
            acks = [(await good.receive())["ack"] for _ in range(50)]
            assert sorted(acks) == sorted(f"g{i}" for i in range(50))
            later = await Client.connect(port)  # and new connections are still taken
            await later.send(pack(["later", 99, {"message": "after"}, {"chunk": "l"}]))
            assert await later.receive() == {"ack": "l"}
            for c in (good, later):
                c.close()
        finally:
            await collector.stop()
            await harness.close()
        got = forward_records(harness)
        assert [r.msg for r in got if r.app == "bad"] == ["before", "just before"]
        assert sorted(r.msg for r in got if r.app == "good") == sorted(f"good {i}" for i in range(50))
        assert [r.msg for r in got if r.app == "later"] == ["after"]
        assert harness.errors.counts == {("forward", "protocol"): 1}
        assert not harness.fatal
        reasons = [r.getMessage() for r in caplog.records if r.name == "hostlog.forward"]
        assert len([m for m in reasons if "closing the connection from 127.0.0.1" in m]) == 1
        assert "fw: closing the connection from 127.0.0.1: the record must be a map, not a string" in reasons

    with caplog.at_level(logging.INFO):
        arun(main(), 60)


def test_a_malformed_client_whose_acks_never_come_is_closed_all_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fluent_collector, "ACK_WAIT", 0.3)

    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path, expect_errors=True)
        gate = gated(harness.open(), held=True)  # durability never reported to the collector
        collector = FluentCollector(source(port), collector_context(harness))
        await collector.start()
        try:
            client = await Client.connect(port)
            await client.send(pack(["t", 1, {"message": "stored"}, {"chunk": "c"}]) + b"\xc1")
            assert await client.closed_by_server(5)  # no ack: it will send "stored" again
            assert not collector.connections
        finally:
            gate.released.set()
            await collector.stop()
            await harness.close()
        assert [r.msg for r in forward_records(harness)] == ["stored"]
        assert harness.errors.counts == {("forward", "protocol"): 1}

    arun(main(), 60)


@pytest.mark.parametrize("garbage,reason", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "expected an array"),
    (b'{"tag": "json"}\n', "JSON input is not supported"),
    (pack(["t", 1, {"message": "m" * 3000}]), "larger than max_message"),
])
def test_garbage_and_oversized_messages_close_the_connection_with_a_reason(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, garbage: bytes, reason: str) -> None:
    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path, expect_errors=True)
        collector = FluentCollector(source(port, "max_message = 2048"), harness.open())
        await collector.start()
        try:
            client = await Client.connect(port)
            await client.send(garbage)
            client.writer.write_eof()  # (its EOF adds no second report)
            assert await client.closed_by_server()
        finally:
            await collector.stop()
            await harness.close()
        assert not forward_records(harness)
        assert harness.errors.counts == {("forward", "protocol"): 1}
        assert any(reason in r.getMessage() for r in caplog.records if r.name == "hostlog.forward")

    with caplog.at_level(logging.INFO):
        arun(main(), 60)


# -- the handshake ------------------------------------------------------------------------------------------

async def handshake(client: Client, key: str, *, host: str = "client.example", user: str = "",
                    password: str = "") -> list[Any]:
    kind, helo = await client.receive()
    assert kind == "HELO" and len(helo["nonce"]) == 16
    password_digest = digest(helo["auth"], user, password) if user else ""
    await client.send(pack(["PING", host, "salt", digest("salt", host, helo["nonce"], key), user,
                            password_digest]))
    pong: list[Any] = await client.receive()
    if pong[1]:
        assert pong[3] == "test-host"  # the agent's host name, and a digest only the key holder makes
        assert pong[4] == digest("salt", "test-host", helo["nonce"], key)
    return pong


def test_shared_key_and_users_a_wrong_key_or_password_gets_pong_false_and_is_closed(tmp_path: Path) -> None:
    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path, expect_errors=True)
        collector = FluentCollector(source(port, 'shared_key = "s3cr3t"\nusers = { alice = "pw" }'),
                                    harness.open())
        await collector.start()
        try:
            wrong_key = await Client.connect(port)
            assert await handshake(wrong_key, "nope", user="alice", password="pw") == \
                ["PONG", False, "shared_key mismatch", "", ""]
            assert await wrong_key.closed_by_server()
            wrong_password = await Client.connect(port)
            assert (await handshake(wrong_password, "s3cr3t", user="alice", password="no"))[:3] == \
                ["PONG", False, "username/password mismatch"]
            assert await wrong_password.closed_by_server()
            no_handshake = await Client.connect(port)
            await no_handshake.receive()  # HELO, ignored: events straight away
            await no_handshake.send(pack(["t", 1, {"message": "sneaky"}]))
            assert await no_handshake.closed_by_server()
            right = await Client.connect(port)
            assert (await handshake(right, "s3cr3t", user="alice", password="pw"))[:3] == ["PONG", True, ""]
            await right.send(pack(["t", 1, {"message": "welcome"}, {"chunk": "w"}]))
            assert await right.receive() == {"ack": "w"}
            right.close()
        finally:
            await collector.stop()
            await harness.close()
        assert [(r.msg, r.host) for r in forward_records(harness)] == [("welcome", "client.example")]
        assert collector.context.counters[("fw", Counted.AUTH_FAILED)] == 2
        assert harness.errors.counts == {("forward", "protocol"): 1}  # only the events-before-PING client

    arun(main(), 60)


# -- TLS and backpressure -------------------------------------------------------------------------------------

def test_tls_listener(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")

    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path / "s")
        cfg = config(port, scheme="tls", before=f'[tls]\ncert = "{pki["server"]}"\nkey = "{pki["server_key"]}"\n')
        collector = FluentCollector(cfg.sources[0], harness.open(), tls=cfg.tls)
        await collector.start()
        try:
            client_ctx = ssl.create_default_context(cafile=str(pki["ca"]))
            client = await Client.connect(port, client_ctx)
            await client.send(pack(["tls.tag", 5, {"message": "over tls"}, {"chunk": "t"}]))
            assert await client.receive() == {"ack": "t"}
            client.close()
        finally:
            await collector.stop()
            await harness.close()
        assert [(r.app, r.msg) for r in forward_records(harness)] == [("tls.tag", "over tls")]

    arun(main(), 60)


def test_a_full_sink_stops_reading_and_holds_the_client_back_losing_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        gate = gated(harness.open())
        gate.room.clear()  # the spool is full
        collector = FluentCollector(source(port), collector_context(harness))
        await collector.start()
        total = 20_000
        message = [[1500000000 + i, {"message": "y" * 200, "i": i}] for i in range(100)]
        try:
            client = await Client.connect(port)

            async def send() -> None:
                for i in range(total // 100):
                    await client.send(pack(["bp", [[t, dict(r, i=r["i"] + i * 100)] for t, r in message]]))
            sender = asyncio.create_task(send())
            await asyncio.sleep(1.0)
            (conn,) = collector.connections
            assert conn.paused  # stopped reading after the first batch
            assert not sender.done()  # and TCP flow control holds the client back (4 MB)
            assert len(forward_records(harness)) < total
            gate.room.set()
            await asyncio.wait_for(sender, 30)
            client.close()
            await wait_until(lambda: len(forward_records(harness)) >= total, 30, "every record")
        finally:
            await collector.stop()
            await harness.close()
        got = forward_records(harness)
        assert sorted(int(r.fields["i"]) for r in got) == list(range(total))  # once each

    arun(main(), 90)


# -- the real @fluent-org/logger client ----------------------------------------------------------------------

NODE_CLIENT = r"""
const { FluentClient, EventTime } = require("@fluent-org/logger");
const cfg = JSON.parse(process.argv[2]);
const options = {
  eventMode: cfg.mode,
  socket: { host: "127.0.0.1", port: cfg.port, timeout: -1, reconnect: { backoff: 1, delay: 50 } },
  flushInterval: cfg.flushInterval,
};
if (cfg.ack) options.ack = { ackTimeout: 20000 };
if (cfg.security) options.security = cfg.security;
const client = new FluentClient("npm", options);
const watchdog = setTimeout(() => { console.log(JSON.stringify({ error: "timeout" })); process.exit(2); }, 40000);
client.socketOn("error", (err) => console.error("socket error: " + err));
const pending = [];
for (let i = 0; i < cfg.n; i++) {
  const record = { message: "record " + i, i: i, level: ["info", "warn", "error"][i % 3],
                   nested: { list: [1, "two"], i: i }, text: "ünïcödé ✓" };
  pending.push(client.emit("t" + (i % 2), record, new EventTime(1500000000 + i, i * 1000 + 7)));
}
Promise.all(pending).then(async () => {
  console.log(JSON.stringify({ resolved: pending.length }));
  clearTimeout(watchdog);
  await client.disconnect();
  process.exit(0);
}, (err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(1); });
"""


@pytest.fixture(scope="session")
def fluent_npm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with @fluent-org/logger installed and the client script."""
    npm, node = shutil.which("npm"), shutil.which("node")
    need(npm is not None and node is not None, "node and npm (Debian packages nodejs, npm)")
    assert npm is not None
    directory = tmp_path_factory.mktemp("fluent-npm")
    res = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(directory), NPM_PACKAGE],
                         capture_output=True, timeout=300, env=os.environ | {"npm_config_update_notifier": "false"})
    need(res.returncode == 0, f"npm install {NPM_PACKAGE}: {res.stderr.decode(errors='replace')[-2000:]}")
    (directory / "client.js").write_text(NODE_CLIENT)
    return directory


async def run_node(directory: Path, config: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None
    proc = await asyncio.create_subprocess_exec(
        node, str(directory / "client.js"), json.dumps(config), cwd=directory,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=os.environ | {"NODE_PATH": str(directory / "node_modules")})
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()  # (its own PID)
            await proc.wait()
    lines = out.decode().strip().splitlines()
    assert proc.returncode == 0 and lines, f"node exited {proc.returncode}: {out!r} {err.decode()[-2000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def check_npm_records(got: list[Record], n: int, host: str) -> None:
    """Every record the node script emitted, exactly once, with its tag, time and fields."""
    assert sorted(int(r.fields["i"]) for r in got) == list(range(n))
    levels = {"info": 6, "warn": 4, "error": 3}
    for r in got:
        i = int(r.fields["i"])
        assert r.app == f"npm.t{i % 2}"
        assert r.ts == (1500000000 + i) * 10**9 + i * 1000 + 7
        assert r.msg == f"record {i}"
        assert r.severity == levels[["info", "warn", "error"][i % 3]]
        assert r.host == host
        assert r.source == "forward"
        assert r.fields == {"i": str(i), "nested": f'{{"list":[1,"two"],"i":{i}}}', "text": "ünïcödé ✓"}


NPM_CASES = [
    pytest.param(mode, ack, id=f"{mode}{'+ack' if ack else ''}")
    for mode in ("Message", "Forward", "PackedForward", "CompressedPackedForward") for ack in (False, True)
]


@pytest.mark.parametrize("mode,ack", NPM_CASES)
def test_npm_client_every_record_arrives_once_in_each_mode(tmp_path: Path, fluent_npm: Path, mode: str,
                                                           ack: bool) -> None:
    n = 300

    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        collector = FluentCollector(source(port), harness.open())
        await collector.start()
        try:
            result = await run_node(fluent_npm, {"port": port, "mode": mode, "ack": ack, "n": n, "flushInterval": 5})
            assert result == {"resolved": n}
            await wait_until(lambda: len(forward_records(harness)) >= n, 20, "every record")
            if ack:
                await wait_until(lambda: collector.context.counters.get(("fw", Counted.ACKS)), 10, "the acks counted")
        finally:
            await collector.stop()
            await harness.close()
        check_npm_records(forward_records(harness), n, "127.0.0.1")
        acks = collector.context.counters.get(("fw", Counted.ACKS), 0)
        if ack:  # a chunk per message: per event in Message mode, per tag batch otherwise
            assert acks == n if mode == "Message" else 1 <= acks <= n
        else:
            assert acks == 0

    arun(main(), 120)


def test_npm_client_emits_with_ack_resolve_only_after_durability(tmp_path: Path, fluent_npm: Path) -> None:
    n = 50

    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        gate = gated(harness.open(), held=True)
        collector = FluentCollector(source(port), collector_context(harness))
        await collector.start()
        try:
            node = asyncio.create_task(run_node(fluent_npm, {"port": port, "mode": "PackedForward", "ack": True,
                                                             "n": n, "flushInterval": 0}))
            await wait_until(lambda: len(forward_records(harness)) >= n, 20, "every record in the spool")
            await wait_until(lambda: gate.durable, 10, "the spool's durability report")
            await asyncio.sleep(0.5)
            assert not node.done(), "the client's emits resolved before the acks were sent"
            assert collector.context.counters.get(("fw", Counted.ACKS), 0) == 0
            gate.released.set()
            assert await asyncio.wait_for(node, 30) == {"resolved": n}
        finally:
            await collector.stop()
            await harness.close()
        check_npm_records(forward_records(harness), n, "127.0.0.1")

    arun(main(), 120)


@pytest.mark.parametrize("security,server_extra", [
    pytest.param({"clientHostname": "node.example", "sharedKey": "secure_communication_is_awesome"},
                 'shared_key = "secure_communication_is_awesome"', id="shared_key"),
    pytest.param({"clientHostname": "node.example", "sharedKey": "k3y", "username": "alice", "password": "s3cret"},
                 'shared_key = "k3y"\nusers = { alice = "s3cret", bob = "other" }', id="shared_key+user"),
])
def test_npm_client_with_the_shared_key_handshake_and_ack(tmp_path: Path, fluent_npm: Path,
                                                           security: dict[str, str], server_extra: str) -> None:
    n = 100

    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        collector = FluentCollector(source(port, server_extra), harness.open())
        await collector.start()
        try:
            result = await run_node(fluent_npm, {"port": port, "mode": "CompressedPackedForward", "ack": True,
                                                 "n": n, "flushInterval": 5, "security": security})
            assert result == {"resolved": n}
            await wait_until(lambda: len(forward_records(harness)) >= n, 20, "every record")
        finally:
            await collector.stop()
            await harness.close()
        # no host key in the records: the host name the client gave in its PING
        check_npm_records(forward_records(harness), n, "node.example")
        assert collector.context.counters.get(("fw", Counted.AUTH_FAILED), 0) == 0

    arun(main(), 120)


def test_npm_client_with_a_wrong_shared_key_is_refused_and_nothing_is_stored(tmp_path: Path,
                                                                              fluent_npm: Path) -> None:
    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        collector = FluentCollector(source(port, 'shared_key = "right"'), harness.open())
        await collector.start()
        node = shutil.which("node")
        assert node is not None
        config = {"port": port, "mode": "Forward", "ack": True, "n": 3, "flushInterval": 0,
                  "security": {"clientHostname": "node.example", "sharedKey": "wrong"}}
        proc = await asyncio.create_subprocess_exec(
            node, str(fluent_npm / "client.js"), json.dumps(config), cwd=fluent_npm,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            await wait_until(lambda: collector.context.counters.get(("fw", Counted.AUTH_FAILED)), 20, "the refusal")
        finally:
            if proc.returncode is None:
                proc.kill()  # (its own PID: it retries forever otherwise)
            await asyncio.wait_for(proc.wait(), 10)
            await collector.stop()
            await harness.close()
        assert not forward_records(harness)

    arun(main(), 60)
