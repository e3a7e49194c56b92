"""The guard at the collectors' edge, with a real agent.

Metrics on and syslog over TCP once lost every record: the counting sink
failed on a Columns batch inside ``data_received``, the event loop closed the
connection and the agent ran on. These tests run the agent with metrics on
and check that every record is stored and counted, and that a sink that
fails stops the agent with a failure instead of losing data quietly.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

from hostlog.agent.agent import Agent
from hostlog.config import load_config
from tests.agentproc import HOSTLOG, AgentProcess, free_port, wait_for
from tests.conftest import need


def config(tmp: Path, port: int, metrics_port: int) -> str:
    return f"""
[agent]
hostname = "test-host"
state_dir = "{tmp}/state"

[spool]
fsync_interval = "20ms"

[[source]]
type = "syslog"
name = "syslog"
listen = ["tcp://127.0.0.1:{port}", "udp://127.0.0.1:{port}"]

[control]
socket = "{tmp}/control.sock"
metrics = "127.0.0.1:{metrics_port}"
"""


def metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_syslog_over_tcp_with_metrics_on_stores_and_counts_every_record(tmp_path):
    need(shutil.which("logger") is not None, "logger (util-linux)")
    port, metrics_port = free_port(), free_port()
    agent = AgentProcess(tmp_path, config(tmp_path, port, metrics_port))
    agent.start()
    try:
        lines = tmp_path / "lines.txt"
        lines.write_text("".join(f"line {i} of the tcp stream\n" for i in range(2000)))
        # RFC 5424 over TCP: the batch path that hands Columns to the sink
        subprocess.run(["logger", "--tcp", "--rfc5424", "--server", "127.0.0.1", "--port",
                        str(port), "-t", "tcpapp", "-f", str(lines)], check=True, timeout=60)
        # and a few RFC 3164 lines over UDP (the other parse path)
        for i in range(20):
            subprocess.run(["logger", "--udp", "--rfc3164", "--server", "127.0.0.1", "--port",
                            str(port), "-t", "udpapp", f"udp line {i}"], check=True, timeout=60)
        wait_for(lambda: metric(metrics_port, 'hostlog_records_in_total{source="syslog"}') >= 2020,
                 timeout=30, what="2020 records counted")
        rows = agent.query_json()
        tcp = [r for r in rows if r.get("SYSLOG_IDENTIFIER") == "tcpapp"]
        assert sorted(int(r["MESSAGE"].split()[1]) for r in tcp) == list(range(2000))
        assert len([r for r in rows if r.get("SYSLOG_IDENTIFIER") == "udpapp"]) == 20
        assert metric(metrics_port, 'hostlog_records_in_total{source="syslog"}') == 2020
        assert metric(metrics_port, "hostlog_spool_records_written_total") == len(rows)
    finally:
        assert agent.stop() == 0
    log = agent.log_text()
    assert "Fatal error" not in log and "Traceback" not in log and " ERROR " not in log, log


class BrokenWriterAgent(Agent):
    """An agent whose spool writer refuses batches once the agent is open."""

    async def open(self) -> None:
        await super().open()
        assert self.writer is not None

        def refuse(batch, on_durable=None):
            raise OSError("disk gone")
        self.writer.submit = refuse  # type: ignore[method-assign]


def test_a_batch_the_spool_does_not_take_stops_the_agent_with_a_failure(tmp_path, caplog):
    port, metrics_port = free_port(), free_port()
    path = tmp_path / "agent.toml"
    path.write_text(config(tmp_path, port, metrics_port))
    agent = BrokenWriterAgent(load_config(path), path)

    async def main() -> int:
        run = asyncio.ensure_future(agent.run())
        for _ in range(200):  # until the listener is up, at most 10 s
            if agent.collectors:
                break
            await asyncio.sleep(0.05)
        assert agent.collectors, "the syslog source did not start"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"<14>1 2024-05-01T10:00:00Z h app - - - one line\n")
        await writer.drain()
        code = await asyncio.wait_for(run, 30)
        writer.close()
        return code

    assert asyncio.run(main()) == 1
    assert agent.errors.counts[("syslog", "sink")] == 1
    assert isinstance(agent.failure, OSError)
    assert "stopping: a batch could not be kept" in caplog.text


def test_an_error_in_a_protocol_callback_reaching_the_event_loop_is_fatal(tmp_path, caplog):
    port, metrics_port = free_port(), free_port()
    path = tmp_path / "agent.toml"
    path.write_text(config(tmp_path, port, metrics_port))
    agent = Agent(load_config(path), path)

    async def main() -> int:
        run = asyncio.ensure_future(agent.run())
        for _ in range(200):
            if agent.collectors:
                break
            await asyncio.sleep(0.05)
        # what uvloop and asyncio hand the handler when data_received raises
        asyncio.get_running_loop().call_exception_handler({
            "message": "Fatal error: protocol.data_received() call failed.",
            "exception": TypeError("'Columns' object is not subscriptable"),
            "protocol": object(), "transport": object()})
        return await asyncio.wait_for(run, 30)

    assert asyncio.run(main()) == 1
    assert agent.errors.counts == {("agent", "event_loop"): 1}
    assert "Fatal error: protocol.data_received() call failed." in caplog.text


def test_an_error_outside_the_data_path_is_counted_and_the_agent_runs_on(tmp_path):
    port, metrics_port = free_port(), free_port()
    path = tmp_path / "agent.toml"
    path.write_text(config(tmp_path, port, metrics_port))
    agent = Agent(load_config(path), path)

    async def main() -> tuple[bool, int]:
        run = asyncio.ensure_future(agent.run())
        for _ in range(200):
            if agent.collectors:
                break
            await asyncio.sleep(0.05)
        asyncio.get_running_loop().call_exception_handler({
            "message": "Task exception was never retrieved",
            "exception": ValueError("a side task's bug")})
        await asyncio.sleep(0.3)
        still_running = not run.done()
        # it still takes records
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"<14>1 2024-05-01T10:00:00Z h app - - - after the error\n")
        await asyncio.sleep(0.3)
        agent.request_stop()
        return still_running, await asyncio.wait_for(run, 30)

    still_running, code = asyncio.run(main())
    assert still_running and code == 0
    assert agent.errors.counts == {("agent", "event_loop"): 1}
    res = subprocess.run([*HOSTLOG, "query", "-c", str(path),
                          "-o", "cat", "--no-pager"], capture_output=True, timeout=60)
    assert b"after the error" in res.stdout, res.stderr
