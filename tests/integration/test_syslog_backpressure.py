"""When the spool cannot take more, TCP readers stop reading; UDP drops are counted."""

import asyncio
import socket
from types import SimpleNamespace

from hostlog.collectors.base import CollectorContext
from hostlog.collectors.events import Counted
from hostlog.collectors.syslog.collector import SyslogCollector
from hostlog.config import parse_config
from tests.agentproc import free_port


class GateSink:
    """A sink with room only while the gate is open (a full spool when closed)."""

    def __init__(self):
        self.records = []
        self.gate = asyncio.Event()

    def has_room(self):
        return self.gate.is_set()

    async def wait_room(self):
        await self.gate.wait()

    def submit(self, batch, on_durable=None):
        self.records.extend(batch)

    async def write(self, batch, on_durable=None):
        await self.wait_room()
        self.submit(batch)

    def write_nowait(self, batch, on_durable=None):
        if not self.has_room():
            return False
        self.submit(batch)
        return True


def source(port):
    cfg = parse_config(f'[[source]]\ntype = "syslog"\nlisten = ["tcp://127.0.0.1:{port}", '
                       f'"udp://127.0.0.1:{port}"]\n')
    return cfg.sources[0]


async def _tcp_reader_pauses_and_resumes():
    port = free_port()
    sink = GateSink()
    ctx = CollectorContext(hostname="h", sink=sink, checkpoints=SimpleNamespace())
    collector = SyslogCollector(source(port), ctx)
    await collector.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        line = b"<13>1 - h app - - - " + b"y" * 200 + b"\n"
        total = 20_000  # ~4.4 MB: far more than socket buffers hold
        async def send():
            for _ in range(total // 100):
                writer.write(line * 100)
                await writer.drain()
        sender = asyncio.create_task(send())
        await asyncio.sleep(1.0)
        (conn,) = collector.connections
        assert conn.paused  # the reader stopped after the first batch
        assert len(sink.records) < total
        assert not sender.done()  # and the sender is held back by TCP flow control
        sink.gate.set()
        await asyncio.wait_for(sender, 30)
        writer.close()
        for _ in range(300):
            if len(sink.records) >= total:
                break
            await asyncio.sleep(0.05)
        assert len(sink.records) == total  # nothing lost, nothing doubled
        # UDP cannot be slowed: a full sink drops and counts
        sink.gate.clear()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            for _ in range(5):
                u.sendto(b"<13>1 - h app - - - dropped", ("127.0.0.1", port))
        for _ in range(100):
            if ctx.counters.get((collector.name, Counted.DROPPED), 0) >= 5:
                break
            await asyncio.sleep(0.05)
        assert ctx.counters[(collector.name, Counted.DROPPED)] == 5
    finally:
        await collector.stop()


def test_tcp_reader_pauses_while_the_sink_is_full_and_resumes_losing_nothing():
    asyncio.run(_tcp_reader_pauses_and_resumes())
