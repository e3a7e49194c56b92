"""The syslog collector's datagram listeners (UDP, unix) into a real spool.

Datagrams are read in batches (recvmmsg in the compiled helper, recvmsg in
Python without it: both paths run here), parsed per sender and stored; what
the kernel drops when the receive buffer is full is counted
(``<source>.dropped``) and said in a notice record, so that stored + dropped
== sent. Real sockets on loopback, a real spool and its writer, `logger` for
the unix socket; every wait bounded.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.collectors.base import CollectorContext
from hostlog.collectors.events import Counted
from hostlog.collectors.syslog import datagram as syslog_datagram
from hostlog.collectors.syslog.collector import SyslogCollector
from hostlog.collectors.syslog.datagram import kernel_drops
from hostlog.collectors.syslog.parse import parse_message
from hostlog.config import parse_config
from hostlog.record import Record
from tests.agentproc import free_port
from tests.conftest import need
from tests.integration.helpers import SpoolHarness, wait_until
from tests.unit.collectors.syslog.test_parse_batch import line_3164, line_5424


@pytest.fixture(params=["compiled", "python"])
def read_path(request, monkeypatch) -> str:
    """Each test runs with recvmmsg in C and with the Python fallback."""
    if request.param == "compiled":
        need(syslog_datagram._syslog5424 is not None,
             "hostlog.collectors.syslog._syslog5424 (the package built with a C compiler)")
    else:
        monkeypatch.setattr(syslog_datagram, "_syslog5424", None)
    return request.param


def source(listen: list[str], extra: str = ""):
    urls = ", ".join(f'"{u}"' for u in listen)
    cfg = parse_config(f'[[source]]\ntype = "syslog"\nname = "sl"\nlisten = [{urls}]\n{extra}')
    return cfg.sources[0]


def line(i: int, app: str = "app") -> bytes:
    return (b"<13>1 2024-05-01T10:00:%02d.%06dZ web-1 %s %d - - message %d"
            % (i // 1_000_000 % 60, i % 1_000_000, app.encode(), 1000 + i % 7, i))


def sender(host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


def syslog_records(harness: SpoolHarness) -> list[Record]:
    return harness.records("syslog")


def notices(harness: SpoolHarness) -> list[Record]:
    return harness.records("hostlog")


def test_every_datagram_is_stored_with_its_sender(tmp_path: Path, read_path: str) -> None:
    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        collector = SyslogCollector(source([f"udp://127.0.0.1:{port}"]), harness.open())
        await collector.start()
        a, b = sender("127.0.0.1"), sender("127.0.0.2")
        sent: list[tuple[str, bytes]] = []
        try:
            with a, b:
                for burst in range(20):  # 2,000 datagrams, a loop turn between bursts
                    for i in range(burst * 100, burst * 100 + 100):
                        s, peer = (b, "127.0.0.2") if i % 5 == 0 else (a, "127.0.0.1")
                        s.sendto(line(i), ("127.0.0.1", port))
                        sent.append((peer, line(i)))
                    await asyncio.sleep(0.005)
                await wait_until(lambda: len(syslog_records(harness)) >= len(sent), 20,
                                 "every datagram stored")
        finally:
            await collector.stop()
            await harness.close()
        got = syslog_records(harness)
        assert len(got) == len(sent)
        for peer in ("127.0.0.1", "127.0.0.2"):
            mine = [r for r in got if r.fields.get("peer") == peer]
            want = [parse_message(raw, received_ns=0, default_host="test-host", peer=peer)
                    for p, raw in sent if p == peer]
            # each sender's records in the order it sent them, read as parse_message reads them
            assert [(r.ts, r.msg, r.host, r.app, r.pid, r.severity, r.facility, r.fields)
                    for r in mine] == [(r.ts, r.msg, r.host, r.app, r.pid, r.severity, r.facility,
                                        r.fields) for r in want]
        assert not notices(harness)  # nothing dropped, nothing to say
        assert collector.context.counters.get(("sl", Counted.DROPPED), 0) == 0

    asyncio.run(main())


def test_kernel_drops_are_counted_and_noticed_so_stored_plus_dropped_is_sent(
        tmp_path: Path, read_path: str) -> None:
    """A receive buffer of 4 KiB and 300 datagrams sent while the loop cannot
    read: the kernel drops most of them. Every one is accounted for: stored,
    or counted in sl.dropped and said in a notice."""
    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        context = harness.open()
        collector = SyslogCollector(source([f"udp://127.0.0.1:{port}"]), context)
        await collector.start()
        (receiver,) = collector.datagram_receivers
        receiver.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent = 300  # (under the loopback's backlog of 1000: the drops happen at the socket)
        try:
            with sender() as tx:
                for i in range(sent):  # no await: the collector cannot read meanwhile
                    tx.sendto(line(i) + b" " + b"p" * 100, ("127.0.0.1", port))
            dropped_by_kernel = kernel_drops(receiver.sock)
            assert dropped_by_kernel is not None and 0 < dropped_by_kernel < sent
            await wait_until(lambda: notices(harness), 10, "the drop notice")
            stored = len(syslog_records(harness))
        finally:
            await collector.stop()
            await harness.close()
        dropped = context.counters[("sl", Counted.DROPPED)]
        assert dropped == dropped_by_kernel
        assert stored + dropped == sent
        (notice,) = notices(harness)
        assert notice.fields["dropped"] == str(dropped)
        assert notice.fields["reason"] == "kernel"
        assert notice.fields["listen"] == f"sl udp://127.0.0.1:{port}"
        assert notice.msg == (f"Dropped {dropped} datagrams on sl udp://127.0.0.1:{port} "
                              f"(syslog source sl): the socket's receive buffer was full")
        assert notice.severity == 4 and notice.app == "hostlog"

    asyncio.run(main())


def test_drops_seen_on_a_later_datagram_are_counted_once(tmp_path: Path, read_path: str) -> None:
    """After a flood, the next datagram carries the drop counter (SO_RXQ_OVFL):
    counted from it alone (the direct read of the counter is switched off
    here), and once, not again when the counter is read directly."""
    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        context = harness.open()
        collector = SyslogCollector(source([f"udp://127.0.0.1:{port}"]), context)
        await collector.start()
        (receiver,) = collector.datagram_receivers
        receiver.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        poll_drops = receiver.poll_drops
        receiver.poll_drops = lambda: None  # only the datagrams tell
        try:
            with sender() as tx:
                for i in range(200):
                    tx.sendto(line(i) + b" " + b"q" * 100, ("127.0.0.1", port))
                flood = kernel_drops(receiver.sock)
                await asyncio.sleep(0.05)  # the queued ones are read (they carry no news)
                tx.sendto(line(999), ("127.0.0.1", port))
                await wait_until(lambda: receiver.dropped, 5, "the counter on the next datagram")
                assert receiver.dropped == flood
                await wait_until(lambda: notices(harness), 10, "the drop notice")
                receiver.poll_drops = poll_drops
                receiver.poll_drops()  # the same counter read directly: no news
                assert receiver.dropped == flood
            stored = len(syslog_records(harness))
        finally:
            await collector.stop()
            await harness.close()
        assert context.counters[("sl", Counted.DROPPED)] == flood
        assert stored + flood == 201
        assert [n.fields["dropped"] for n in notices(harness)] == [str(flood)]

    asyncio.run(main())


def test_a_unix_datagram_socket_reads_logger(tmp_path: Path, read_path: str) -> None:
    need(shutil.which("logger") is not None, "logger (util-linux)")
    path = tmp_path / "dev-log"

    async def main() -> None:
        harness = SpoolHarness(tmp_path / "s")
        collector = SyslogCollector(source([f"unix://{path}"]), harness.open())
        await collector.start()
        try:
            for i in range(3):
                proc = await asyncio.create_subprocess_exec(
                    "logger", "--socket-errors=on", "-u", str(path), "-t", "myapp", "-p",
                    "user.err", f"hello {i}")
                assert await asyncio.wait_for(proc.wait(), 10) == 0
            await wait_until(lambda: len(syslog_records(harness)) >= 3, 10, "logger's lines")
        finally:
            await collector.stop()
            await harness.close()
        got = syslog_records(harness)
        assert [(r.app, r.msg, r.severity, r.facility) for r in got] == [
            ("myapp", f"hello {i}", 3, 1) for i in range(3)]
        assert all("peer" not in r.fields for r in got)  # a unix sender has no address
        assert not path.exists()  # the listener removes its socket

    asyncio.run(main())


def test_a_datagram_over_max_message_is_cut_and_marked(tmp_path: Path, read_path: str) -> None:
    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        collector = SyslogCollector(source([f"udp://127.0.0.1:{port}"], 'max_message = 480\n'),
                                    harness.open())
        await collector.start()
        try:
            with sender() as tx:
                tx.sendto(line(1) + b" " + b"L" * 1000, ("127.0.0.1", port))
                tx.sendto(line(2), ("127.0.0.1", port))
            await wait_until(lambda: len(syslog_records(harness)) >= 2, 10, "two records")
        finally:
            await collector.stop()
            await harness.close()
        long, short = syslog_records(harness)
        assert long.fields["truncated"] == "true"
        whole = parse_message(line(1) + b" " + b"L" * 1000, received_ns=0)
        assert whole.msg.startswith(long.msg) and len(long.msg) < len(whole.msg)
        assert short.msg == "message 2" and "truncated" not in short.fields

    asyncio.run(main())


def test_stop_takes_what_the_socket_already_holds(tmp_path: Path, read_path: str) -> None:
    async def main() -> None:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        collector = SyslogCollector(source([f"udp://127.0.0.1:{port}"]), harness.open())
        await collector.start()
        try:
            with sender() as tx:
                for i in range(50):  # no await: nothing is read before stop()
                    tx.sendto(line(i), ("127.0.0.1", port))
        finally:
            await collector.stop()
            await harness.close()
        assert len(syslog_records(harness)) == 50

    asyncio.run(main())


class GateSink:
    """A sink with room only while the gate is open (a full spool when closed)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.open = True

    def has_room(self) -> bool:
        return self.open

    async def wait_room(self) -> None:
        raise AssertionError("a datagram listener never waits")

    def submit(self, batch, on_durable=None) -> None:
        self.records.extend(batch)

    async def write(self, batch, on_durable=None) -> None:
        raise AssertionError("a datagram listener never waits")

    def write_nowait(self, batch, on_durable=None) -> bool:
        if not self.open:
            return False
        self.records.extend(batch)
        return True


def test_a_full_sink_drops_counts_and_says_so_once_it_has_room(read_path: str) -> None:
    async def main() -> None:
        port = free_port()
        sink = GateSink()
        context = CollectorContext(hostname="h", sink=sink, checkpoints=None)
        collector = SyslogCollector(source([f"udp://127.0.0.1:{port}"]), context)
        await collector.start()
        try:
            sink.open = False
            with sender() as tx:
                for i in range(5):
                    tx.sendto(line(i), ("127.0.0.1", port))
                await wait_until(lambda: context.counters.get(("sl", Counted.DROPPED), 0) >= 5, 10,
                                 "5 dropped")
                await asyncio.sleep(1.2)  # a notice that cannot be written waits
                sink.open = True
                await wait_until(lambda: [r for r in sink.records if r.source == "hostlog"], 5,
                                 "the notice")
                tx.sendto(line(9), ("127.0.0.1", port))
                await wait_until(lambda: [r for r in sink.records if r.source == "syslog"], 5,
                                 "the next datagram")
        finally:
            await collector.stop()
        assert context.counters[("sl", Counted.DROPPED)] == 5
        (notice,) = [r for r in sink.records if r.source == "hostlog"]
        assert notice.fields["dropped"] == "5" and notice.fields["reason"] == "spool_full"
        assert [r.msg for r in sink.records if r.source == "syslog"] == ["message 9"]

    asyncio.run(main())


# --- parsing a sender's block: the records parse_message gives --------------------------

@pytest.fixture(scope="module")
def offline_collector() -> SyslogCollector:
    context = CollectorContext(hostname="relay", sink=GateSink(), checkpoints=None)
    return SyslogCollector(source(["udp://127.0.0.1:9"]), context)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(line_5424(), line_3164(), st.binary(max_size=120)), max_size=40),
       st.sampled_from([None, "192.0.2.7"]), st.sampled_from([60, 65536]))
def test_a_block_of_datagrams_reads_as_parse_message_reads_each(
        offline_collector: SyslogCollector, datagrams: list[bytes], peer: str | None,
        slot: int) -> None:
    """What both read paths hand the parser (one sender's datagrams as one
    octet-counted block, those over the slot cut) gives, record for record,
    what parse_message gives for each datagram."""
    block = b"".join(b"%d %b" % (len(d[:slot]), d[:slot]) for d in datagrams)
    truncated = [i for i, d in enumerate(datagrams) if len(d) > slot]
    t0 = time.time_ns()
    got = offline_collector.parse_datagrams(block, truncated, peer, slot).records()
    t1 = time.time_ns()
    want = []
    for d in datagrams:
        rec = parse_message(d[:slot], received_ns=t0, default_host="relay", peer=peer)
        if len(d) > slot:
            rec.fields["truncated"] = "true"
        want.append(rec)
    # a record without a time of its own has the receive time: within the call
    assert all(t0 <= g.ts <= t1 if w.ts == t0 else g.ts == w.ts for g, w in zip(got, want))
    assert [(r.msg, r.host, r.app, r.pid, r.severity, r.facility, r.fields) for r in got] == \
        [(r.msg, r.host, r.app, r.pid, r.severity, r.facility, r.fields) for r in want]
