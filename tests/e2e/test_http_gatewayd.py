"""journal-gatewayd compatibility end to end: a real ``hostlog agent`` with
``[http]``, 10,000 records received over syslog TCP (octet counting, from
a plain socket client), read by the real clients:

* ``curl`` for each endpoint and each Accept, compared byte for byte with
  what ``hostlog query`` prints over the same spool;
* ``systemd-journal-remote --url=http://x:KEY@127.0.0.1:PORT`` (the key as
  the password of basic auth), which pulls the spool into a journal file;
  ``journalctl --file`` then shows every record, compared one by one with
  the spool (message, host, identifier, priority, pid, time);
* ``curl`` following (``?follow``) until the records it waits for arrive.

Every wait is bounded; every process started here is stopped by its PID.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostlog.journal.fields import parse_export
from tests.agentproc import HOSTLOG, AgentProcess, free_port, wait_for
from tests.conftest import need

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
CURL = shutil.which("curl")
JOURNALCTL = shutil.which("journalctl")
N = 10_000
APPS = ["api", "worker", "cron", "db", "web"]
MEDIA = {"short": "text/plain", "json": "application/json", "json-sse": "text/event-stream",
         "json-seq": "application/json-seq", "export": "application/vnd.fdo.journal"}


def syslog_frames(start: int, count: int, now: dt.datetime) -> bytes:
    """RFC 5424 messages with octet counting (RFC 6587 3.4.1)."""
    out = []
    for i in range(start, start + count):
        stamp = (now + dt.timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        text = f'GW:{i} request "{i % 97}" took {i % 13} ms' + (" ünïcödé" if i % 50 == 7 else "")
        msg = f"<{8 + i % 8}>1 {stamp} node-{i % 4} {APPS[i % 5]} {100 + i % 50} - - {text}".encode()
        out.append(str(len(msg)).encode() + b" " + msg)
    return b"".join(out)


class Agent:
    def __init__(self, tmp: Path) -> None:
        self.syslog_port = free_port()
        self.http_port = free_port()
        self.proc = AgentProcess(tmp, textwrap.dedent(f"""
            [agent]
            hostname = "gw-e2e"
            state_dir = "{tmp}/state"

            [[source]]
            type = "syslog"
            listen = ["tcp://127.0.0.1:{self.syslog_port}"]

            [http]
            listen = ["127.0.0.1:{self.http_port}"]
            """))
        self.key = ""
        self.base = f"http://127.0.0.1:{self.http_port}"

    def send(self, data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", self.syslog_port), timeout=10) as s:
            s.sendall(data)

    def query(self, *args: str) -> bytes:
        return self.proc.hostlog("query", "--no-pager", *args).stdout

    def curl(self, path: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        assert CURL is not None
        res = subprocess.run([CURL, "-sS", "--max-time", "60", "-H", f"Authorization: Bearer {self.key}", *args,
                              self.base + path], capture_output=True, timeout=90)
        if check:
            assert res.returncode == 0, res.stderr.decode()
        return res


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    need(CURL is not None, "curl")
    tmp = tmp_path_factory.mktemp("gw-e2e")
    a = Agent(tmp)
    a.proc.start()
    try:
        res = subprocess.run([*HOSTLOG, "key", "create", "ops", "--scope", "read", "-c", str(a.proc.config)],
                             env=a.proc.env, capture_output=True, timeout=60, text=True)
        assert res.returncode == 0, res.stderr
        a.key = res.stdout.strip().splitlines()[-1]
        a.now = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        t0 = time.monotonic()
        a.send(syslog_frames(0, N, a.now))
        wait_for(lambda: f"GW:{N - 1} ".encode() in a.query("--source", "syslog", "-n", "1", "-o", "cat"),
                 timeout=60, interval=0.2, what="the 10,000 records in the spool")
        a.ingest_s = time.monotonic() - t0
        yield a
    finally:
        a.proc.stop()


def test_each_accept_gives_the_bytes_hostlog_query_prints(agent: Agent) -> None:
    timings = {}
    bodies = {}
    for mode, media in MEDIA.items():
        t0 = time.monotonic()
        res = agent.curl("/entries?source=syslog", "-H", f"Accept: {media}", "-D", "-")
        timings[mode] = time.monotonic() - t0
        head, _, body = res.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and f"Content-Type: {media}".encode() in head, head
        bodies[mode] = body
    procs = {mode: subprocess.Popen([*HOSTLOG, "query", "-c", str(agent.proc.config), "--no-pager", "-q",
                                     "-o", mode, "--source", "syslog"], env=agent.proc.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for mode in MEDIA}
    try:
        for mode, proc in procs.items():
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
            assert bodies[mode] == out, mode
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert bodies["short"].count(b"\n") == N
    assert len(parse_export(bodies["export"])) == N
    print(f"\n/entries of {N} records: " + ", ".join(f"{m} {t:.2f}s" for m, t in timings.items())
          + f" (ingest {agent.ingest_s:.2f}s)")


def test_unfiltered_entries_are_the_spool_as_hostlog_query_shows_it(agent: Agent) -> None:
    body = agent.curl("/entries", "-H", "Accept: application/json").stdout
    shown = [json.loads(line) for line in body.splitlines()]
    top = max(int(o["_HOSTLOG_SEQ"]) for o in shown)
    cli = agent.query("-o", "json")
    expected = b"".join(line + b"\n" for line in cli.splitlines() if int(json.loads(line)["_HOSTLOG_SEQ"]) <= top)
    assert body == expected
    assert sum(1 for o in shown if o["_HOSTLOG_SOURCE"] == "syslog") == N


def test_range_fields_machine_and_keys_with_curl(agent: Agent) -> None:
    # the 11th newest to the 2nd newest: gatewayd's moves from the tail
    body = agent.curl("/entries?source=syslog", "-H", "Range: entries=:-10:10", "-H", "Accept: application/json")
    got = [json.loads(line)["MESSAGE"] for line in body.stdout.splitlines()]
    assert [m.split()[0] for m in got] == [f"GW:{i}" for i in range(N - 11, N - 1)]
    # a cursor, a skip, a count; the same from a match
    last = json.loads(agent.query("--source", "syslog", "-n", "1", "-o", "json"))
    body = agent.curl("/entries?SYSLOG_IDENTIFIER=api&source=syslog",
                      "-H", f"Range: entries={last['__CURSOR']}:-2:2", "-H", "Accept: application/json")
    assert [json.loads(line)["MESSAGE"].split()[0] for line in body.stdout.splitlines()] == \
        [f"GW:{N - 15}", f"GW:{N - 10}"]
    discrete = agent.curl("/entries?discrete", "-H", f"Range: entries={last['__CURSOR']}")
    assert discrete.stdout.count(b"\n") == 1 and f"GW:{N - 1} ".encode() in discrete.stdout
    # /fields: the values hostlog query -F lists
    fields = agent.curl("/fields/SYSLOG_IDENTIFIER?source=syslog").stdout
    assert fields == agent.query("-F", "SYSLOG_IDENTIFIER", "--source", "syslog")
    assert sorted(fields.split()) == sorted(a.encode() for a in APPS)
    assert agent.curl("/fields/_HOSTNAME?source=syslog").stdout.split() == [f"node-{i}".encode() for i in range(4)]
    # /machine
    machine = json.loads(agent.curl("/machine").stdout)
    assert machine["hostname"] == "gw-e2e" and machine["machine_id"] == Path("/etc/machine-id").read_text().strip()
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert int(machine["cutoff_from_realtime"]) == (agent.now - epoch) // dt.timedelta(microseconds=1)
    # keys: none, a wrong one, basic auth with the key as the password
    assert CURL is not None
    none = subprocess.run([CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code}", agent.base + "/entries"],
                          capture_output=True, timeout=60)
    assert none.stdout == b"401"
    wrong = subprocess.run([CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                            "Authorization: Bearer hlk_wrong", agent.base + "/machine"],
                           capture_output=True, timeout=60)
    assert wrong.stdout == b"401"
    basic = subprocess.run([CURL, "-sS", "-u", f"x:{agent.key}", "-H", "Range: entries=:-1:2",
                            agent.base + "/entries?source=syslog"], capture_output=True, timeout=60)
    assert basic.stdout.count(b"\n") == 2 and f"GW:{N - 2} ".encode() in basic.stdout
    bad = agent.curl("/entries", "-H", "Range: entries=:1:0", "-w", "%{http_code}", check=False)
    assert bad.stdout.endswith(b"400") and b"num_entries" in bad.stdout


def test_journal_remote_pulls_the_spool_into_a_journal(agent: Agent, tmp_path: Path) -> None:
    need(JOURNAL_REMOTE.exists(), f"{JOURNAL_REMOTE} (Debian package systemd-journal-remote)")
    need(JOURNALCTL is not None, "journalctl")
    out = tmp_path / "remote.journal"
    # journal-remote runs curl -H'Accept: application/vnd.fdo.journal' URL/entries and
    # finishes at the end of the stream
    t0 = time.monotonic()
    proc = subprocess.Popen([str(JOURNAL_REMOTE), f"--url=http://x:{agent.key}@127.0.0.1:{agent.http_port}",
                             f"--output={out}", "--split-mode=none"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pull_s = time.monotonic() - t0
    assert proc.returncode == 0, err.decode()
    assert b"Finishing after writing" in err, err.decode()
    shown = subprocess.run([JOURNALCTL, f"--file={out}", "-o", "json", "--no-pager"], capture_output=True,
                           timeout=120, env=dict(os.environ, SYSTEMD_COLORS="0"))
    assert shown.returncode == 0, shown.stderr.decode()
    journal = [json.loads(line) for line in shown.stdout.splitlines()]
    in_spool = map(json.loads, agent.query("-o", "json").splitlines())
    spool = {(o["_HOSTLOG_ORIGIN"], o["_HOSTLOG_SEQ"]): o for o in in_spool}
    pulled = {(e["_HOSTLOG_ORIGIN"], e["_HOSTLOG_SEQ"]): e for e in journal}
    assert len(pulled) == len(journal)  # each record once
    top = max(int(seq) for _, seq in pulled)
    assert set(pulled) == {k for k in spool if int(k[1]) <= top}  # nothing lost
    syslog = [e for e in journal if e["_HOSTLOG_SOURCE"] == "syslog"]
    assert len(syslog) == N
    for key, entry in pulled.items():
        record = spool[key]
        for name in ("MESSAGE", "_HOSTNAME", "SYSLOG_IDENTIFIER", "PRIORITY", "_PID", "__REALTIME_TIMESTAMP",
                     "SYSLOG_FACILITY"):
            assert entry.get(name) == record.get(name), (key, name)
    i = 4321
    entry = next(e for e in syslog if e["MESSAGE"].startswith(f"GW:{i} "))
    assert (entry["_HOSTNAME"], entry["SYSLOG_IDENTIFIER"], entry["PRIORITY"]) == (f"node-{i % 4}", APPS[i % 5],
                                                                                str(i % 8))
    # journalctl reads the file with its own filters: an identifier, a priority
    api = subprocess.run([JOURNALCTL, f"--file={out}", "-t", "api", "-p", "err", "-o", "cat", "--no-pager"],
                         capture_output=True, timeout=60)
    expected = [i for i in range(N) if i % 5 == 0 and i % 8 <= 3]
    assert [line.split()[0] for line in api.stdout.decode().splitlines()] == [f"GW:{i}" for i in expected]
    print(f"\nsystemd-journal-remote pulled {len(journal)} records in {pull_s:.2f}s")


def test_curl_follows_until_the_records_arrive(agent: Agent) -> None:
    assert CURL is not None
    last = json.loads(agent.query("--source", "syslog", "-n", "1", "-o", "json"))
    # the last record, then the next three: the stream ends after 4 entries
    proc = subprocess.Popen([CURL, "-sS", "-N", "--max-time", "60", "-H", f"Authorization: Bearer {agent.key}",
                             "-H", f"Range: entries={last['__CURSOR']}:0:4",
                             agent.base + "/entries?follow&source=syslog"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"GW:{N - 1} ".encode() in first
        agent.send(syslog_frames(N, 3, agent.now))
        rest, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [line.split(b": ", 1)[1].split()[0] for line in rest.splitlines()] == [b"GW:10000", b"GW:10001",
                                                                                 b"GW:10002"]
