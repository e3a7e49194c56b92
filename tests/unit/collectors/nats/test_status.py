"""The NATS input's status: what it says while no server answers (it must not
hold up the agent's start), what ``forwarding.status`` and the metrics make
of it. No nats-server here: tests/integration/test_nats.py and
tests/e2e/test_nats_kill9.py run the real one."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from hostlog.agent.forwarding import input_status, status
from hostlog.agent.metrics import Metrics, Readers
from hostlog.collectors.base import CollectorContext
from hostlog.collectors.nats.collector import NatsCollector, _Taken
from hostlog.config.sources import NatsSource
from hostlog.record import Batch, OnDurable


class NullSink:
    """Takes nothing: nothing is delivered without a server."""

    def has_room(self) -> bool:
        return True

    async def wait_room(self) -> None:
        return None

    async def write(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        raise AssertionError("nothing to write without a server")

    def submit(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        raise AssertionError("nothing to write without a server")


class NoCheckpoints:
    def load(self, name: str) -> Any:
        return None

    def save(self, name: str, value: Any) -> None:
        raise AssertionError("the NATS input keeps its own state file")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def collector(tmp_path: Path, servers: list[str]) -> NatsCollector:
    context = CollectorContext(hostname="central-1", sink=NullSink(), checkpoints=NoCheckpoints())  # type: ignore[arg-type]
    return NatsCollector(NatsSource(name="js-in", servers=servers), context,
                         state_path=tmp_path / "nats-js-in.json", accepted_seq=lambda: 0)


def test_start_returns_while_no_server_answers_and_status_says_why(tmp_path: Path) -> None:
    async def main() -> tuple[float, dict[str, Any], float]:
        c = collector(tmp_path, [f"nats://127.0.0.1:{closed_port()}"])
        t0 = time.monotonic()
        await asyncio.wait_for(c.start(), 5)
        started = time.monotonic() - t0
        deadline = time.monotonic() + 10
        while not c.status()["errors"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        shown = c.status()
        t0 = time.monotonic()
        await asyncio.wait_for(c.stop(), 10)
        return started, shown, time.monotonic() - t0

    started, shown, stopped = asyncio.run(main())
    assert started < 2.0 and stopped < 5.0
    assert shown["connected"] is False and shown["server"] is None
    assert shown["errors"] >= 1
    assert shown["last_error"].startswith("connection: ") and "111" in shown["last_error"]  # ECONNREFUSED
    assert (shown["name"], shown["type"], shown["stream"], shown["durable"], shown["subject"]) == \
        ("js-in", "nats", "HOSTLOG", "hostlog", "hostlog.>")
    assert shown["records"] == shown["acked"] == shown["awaiting_durability"] == 0
    assert shown["consumer"] is None and shown["origins"] == {}


def test_it_tries_again_without_end_and_logs_a_reason_once(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Each failed attempt counts; the reason is the same, so the log has it once."""
    caplog.set_level(logging.INFO, logger="hostlog.collectors.nats")

    async def main() -> int:
        c = collector(tmp_path, [f"nats://127.0.0.1:{closed_port()}"])
        await c.start()
        deadline = time.monotonic() + 10
        while c.status()["errors"] < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await c.stop()
        return int(c.status()["errors"])

    assert asyncio.run(main()) >= 3
    said = [r for r in caplog.records if r.levelno == logging.WARNING and "connection:" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]


NATS_STATUS = {
    "name": "js-in", "type": "nats", "servers": ["nats://n1:4222"], "server": "nats://n1:4222",
    "connected": True, "stream": "HOSTLOG", "durable": "hostlog", "subject": "hostlog.>",
    "messages": 12, "acked": 10, "records": 5000, "duplicates": 40, "held_back": 2, "redeliveries": 3,
    "bad_messages": 1, "errors": 4, "awaiting_durability": 1, "last_error": "",
    "origins": {"a" * 32: 5040}, "consumer": {"pending": 7, "ack_pending": 2, "redelivered": 1,
                                               "waiting": 1, "ack_floor": 9, "at": 1.0},
}


class FakeCollector:
    def __init__(self, report: dict[str, Any] | None) -> None:
        self.report = report

    def status(self) -> dict[str, Any]:
        assert self.report is not None
        return self.report


class Agent:
    """What forwarding.status reads of the agent: its collectors (and no forwarding)."""

    def __init__(self, collectors: dict[str, Any]) -> None:
        self.collectors = collectors
        self.forwarding = None


def test_forwarding_status_lists_the_collectors_that_report_status() -> None:
    agent = Agent({"syslog": (None, object()), "js-in": (None, FakeCollector(NATS_STATUS)),
                   "a-first": (None, FakeCollector({"name": "a-first", "type": "other"}))})
    assert [i["name"] for i in input_status(agent)] == ["a-first", "js-in"]
    assert status(agent) == {"forward": [], "receiver": None, "inputs": input_status(agent)}


def test_metrics_of_the_nats_input() -> None:
    metrics = Metrics()
    other = dict(NATS_STATUS, name="js-2", consumer=None, connected=False)
    metrics.readers = Readers(inputs=lambda: [NATS_STATUS, other, {"name": "x", "type": "other"}])
    text = generate_latest(metrics.registry).decode()
    samples = {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
               for line in text.splitlines() if line.startswith("hostlog_nats_")}
    want = {
        'hostlog_nats_connected{source="js-in"}': 1, 'hostlog_nats_connected{source="js-2"}': 0,
        'hostlog_nats_messages_total{source="js-in"}': 12, 'hostlog_nats_acked_total{source="js-in"}': 10,
        'hostlog_nats_records_total{source="js-in"}': 5000,
        'hostlog_nats_duplicates_total{source="js-in"}': 40,
        'hostlog_nats_held_back_total{source="js-in"}': 2,
        'hostlog_nats_redeliveries_total{source="js-in"}': 3,
        'hostlog_nats_bad_messages_total{source="js-in"}': 1, 'hostlog_nats_errors_total{source="js-in"}': 4,
        'hostlog_nats_awaiting_durability{source="js-in"}': 1,
        'hostlog_nats_consumer_pending{source="js-in"}': 7,
        'hostlog_nats_consumer_ack_pending{source="js-in"}': 2,
    }
    for key, value in want.items():
        assert samples.get(key) == value, (key, samples.get(key))
    # no consumer info yet for js-2: no made-up zero; nothing at all for a collector of another type
    assert 'hostlog_nats_consumer_pending{source="js-2"}' not in samples
    assert not any('source="x"' in key for key in samples)


class FakeMsg:
    """What the collector calls on a delivered message, counted."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def in_progress(self) -> None:
        self.calls.append("in_progress")

    async def ack(self) -> None:
        self.calls.append("ack")


def test_records_slow_to_sync_have_their_message_told_in_progress(tmp_path: Path) -> None:
    """A message whose records wait for the spool's sync longer than a third of
    the ack wait is told "in progress" (JetStream would deliver it again), once
    per third; one that just came is left alone."""
    async def main() -> tuple[list[str], list[str], int]:
        c = collector(tmp_path, ["nats://127.0.0.1:4222"])
        slow, fresh = FakeMsg(), FakeMsg()
        now = time.monotonic()
        c._pending[1] = _Taken(10, slow, now - c.ack_wait / 2)  # type: ignore[arg-type]
        c._pending[2] = _Taken(20, fresh, now)  # type: ignore[arg-type]
        c._keep_pending()
        c._keep_pending()  # (told once: its clock starts again)
        await asyncio.gather(*list(c._acks))
        return slow.calls, fresh.calls, c._rescan_from()

    slow, fresh, rescan = asyncio.run(main())
    assert slow == ["in_progress"] and fresh == []
    assert rescan == 10  # a rescan after a crash starts before the oldest not yet durable
