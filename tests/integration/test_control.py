"""The control socket: its protocol, its permission check, and ``hostlog ctl`` against it.

The last tests wire the real pieces the agent uses (supervisor, control
server, metrics, through hostlog.agent.wiring) around a real spool, and
drive them with the ctl command as a user would.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import socket
import stat
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from hostlog.agent import wiring
from hostlog.agent.control import MAX_REQUEST, ControlError, ControlServer, peer_allowed
from hostlog.agent.counting import CountingSink
from hostlog.agent.metrics import make_metrics
from hostlog.cli import ctl_cmd
from hostlog.collectors.base import CollectorContext
from hostlog.config import load_config
from hostlog.spool.keys import Keyring
from hostlog.spool.spool import Spool
from hostlog.spool.writer import SpoolWriter
from tests.agentproc import free_port
from tests.conftest import need
from tests.integration.loops import arun as _arun  # noqa: E402

# every test on both loops (SO_PEERCRED and child watching differ under uvloop)
from tests.integration.loops import event_loop_kind  # noqa: E402,F401  (autouse)


def arun(coro, timeout: float = 60.0):
    return _arun(coro, timeout)


class Calls:
    """A handler that records what it was asked and answers like the agent would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    async def __call__(self, command: str, args: dict) -> dict:
        self.calls.append((command, args))
        if command == "boom":
            raise RuntimeError("kaput")
        if command == "status":
            return {"agent": {"version": "9.9", "pid": 1, "uptime": 3725.0, "records_in": 12,
                              "records_out": 0, "spool_bytes": 3 << 20},
                    "apps": [{"name": "web", "state": "RUNNING", "pid": 4242, "uptime": 61.5,
                              "restarts": 2, "cpu_percent": 1.25, "rss": 25 << 20, "info": ""},
                             {"name": "cron", "state": "BACKOFF", "pid": None, "uptime": None,
                              "restarts": 5, "cpu_percent": None, "rss": None,
                              "info": "restarting in 4s (exit status 1)"}]}
        if command == "start":
            return {"name": args["app"], "state": "RUNNING", "pid": 7, "info": ""}
        raise ControlError(f"unknown command {command!r}")


async def exchange(path: Path, *lines: bytes) -> list[dict]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    out = []
    for line in lines:
        writer.write(line)
        await writer.drain()
        answer = await reader.readline()
        out.append(json.loads(answer) if answer else None)
    writer.close()
    return out


def test_protocol_one_json_line_per_request_and_per_answer(tmp_path):
    path = tmp_path / "run" / "ctl.sock"
    handler = Calls()

    async def main():
        server = ControlServer(path, handler)
        await server.start()
        try:
            answers = await exchange(
                path,
                b'{"command": "start", "args": {"app": "web"}}\n',
                b'{"command": "status"}\n',
                b"not json\n",
                b'["a list"]\n',
                b'{"command": "stop", "args": "web"}\n',
                b'{"command": "nope"}\n',
                b'{"command": "boom"}\n',
                b'{"command": "start", "args": {"app": "again"}}\n',  # the connection still works
            )
        finally:
            await server.stop()
        assert answers[0] == {"ok": True, "result": {"name": "web", "state": "RUNNING", "pid": 7, "info": ""}}
        assert answers[1]["ok"] and answers[1]["result"]["apps"][0]["name"] == "web"
        assert answers[2]["ok"] is False and "not JSON" in answers[2]["error"]
        assert answers[3] == {"ok": False, "error": 'request must be a JSON object with a string "command"'}
        assert answers[4] == {"ok": False, "error": '"args" must be a JSON object'}
        assert answers[5] == {"ok": False, "error": "unknown command 'nope'"}
        assert answers[6] == {"ok": False, "error": "internal error: kaput"}
        assert answers[7]["ok"]
        assert handler.calls == [("start", {"app": "web"}), ("status", {}), ("nope", {}), ("boom", {}),
                                 ("start", {"app": "again"})]
    arun(main())


def test_socket_modes_and_cleanup(tmp_path):
    path = tmp_path / "run" / "ctl.sock"

    async def main():
        server = ControlServer(path, Calls())
        await server.start()
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o750
        assert stat.S_ISSOCK(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with pytest.raises(ControlError, match="another agent is serving"):
            await ControlServer(path, Calls()).start()
        await server.stop()
        assert not path.exists()
        # a socket file left by an agent that died is taken over
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(path))
        stale.close()
        server = ControlServer(path, Calls())
        await server.start()
        assert (await exchange(path, b'{"command": "status"}\n'))[0]["ok"]
        await server.stop()
        path.write_text("not a socket")
        with pytest.raises(ControlError, match="not a socket"):
            await ControlServer(path, Calls()).start()
    arun(main())


def test_a_request_longer_than_the_limit_is_refused_and_the_connection_closed(tmp_path):
    path = tmp_path / "ctl.sock"

    async def main():
        server = ControlServer(path, Calls())
        await server.start()
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"x" * (MAX_REQUEST + 10) + b"\n")
            answer = json.loads(await reader.readline())
            assert answer == {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
            assert await reader.read() == b""
            writer.close()
        finally:
            await server.stop()
    arun(main())


@pytest.mark.parametrize("uid, gid, groups, allowed", [
    (0, 0, set(), True),  # root
    (1000, 1000, set(), True),  # the agent's own user
    (1001, 50, set(), True),  # primary group is the socket's
    (1001, 1001, {50, 7}, True),  # member of the socket's group
    (1001, 1001, {7}, False),
    (65534, 65534, set(), False),
])
def test_permission_rule(uid, gid, groups, allowed):
    assert peer_allowed(uid, gid, groups, agent_uid=1000, socket_gid=50) is allowed


def _connect_as(path: Path, uid: int, groups: list[int]) -> tuple[str, str | None]:
    """In a forked child: drop to ``uid`` with ``groups``, ask for status."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: plain syscalls only, then _exit
        try:
            os.close(read_end)
            os.setgroups(groups)
            os.setgid(uid)
            os.setuid(uid)
            answer = ctl_cmd.request(path, "status", timeout=10)
            os.write(write_end, json.dumps(["ok", answer.get("error")]).encode())
        except BaseException as exc:
            os.write(write_end, json.dumps(["failed", repr(exc)]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as f:
        return tuple(json.loads(f.read()))


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="connecting as another user needs root")
def test_credentials_are_checked_even_when_the_socket_modes_let_anyone_connect():
    # A directory every user may enter (tmp_path is 0700 root), socket opened up to 0666.
    base = Path(tempfile.mkdtemp(prefix="hostlog-ctl-", dir="/tmp"))
    os.chmod(base, 0o755)
    path = base / "ctl.sock"

    async def main():
        server = ControlServer(path, Calls())
        await server.start()
        os.chown(path, 0, 4)  # the socket's group: adm (gid 4)
        os.chmod(path, 0o666)
        try:
            stranger = await asyncio.to_thread(_connect_as, path, 65534, [])
            member = await asyncio.to_thread(_connect_as, path, 65534, [4])
        finally:
            await server.stop()
            os.rmdir(base)
        assert stranger[0] == "ok" and stranger[1].startswith("permission denied: uid 65534")
        assert member == ("ok", None)
    arun(main())


# -- hostlog ctl -------------------------------------------------------------------------

def ctl(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="hostlog")
    ctl_cmd.add_parser(parser.add_subparsers(dest="command"))
    return ctl_cmd.run(parser.parse_args(["ctl", *argv]))


def test_ctl_says_clearly_when_the_agent_is_not_running(tmp_path, capsys):
    assert ctl("--socket", str(tmp_path / "none.sock"), "status") == 1
    assert capsys.readouterr().err.strip() == \
        f"hostlog agent is not running (no control socket at {tmp_path / 'none.sock'})"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    assert ctl("--socket", str(tmp_path / "stale.sock"), "status") == 1
    assert "hostlog agent is not running (nothing listens on the socket at" in capsys.readouterr().err


def test_ctl_status_prints_a_table_like_supervisorctl(tmp_path, capsys):
    path = tmp_path / "ctl.sock"

    async def main():
        server = ControlServer(path, Calls())
        await server.start()
        try:
            assert await asyncio.to_thread(ctl, "--socket", str(path), "status") == 0
            assert await asyncio.to_thread(ctl, "--socket", str(path), "start", "web") == 0
            assert await asyncio.to_thread(ctl, "--socket", str(path), "reload") == 1
        finally:
            await server.stop()
    arun(main())
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "hostlog 9.9  pid 1  uptime 1:02:05  records in 12 / out 0  spool 3.0 MiB",
        "NAME  STATE    PID   UPTIME   RESTARTS  CPU%  RSS       INFO",
        "web   RUNNING  4242  0:01:01  2         1.2   25.0 MiB",
        "cron  BACKOFF  -     -        5         -     -         restarting in 4s (exit status 1)",
        "web: RUNNING (pid 7)",
    ]
    assert err.strip() == "hostlog ctl: unknown command 'reload'"


# -- the real wiring: supervisor + control + metrics -------------------------------------

APP = "import os, sys, time; print('serving', os.getpid(), flush=True); time.sleep(60)"


def agent_config(tmp: Path, metrics_port: int, extra: str = "") -> str:
    return f"""
[agent]
hostname = "test-host"
state_dir = "{tmp}/state"

[control]
socket = "{tmp}/run/ctl.sock"
metrics = "127.0.0.1:{metrics_port}"

[[app]]
name = "web"
command = [{json.dumps(sys.executable)}, "-c", {json.dumps(APP)}]
{extra}
"""


class FakeAgent:
    """What the wiring uses of hostlog.agent.agent.Agent (wiring.WiredAgent), and its reload path."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.config = load_config(config_path)
        self.started = time.monotonic()
        self.collectors: dict = {}
        state = self.config.agent.state_dir
        self.spool = Spool.open(state / "spool", Keyring.load_or_create(state / "spool.key"))
        self.writer = SpoolWriter(self.spool, fsync="never")
        self.archiver = None  # compaction off here: the spool is the writer's alone
        self.context: CollectorContext | None = None
        self.metrics = make_metrics(self.config)
        self.wiring = None
        self.reloaded = asyncio.Event()

    async def open(self) -> None:
        # the sink chain as Agent.open builds it, before anything collects
        self.writer.start()
        sink = CountingSink(self.writer, self.metrics) if self.metrics else self.writer
        self.context = CollectorContext("test-host", sink, checkpoints=None)
        await wiring.attach(self)

    def request_reload(self) -> None:  # as Agent.run does on SIGHUP: re-read, then apply
        async def reload() -> None:
            new = load_config(self.config_path)
            await wiring.on_reload(self, new)
            self.config = new
            self.reloaded.set()
        asyncio.get_running_loop().create_task(reload())

    async def close(self) -> None:
        await wiring.detach(self)
        await self.writer.stop()
        self.spool.close()


def test_ctl_drives_the_wired_supervisor_and_metrics_show_it(tmp_path, capsys):
    need(_has_prometheus(), "prometheus_client (the metrics endpoint)")
    port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(agent_config(tmp_path, port))

    async def main():
        agent = FakeAgent(config)
        await agent.open()
        try:
            run = lambda *a: asyncio.to_thread(ctl, "-c", str(config), *a)  # noqa: E731
            assert await run("status") == 0
            status = capsys.readouterr().out.splitlines()
            assert status[0].startswith("hostlog ") and status[1].split()[:3] == ["NAME", "STATE", "PID"]
            name, state, pid = status[2].split()[:3]
            assert (name, state) == ("web", "RUNNING") and int(pid) > 0
            assert await run("restart", "web") == 0
            assert capsys.readouterr().out.startswith("web: RUNNING (pid ")
            assert await run("stop", "web") == 0
            assert capsys.readouterr().out.strip() == "web: STOPPED (terminated by SIGTERM)"
            assert await run("stop", "web") == 1
            assert capsys.readouterr().err.strip() == "hostlog ctl: web: not running"
            assert await run("start", "nope") == 1
            assert "no such app 'nope'" in capsys.readouterr().err
            # reload: a new app is started; a broken file is refused with its errors
            config.write_text(agent_config(tmp_path, port, f"""
[[app]]
name = "worker"
command = [{json.dumps(sys.executable)}, "-c", {json.dumps(APP)}]
"""))
            assert await run("reload") == 0
            assert capsys.readouterr().out.strip() == "reloaded (added: worker)"
            config.write_text(agent_config(tmp_path, port, '[[app]]\nname = "bad"\ncommand = "a string"\n'))
            assert await run("reload") == 1
            err = capsys.readouterr().err
            assert "reload refused" in err and "app[1].command: command must be a list" in err
            assert await run("--json", "status") == 0
            result = json.loads(capsys.readouterr().out)
            assert {a["name"]: a["state"] for a in result["apps"]} == {"web": "STOPPED", "worker": "RUNNING"}
            assert result["agent"]["records_in"] >= 0 and result["agent"]["spool_bytes"] > 0
            await agent.writer.flush()
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            assert 'hostlog_app_up{app="worker"} 1.0' in body
            assert 'hostlog_app_up{app="web"} 0.0' in body
            assert 'hostlog_app_restarts_total{app="web"} 0.0' in body
            records = float(_sample(body, 'hostlog_records_in_total{source="process"}'))
            assert records >= 4  # started, started, stopped, serving ... lines
            assert float(_sample(body, 'hostlog_bytes_in_total{source="process"}')) > 0
            assert float(_sample(body, "hostlog_spool_bytes")) > 0
            assert "hostlog_spool_segments 1.0" in body and "process_resident_memory_bytes" in body
        finally:
            await agent.close()
        assert not (tmp_path / "run" / "ctl.sock").exists()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    arun(main())


def _sample(body: str, name: str) -> str:
    for line in body.splitlines():
        if line.startswith(name + " "):
            return line.split()[-1]
    raise AssertionError(f"no sample {name} in:\n{body}")


def _has_prometheus() -> bool:
    return importlib.util.find_spec("prometheus_client") is not None
