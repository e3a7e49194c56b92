"""`hostlog stats` as a person runs it: over a running agent's spool, on a
terminal (sparklines), as CSV, with damage, with mistakes."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from collections import Counter

import pytest

from tests.agentproc import HOSTLOG, AgentProcess, free_port, wait_for
from tests.e2e.test_agent import config, logger
from tests.unit.query.test_stats import T0, build_spool


def run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*HOSTLOG, *args], capture_output=True, timeout=120, env=env)


def stats_json(*args: str, env=None) -> dict:
    res = run("stats", "-o", "json", *args, env=env)
    assert res.returncode == 0, res.stderr
    out = {}
    for line in res.stdout.decode().splitlines():
        obj = json.loads(line)
        count = obj.pop("count")
        obj.pop("rate")
        out[json.dumps(obj, sort_keys=True)] = count
    return out


def counted(objs: list[dict], by: list[str], every_s: int | None = None) -> dict:
    c: Counter = Counter()
    for o in objs:
        key = {f: o.get(f) for f in by}
        if every_s:
            start = int(o["__REALTIME_TIMESTAMP"]) // 10**6 // every_s * every_s
            key["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
        c[json.dumps(key, sort_keys=True)] += 1
    return dict(c)


def test_counts_over_a_running_agents_spool_are_query_json_counted(tmp_path):
    port = free_port()
    agent = AgentProcess(tmp_path, config(tmp_path, port).replace(
        'fsync = "batch"', 'fsync = "batch"\nsegment_bytes = "64KiB"'))
    agent.start()
    try:
        lines = tmp_path / "bulk.txt"
        lines.write_text("".join(f"bulk {i} {os.urandom(40).hex()}\n" for i in range(3000)))
        sent = {"bulk": (lines, "user.info")}
        for tag, prio, n in (("web", "user.err", 3), ("web", "user.warning", 2), ("cron", "cron.info", 4)):
            path = tmp_path / f"{tag}-{prio}.txt"
            path.write_text("".join(f"{tag} line {i}\n" for i in range(n)))
            sent[f"{tag} {prio}"] = (path, prio)
        for name, (path, prio) in sent.items():
            logger("--tcp", "--server", "127.0.0.1", "--port", str(port), "-t", name.split()[0],
                   "-p", prio, "-f", str(path))
        cfg = ["-c", str(agent.config)]
        wait_for(lambda: stats_json(*cfg, env=agent.env).get("{}") == 3009, timeout=30,
                 interval=0.3, what="every line in the spool")
        segments = list((tmp_path / "state" / "spool" / "segments").glob("*.seg"))
        assert len(segments) >= 2  # sealed (footer counts) and the active one
        objs = agent.query_json("--all")
        assert len(objs) == 3009
        by = ["SYSLOG_IDENTIFIER", "PRIORITY"]
        assert stats_json(*cfg, "--by", "app,priority", env=agent.env) == counted(objs, by)
        web = [o for o in objs if o.get("SYSLOG_IDENTIFIER") == "web" and o["PRIORITY"] in "0123"]
        assert stats_json(*cfg, "-u", "web", "-p", "err", "--by", "PRIORITY", env=agent.env) == \
            counted(web, ["PRIORITY"])
        assert stats_json(*cfg, "--by", "SYSLOG_IDENTIFIER", "--every", "1min", env=agent.env) == \
            counted(objs, ["SYSLOG_IDENTIFIER"], 60)
        top = run("stats", *cfg, "--by", "app", "--top", "1", env=agent.env)
        assert top.returncode == 0
        assert top.stdout.decode().splitlines()[1].split()[:2] == ["bulk", "3000"]
    finally:
        agent.stop(signal.SIGKILL)


def read_pty(fd: int, timeout: float = 30.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_on_a_terminal_the_table_has_a_sparkline_per_group(tmp_path):
    build_spool(tmp_path, 1, frames=30)
    master, slave = pty.openpty()
    proc = subprocess.Popen([*HOSTLOG, "stats", "-D", str(tmp_path / "spool"), "--by", "PRIORITY"],
                            stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    try:
        text = read_pty(master).decode()
    finally:
        os.close(master)
        assert proc.wait(timeout=30) == 0
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0].split()[:3] == ["PRIORITY", "COUNT", "RATE/S"] and "PER" in lines[0]
    assert len(lines) >= 9  # the header, eight priorities and raw PRIORITY values
    assert all(any(c in line for c in "▁▂▃▄▅▆▇█") for line in lines[1:])
    # not on a terminal: no sparkline, unless asked for
    plain = run("stats", "-D", str(tmp_path / "spool"), "--by", "PRIORITY").stdout.decode()
    assert "PER" not in plain and not any(c in plain for c in "▁▂▃▄▅▆▇█")
    forced = run("stats", "-D", str(tmp_path / "spool"), "--by", "PRIORITY", "--every", "1min",
                 "--sparkline", "always").stdout.decode()
    assert "PER 1min" in forced.splitlines()[0]


def test_csv_and_mistakes(tmp_path):
    build_spool(tmp_path, 2, frames=10)
    spool = str(tmp_path / "spool")
    res = run("stats", "-D", spool, "--by", "source", "-S", f"@{T0 // 10**9}", "-o", "csv",
              "--sum", "DURATION_MS", "--p99", "DURATION_MS")
    assert res.returncode == 0, res.stderr
    rows = res.stdout.decode().splitlines()
    assert rows[0] == "_HOSTLOG_SOURCE,count,rate,sum_DURATION_MS,p99_DURATION_MS"
    assert {r.split(",")[0] for r in rows[1:]} == {"syslog", "journald"}
    res = run("stats", "-D", spool, "-u", "no-such-app")
    assert res.returncode == 0 and res.stdout == b"" and b"No entries" in res.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--by", "nginx.service"], "not a field name"),
    (["--every", "soon"], "--every"),
    (["-p", "loud"], "loud"),
    (["-S", "tomorrow", "-U", "yesterday"], "--since= must be before --until="),
])
def test_mistakes_are_explained(tmp_path, capsys, args, message):
    from hostlog.cli.main import main

    assert main(["stats", "-D", str(tmp_path), *args]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("no_index", [True, False])
def test_a_damaged_frame_is_reported(tmp_path, no_index):
    build_spool(tmp_path, 4, frames=20)
    seg = sorted((tmp_path / "spool" / "segments").glob("*.seg"))[0]
    data = bytearray(seg.read_bytes())
    data[400] ^= 0x10  # in the first frame's payload
    seg.write_bytes(bytes(data))
    args = ["stats", "-D", str(tmp_path / "spool"), "--by", "PRIORITY", "-o", "json"]
    res = run(*args, *(["--no-index"] if no_index else ["-g", "."]))
    assert res.returncode == 0
    assert b"damaged data" in res.stderr and seg.name.encode() in res.stderr
