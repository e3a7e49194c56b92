"""The agent as a user runs it: real process, real logger, real signals."""

import shutil
import signal
import subprocess

import pytest

from tests.agentproc import AgentProcess, free_port, wait_for
from tests.conftest import need


def logger(*args: str) -> None:
    need(shutil.which("logger") is not None, "logger (util-linux)")
    subprocess.run(["logger", *args], check=True, timeout=60)


def config(tmp_path, port, extra=""):
    return f"""
[agent]
hostname = "test-host"
state_dir = "{tmp_path}/state"

[spool]
fsync = "batch"
fsync_interval = "20ms"

[[source]]
type = "syslog"
name = "syslog"
listen = ["udp://127.0.0.1:{port}", "tcp://127.0.0.1:{port}"]
{extra}
"""


@pytest.fixture
def agent(tmp_path):
    port = free_port()
    a = AgentProcess(tmp_path, config(tmp_path, port))
    a.port = port
    a.start()
    yield a
    a.stop(signal.SIGKILL)


def test_logger_lines_over_tcp_and_udp_are_queryable(agent):
    logger("--tcp", "-i", "--server", "127.0.0.1", "--port", str(agent.port), "-t", "webapp",
           "-p", "user.warning", "hello over tcp")
    logger("--udp", "--server", "127.0.0.1", "--port", str(agent.port), "-t", "dbapp",
           "-p", "local3.err", "hello over udp")
    logger("--tcp", "--octet-count", "--server", "127.0.0.1", "--port", str(agent.port),
           "-t", "octets", "--rfc5424", "hello octet counted")
    rows = wait_for(lambda: (r := agent.query_json()) and len(r) >= 3 and r, what="3 records")
    by_msg = {r["MESSAGE"]: r for r in rows}
    tcp, udp, octet = by_msg["hello over tcp"], by_msg["hello over udp"], by_msg["hello octet counted"]
    assert (tcp["SYSLOG_IDENTIFIER"], tcp["PRIORITY"], tcp["SYSLOG_FACILITY"]) == ("webapp", "4", "1")
    assert (udp["SYSLOG_IDENTIFIER"], udp["PRIORITY"], udp["SYSLOG_FACILITY"]) == ("dbapp", "3", "19")
    assert octet["SYSLOG_IDENTIFIER"] == "octets"
    assert int(tcp["_PID"]) > 0 and tcp["_HOSTNAME"]
    # the short format, as journalctl prints it
    short = agent.hostlog("query", "-n", "10", "--no-pager").stdout.decode()
    assert "webapp[" in short and "hello over tcp" in short
    # -u and -p select
    assert [r["MESSAGE"] for r in agent.query_json("-u", "dbapp")] == ["hello over udp"]
    assert {r["MESSAGE"] for r in agent.query_json("-p", "warning")} == {"hello over tcp", "hello over udp"}


def test_sigterm_drains_and_stops_cleanly(agent):
    logger("--tcp", "--server", "127.0.0.1", "--port", str(agent.port), "before stop")
    wait_for(lambda: agent.query_json(), what="the record")
    assert agent.stop(signal.SIGTERM) == 0
    assert "stopped: spool closed" in agent.log_text()
    assert agent.hostlog("spool", "verify").returncode == 0


def test_sighup_reload_starts_a_new_listener(agent, tmp_path):
    port2 = free_port()
    agent.config.write_text(config(tmp_path, agent.port, f"""
[[source]]
type = "syslog"
name = "second"
listen = ["tcp://127.0.0.1:{port2}"]
"""))
    agent.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reloaded: 2 sources" in agent.log_text(), what="reload")
    logger("--tcp", "--server", "127.0.0.1", "--port", str(port2), "-t", "second", "via reload")
    rows = wait_for(lambda: agent.query_json("-t", "second"), what="the record")
    assert rows[0]["MESSAGE"] == "via reload"
    # a config that does not validate is refused and the agent keeps running
    agent.config.write_text("[spool]\nmax_bytes = \"lots\"\n")
    agent.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in agent.log_text(), what="refusal")
    assert agent.proc.poll() is None


def test_kill_9_while_100k_lines_arrive_loses_nothing_accepted_and_duplicates_nothing(agent, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"line {i:06d}\n" for i in range(100_000)))
    need(shutil.which("logger") is not None, "logger (util-linux)")
    sender = subprocess.Popen(["logger", "--tcp", "--server", "127.0.0.1", "--port",
                               str(agent.port), "-t", "flood", "-f", str(lines)])
    try:
        # kill once a good share has been accepted, while logger still sends
        wait_for(lambda: "records" in agent.hostlog("spool", "stats").stdout.decode()
                 and _records(agent) > 20_000, timeout=60, interval=0.2, what="20k records")
        seen_before = {r["MESSAGE"] for r in agent.query_json("-t", "flood")}
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(timeout=10)
    finally:
        sender.kill()
        sender.wait()
    agent.start()
    verify = agent.hostlog("spool", "verify")
    assert b"OK" in verify.stdout
    after = [r["MESSAGE"] for r in agent.query_json("-t", "flood")]
    assert len(after) == len(set(after)), "a line appears twice"
    assert seen_before <= set(after), "a line the spool had accepted was lost"
    numbers = [int(m.split()[1]) for m in after]
    assert numbers == sorted(numbers) and numbers[0] == 0  # in order, from the first
    assert len(after) >= 20_000


def _records(agent) -> int:
    for line in agent.hostlog("spool", "stats").stdout.decode().splitlines():
        if line.startswith("records:"):
            return int(line.split()[1])
    return 0
