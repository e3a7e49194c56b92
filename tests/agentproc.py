"""Start and stop a real `hostlog agent` process for tests."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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


def with_control(config_text: str, tmp: Path, *, metrics: bool = True) -> str:
    """``config_text`` with a ``[control]`` section of this test's own: a
    control socket under ``tmp`` and (``metrics``) an endpoint on a free
    loopback port. Keys the text sets itself are kept."""
    lines = config_text.splitlines()
    header = next((i for i, line in enumerate(lines) if line.strip() == "[control]"), None)
    if header is None:
        lines += ["", "[control]"]
        header = len(lines) - 1
    end = next((i for i in range(header + 1, len(lines)) if lines[i].lstrip().startswith("[")),
               len(lines))
    keys = {line.split("=", 1)[0].strip() for line in lines[header + 1:end] if "=" in line}
    add = []
    if "socket" not in keys:
        add.append(f'socket = "{tmp}/control.sock"')
    if metrics and "metrics" not in keys:
        # a port that is free now (the config refuses port 0)
        add.append(f'metrics = "127.0.0.1:{free_port()}"')
    lines[header + 1:header + 1] = add
    return "\n".join(lines) + "\n"


def scrape_metrics(port: int) -> dict[str, float]:
    """Every sample of an agent's metrics endpoint: ``'name{labels}' -> value``."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def metric_by_label(samples: dict[str, float], metric: str, label: str) -> dict[str, int]:
    """One labelled metric of :func:`scrape_metrics`'s samples: label value -> count."""
    pattern = re.compile(re.escape(metric) + r"\{" + re.escape(label) + r'="([^"]*)"\}$')
    return {m.group(1): int(v) for k, v in samples.items() if (m := pattern.match(k))}


class AgentProcess:
    """A real ``hostlog agent`` for a test, with everything on by default.

    A test agent gets its own control socket (never the system's
    /run/hostlog/control.sock, nor another test's) and a metrics endpoint
    on a free loopback port (``[control] metrics = "127.0.0.1:PORT"``; the
    port is :attr:`metrics_port`), added to ``config_text`` unless
    it names them itself. A test that wants a feature off says why:
    ``metrics=False`` with a comment.
    """

    def __init__(self, tmp: Path, config_text: str | None = None, env: dict | None = None,
                 *, metrics: bool = True) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.config = tmp / "agent.toml"
        if config_text is not None:
            self.config.write_text(with_control(config_text, tmp, metrics=metrics))
        self.log = tmp / "agent.log"
        self.env = dict(os.environ, HOSTLOG_STATE_DIR=str(self.state), **(env or {}))
        self.proc: subprocess.Popen | None = None

    def write_config(self, config_text: str, *, metrics: bool = True) -> None:
        """Replace the config file (for a reload), with the same defaults as at start."""
        self.config.write_text(with_control(config_text, self.tmp, metrics=metrics))

    @property
    def metrics_port(self) -> int:
        """The port of the metrics endpoint, as the agent logged it at start."""
        found = re.findall(r"metrics at http://[^\s]*:(\d+)/metrics", self.log_text())
        assert found, "the agent serves no metrics:\n" + self.log_text()
        return int(found[-1])

    def metrics(self) -> dict[str, float]:
        """Every sample the running agent's metrics endpoint serves now."""
        return scrape_metrics(self.metrics_port)

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
        with_config = self.config.exists() and args[0] in ("query", "spool") and "-D" not in args
        extra = ["-c", str(self.config)] if with_config else []
        cmd = [*HOSTLOG, args[0], *(args[1:2] if args[0] == "spool" else ()), *extra,
               *(args[2:] if args[0] == "spool" else args[1:])]
        res = subprocess.run(cmd, env=self.env, capture_output=True, timeout=120)
        if check:
            assert res.returncode == 0, (res.returncode, res.stderr.decode())
        return res

    def query_json(self, *args: str) -> list[dict]:
        out = self.hostlog("query", "-o", "json", "--no-pager", *args).stdout.decode()
        return [json.loads(line) for line in out.splitlines() if line]
