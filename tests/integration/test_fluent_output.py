"""``[[forward]] type = "fluent"`` end to end, to a real Fluent Forward server:
the ``FluentServer`` of the npm package @fluent-org/logger (an independent
implementation of the protocol, with the shared-key handshake, user auth
and TLS), run by node, printing every event it takes as a JSON line.

The edge is a real spool and writer with a destination built as the agent
builds it (``build_destination``); the server's events are compared with the
spool's records. Every wait is bounded; the node process is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hostlog.config import Forward
from hostlog.forward.output import Identity
from hostlog.forward.sender import ChunkSource, Destination, build_destination
from hostlog.forward.tls import client_context
from hostlog.record import Columns, Record
from hostlog.spool.reader import SpoolReader
from tests.conftest import IN_CI, need
from tests.integration.helpers import SpoolHarness, wait_until
from tests.support.pki import make_test_pki

#: The version whose traffic the shared corpus captured (corpora/fluent-forward).
NPM_PACKAGE = "@fluent-org/logger@1.0.10"
SERVER_HOSTNAME = "fluent-1"
EDGE_HOSTNAME = "web-1"

SERVER_JS = r"""
const fs = require("fs");
const [modulePath, optionsJson] = process.argv.slice(2);
const {FluentServer} = require(modulePath);
const opts = JSON.parse(optionsJson);
const serverOptions = {listenOptions: {port: opts.port || 0, host: "127.0.0.1"}};
if (opts.sharedKey) {
  serverOptions.security = {serverHostname: opts.serverHostname, sharedKey: opts.sharedKey,
                            authorize: !!opts.users, userDict: opts.users || {}};
}
if (opts.cert) {
  serverOptions.tlsOptions = {cert: fs.readFileSync(opts.cert), key: fs.readFileSync(opts.key)};
}
// bin values (Uint8Array) as {"$bin": base64}, so that JSON tells them from strings
const replacer = (key, value) => {
  if (value instanceof Uint8Array) return {$bin: Buffer.from(value).toString("base64")};
  if (value && value.type === "Buffer" && Array.isArray(value.data)) {
    return {$bin: Buffer.from(value.data).toString("base64")};
  }
  return value;
};
const server = new FluentServer(serverOptions);
server.on("entry", (tag, time, record) => {
  const t = (time && typeof time === "object") ? {epoch: time.epoch, nano: time.nano} : time;
  process.stdout.write(JSON.stringify({tag, time: t, record}, replacer) + "\n");
});
server.listen().then(() => process.stdout.write(JSON.stringify({listening: server.port}) + "\n"));
// it acks a message and prints its events in one go: on SIGTERM, close and
// flush what is printed, so that every event it acked is in the output
process.on("SIGTERM", () => {
  setTimeout(() => process.exit(0), 3000).unref();
  server.close().then(() => process.stdout.write("", () => process.exit(0)));
});
"""


@pytest.fixture(scope="session")
def fluent_logger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """@fluent-org/logger installed from the npm registry into a temporary directory."""
    need(shutil.which("node") is not None and shutil.which("npm") is not None, "node and npm (Debian nodejs, npm)")
    prefix = tmp_path_factory.mktemp("npm")
    try:
        res = subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", NPM_PACKAGE],
                             capture_output=True, timeout=300)
        ok, why = res.returncode == 0, res.stderr.decode(errors="replace")[-400:]
    except subprocess.TimeoutExpired:
        ok, why = False, "timed out"
    need(ok, f"npm install {NPM_PACKAGE} (the npm registry): {why}")
    module = prefix / "node_modules" / "@fluent-org" / "logger"
    assert (module / "package.json").is_file()
    return module


class FluentServer:
    """The npm FluentServer in a node process; ``events`` fills as it prints them."""

    def __init__(self, module: Path, directory: Path, *, shared_key: str | None = None,
                 users: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.module = module
        self.directory = directory
        options: dict[str, Any] = {"serverHostname": SERVER_HOSTNAME}
        if shared_key is not None:
            options["sharedKey"] = shared_key
        if users is not None:
            options["users"] = users
        if tls is not None:
            options["cert"], options["key"] = str(tls[0]), str(tls[1])
        self.options = options
        self.events: list[dict[str, Any]] = []
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> FluentServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        script = self.directory / "server.js"
        script.write_text(SERVER_JS)
        with open(self.directory / "node.log", "ab") as log:
            self.proc = subprocess.Popen(["node", str(script), str(self.module), json.dumps(self.options)],
                                         stdout=subprocess.PIPE, stderr=log)
        self._thread = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("the Fluent server did not start: " + self.log())
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            message = json.loads(line)
            if "listening" in message:
                self.port = message["listening"]
                self._listening.set()
            else:
                self.events.append(message)

    def log(self) -> str:
        return (self.directory / "node.log").read_text(errors="replace")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # (its PID: the Popen's own process)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FluentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Edge:
    """An agent's spool and writer, and its fluent destination (built as Node.forward
    in test_forward_link.py builds a hostlog one)."""

    def __init__(self, directory: Path) -> None:
        self.harness = SpoolHarness(directory, hostname=EDGE_HOSTNAME)
        self.dest: Destination | None = None

    def reader(self) -> SpoolReader:
        spool = self.harness.spool
        assert spool is not None
        return SpoolReader(spool.directory, spool.keyring)

    async def forward(self, targets: list[str], ca: Path | None = None, **config: Any) -> Destination:
        spool, writer = self.harness.spool, self.harness.writer
        assert spool is not None and writer is not None and self.harness.context is not None
        forward = Forward(name="fluent", type="fluent", targets=targets, **config)
        context = self.harness.context
        self.dest = build_destination(
            forward, cursors=spool.directory / "state" / "cursors",
            source=lambda: ChunkSource(self.reader(), spool.agent_id),
            identity=Identity(spool.agent_id, self.harness.hostname),
            durable=lambda: writer.durable_seq,
            ssl_context=(lambda: client_context(ca, None, None)) if ca else None,
            report=lambda where, exc: context.error("forward", where, exc))
        await self.dest.start()
        return self.dest

    async def stop_forward(self) -> None:
        if self.dest is not None:
            await self.dest.stop()
            self.dest = None

    async def close(self) -> None:
        await self.stop_forward()
        await self.harness.close()


APPS = ["nginx", "my app/worker 1", "", "db.pg-main"]
TAGS = {"nginx": "nginx", "my app/worker 1": "my_app_worker_1", "": "hostlog", "db.pg-main": "db.pg-main"}


def batch(first: int, n: int) -> Columns:
    """Records of several apps (so several tags per chunk), with fields of every
    kind, a field named like a record key, and messages that are not UTF-8."""
    records = []
    for i in range(first, first + n):
        fields: dict[str, Any] = {"UNIT": f"u{i % 3}.service", "RAW": bytes([i % 256, 0xFF]),
                                  "MULTI": ["a", b"\x80b"]}
        if i % 5 == 0:
            fields["message"] = f"a field named message {i}"
        records.append(Record(ts=1_700_000_000_000_000_000 + i * 1_000_003, msg=f"line {i} ✓" if i % 7 else
                              b"\xff\xfe not utf-8 " + str(i).encode(), host=EDGE_HOSTNAME, source="syslog",
                              app=APPS[i % len(APPS)], pid=1000 + i if i % 2 else None, severity=i % 8,
                              facility=i % 24 if i % 3 else None, fields=fields))
    return Columns.of(records)


def as_json(value: Any) -> Any:
    """A value as the server's JSON shows it (bin as {"$bin": base64})."""
    if isinstance(value, bytes):
        return {"$bin": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value


def expected_event(r: Record) -> dict[str, Any]:
    record: dict[str, Any] = {"message": as_json(r.msg), "host": r.host, "source": r.source, "severity": r.severity}
    if r.pid is not None:
        record["pid"] = r.pid
    if r.facility is not None:
        record["facility"] = r.facility
    for name, value in r.fields.items():
        record["field_message" if name == "message" else name] = as_json(value)
    record["hostlog_origin"] = r.origin
    record["hostlog_seq"] = r.seq
    return {"tag": TAGS[r.app], "time": {"epoch": r.ts // 10**9, "nano": r.ts % 10**9}, "record": record}


async def write(edge: Edge, first: int, n: int, per_frame: int = 500) -> None:
    assert edge.harness.context is not None and edge.harness.writer is not None
    for start in range(first, first + n, per_frame):
        await edge.harness.context.sink.write(batch(start, min(per_frame, first + n - start)))
        await edge.harness.writer.flush()  # a frame each: several chunks in flight


def check_every_record_once(server: FluentServer, spooled: list[Record]) -> None:
    assert len(spooled) > 0
    events = sorted(server.events, key=lambda e: e["record"]["hostlog_seq"])
    assert len(events) == len(spooled), f"{len(events)} events for {len(spooled)} records"
    assert [e["record"]["hostlog_seq"] for e in events] == [r.seq for r in spooled]
    for event, record in zip(events, spooled):
        assert event == expected_event(record)


@pytest.mark.parametrize("compress", [False, True], ids=["PackedForward", "CompressedPackedForward"])
def test_every_record_arrives_once_with_its_tag_time_and_fields(tmp_path: Path, fluent_logger: Path,
                                                                 compress: bool) -> None:
    n = 2000

    async def main(server: FluentServer) -> tuple[list[Record], dict[str, Any]]:
        edge = Edge(tmp_path / "edge")
        edge.harness.open()
        await write(edge, 0, n // 2)
        dest = await edge.forward([f"tcp://127.0.0.1:{server.port}"], compress=compress, window=4)
        await write(edge, n // 2, n // 2)  # and more while it sends
        await wait_until(lambda: dest.links[0].cursor.acked >= n, timeout=30, what="the cursor at the last seq")
        await wait_until(lambda: len(server.events) >= n, timeout=10, what="every event printed")
        await asyncio.sleep(0.3)  # (anything sent twice would show now)
        status = dest.status()
        spooled = edge.harness.records()
        await edge.close()
        return spooled, status

    with FluentServer(fluent_logger, tmp_path / "server").start() as server:
        spooled, status = asyncio.run(main(server))
        check_every_record_once(server, spooled)
    link = status["links"][0]
    assert link["acked_seq"] == n == status["delivered_seq"] and link["lag_records"] == 0
    assert link["connected"] and link["errors"] == 0 and link["records_sent"] == n
    assert {e["tag"] for e in server.events} == set(TAGS.values())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_shared_key_and_user_over_tls(tmp_path: Path, fluent_logger: Path, loop: str) -> None:
    """The handshake (HELO, PING with the key's and the password's digests,
    PONG checked) over TLS with the server's certificate verified; on
    asyncio's loop and on uvloop (the agent's)."""
    pki = make_test_pki(tmp_path / "pki")
    n = 1000

    async def main(server: FluentServer) -> tuple[list[Record], dict[str, Any]]:
        edge = Edge(tmp_path / "edge")
        edge.harness.open()
        await write(edge, 0, n)
        dest = await edge.forward([f"tls://127.0.0.1:{server.port}"], ca=pki["ca"], shared_key="s3cr3t k3y",
                                  username="edge", password="p4ss", compress=True)
        await wait_until(lambda: dest.links[0].cursor.acked >= n, timeout=30, what="the cursor at the last seq")
        await wait_until(lambda: len(server.events) >= n, timeout=10, what="every event printed")
        await asyncio.sleep(0.3)
        status = dest.status()
        spooled = edge.harness.records()
        await edge.close()
        return spooled, status

    with FluentServer(fluent_logger, tmp_path / "server", shared_key="s3cr3t k3y", users={"edge": "p4ss"},
                      tls=(pki["server"], pki["server_key"])).start() as server:
        if loop == "uvloop":
            uvloop = pytest.importorskip("uvloop") if not IN_CI else __import__("uvloop")
            spooled, status = uvloop.run(main(server))
        else:
            spooled, status = asyncio.run(main(server))
        check_every_record_once(server, spooled)
    link = status["links"][0]
    assert link["acked_seq"] == n and link["errors"] == 0 and link["target"] == f"tls://127.0.0.1:{server.port}"


def test_a_wrong_key_is_refused_nothing_is_lost_and_the_right_one_delivers(tmp_path: Path,
                                                                            fluent_logger: Path) -> None:
    """No key, a wrong key, a wrong password: each refused with its reason in
    the status, nothing delivered, the cursor where it was; then the right
    ones, and every record arrives, once."""
    n = 600
    attempts = {
        "no key": ({}, "set shared_key"),
        "wrong key": ({"shared_key": "not the key", "username": "edge", "password": "p4ss"}, "shared key mismatch"),
        "wrong password": ({"shared_key": "the key", "username": "edge", "password": "guess"},
                           "username/password mismatch"),
    }

    async def main(server: FluentServer) -> tuple[dict[str, dict[str, Any]], int, list[Record], dict[str, Any]]:
        edge = Edge(tmp_path / "edge")
        edge.harness.open()
        await write(edge, 0, n)
        refused = {}
        for name, (config, _) in attempts.items():
            dest = await edge.forward([f"tcp://127.0.0.1:{server.port}"], **config)
            await wait_until(lambda dest=dest: dest.links[0].stats.errors >= 1, timeout=20, what=f"{name} refused")
            await asyncio.sleep(0.2)
            refused[name] = dest.links[0].status()
            await edge.stop_forward()
        delivered_before = len(server.events)
        dest = await edge.forward([f"tcp://127.0.0.1:{server.port}"], shared_key="the key", username="edge",
                                  password="p4ss")
        await wait_until(lambda: dest.links[0].cursor.acked >= n, timeout=30, what="the cursor at the last seq")
        await wait_until(lambda: len(server.events) >= n, timeout=10, what="every event printed")
        await asyncio.sleep(0.3)
        status = dest.links[0].status()
        spooled = edge.harness.records()
        await edge.close()
        return refused, delivered_before, spooled, status

    with FluentServer(fluent_logger, tmp_path / "server", shared_key="the key", users={"edge": "p4ss"}).start() \
            as server:
        refused, delivered_before, spooled, status = asyncio.run(main(server))
        check_every_record_once(server, spooled)
    assert delivered_before == 0
    for name, (_, reason) in attempts.items():
        link = refused[name]
        assert reason in link["last_error"], (name, link["last_error"])
        assert link["acked_seq"] == 0 and link["lag_records"] == n and not link["connected"], (name, link)
    assert status["acked_seq"] == n and status["last_error"] == ""


def test_a_server_restart_loses_nothing(tmp_path: Path, fluent_logger: Path, monkeypatch) -> None:
    """The server stops, records keep coming, another server starts on the
    same port: the cursor never passed what the first one printed, and the
    link reconnects and delivers the rest (at least once: together the two
    servers hold every record)."""
    from hostlog.forward import sender
    monkeypatch.setattr(sender, "BACKOFF_MIN_S", 0.05)
    monkeypatch.setattr(sender, "BACKOFF_MAX_S", 0.2)
    n = 3000

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Record], int, int]:
        edge = Edge(tmp_path / "edge")
        edge.harness.open()
        first = FluentServer(fluent_logger, tmp_path / "server-1").start()
        try:
            port = first.port
            dest = await edge.forward([f"tcp://127.0.0.1:{port}"], window=2)
            await write(edge, 0, n // 3)
            await wait_until(lambda: dest.links[0].cursor.acked >= 1, timeout=30, what="a first ack")
        finally:
            await asyncio.to_thread(first.stop)
        await asyncio.sleep(0.3)  # (the acks that were on their way, taken)
        acked_at_stop = dest.links[0].cursor.acked
        # the cursor moved only for what the server had
        assert set(range(1, acked_at_stop + 1)) <= {e["record"]["hostlog_seq"] for e in first.events}
        await write(edge, n // 3, n - n // 3)
        second = await asyncio.to_thread(_restart_on, fluent_logger, tmp_path / "server-2", port)
        try:
            await wait_until(lambda: dest.links[0].cursor.acked >= n, timeout=30, what="the cursor at the last seq")
            await asyncio.sleep(0.3)
        finally:
            await asyncio.to_thread(second.stop)
        spooled = edge.harness.records()
        errors = dest.links[0].stats.errors
        await edge.close()
        return first.events, second.events, spooled, acked_at_stop, errors

    first_events, second_events, spooled, acked_at_stop, errors = asyncio.run(main())
    assert errors >= 1
    held = {e["record"]["hostlog_seq"] for e in first_events} | {e["record"]["hostlog_seq"] for e in second_events}
    assert held == {r.seq for r in spooled} and len(spooled) == n
    # what was not acknowledged when the first went away went to the second
    assert set(range(acked_at_stop + 1, n + 1)) <= {e["record"]["hostlog_seq"] for e in second_events}


def _restart_on(module: Path, directory: Path, port: int | None, timeout: float = 20.0) -> FluentServer:
    """A FluentServer on a given port (the first one's), once the port is free."""
    assert port is not None
    deadline = time.monotonic() + timeout
    while True:
        server = FluentServer(module, directory)
        server.options["port"] = port
        try:
            return server.start()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
