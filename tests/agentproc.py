"""Start and stop a real `hostlog agent` process for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HOSTLOG = [sys.executable, "-m", "hostlog.cli.main"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class AgentProcess:
    def __init__(self, tmp: Path, config_text: str | None = None, env: dict | None = None) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.config = tmp / "agent.toml"
        if config_text is not None:
            if "[control]" not in config_text:
                # each test agent its own control socket: never the system's
                # /run/hostlog/control.sock, nor another test's
                config_text += f'\n[control]\nsocket = "{tmp}/control.sock"\n'
            self.config.write_text(config_text)
        self.log = tmp / "agent.log"
        self.env = dict(os.environ, HOSTLOG_STATE_DIR=str(self.state), **(env or {}))
        self.proc: subprocess.Popen | None = None

    def start(self, wait_for_text: str = "running:") -> None:
        args = [*HOSTLOG, "agent"] + (["-c", str(self.config)] if self.config.exists() else [])
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))
        wait_for(lambda: wait_for_text in self.log_text() or self.proc.poll() is not None,
                 what="agent start")
        assert self.proc.poll() is None, self.log_text()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[self._log_offset:] if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def hostlog(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        extra = ["-c", str(self.config)] if self.config.exists() and args[0] in ("query", "spool") and "-D" not in args else []
        cmd = [*HOSTLOG, args[0], *(args[1:2] if args[0] == "spool" else ()), *extra,
               *(args[2:] if args[0] == "spool" else args[1:])]
        res = subprocess.run(cmd, env=self.env, capture_output=True, timeout=120)
        if check:
            assert res.returncode == 0, (res.returncode, res.stderr.decode())
        return res

    def query_json(self, *args: str) -> list[dict]:
        out = self.hostlog("query", "-o", "json", "--no-pager", *args).stdout.decode()
        return [json.loads(line) for line in out.splitlines() if line]
