"""``[[forward]] type = "otlp"`` end to end: a real spool and its writer, the
real sender (``build_destination``), and an OTLP/HTTP logs receiver made
here on opentelemetry-proto (an aiohttp server on 127.0.0.1) that decodes
every request and answers what a test tells it to (429 with Retry-After,
503, 400, 401). Every record arrives once, with all it holds, through the
retries; a 400 skips its chunk; https works with a test CA."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp.web
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from hostlog.config import Forward, Tls
from hostlog.forward.otlp import SEVERITY_NUMBERS, stats_for
from hostlog.forward.output import Identity
from hostlog.forward.sender import ChunkSource, Destination, build_destination
from hostlog.forward.tls import client_context, server_context
from hostlog.record import SEVERITY_NAMES, Columns, Record
from hostlog.spool.reader import SpoolReader
from tests.conftest import IN_CI
from tests.integration.helpers import SpoolHarness
from tests.support.pki import make_test_pki

TS = 1_764_756_000_000_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def rows(first: int, n: int) -> Columns:
    """Records of every shape: hosts, apps, severities, pids or none, facilities
    or none, text and binary messages, fields of text, bytes and lists."""
    out = []
    for i in range(first, first + n):
        fields: dict[str, Any] = {"n": str(i), "unit": f"svc-{i % 4}.service"}
        if i % 3 == 0:
            fields["raw"] = b"\x00\xff" + i.to_bytes(4, "big")
        if i % 5 == 0:
            fields["multi"] = ["a", str(i)]
        out.append(Record(ts=TS + i * 1000, msg=f"line {i} \u00e9" if i % 7 else b"\xfe\xff bin %d" % i,
                          host=f"web-{i % 2}", source="journal" if i % 2 else "syslog", app=f"app-{i % 3}",
                          pid=1000 + i if i % 4 else None, severity=i % 8, facility=i % 24 if i % 6 else None,
                          fields=fields))
    return Columns.of(out)


class OtlpReceiver:
    """An OTLP/HTTP logs endpoint: decodes each request (protobuf or JSON,
    gzipped or not); ``answer(n)`` (n = 1, 2, ... per request) may return
    ``(status, headers)`` to answer instead of 200, and then the request's
    records are not taken."""

    def __init__(self, port: int, *, ssl_context: ssl.SSLContext | None = None,
                 answer: Callable[[int], tuple[int, dict[str, str]] | None] = lambda n: None) -> None:
        self.port = port
        self.ssl_context = ssl_context
        self.answer = answer
        self.requests = 0
        self.taken: list[tuple[dict[str, Any], Any]] = []  # (resource attributes, LogRecord) of 200s
        self.statuses: list[int] = []
        self.headers: list[dict[str, str]] = []
        self.runner: aiohttp.web.AppRunner | None = None

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        self.requests += 1
        n = self.requests
        body = await request.read()
        self.headers.append(dict(request.headers))
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportLogsServiceRequest()
        as_json = request.headers.get("Content-Type") == "application/json"
        if as_json:
            json_format.Parse(body, export)
        else:
            assert request.headers.get("Content-Type") == "application/x-protobuf"
            export.ParseFromString(body)
        special = self.answer(n)
        if special is not None:
            status, headers = special
            self.statuses.append(status)
            return aiohttp.web.Response(status=status, headers=headers, text=f"answer {status} to request {n}")
        for rl in export.resource_logs:
            resource = {kv.key: plain(kv.value) for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                assert sl.scope.name == "hostlog"
                self.taken.extend((resource, r) for r in sl.log_records)
        self.statuses.append(200)
        response = ExportLogsServiceResponse()
        if as_json:
            return aiohttp.web.Response(text=json_format.MessageToJson(response), content_type="application/json")
        return aiohttp.web.Response(body=response.SerializeToString(), content_type="application/x-protobuf")

    async def start(self) -> None:
        app = aiohttp.web.Application()
        app.router.add_post("/v1/logs", self.handle)
        self.runner = aiohttp.web.AppRunner(app, access_log=None, auto_decompress=False)  # (it checks the gzip)
        await self.runner.setup()
        await aiohttp.web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=self.ssl_context).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def by_identity(self) -> dict[tuple[str, int], list[tuple[dict[str, Any], Any]]]:
        out: dict[tuple[str, int], list[tuple[dict[str, Any], Any]]] = {}
        for resource, record in self.taken:
            attributes = {kv.key: plain(kv.value) for kv in record.attributes}
            out.setdefault((attributes["hostlog.origin"], attributes["hostlog.seq"]), []).append(
                (resource, record))
        return out


class Node:
    """One agent's spool and writer, and its otlp destination."""

    def __init__(self, directory: Path, hostname: str = "web-1") -> None:
        self.harness = SpoolHarness(directory, hostname=hostname)
        self.dest: Destination | None = None

    def open(self) -> None:
        self.harness.open()

    @property
    def spool(self) -> Any:
        return self.harness.spool

    def reader(self) -> SpoolReader:
        return SpoolReader(self.spool.directory, self.spool.keyring)

    async def write(self, batch: Columns) -> None:
        """Write the batch and wait until it is durable: a spool frame (a chunk, a request) of its own."""
        assert self.harness.context is not None and self.harness.writer is not None
        writer = self.harness.writer
        want = writer.durable_seq + len(batch)
        await self.harness.context.sink.write(batch)
        await until(lambda: writer.durable_seq >= want, what=f"seq {want} durable")

    async def forward(self, targets: list[str], tls: Tls | None = None, **config: Any) -> Destination:
        forward = Forward(name="otel", type="otlp", targets=targets, **config)
        writer = self.harness.writer
        assert writer is not None and self.harness.context is not None
        context = self.harness.context
        self.dest = build_destination(
            forward, cursors=self.spool.directory / "state" / "cursors",
            source=lambda: ChunkSource(self.reader(), self.spool.agent_id),
            identity=Identity(self.spool.agent_id, self.harness.hostname),
            durable=lambda: writer.durable_seq,
            ssl_context=(lambda: client_context(tls.ca, tls.cert, tls.key)) if tls else None,
            report=lambda where, exc: context.error("forward", where, exc))
        await self.dest.start()
        return self.dest

    @property
    def acked(self) -> int:
        assert self.dest is not None
        return self.dest.links[0].cursor.acked

    async def close(self) -> None:
        if self.dest is not None:
            await self.dest.stop()
            self.dest = None
        await self.harness.close()

    def held(self) -> list[Record]:
        return self.harness.records()


async def until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def check_record(record: Record, resource: dict[str, Any], sent: Any) -> None:
    """What the receiver got is the spool's record, every column and field."""
    assert resource == {"host.name": record.host, "service.name": record.app}
    assert sent.time_unix_nano == sent.observed_time_unix_nano == record.ts
    assert sent.severity_number == SEVERITY_NUMBERS[record.severity]
    assert sent.severity_text == SEVERITY_NAMES[record.severity]
    assert plain(sent.body) == record.msg
    want: dict[str, Any] = dict(record.fields)
    want.update({"log.source": record.source, "hostlog.origin": record.origin, "hostlog.seq": record.seq})
    if record.pid is not None:
        want["process.pid"] = record.pid
    if record.facility is not None:
        want["syslog.facility"] = record.facility
    assert {kv.key: plain(kv.value) for kv in sent.attributes} == want


def test_every_record_arrives_once_with_all_it_holds_through_429_and_503(tmp_path: Path) -> None:
    retry_after: dict[int, tuple[int, dict[str, str]]] = {
        2: (429, {"Retry-After": "1"}), 3: (503, {}), 5: (503, {"Retry-After": "0"}), 6: (502, {}),
    }

    async def main() -> tuple[list[Record], OtlpReceiver, int]:
        port = free_port()
        receiver = OtlpReceiver(port, answer=retry_after.get)
        await receiver.start()
        edge = Node(tmp_path / "edge")
        edge.open()
        try:
            for first in range(0, 6000, 500):  # 12 chunks
                await edge.write(rows(first, 500))
            await edge.forward([f"http://127.0.0.1:{port}"], window=4, headers={"X-Scope-OrgID": "tenant-7"})
            await until(lambda: edge.acked >= 6000, what="every record acked")
            acked = edge.acked
        finally:
            await edge.close()
            await receiver.stop()
        return edge.held(), receiver, acked

    held, receiver, acked = asyncio.run(main())
    assert len(held) == 6000 and acked == held[-1].seq == 6000  # the cursor ends at the last seq
    assert sorted(s for s in receiver.statuses if s != 200) == [429, 502, 503, 503]  # they all happened
    assert receiver.statuses.count(200) == 12
    got = receiver.by_identity()
    assert sorted(got) == sorted((r.origin, r.seq) for r in held)
    for record in held:
        (resource, sent), = got[record.origin, record.seq]  # exactly once
        check_record(record, resource, sent)
    for headers in receiver.headers:
        assert headers["X-Scope-OrgID"] == "tenant-7"
        assert headers["Content-Encoding"] == "gzip" and headers["User-Agent"].startswith("hostlog/")


def test_a_400_skips_its_chunk_counted_and_the_rest_arrives(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[list[Record], OtlpReceiver, int]:
        port = free_port()
        receiver = OtlpReceiver(port, answer=lambda n: (400, {}) if n == 2 else None)
        await receiver.start()
        edge = Node(tmp_path / "edge")
        edge.open()
        try:
            # one request at a time: the second request is the second chunk
            await edge.forward([f"http://127.0.0.1:{port}"], window=1, encoding="json", gzip=False)
            for first in range(0, 300, 100):
                await edge.write(rows(first, 100))
                await until(lambda first=first: edge.acked >= first + 100, what=f"seq {first + 100} acked")
            acked = edge.acked
            assert edge.dest is not None
            shown = edge.dest.status()["links"][0]["output"]  # what ctl status and the metrics show
        finally:
            await edge.close()
            await receiver.stop()
        return edge.held(), receiver, acked, shown

    with caplog.at_level("ERROR", logger="hostlog.forward.otlp"):
        held, receiver, acked, shown = asyncio.run(main())
    assert (shown["skipped_chunks"], shown["skipped_records"], shown["requests"]) == (1, 100, 2)
    assert acked == 300 and receiver.statuses == [200, 400, 200]
    got = receiver.by_identity()
    skipped = [r for r in held if (r.origin, r.seq) not in got]
    assert [r.seq for r in skipped] == list(range(101, 201))  # the second chunk, and only it
    for record in held:
        if record not in skipped:
            (resource, sent), = got[record.origin, record.seq]
            check_record(record, resource, sent)
    stats = stats_for(f"http://127.0.0.1:{receiver.port}/v1/logs")
    assert (stats.skipped_chunks, stats.skipped_records) == (1, 100)
    assert any("answered 400" in m and "answer 400 to request 2" in m for m in caplog.messages), caplog.messages
    assert all(h["Content-Type"] == "application/json" and "Content-Encoding" not in h for h in receiver.headers)


def test_a_401_refuses_and_nothing_is_acked(tmp_path: Path) -> None:
    async def main() -> tuple[dict[str, Any], OtlpReceiver]:
        port = free_port()
        receiver = OtlpReceiver(port, answer=lambda n: (401, {}))
        await receiver.start()
        edge = Node(tmp_path / "edge")
        edge.open()
        try:
            dest = await edge.forward([f"http://127.0.0.1:{port}"])
            await edge.write(rows(0, 10))
            await until(lambda: dest.links[0].stats.errors >= 1, what="the refusal")
            await asyncio.sleep(0.5)  # (no second try soon: the sender waits long after a refusal)
            status = dest.links[0].status()
        finally:
            await edge.close()
            await receiver.stop()
        return status, receiver

    status, receiver = asyncio.run(main())
    assert status["acked_seq"] == 0 and "answered 401" in status["last_error"]
    assert receiver.statuses == [401] and receiver.taken == []


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_https_with_a_test_ca(tmp_path: Path, loop: str) -> None:
    """The target's certificate (localhost, of the test CA) is verified: an
    edge with the CA delivers, one that trusts only the system's store does not."""
    pki = make_test_pki(tmp_path / "pki")

    async def main() -> tuple[list[Record], OtlpReceiver, dict[str, Any]]:
        port = free_port()
        receiver = OtlpReceiver(port, ssl_context=server_context(None, pki["server"], pki["server_key"],
                                                                 require_client_cert=False))
        await receiver.start()
        stranger, edge = Node(tmp_path / "stranger", "stranger"), Node(tmp_path / "edge")
        stranger.open()
        edge.open()
        try:
            await stranger.write(rows(0, 10))
            dest = await stranger.forward([f"https://localhost:{port}"], tls=Tls())
            await until(lambda: dest.links[0].stats.errors >= 1, what="the stranger's failed handshake")
            refused = dest.links[0].status()
            await edge.write(rows(0, 200))
            await edge.forward([f"https://localhost:{port}"], tls=Tls(ca=pki["ca"]))
            await until(lambda: edge.acked >= 200, what="acks over https")
        finally:
            await stranger.close()
            await edge.close()
            await receiver.stop()
        return edge.held(), receiver, refused

    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop") if not IN_CI else __import__("uvloop")
        held, receiver, refused = uvloop.run(main())
    else:
        held, receiver, refused = asyncio.run(main())
    assert refused["acked_seq"] == 0 and "certificate" in refused["last_error"].lower(), refused
    got = receiver.by_identity()
    assert sorted(got) == sorted((r.origin, r.seq) for r in held)  # only the edge's
    for record in held:
        (resource, sent), = got[record.origin, record.seq]
        check_record(record, resource, sent)
