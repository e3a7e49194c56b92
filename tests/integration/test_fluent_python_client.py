"""The Fluent Forward input (``[[source]] type = "forward"``) with a second real
client: the Python ``fluent-logger`` package (PyPI; in the test extra).

Its three ways of sending: ``fluent.sender.FluentSender`` (blocking, one
socket write per event), ``fluent.asyncsender.FluentSender`` (a queue and a
sending thread) and the logging handlers ``fluent.handler.FluentHandler`` and
``fluent.asynchandler.FluentHandler``, with int, float and EventTime times.
Every record must arrive exactly once, the tag as the record's app
(``SYSLOG_IDENTIFIER`` in ``hostlog query -o json``), its keys as fields.

No ack mode here: fluent-logger (0.11.1, and every release before it) speaks
Message mode only, ``[tag, time, record]`` without an option map, and has no
``require_ack`` or ``chunk``: it never asks for an ack, so the input sends
none. Acks are checked with the npm client in test_fluent_input.py. What this
client does instead is keep what it could not send and send it with its next
event: a test restarts the input in the middle.

The in-process tests run on asyncio and on uvloop (the client runs on a
thread); one test runs a real ``hostlog agent`` and reads it back with
``hostlog query``. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from fluent import asynchandler, asyncsender, handler, sender

from hostlog.collectors.fluent.collector import FluentCollector
from hostlog.config import parse_config
from hostlog.record import Record
from tests.agentproc import AgentProcess, free_port, wait_for
from tests.conftest import need
from tests.integration.helpers import SpoolHarness, wait_until

try:
    import uvloop
except ImportError:  # optional in the agent too
    uvloop = None

Run = Callable[[Coroutine[Any, Any, Any]], Any]
T0 = 1_700_000_000  # event times, in seconds


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a test's coroutine on the loop of the parameter, at most 90 s."""
    if request.param == "uvloop":
        need(uvloop is not None, "uvloop (a dependency of hostlog)")
    runner = uvloop.run if request.param == "uvloop" else asyncio.run
    return lambda coro: runner(asyncio.wait_for(coro, 90))


def source(port: int) -> Any:
    config = parse_config(f'[[source]]\ntype = "forward"\nname = "fw"\nlisten = ["tcp://127.0.0.1:{port}"]\n')
    return config.sources[0]


async def until_stored(harness: SpoolHarness, n: int, timeout: float = 30.0) -> list[Record]:
    """The spool's forward records once it holds ``n`` of them (counted by the writer)."""
    assert harness.writer is not None
    writer = harness.writer
    await wait_until(lambda: writer.stats.records >= n and writer.durable_seq >= n, timeout,
                     f"{n} records in the spool")
    return harness.records("forward")


def once_each(records: list[Record], n: int) -> dict[int, Record]:
    """Records by their ``n`` field; fails unless 0 .. n-1 each came exactly once."""
    counts = collections.Counter(int(r.fields["n"]) for r in records)
    repeated = [k for k, c in counts.items() if c > 1]
    assert not repeated, f"{len(repeated)} records twice, e.g. {repeated[:5]}"
    assert sorted(counts) == list(range(n)), f"{n - len(counts)} records missing"
    return {int(r.fields["n"]): r for r in records}


# -- fluent.sender ------------------------------------------------------------------------------

def test_the_blocking_sender_each_record_once_with_its_tag_time_and_fields(tmp_path: Path, run: Run) -> None:
    n = 3000

    def send(port: int) -> None:
        # three senders on three connections: EventTime (nanosecond_precision),
        # int seconds, and float seconds as this client sends them by default
        ns = sender.FluentSender("app", host="127.0.0.1", port=port, nanosecond_precision=True)
        plain = sender.FluentSender("app", host="127.0.0.1", port=port)
        bare = sender.FluentSender("", host="127.0.0.1", port=port)  # the label alone is the tag
        try:
            for i in range(n):
                data: dict[str, Any] = {"message": f"event {i}", "n": i, "user": "jürgen", "ok": i % 2 == 0,
                                        "ratio": 0.5, "none": None, "tags": ["a", i], "ctx": {"k": i},
                                        "raw": b"\x00\xff"}
                kind = i % 3
                if kind == 0:
                    assert ns.emit_with_time("web", sender.EventTime(T0 + i, 123_456_789), data)
                elif kind == 1:
                    assert plain.emit_with_time("db", T0 + i, data)
                else:
                    assert bare.emit_with_time("worker", T0 + i + 0.25, data)
            assert ns.last_error is None and plain.last_error is None and bare.last_error is None
        finally:
            for s in (ns, plain, bare):
                s.close()

    async def main() -> list[Record]:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        collector = FluentCollector(source(port), harness.open())
        await collector.start()
        try:
            await asyncio.to_thread(send, port)
            return await until_stored(harness, n)
        finally:
            await collector.stop()
            await harness.close()

    by_n = once_each(run(main()), n)
    for i, record in by_n.items():
        kind = i % 3
        app, ts = [("app.web", (T0 + i) * 10**9 + 123_456_789), ("app.db", (T0 + i) * 10**9),
                   ("worker", (T0 + i) * 10**9 + 250_000_000)][kind]
        assert (record.app, record.ts, record.source, record.host) == (app, ts, "forward", "127.0.0.1"), i
        assert record.msg == f"event {i}" and record.severity == 6
        assert record.fields == {"n": str(i), "user": "jürgen", "ok": "true" if i % 2 == 0 else "false",
                                 "ratio": "0.5", "none": "null", "tags": f'["a",{i}]', "ctx": f'{{"k":{i}}}',
                                 "raw": b"\x00\xff"}, i


def test_what_the_sender_could_not_send_while_the_input_was_down_comes_once_after(
        tmp_path: Path, run: Run) -> None:
    """The blocking sender keeps what a failed write did not send (``bufmax``)
    and sends it before its next event: the input restarted in the middle on
    the same port, every event arrives once. (Events written in the moment
    the input closes the connection are lost with this client, which asks
    for no ack: the kernel drops what nobody read. So the test lets the close
    finish before the client sends again; a client with acks resends them.)"""

    async def main() -> tuple[list[Record], list[bool]]:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        context = harness.open()
        client = sender.FluentSender("app", host="127.0.0.1", port=port, nanosecond_precision=True)
        results: list[bool] = []

        def emit(first: int, count: int) -> None:
            for i in range(first, first + count):
                results.append(client.emit("svc", {"message": f"m{i}", "n": i}))

        collector = FluentCollector(source(port), context)
        await collector.start()
        try:
            await asyncio.to_thread(emit, 0, 100)
            await until_stored(harness, 100)
            await collector.stop()
            stopped = collector
            await wait_until(lambda: not stopped.connections, 10, "the connection closed")
            await asyncio.to_thread(emit, 100, 50)  # nobody listens: kept by the client
            collector = FluentCollector(source(port), context)
            await collector.start()
            await asyncio.to_thread(emit, 150, 100)  # the kept ones first, then these
            return await until_stored(harness, 250), results
        finally:
            await asyncio.to_thread(client.close)
            await collector.stop()
            await harness.close()

    records, results = run(main())
    by_n = once_each(records, 250)
    assert all(results[:100]) and all(results[150:])
    assert not any(results[100:150])  # it said so: not sent (yet)
    assert [by_n[i].msg for i in range(250)] == [f"m{i}" for i in range(250)]
    # what it kept went first, on the new connection, in order
    assert [r.fields["n"] for r in records] == [str(i) for i in range(250)]


# -- fluent.asyncsender -------------------------------------------------------------------------

def test_the_async_sender_delivers_all_it_queued_once(tmp_path: Path, run: Run) -> None:
    n = 5000

    def send(port: int) -> None:
        client = asyncsender.FluentSender("queue", host="127.0.0.1", port=port, nanosecond_precision=True,
                                          queue_maxsize=n)
        try:
            for i in range(n):
                assert client.emit_with_time("jobs", sender.EventTime(T0, i), {"message": f"job {i}", "n": i})
        finally:
            client.close(flush=True)  # the thread sends what is queued, then stops

    async def main() -> list[Record]:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        collector = FluentCollector(source(port), harness.open())
        await collector.start()
        try:
            await asyncio.to_thread(send, port)
            return await until_stored(harness, n)
        finally:
            await collector.stop()
            await harness.close()

    by_n = once_each(run(main()), n)
    assert all(r.app == "queue.jobs" and r.ts == T0 * 10**9 + i and r.msg == f"job {i}"
               and r.fields == {"n": str(i)} for i, r in by_n.items())


# -- fluent.handler and fluent.asynchandler (logging) --------------------------------------------

LEVELS = [(logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3),
          (logging.CRITICAL, 2)]


@pytest.mark.parametrize("module", [handler, asynchandler], ids=["handler", "asynchandler"])
def test_the_logging_handlers_level_as_severity_and_the_formatter_keys_as_fields(
        tmp_path: Path, run: Run, module: Any) -> None:
    n = 1000
    name = f"hostlog.test.fluent.{uuid.uuid4().hex[:8]}"

    def log_all(port: int) -> None:
        h = module.FluentHandler("py", host="127.0.0.1", port=port, nanosecond_precision=True)
        h.setFormatter(handler.FluentRecordFormatter({"level": "%(levelname)s", "logger": "%(name)s",
                                                      "where": "%(funcName)s"}))
        logger = logging.getLogger(name)
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(h)
        try:
            for i in range(n):
                level = LEVELS[i % len(LEVELS)][0]
                if i % 2:
                    logger.log(level, "line %d of %s", i, "the test", extra={"ignored": True})
                else:  # a dict message: merged into the record, "message" and all
                    logger.log(level, {"message": f"dict {i}", "n": i, "order": {"id": i}})
        finally:
            logger.removeHandler(h)
            h.close()  # (the async one sends what it queued first)

    async def main() -> list[Record]:
        port = free_port()
        harness = SpoolHarness(tmp_path)
        collector = FluentCollector(source(port), harness.open())
        await collector.start()
        try:
            await asyncio.to_thread(log_all, port)
            return await until_stored(harness, n)
        finally:
            await collector.stop()
            await harness.close()

    records = run(main())
    assert len(records) == n
    by_msg = collections.Counter(r.msg for r in records)
    assert max(by_msg.values()) == 1
    for r in records:
        assert r.app == "py" and r.source == "forward"
        assert r.fields["logger"] == name and r.fields["where"] == "log_all"
        assert "level" not in r.fields  # taken as the severity
    want = {}
    for i in range(n):
        severity = LEVELS[i % len(LEVELS)][1]
        if i % 2:
            want[f"line {i} of the test"] = (severity, None)
        else:
            want[f"dict {i}"] = (severity, i)
    got = {r.msg: (r.severity, int(r.fields["n"]) if "n" in r.fields else None) for r in records}
    assert got == want
    assert all(r.fields.get("order") == f'{{"id":{r.fields["n"]}}}' for r in records if "n" in r.fields)


# -- a real agent, read back with hostlog query ---------------------------------------------------

def test_a_real_agent_shows_the_tag_as_syslog_identifier_and_the_keys_as_fields(tmp_path: Path) -> None:
    port = free_port()
    agent = AgentProcess(tmp_path, f"""
[agent]
hostname = "central-1"
state_dir = "{tmp_path}/state"

[[source]]
type = "forward"
name = "fw"
listen = ["tcp://127.0.0.1:{port}"]
""")
    agent.start()
    try:
        client = sender.FluentSender("billing", host="127.0.0.1", port=port, nanosecond_precision=True)
        try:
            for i in range(200):
                assert client.emit_with_time("invoice", sender.EventTime(T0 + i, 0),
                                             {"message": f"invoice {i}", "n": i, "amount": 12.5,
                                              "customer": "ACME", "level": "warning" if i % 2 else "info"})
        finally:
            client.close()
        wait_for(lambda: agent.metrics().get("hostlog_spool_records_written_total", 0) >= 200, timeout=30,
                 what="200 records written by the agent")
        rows = agent.query_json("-t", "billing.invoice")
    finally:
        agent.stop()
    assert sorted(int(r["n"]) for r in rows) == list(range(200))
    for r in rows:
        i = int(r["n"])
        assert r["SYSLOG_IDENTIFIER"] == "billing.invoice"
        assert r["MESSAGE"] == f"invoice {i}"
        assert (r["amount"], r["customer"]) == ("12.5", "ACME")
        assert r["PRIORITY"] == ("4" if i % 2 else "6")
        assert r["__REALTIME_TIMESTAMP"] == str((T0 + i) * 10**6)
        assert r["_HOSTLOG_SOURCE"] == "forward" and "level" not in r
