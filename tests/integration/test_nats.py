"""Edge spool -> NATS JetStream -> central spool, with a real nats-server
(JetStream on a temporary store): every record once, in order, through a
kill -9 of the server and a restart of the edge's destination whose cursor
lags."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from hostlog.collectors.nats.collector import NatsCollector
from hostlog.config import Forward, Tls
from hostlog.config.sources import NatsSource
from hostlog.forward.output import Identity
from hostlog.forward.sender import ChunkSource, build_destination
from hostlog.forward.tls import client_context
from hostlog.record import Columns, Record
from hostlog.spool.reader import SpoolReader
from tests.conftest import need
from tests.integration.helpers import SpoolHarness
from tests.support.pki import make_test_pki

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
RECORDS = 20_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """``nats-server -js`` on 127.0.0.1:port with its store in ``directory``; stopped by its PID."""

    def __init__(self, directory: Path, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.args = args
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        need(os.path.exists(NATS_SERVER), "nats-server (Debian package nats-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-js", "-sd", str(self.directory / "store"), "-a", "127.0.0.1", "-p", str(self.port),
             *self.args],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("nats-server did not start: " + self.log.read_text(errors="replace")[-2000:])
            if "Server is ready" in self.log.read_text(errors="replace").rpartition("Starting nats-server")[2]:
                return
            time.sleep(0.02)

    def kill(self) -> None:
        """kill -9: no shutdown of the store."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def nats_server(tmp_path: Path):
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def rows(first: int, n: int, host: str = "web-1") -> Columns:
    return Columns.of([Record(ts=1_700_000_000_000_000_000 + i, msg=f"line {i}", host=host,
                              source="syslog", app="gen", severity=6) for i in range(first, first + n)])


class Edge:
    """An agent's spool and its ``[[forward]] type = "nats"`` destination."""

    def __init__(self, directory: Path) -> None:
        self.harness = SpoolHarness(directory, hostname="web-1")
        self.dest = None

    @property
    def spool(self):
        return self.harness.spool

    def reader(self) -> SpoolReader:
        return SpoolReader(self.spool.directory, self.spool.keyring)

    async def forward(self, targets: list[str], ssl_context=None, **config):
        forward = Forward(name="js", type="nats", targets=targets, **config)
        writer = self.harness.writer
        self.dest = build_destination(
            forward, cursors=self.spool.directory / "state" / "cursors",
            source=lambda: ChunkSource(self.reader(), self.spool.agent_id),
            identity=Identity(self.spool.agent_id, self.harness.hostname),
            durable=lambda: writer.durable_seq, ssl_context=ssl_context,
            report=lambda where, exc: self.harness.context.error("forward", where, exc))
        await self.dest.start()
        return self.dest

    @property
    def acked(self) -> int:
        return self.dest.links[0].cursor.acked if self.dest is not None else 0


async def until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def held(harness: SpoolHarness) -> list[tuple[str, int, str]]:
    reader = SpoolReader.open(harness.spool_dir, harness.directory / "spool.key")
    return [(r.origin, r.seq, r.msg) for _, r in reader.records()]


def test_the_edge_spool_reaches_the_central_spool_once_through_jetstream(tmp_path: Path, nats_server) -> None:
    async def main() -> tuple[list, list, dict, int, int]:
        edge = Edge(tmp_path / "edge")
        central = SpoolHarness(tmp_path / "central", hostname="central")
        edge.harness.open()
        context = central.open()
        source = NatsSource(name="js-in", servers=[nats_server.url])
        collector = NatsCollector(source, context)
        await collector.start()
        await edge.forward([nats_server.url], window=8)
        sink = edge.harness.context.sink

        async def produce() -> None:  # small batches: many chunks, many publishes in flight
            for i in range(0, RECORDS, 50):
                await sink.write(rows(i, 50))
                await asyncio.sleep(0.002)

        producer = asyncio.create_task(produce())
        await until(lambda: edge.acked >= RECORDS // 5, what="first acks")
        # kill -9 the server in the middle, and bring it back on the same store
        nats_server.kill()
        await asyncio.sleep(0.3)
        nats_server.start()
        await until(lambda: edge.acked >= RECORDS // 2, what="acks after the server's restart")
        # the edge's destination restarts with a cursor that lags (as after a
        # crash before its save): the stream's last message for its subject
        # puts it right, nothing is sent again
        await edge.dest.stop()
        acked_before = edge.acked
        cursor = edge.spool.directory / "state" / "cursors" / "js.json"
        cursor.write_text(json.dumps({"acked_seq": 2000}))
        await edge.forward([nats_server.url], window=8)
        await asyncio.wait_for(producer, 60)
        await until(lambda: edge.acked >= RECORDS, what="every ack")
        sent_after_restart = edge.dest.links[0].stats.records
        origin = edge.spool.agent_id
        await until(lambda: collector.dedup.held(origin) >= RECORDS and not collector._pending,
                    what="the central to hold every record")
        status = collector.status()
        await edge.dest.stop()
        await collector.stop()
        await edge.harness.close()
        await central.close()
        return held(edge.harness), held(central), status, acked_before, sent_after_restart

    edge_held, central_held, status, acked_before, sent_after_restart = asyncio.run(main())
    assert len(edge_held) == RECORDS
    origin = edge_held[0][0]
    assert [r for r in central_held if r[0] == origin] == edge_held
    assert status["bad_messages"] == 0 and status["records"] == RECORDS
    # resumed from the stream's mark, not from the lagging cursor's 2000
    assert sent_after_restart <= RECORDS - acked_before


def test_the_consumer_takes_up_where_it_left_after_a_restart(tmp_path: Path, nats_server) -> None:
    """The central's collector stops and starts again (its marks from its
    state file and spool): what JetStream redelivers is dropped."""

    async def main() -> tuple[list, list]:
        edge = Edge(tmp_path / "edge")
        central = SpoolHarness(tmp_path / "central", hostname="central")
        edge.harness.open()
        context = central.open()
        source = NatsSource(name="js-in", servers=[nats_server.url])
        collector = NatsCollector(source, context)
        await collector.start()
        await edge.forward([nats_server.url])
        await edge.harness.context.sink.write(rows(0, 3000))
        origin = edge.spool.agent_id
        await until(lambda: collector.dedup.held(origin) >= 1000, what="the first records")
        await collector.stop()
        # the state file lost (a crash before its checkpoint): rebuilt from the spool
        (central.spool_dir / "state" / "nats-js-in.json").unlink()
        await edge.harness.context.sink.write(rows(3000, 3000))
        collector = NatsCollector(source, context)
        await collector.start()
        await until(lambda: collector.dedup.held(origin) >= 6000 and not collector._pending,
                    what="every record")
        await edge.dest.stop()
        await collector.stop()
        await edge.harness.close()
        await central.close()
        return held(edge.harness), held(central)

    edge_held, central_held = asyncio.run(main())
    assert len(edge_held) == 6000
    assert [r for r in central_held if r[0] == edge_held[0][0]] == edge_held


def test_tls_both_ways_with_client_certificates(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path / "pki")
    server = NatsServer(tmp_path / "nats", args=("--tlsverify", "--tlscert", str(pki["server"]),
                                                 "--tlskey", str(pki["server_key"]),
                                                 "--tlscacert", str(pki["ca"])))
    server.start()
    url = f"tls://localhost:{server.port}"
    tls = Tls(ca=pki["ca"], cert=pki["client"], key=pki["client_key"])

    async def main() -> tuple[list, list, dict]:
        edge = Edge(tmp_path / "edge")
        central = SpoolHarness(tmp_path / "central", hostname="central")
        edge.harness.open()
        context = central.open()
        collector = NatsCollector(NatsSource(name="js-in", servers=[url]), context, tls=tls)
        await collector.start()
        await edge.forward([url], ssl_context=lambda: client_context(tls.ca, tls.cert, tls.key))
        await edge.harness.context.sink.write(rows(0, 2000))
        origin = edge.spool.agent_id
        await until(lambda: edge.acked >= 2000 and collector.dedup.held(origin) >= 2000
                    and not collector._pending, what="every record over TLS")
        status = edge.dest.status()
        await edge.dest.stop()
        await collector.stop()
        await edge.harness.close()
        await central.close()
        return held(edge.harness), held(central), status

    try:
        edge_held, central_held, status = asyncio.run(main())
    finally:
        server.stop()
    assert status["links"][0]["errors"] == 0
    assert [r for r in central_held if r[0] == edge_held[0][0]] == edge_held


def test_a_plain_client_is_refused_by_a_tls_server_and_says_why(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path / "pki")
    server = NatsServer(tmp_path / "nats", args=("--tlsverify", "--tlscert", str(pki["server"]),
                                                 "--tlskey", str(pki["server_key"]),
                                                 "--tlscacert", str(pki["ca"])))
    server.start()

    async def main() -> dict:
        edge = Edge(tmp_path / "edge")
        edge.harness.open()
        await edge.forward([server.url])  # nats:// to a server that wants TLS
        await edge.harness.context.sink.write(rows(0, 10))
        await until(lambda: edge.dest.links[0].stats.errors >= 1, what="the failed connection")
        status = edge.dest.status()
        await edge.dest.stop()
        await edge.harness.close()
        return status

    try:
        status = asyncio.run(main())
    finally:
        server.stop()
    link = status["links"][0]
    assert link["acked_seq"] == 0 and link["last_error"]
