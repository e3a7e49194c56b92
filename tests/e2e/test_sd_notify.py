"""Readiness and watchdog as systemd sees them: sd_notify(3) datagrams on a
$NOTIFY_SOCKET that the test binds, as systemd does for a Type=notify unit."""

import os
import platform
import signal
import socket
import statistics
import time
from pathlib import Path

import pytest

from tests.agentproc import AgentProcess, free_port, wait_for
from tests.conftest import need
from tests.e2e.test_agent import config

# The syscalls a process blocked in sending a datagram shows in /proc/PID/syscall.
SEND_SYSCALLS = {"x86_64": {"44", "46"}, "aarch64": {"206", "211"}}  # sendto, sendmsg
FILLER = b"FILLER"




class NotifySocket:
    """What systemd listens on: a unix datagram socket, one KEY=VALUE block per datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.fillers: list[socket.socket] = []

    def receive(self, timeout: float) -> tuple[float, dict[str, str]] | None:
        """One datagram as (monotonic arrival time, fields), or None after timeout."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        if data == FILLER:
            return time.monotonic(), {"FILLER": "1"}
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        return time.monotonic(), fields

    def collect(self, seconds: float) -> list[tuple[float, dict[str, str]]]:
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            got = self.receive(left)
            if got is not None:
                out.append(got)
        return out

    def wait_for(self, key: str, timeout: float = 20.0) -> tuple[float, dict[str, str]]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            got = self.receive(left)
            if got is not None and key in got[1]:
                return got
        raise AssertionError(f"no {key} on the notify socket within {timeout}s")

    def fill(self) -> None:
        """Fill the receive queue, so that the next sender blocks in sendmsg()
        until the test reads (an AF_UNIX datagram queue holds
        net.unix.max_dgram_qlen datagrams; each sender is also bounded by its
        own send buffer, hence several filler sockets)."""
        for _ in range(64):
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            filler.setblocking(False)
            self.fillers.append(filler)
            sent = 0
            for _ in range(100_000):
                try:
                    filler.sendto(FILLER, str(self.path))
                except BlockingIOError:
                    break
                sent += 1
            if sent == 0:  # a fresh sender cannot send: the queue itself is full
                return
        raise AssertionError("could not fill the notify socket's queue")

    def drain_fillers(self) -> None:
        for _ in range(100_000):
            self.sock.setblocking(False)
            try:
                data = self.sock.recv(4096, socket.MSG_PEEK)
            except BlockingIOError:
                return
            if data != FILLER:
                return
            self.sock.recv(4096)

    def drain(self) -> None:
        self.sock.setblocking(False)
        for _ in range(100_000):
            try:
                self.sock.recv(4096)
            except BlockingIOError:
                break
        for s in self.fillers:
            s.close()
        self.fillers.clear()

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    n = NotifySocket(tmp_path / "notify.sock")
    yield n
    n.close()


def start_agent(tmp_path: Path, port: int, notify: NotifySocket, **env: str) -> AgentProcess:
    agent = AgentProcess(tmp_path, config(tmp_path, port), env={"NOTIFY_SOCKET": str(notify.path), **env})
    for key in ("WATCHDOG_USEC", "WATCHDOG_PID"):
        if key not in env:
            agent.env.pop(key, None)
    agent.start(wait_for_text="")  # readiness is what this test watches, not the log
    return agent


def tcp_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def udp_bound(port: int) -> bool:
    want = f"0100007F:{port:04X}"
    return any(line.split()[1] == want for line in Path("/proc/net/udp").read_text().splitlines()[1:])


def blocked_in_send(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return bool(fields) and fields[0] in SEND_SYSCALLS[platform.machine()]


def torn_spool(tmp_path: Path, port: int) -> tuple[Path, bytes, bytes]:
    """A spool whose active segment ends in garbage, as a crash mid-write leaves it."""
    agent = AgentProcess(tmp_path, config(tmp_path, port))
    agent.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"<13>Jan  1 00:00:00 host app: before the crash\n")
        wait_for(lambda: agent.query_json(), what="the record")
    finally:
        agent.stop(signal.SIGKILL)
    segment = max((tmp_path / "state" / "spool" / "segments").glob("*.seg"))
    good = segment.read_bytes()
    garbage = os.urandom(300)
    with open(segment, "ab") as f:
        f.write(garbage)
    return segment, good, garbage


def test_ready_only_after_recovery_and_listening(tmp_path, notify):
    need(platform.machine() in SEND_SYSCALLS,
         f"send syscall numbers for {platform.machine()} (the test blocks sendmsg with seccomp)")
    port = free_port()
    segment, good, garbage = torn_spool(tmp_path, port)
    assert not tcp_accepts(port)
    # The agent will block in sending READY=1 until the test reads: what holds
    # at that moment held when the agent declared itself ready.
    notify.fill()
    agent = start_agent(tmp_path, port, notify)
    try:
        wait_for(lambda: blocked_in_send(agent.proc.pid) or agent.proc.poll() is not None,
                 timeout=30, what="the agent to send its first notification")
        assert agent.proc.poll() is None, agent.log_text()
        # Recovered: the torn tail is cut (the agent may have appended its own
        # notice about it since), and said so.
        data = segment.read_bytes()
        assert data.startswith(good), "the records before the tear were damaged"
        assert garbage not in data, "READY=1 before the torn tail was cut"
        assert "cut a torn tail of 300 bytes" in agent.log_text()
        # Listening: TCP connects, UDP is bound.
        assert tcp_accepts(port)
        assert udp_bound(port)
        notify.drain_fillers()
        _, fields = notify.wait_for("READY")
        assert fields["READY"] == "1"
        assert "collecting from 1 sources" in fields.get("STATUS", "")
        # ... and works: the old record survived recovery, a new one arrives.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"<13>Jan  1 00:00:01 host app: after the restart\n")
        rows = wait_for(lambda: (r := agent.query_json("-t", "app")) and len(r) >= 2 and r,
                        what="2 records")
        assert [r["MESSAGE"] for r in rows] == ["before the crash", "after the restart"]
    finally:
        notify.drain()  # a failed check must not leave the agent blocked in sendmsg()
        assert agent.stop(signal.SIGTERM) == 0, agent.log_text()


def test_watchdog_at_half_the_interval_and_stopping(tmp_path, notify):
    port = free_port()
    # WatchdogSec=400ms as systemd passes it. WATCHDOG_PID is left out: the pid
    # is not known before exec, and sd_watchdog_enabled(3) accepts that.
    agent = start_agent(tmp_path, port, notify, WATCHDOG_USEC="400000")
    try:
        ready_at, _ = notify.wait_for("READY")
        got = notify.collect(3.0)
    finally:
        stopped = agent.stop(signal.SIGTERM)
    assert stopped == 0, agent.log_text()
    beats = [t for t, fields in got if fields.get("WATCHDOG") == "1"]
    assert len(beats) >= 10, f"{len(beats)} WATCHDOG=1 in 3 s at a 0.2 s interval"
    gaps = [b - a for a, b in zip([ready_at] + beats, beats)]
    # Never as late as WatchdogSec (systemd would kill the agent); about every half of it.
    assert max(gaps) < 0.4, gaps
    assert 0.1 <= statistics.median(gaps) <= 0.3, gaps
    assert len(beats) <= 3.0 / 0.1, f"{len(beats)} WATCHDOG=1 in 3 s: faster than asked"
    _, fields = notify.wait_for("STOPPING", timeout=5)
    assert fields["STOPPING"] == "1"


@pytest.mark.parametrize("env", [{}, {"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}],
                         ids=["no-watchdog", "watchdog-for-another-pid"])
def test_no_watchdog_unless_asked(tmp_path, notify, env):
    agent = start_agent(tmp_path, free_port(), notify, **env)
    try:
        notify.wait_for("READY")
        got = notify.collect(1.0)
    finally:
        assert agent.stop(signal.SIGTERM) == 0, agent.log_text()
    assert not [f for _, f in got if "WATCHDOG" in f]
