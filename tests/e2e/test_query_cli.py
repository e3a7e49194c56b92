"""`hostlog query` as a person runs it: follow, pager and colours on a terminal, lists."""

import os
import pty
import select
import signal
import subprocess
import time

import pytest

from tests.agentproc import HOSTLOG, AgentProcess, free_port, wait_for
from tests.e2e.test_agent import config, logger


@pytest.fixture
def agent(tmp_path):
    port = free_port()
    a = AgentProcess(tmp_path, config(tmp_path, port).replace(
        'fsync = "batch"', 'fsync = "batch"\nsegment_bytes = "64KiB"'))
    a.port = port
    a.start()
    yield a
    a.stop(signal.SIGKILL)


def send(agent, *msgs, tag="t", prio="user.info"):
    for m in msgs:
        logger("--tcp", "--server", "127.0.0.1", "--port", str(agent.port), "-t", tag, "-p", prio, m)


def read_until(fd, needle: bytes, timeout=15.0, *more: bytes) -> bytes:
    """Read ``fd`` until every needle has been seen (or the time is up)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while not all(n in buf for n in (needle, *more)) and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_follow_prints_new_records_across_segment_rotation(agent, tmp_path):
    send(agent, "before follow")
    wait_for(lambda: agent.query_json(), what="first record")
    proc = subprocess.Popen([*HOSTLOG, "query", "-c", str(agent.config), "-f", "-o", "cat"],
                            env=agent.env, stdout=subprocess.PIPE)
    try:
        assert b"before follow" in read_until(proc.stdout.fileno(), b"before follow")
        # enough incompressible lines to rotate 64 KiB segments several times
        lines = tmp_path / "many.txt"
        lines.write_text("".join(f"bulk {i} {os.urandom(40).hex()}\n" for i in range(3000)))
        logger("--tcp", "--server", "127.0.0.1", "--port", str(agent.port), "-t", "bulk", "-f", str(lines))
        send(agent, "after rotation")
        # two connections: the agent may store the second's line before the
        # end of the first's, so wait for both
        out = read_until(proc.stdout.fileno(), b"after rotation", 30, b"bulk 2999 ")
        assert b"after rotation" in out
        got = [line.split()[1] for line in out.splitlines() if line.startswith(b"bulk ")]
        assert got == [str(i).encode() for i in range(3000)]  # every one, once, in order
        stats = agent.hostlog("spool", "stats").stdout.decode()
        assert "sealed" in stats and " 0 sealed" not in stats
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_on_a_terminal_output_is_paged_and_coloured_by_priority(agent, tmp_path):
    send(agent, "an error happened", prio="user.err")
    send(agent, "a warning", prio="user.warning")
    send(agent, "just info", prio="user.info")
    wait_for(lambda: len(agent.query_json()) == 3, what="3 records")
    pager_log = tmp_path / "paged"
    env = dict(agent.env, PAGER=f"sh -c 'echo PAGER-RAN > {pager_log}; cat'")
    master, slave = pty.openpty()
    proc = subprocess.Popen([*HOSTLOG, "query", "-c", str(agent.config)], env=env,
                            stdout=slave, stderr=slave)
    os.close(slave)
    try:
        out = read_until(master, b"just info")
    finally:
        proc.wait(timeout=20)
        os.close(master)
    assert pager_log.read_text().strip() == "PAGER-RAN"
    assert b"\x1b[0;1;31man error happened\x1b[0m" in out  # err: bold red
    assert b"\x1b[0;1;38;5;185ma warning\x1b[0m" in out  # warning: bold yellow
    assert b"just info" in out and b"\x1b[0;1;39mjust info" not in out
    # on a pipe: no colour, no pager
    pager_log.unlink()
    plain = subprocess.run([*HOSTLOG, "query", "-c", str(agent.config)], env=env,
                           capture_output=True, timeout=60)
    assert b"an error happened" in plain.stdout and b"\x1b[" not in plain.stdout
    assert not pager_log.exists()


def test_lists_and_distinct_values(agent):
    send(agent, "one", tag="alpha")
    send(agent, "two", tag="beta", prio="user.err")
    wait_for(lambda: len(agent.query_json()) == 2, what="2 records")
    assert agent.hostlog("query", "--list-apps").stdout.split() == [b"alpha", b"beta"]
    # logger sends the machine's host name in the header; the record keeps the sender's
    hosts = agent.hostlog("query", "--list-hosts").stdout.split()
    assert len(hosts) == 1 and hosts == [r["_HOSTNAME"].encode() for r in agent.query_json()][:1]
    assert agent.hostlog("query", "-F", "PRIORITY").stdout.split() == [b"6", b"3"]
    assert b"takes up" in agent.hostlog("query", "--disk-usage").stdout
    none = agent.hostlog("query", "-g", "nothing-like-this", check=False)
    assert none.returncode == 1 and b"-- No entries --" in none.stdout + none.stderr
