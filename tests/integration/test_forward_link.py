"""A sender and a receiver in one event loop, each with a real spool and
writer: what the edge's spool holds reaches the central's spool exactly
once, through restarts of either side, a receiver that lost its checkpoint,
bad peers, and a spool held for an unacknowledged destination."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from pathlib import Path

import pytest

from hostlog.agent.forwarding import DropReport
from hostlog.config import Forward, Tls
from hostlog.config import Receiver as ReceiverConfig
from hostlog.forward.output import Identity
from hostlog.forward.protocol import Chunk, Connection, Hello, Role, Welcome
from hostlog.forward.receiver import Receiver
from hostlog.forward.sender import ChunkSource, build_destination
from hostlog.forward.tls import client_context
from hostlog.record import Columns, Record
from hostlog.spool.reader import SpoolReader
from tests.conftest import IN_CI
from tests.integration.helpers import SpoolHarness
from tests.support.pki import make_test_pki


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows(first: int, n: int, host: str = "web-1") -> Columns:
    return Columns.of([Record(ts=1_700_000_000_000_000_000 + i, msg=f"line {i}", host=host,
                              source="syslog", app="gen", severity=6) for i in range(first, first + n)])


class Node:
    """One agent's spool, writer and (central) receiver or (edge) destination."""

    def __init__(self, directory: Path, hostname: str) -> None:
        self.harness = SpoolHarness(directory, hostname=hostname)
        self.dest = None
        self.receiver: Receiver | None = None

    def open(self) -> None:
        self.harness.open()

    @property
    def spool(self):
        return self.harness.spool

    def reader(self) -> SpoolReader:
        return SpoolReader(self.spool.directory, self.spool.keyring)

    async def receive(self, port: int, tls: Tls | None = None, **config) -> Receiver:
        cfg = ReceiverConfig(listen=f"{'tls' if tls else 'tcp'}://127.0.0.1:{port}", **config)
        self.receiver = Receiver(cfg, tls, self.harness.context, agent_id=self.spool.agent_id,
                                 state_path=self.spool.directory / "state" / "receiver.json",
                                 reader=self.reader, accepted_seq=lambda: self.harness.writer.accepted_seq)
        await self.receiver.start()
        return self.receiver

    async def forward(self, targets: list[str], tls: Tls | None = None, **config):
        forward = Forward(name="central", targets=targets, **config)
        writer = self.harness.writer
        self.dest = build_destination(
            forward, cursors=self.spool.directory / "state" / "cursors",
            source=lambda: ChunkSource(self.reader(), self.spool.agent_id),
            identity=Identity(self.spool.agent_id, self.harness.hostname),
            durable=lambda: writer.durable_seq,
            ssl_context=(lambda: client_context(tls.ca, tls.cert, tls.key)) if tls else None,
            report=lambda where, exc: self.harness.context.error("forward", where, exc))
        await self.dest.start()
        return self.dest

    async def close(self) -> None:
        if self.dest is not None:
            await self.dest.stop()
            self.dest = None
        if self.receiver is not None:
            await self.receiver.stop()
            self.receiver = None
        await self.harness.close()

    def held(self) -> list[tuple[str, int, str]]:
        reader = SpoolReader.open(self.harness.spool_dir, self.harness.directory / "spool.key")
        return [(r.origin, r.seq, r.msg) for _, r in reader.records()]


async def until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_the_edge_spool_arrives_once_through_restarts_of_both_sides(tmp_path: Path) -> None:
    async def main() -> tuple[list, list, dict]:
        port = free_port()
        edge, central = Node(tmp_path / "edge", "web-1"), Node(tmp_path / "central", "central")
        edge.open()
        central.open()
        await central.receive(port)
        await edge.forward([f"tcp://127.0.0.1:{port}"], window=4)
        for i in range(0, 30_000, 1000):
            await edge.harness.context.sink.write(rows(i, 1000))
        await until(lambda: edge.dest.links[0].cursor.acked >= 30_000, what="first acks")
        # the central restarts: its marks come back from its checkpoint and spool
        await central.receiver.stop()
        central.receiver = None
        await central.receive(port)
        for i in range(30_000, 60_000, 1000):
            await edge.harness.context.sink.write(rows(i, 1000))
        # the edge's destination restarts with a cursor that lags (as after a
        # crash before its save): the receiver's mark puts it right, and what
        # it resends is dropped
        await until(lambda: edge.dest.links[0].cursor.acked >= 45_000, what="acks after the restart")
        await edge.dest.stop()
        cursor_file = edge.spool.directory / "state" / "cursors" / "central.json"
        cursor_file.write_text(json.dumps({"acked_seq": 10_000}))
        await edge.forward([f"tcp://127.0.0.1:{port}"], window=4)
        await until(lambda: edge.dest.links[0].cursor.acked >= 60_000, what="every ack")
        status = central.receiver.status()
        await edge.close()
        await central.close()
        return edge.held(), central.held(), status

    edge_held, central_held, status = asyncio.run(main())
    assert len(edge_held) == 60_000
    origin = edge_held[0][0]
    assert [r for r in central_held if r[0] == origin] == edge_held
    assert status["records"] == 30_000  # (the restarted receiver's count: the second half)


def test_a_receiver_that_lost_its_checkpoint_rebuilds_its_marks_from_its_spool(tmp_path: Path) -> None:
    async def main() -> list:
        port = free_port()
        edge, central = Node(tmp_path / "edge", "web-1"), Node(tmp_path / "central", "central")
        edge.open()
        central.open()
        await central.receive(port)
        await edge.forward([f"tcp://127.0.0.1:{port}"])
        await edge.harness.context.sink.write(rows(0, 5000))
        await until(lambda: edge.dest.links[0].cursor.acked >= 5000, what="acks")
        await edge.dest.stop()
        edge.dest = None
        await central.receiver.stop()
        central.receiver = None
        # as if the central died before its checkpoint was written
        (central.spool.directory / "state" / "receiver.json").unlink()
        (edge.spool.directory / "state" / "cursors" / "central.json").write_text('{"acked_seq": 0}')
        await central.receive(port)
        assert central.receiver.state.peers[edge.spool.agent_id] == 5000
        await edge.forward([f"tcp://127.0.0.1:{port}"])
        await edge.harness.context.sink.write(rows(5000, 100))
        await until(lambda: edge.dest.links[0].cursor.acked >= 5100, what="acks")
        await edge.close()
        await central.close()
        return central.held()

    held = asyncio.run(main())
    assert [seq for _, seq, _ in held] == list(range(1, 5101))


def test_bad_peers_are_disconnected_and_the_good_one_goes_on(tmp_path: Path) -> None:
    async def main() -> tuple[dict, list]:
        port = free_port()
        central = Node(tmp_path / "central", "central")
        central.open()
        await central.receive(port, token="s3cret")

        async def session(payload: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(payload)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return data

        client = lambda: Connection(Role.CLIENT)  # noqa: E731
        garbage = await session(b"\x00\x00\x00\x05hello")
        too_big = await session(struct.pack(">I", 1 << 30))
        wrong_version = await session(client().send(Hello(agent="a" * 32, host="x", version=9)))
        no_token = await session(client().send(Hello(agent="a" * 32, host="x")))
        # a good peer, with the token, sends a chunk and is acked
        conn = client()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(conn.send(Hello(agent="b" * 32, host="good", token="s3cret")))
        while not (events := conn.events()):
            conn.receive_data(await reader.read(65536))
        assert isinstance(events[0], Welcome) and events[0].held == 0
        import lz4.block

        from hostlog.chunk import encode_columns
        batch = rows(0, 10, host="good")
        batch.origin, batch.seq = ["b" * 32] * 10, list(range(1, 11))
        chunk = encode_columns(batch.columns)
        compressed = lz4.block.compress(chunk, store_size=False)
        # sent twice, as a sender that missed the first ack does: stored once, acked twice
        for _ in range(2):
            writer.write(conn.send(Chunk("b" * 32, 1, 10, len(chunk), compressed)))
        acks: list = []
        while len(acks) < 2:
            conn.receive_data(await asyncio.wait_for(reader.read(65536), 10))
            acks += conn.events()
        writer.close()
        status = central.receiver.status()
        await central.close()
        return {"garbage": garbage, "too_big": too_big, "wrong_version": wrong_version,
                "no_token": no_token, "acks": acks, "status": status}, central.held()

    out, held = asyncio.run(main())
    for name in ("garbage", "too_big", "wrong_version", "no_token"):
        conn = Connection(Role.CLIENT)
        conn.send(Hello(agent="c" * 32, host="x"))
        conn.receive_data(out[name])
        events = conn.events()
        assert events and type(events[0]).__name__ == "Error" and events[0].kind == "rejected", (name, events)
    assert "version" in out["wrong_version"].decode(errors="replace")
    assert [a.seq for a in out["acks"]] == [10, 10]
    assert out["status"]["refused"] == 1 and out["status"]["protocol_errors"] == 3
    assert out["status"]["records"] == 10 and out["status"]["duplicates"] == 10
    assert [(o, s) for o, s, _ in held] == [("b" * 32, s) for s in range(1, 11)]


def test_retention_keeps_what_a_destination_has_not_acknowledged(tmp_path: Path) -> None:
    """A destination that never answered still holds the spool: its cursor
    file exists from the start (retention itself is tested with the spool)."""
    async def main() -> tuple[int | None, int | None, int]:
        edge = Node(tmp_path / "edge", "web-1")
        edge.open()
        await edge.harness.context.sink.write(rows(0, 1000))
        await edge.forward([f"tcp://127.0.0.1:{free_port()}"])  # nobody listens there
        held = edge.spool.acked_seq()
        await edge.harness.writer.flush()
        await asyncio.sleep(0.3)
        status = edge.dest.status()
        await edge.close()
        return held, status["delivered_seq"], status["links"][0]["lag_records"]

    held, delivered, lag = asyncio.run(main())
    assert held == 0 and delivered == 0 and lag == 1000
    assert json.loads((tmp_path / "edge" / "spool" / "state" / "cursors" / "central.json").read_text()) \
        == {"acked_seq": 0}


def test_failover_goes_to_the_next_target_and_back(tmp_path: Path, monkeypatch) -> None:
    """failover: while the first target is down the second gets the records;
    once the first is back, the link returns to it. Together they hold every
    record; neither holds one twice."""
    from hostlog.forward import sender
    monkeypatch.setattr(sender, "FAILBACK_S", 1.0)
    monkeypatch.setattr(sender, "BACKOFF_MIN_S", 0.05)

    async def main() -> tuple[list, list, list, list[str]]:
        p1, p2 = free_port(), free_port()
        edge = Node(tmp_path / "edge", "web-1")
        c1, c2 = Node(tmp_path / "c1", "c1"), Node(tmp_path / "c2", "c2")
        for node in (edge, c1, c2):
            node.open()
        await c2.receive(p2)  # the first target is down
        dest = await edge.forward([f"tcp://127.0.0.1:{p1}", f"tcp://127.0.0.1:{p2}"], mode="failover")
        link = dest.links[0]
        await edge.harness.context.sink.write(rows(0, 2000))
        await until(lambda: link.cursor.acked >= 2000, what="the second target's acks")
        seen = [link.status()["target"]]
        await c1.receive(p1)  # the first comes back
        await until(lambda: link.status()["target"] == f"tcp://127.0.0.1:{p1}", what="the way back")
        seen.append(link.status()["target"])
        await edge.harness.context.sink.write(rows(2000, 2000))
        await until(lambda: link.cursor.acked >= 4000, what="the first target's acks")
        await edge.close()
        await c1.close()
        await c2.close()
        return edge.held(), c1.held(), c2.held(), seen + [f"tcp://127.0.0.1:{p2}", f"tcp://127.0.0.1:{p1}"]

    edge_held, c1_held, c2_held, seen = asyncio.run(main())
    assert seen[:2] == seen[2:]  # on the second target, then back on the first
    for held in (c1_held, c2_held):
        assert len(held) == len(set(held))
    assert sorted(set(c1_held) | set(c2_held), key=lambda r: r[1]) == edge_held
    assert len(c2_held) >= 2000 and len(c1_held) >= 2000


def test_records_dropped_unacknowledged_are_counted_and_said_in_the_spool(tmp_path: Path) -> None:
    """on_full = "drop_oldest" with a destination that never acknowledges:
    the spool counts what retention dropped, and a record says it."""
    async def main() -> tuple[int, list]:
        edge = Node(tmp_path / "edge", "web-1")
        edge.open()
        spool = edge.spool
        spool.segment_bytes, spool.max_bytes, spool.on_full = 20_000, 60_000, "drop_oldest"
        await edge.forward([f"tcp://127.0.0.1:{free_port()}"])  # nobody listens there
        drops = DropReport(spool, edge.harness.context)
        for i in range(0, 40_000, 500):
            await edge.harness.context.sink.write(rows(i, 500))
        await edge.harness.writer.flush()
        said = drops.check()
        assert drops.check() == 0  # said once
        dropped = spool.dropped_records
        await edge.harness.writer.flush()
        await edge.close()
        notices = [r for r in SpoolReader.open(edge.harness.spool_dir, edge.harness.directory / "spool.key")
                   .records() if r[1].source == "hostlog"]
        return said, dropped, notices

    said, dropped, notices = asyncio.run(main())
    assert dropped > 10_000 and said == dropped
    assert len(notices) == 1 and f"retention dropped {dropped} records" in notices[0][1].msg
    assert notices[0][1].fields["DROPPED"] == str(dropped)


def test_frames_are_sent_as_the_spool_holds_them(tmp_path: Path) -> None:
    """A chunk on the wire is the frame's compressed payload, byte for byte."""
    async def main() -> tuple[bytes, bytes]:
        edge = Node(tmp_path / "edge", "web-1")
        edge.open()
        await edge.harness.context.sink.write(rows(0, 100))
        await edge.harness.writer.flush()
        frames = edge.reader().frames()
        seg, entry = next(frames)
        on_disk = seg.read_compressed(entry)
        frames.close()
        chunks, reached = ChunkSource(edge.reader(), edge.spool.agent_id).read(
            0, 100, max_frames=8, max_bytes=1 << 20)
        await edge.close()
        assert reached == 100 and len(chunks) == 1
        return on_disk, chunks[0][0].data

    on_disk, sent = asyncio.run(main())
    assert on_disk == sent



@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_over_tls_only_a_certificate_of_the_ca_with_client_auth_gets_in(tmp_path: Path, caplog, loop: str) -> None:
    """Mutual TLS: the edge's certificate is accepted and its records stored;
    a certificate of another CA, an expired one, one without the clientAuth
    usage and none at all are refused before anything is read, each logged
    with its reason and counted. On asyncio's loop and on uvloop (the
    agent's): they differ in how a handshake starts."""
    pki = make_test_pki(tmp_path / "pki")

    async def main() -> tuple[dict, list, dict]:
        port = free_port()
        central = Node(tmp_path / "central", "central")
        central.open()
        await central.receive(port, Tls(ca=pki["ca"], cert=pki["server"], key=pki["server_key"]))
        refused = {}
        for bad in ("other_ca", "expired", "no_eku", "server_only", None):
            edge = Node(tmp_path / f"edge-{bad}", f"edge-{bad}")
            edge.open()
            await edge.harness.context.sink.write(rows(0, 10, host=f"edge-{bad}"))
            tls = Tls(ca=pki["ca"], cert=pki[bad] if bad else None, key=pki[f"{bad}_key"] if bad else None)
            before = central.receiver.stats.refused
            dest = await edge.forward([f"tls://localhost:{port}"], tls=tls)
            await until(lambda before=before: central.receiver.stats.refused > before, what=f"{bad} refused")
            refused[bad] = dest.links[0].status()
            await edge.close()
        good = Node(tmp_path / "edge", "web-1")
        good.open()
        await good.harness.context.sink.write(rows(0, 100))
        await good.forward([f"tls://localhost:{port}"],
                           tls=Tls(ca=pki["ca"], cert=pki["client"], key=pki["client_key"]))
        await until(lambda: good.dest.links[0].cursor.acked >= 100, what="the good edge acked")
        status = central.receiver.status()
        await good.close()
        await central.close()
        return refused, central.held(), status

    with caplog.at_level("WARNING", logger="hostlog.receiver"):
        if loop == "uvloop":
            uvloop = pytest.importorskip("uvloop") if not IN_CI else __import__("uvloop")
            refused, held, status = uvloop.run(main())
        else:
            refused, held, status = asyncio.run(main())
    assert [h for _, _, h in held] == [f"line {i}" for i in range(100)]  # only the good edge's
    assert status["refused"] == 5 and status["records"] == 100
    for bad, link in refused.items():
        assert link["acked_seq"] == 0 and not link["connected"], (bad, link)
    reasons = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(reasons) == 5, reasons
    assert any("clientAuth" in r or "extended key usage" in r.lower() for r in reasons), reasons
    assert any("certificate" in r.lower() for r in reasons), reasons


def test_a_damaged_frame_is_reported_skipped_and_the_rest_arrives(tmp_path: Path, caplog) -> None:
    async def main() -> tuple[list, list, int, int]:
        port = free_port()
        edge, central = Node(tmp_path / "edge", "web-1"), Node(tmp_path / "central", "central")
        edge.open()
        central.open()
        for i in range(3):  # three frames of 100
            await edge.harness.context.sink.write(rows(i * 100, 100))
            await edge.harness.writer.flush()
        frames = edge.reader().frames()
        entries = [entry for _, entry in frames]
        frames.close()
        assert [e.first_seq for e in entries] == [1, 101, 201]
        segment = next((edge.spool.directory / "segments").iterdir())
        with open(segment, "r+b") as f:  # a flipped bit in the second frame's payload
            f.seek(entries[1].offset + entries[1].size - 20)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0x10]))
        await central.receive(port)
        dest = await edge.forward([f"tcp://127.0.0.1:{port}"])
        await until(lambda: dest.links[0].cursor.acked >= 300, what="the cursor past the damage")
        damaged = dest.links[0].source.damaged_records
        lag = dest.status()["links"][0]["lag_records"]
        await edge.close()
        await central.close()
        return edge.held(), central.held(), damaged, lag

    with caplog.at_level("ERROR", logger="hostlog.forward"):
        edge_held, central_held, damaged, lag = asyncio.run(main())
    assert damaged == 100 and lag == 0
    assert [s for _, s, _ in central_held] == list(range(1, 101)) + list(range(201, 301))
    assert [r for r in edge_held] == [r for r in central_held]  # the edge cannot read it either
    assert any("damaged frame" in r.getMessage() for r in caplog.records)
