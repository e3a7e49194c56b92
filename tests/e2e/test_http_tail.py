"""The live tail end to end: a real `hostlog agent` with ``[http]``, records
sent with `logger` to its syslog listener, keys made with `hostlog key`, and
as clients `hostlog logs`, `curl` (SSE) and WebSocket clients.

One agent for the module (restarted once, by the test of reconnecting);
every process started here is stopped by its PID; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from tests.agentproc import HOSTLOG, AgentProcess, free_port, wait_for
from tests.conftest import need

BUFFER = 64  # [http] follower_buffer: records queued per follower


def _config(tmp: Path, syslog_port: int, http_port: int) -> str:
    return f"""
[agent]
hostname = "tail-host"
state_dir = "{tmp}/state"
tags = {{ instance = "i-7", region = "eu-west" }}

[spool]
fsync = "batch"
fsync_interval = "20ms"

[[source]]
type = "syslog"
name = "syslog"
listen = ["tcp://127.0.0.1:{syslog_port}"]

[http]
listen = ["127.0.0.1:{http_port}", "unix://{tmp}/http.sock"]
follower_buffer = {BUFFER}
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    need(shutil.which("logger") is not None, "logger (util-linux)")
    tmp = tmp_path_factory.mktemp("http-tail")
    syslog_port, http_port = free_port(), free_port()
    a = AgentProcess(tmp, _config(tmp, syslog_port, http_port))
    a.syslog_port, a.url, a.unix = syslog_port, f"http://127.0.0.1:{http_port}", tmp / "http.sock"
    a.start()
    try:
        wait_for(lambda: "http: serving" in a.log_text(), what="the HTTP server")
        a.key = _key(a, "ops", "read")
        send(a, "pager", [f"page line {i}" for i in range(12)])
        wait_for(lambda: len(a.query_json("-u", "pager")) == 12, what="12 records")
        yield a
    finally:
        status = a.stop()
    log = a.log_text()
    assert status == 0 and " ERROR " not in log and "Traceback" not in log, log


def _key(agent: AgentProcess, name: str, *scopes: str) -> str:
    args = ["key", "create", name, *(a for s in scopes for a in ("--scope", s)), "-c", str(agent.config)]
    return agent.hostlog(*args).stdout.decode().strip().splitlines()[-1]  # the secret is the last line


def send(agent: AgentProcess, tag: str, lines: list[str], prio: str = "user.info", size: int | None = None) -> None:
    path = agent.tmp / f"{tag}.txt"
    path.write_text("".join(line + "\n" for line in lines))
    subprocess.run(["logger", "--tcp", "--server", "127.0.0.1", "--port", str(agent.syslog_port), "-t", tag,
                    "-p", prio, *(["--size", str(size)] if size else []), "-f", str(path)], check=True, timeout=60)


def followers(agent: AgentProcess) -> int:
    res = agent.hostlog("ctl", "--socket", str(agent.tmp / "control.sock"), "--json", "status", check=False)
    if res.returncode != 0:
        return -1
    return int((json.loads(res.stdout).get("http") or {}).get("followers", 0))


class Lines:
    """The stdout and stderr of a process, read as they come (bounded waits)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((proc.stdout, self.out), (proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _read(stream, sink: list[str]) -> None:
        for line in iter(stream.readline, b""):
            sink.append(line.decode(errors="replace"))

    def wait(self, needle: str, timeout: float = 15.0, count: int = 1) -> None:
        wait_for(lambda: sum(needle in line for line in self.out) >= count, timeout=timeout,
                 what=f"{needle!r} from hostlog logs (stderr: {''.join(self.err)[-2000:]})")


def logs_proc(agent: AgentProcess, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*HOSTLOG, "logs", "--url", agent.url, *args], env={**agent.env, "HOSTLOG_KEY": agent.key},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_no_tail_prints_what_hostlog_query_prints(agent) -> None:
    res = subprocess.run([*HOSTLOG, "logs", "--url", agent.url, "--key", agent.key, "--no-tail", "-n", "5",
                          "-u", "pager"], env=agent.env, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    want = agent.hostlog("query", "-u", "pager", "-n", "5", "--no-pager").stdout
    assert res.stdout == want and res.stdout.count(b"\n") == 5 and b"page line 11" in res.stdout
    # over the unix socket the kernel says who asks: no key
    env = {k: v for k, v in agent.env.items() if k != "HOSTLOG_KEY"}
    res = subprocess.run([*HOSTLOG, "logs", "--url", f"unix://{agent.unix}", "--no-tail", "-n", "2", "-u", "pager",
                          "-o", "json"], env=env, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    objs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [o["message"] for o in objs] == ["page line 10", "page line 11"]
    assert objs[0]["instance"] == "i-7" and objs[0]["region"] == "eu-west"  # [agent] tags


def test_refusals_are_said_and_final(agent) -> None:
    for args, words in ((["--key", "hlk_wrong"], "401"), (["--key", agent.key, "-p", "loud"], "loud"),
                        (["--key", agent.key, "--url", "ftp://x"], "--url")):
        res = subprocess.run([*HOSTLOG, "logs", "--url", agent.url, *args], env=agent.env, capture_output=True,
                             timeout=60)
        assert res.returncode in (1, 2) and words in res.stderr.decode(), (args, res.stderr)


def test_websocket_resume_after_a_cursor_has_no_gap_and_no_repeat(agent) -> None:
    async def main() -> None:
        headers = {"Authorization": f"Bearer {agent.key}"}
        url = agent.url + "/api/v1/tail"
        async with aiohttp.ClientSession() as session:
            await asyncio.to_thread(wait_for, lambda: followers(agent) == 0, what="no follower yet")
            async with session.ws_connect(url, params={"unit": "resume"}, headers=headers) as ws:
                await asyncio.to_thread(wait_for, lambda: followers(agent) == 1, what="the follower")
                await asyncio.to_thread(send, agent, "resume", [f"resume A {i}" for i in range(20)])
                first = [json.loads((await ws.receive(timeout=15)).data) for _ in range(20)]
            assert [m["message"] for m in first] == [f"resume A {i}" for i in range(20)]
            assert first[0]["instance"] == "i-7" and first[0]["unit"] == "resume" and first[0]["level"] == "info"
            # while no one follows
            await asyncio.to_thread(send, agent, "resume", [f"resume B {i}" for i in range(30)])
            async with session.ws_connect(url, params={"unit": "resume", "cursor": first[-1]["cursor"]},
                                          headers=headers) as ws:
                again = [json.loads((await ws.receive(timeout=15)).data) for _ in range(30)]
                await asyncio.to_thread(send, agent, "resume", ["resume C 0"])
                again.append(json.loads((await ws.receive(timeout=15)).data))
        assert [m["message"] for m in again] == [f"resume B {i}" for i in range(30)] + ["resume C 0"]
        # the cursors are the records' own (hostlog query shows the same)
        stored = [o["__CURSOR"] for o in agent.query_json("-u", "resume")]
        assert [m["cursor"] for m in first + again] == stored
    asyncio.run(main())


def test_server_sent_events_with_curl(agent) -> None:
    need(shutil.which("curl") is not None, "curl")
    send(agent, "ssetag", [f"sse {i}" for i in range(3)])
    wait_for(lambda: len(agent.query_json("-u", "ssetag")) == 3, what="3 records")

    def curl(*extra: str) -> list[dict]:
        res = subprocess.run(["curl", "-sN", "--max-time", "1", "-H", f"Authorization: Bearer {agent.key}",
                              "-H", "Accept: text/event-stream", *extra, agent.url + "/api/v1/tail?unit=ssetag&n=3"],
                             capture_output=True, timeout=30)
        assert res.returncode == 28, res  # 28: --max-time; a tail does not end by itself
        events, current = [], {}
        for line in res.stdout.decode().split("\n"):
            if not line:
                if "data" in current:
                    events.append(current)
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = value
        return events

    events = curl()
    assert [json.loads(e["data"])["message"] for e in events] == ["sse 0", "sse 1", "sse 2"]
    assert all(e["id"] == json.loads(e["data"])["cursor"] for e in events)
    # an EventSource reconnecting: Last-Event-ID, and it gets what came after
    assert [json.loads(e["data"])["message"] for e in curl("-H", f"Last-Event-ID: {events[0]['id']}")] == \
        ["sse 1", "sse 2"]


def _read_frames(data: bytes) -> tuple[list[bytes], bytes]:
    out, pos = [], 0
    while len(data) - pos >= 2:
        n, head = data[pos + 1] & 0x7F, 2
        if n == 126:
            n, head = (struct.unpack_from("!H", data, pos + 2)[0], 4) if len(data) - pos >= 4 else (1 << 62, 4)
        elif n == 127:
            n, head = (struct.unpack_from("!Q", data, pos + 2)[0], 10) if len(data) - pos >= 10 else (1 << 62, 10)
        if len(data) - pos < head + n:
            break
        assert data[pos] == 0x81, data[pos]  # text frames only
        out.append(data[pos + head:pos + head + n])
        pos += head + n
    return out, data[pos:]


def test_a_slow_follower_is_told_what_it_missed(agent) -> None:
    # a WebSocket client with a small receive buffer that reads nothing until the end
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(20)
    try:
        sock.connect(("127.0.0.1", int(agent.url.rpartition(":")[2])))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(f"GET /api/v1/tail?grep=SLOWMARK HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                     f"Authorization: Bearer {agent.key}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        wait_for(lambda: followers(agent) >= 1, what="the follower")  # (connected after the handshake)
        total = 2000
        pad = "p" * 12_000  # 24 MB in all: far more than the socket buffers hold
        send(agent, "slow", [f"SLOWMARK {i} {pad}" for i in range(total)], size=16_000)
        records, notices, buf = [], [], b""
        deadline = time.monotonic() + 60
        while len(records) + sum(n["dropped"] for n in notices) < total:
            assert time.monotonic() < deadline, (len(records), notices)
            buf += sock.recv(1 << 16)
            frames, buf = _read_frames(buf)
            for payload in frames:
                obj = json.loads(payload)
                (notices if "dropped" in obj else records).append(obj)
    finally:
        sock.close()
    numbers = [int(r["message"].split()[1]) for r in records]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert notices, "a slow follower must be told it missed records"
    seqs = [int(r["cursor"].rpartition(":")[2]) for r in records]
    for n in notices:
        first, last = (int(n[k].rpartition(":")[2]) for k in ("first_cursor", "last_cursor"))
        assert not any(first <= s <= last for s in seqs)
    told = len(records) + sum(n["dropped"] for n in notices)
    assert told == total if all(n["exact"] for n in notices) else told >= total


def test_hostlog_logs_follows_and_resumes_across_a_restart(agent) -> None:
    wait_for(lambda: followers(agent) == 0, what="the other tests' followers to be gone")
    proc = logs_proc(agent, "-u", "live", "-n", "0")
    try:
        lines = Lines(proc)
        wait_for(lambda: followers(agent) == 1, what="hostlog logs to follow")
        send(agent, "live", ["first live line"], prio="user.warning")
        lines.wait("first live line")
        want = agent.hostlog("query", "-u", "live", "--no-pager").stdout.decode()
        assert "".join(lines.out) == want  # what hostlog query prints, byte for byte
        # the agent goes away and comes back; what is sent before the client is
        # back is shown too (it resumes after the last record it printed), once
        agent.stop()
        agent.start()
        wait_for(lambda: "http: serving" in agent.log_text(), what="the HTTP server again")
        send(agent, "live", ["while away 1", "while away 2"])
        lines.wait("while away 2", timeout=30)
        send(agent, "live", ["back again"])
        lines.wait("back again")
        shown = [line.partition(": ")[2].strip() for line in lines.out]
        assert shown == ["first live line", "while away 1", "while away 2", "back again"]
        assert any("reconnecting" in line for line in lines.err)
    finally:
        stop(proc)
