"""hostlog's /entries, /fields and /machine beside the real
systemd-journal-gatewayd over the same entries.

The entries (two boots, this one among them; three identifiers; every
priority; a multi-line message; fields with quotes, TABs, newlines, binary
and 5,000-byte values) are written twice: into a journal file by the real
systemd-journal-remote, served by the real systemd-journal-gatewayd (socket
activated on a free loopback port); and into a spool as the journald
collector maps them, served by hostlog's server. Then the same requests
go to both: a table of Range headers (the cursor of the same entry in each)
and matches, compared by the entries shown; the layouts compared byte for
byte (text/plain) and object by object (json, json-sse, json-seq, export:
every field but the cursor and hostlog's own); the refusals compared by
status.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostlog.journal.fields import journal_to_record, parse_export
from tests.agentproc import free_port
from tests.conftest import need
from tests.integration.helpers import JOURNAL_REMOTE, build_journal, export_entry
from tests.unit.http.test_gatewayd import Server

GATEWAYD = Path("/usr/lib/systemd/systemd-journal-gatewayd")
SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")
THIS_BOOT = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
OTHER_BOOT = "0123456789abcdef0123456789abcdef"
N = 24
HOSTLOG_FIELDS = {"_HOSTLOG_SOURCE", "_HOSTLOG_ORIGIN", "_HOSTLOG_SEQ"}
SPECIAL = ['with "quotes" and \\', "tab\there", "x" * 5000, "ünïcödé"]


def entries() -> bytes:
    out = []
    for i in range(N):
        fields: dict[str, str | bytes] = {
            "__REALTIME_TIMESTAMP": str(1_700_000_000_000_000 + i * 1_000_000),
            "__MONOTONIC_TIMESTAMP": str(1000 + i),
            "_BOOT_ID": THIS_BOOT if i >= N // 2 else OTHER_BOOT,
            "_HOSTNAME": "web-1" if i % 3 else "db-1",
            "SYSLOG_IDENTIFIER": ["even", "odd", "third"][i % 3] if i % 6 != 5 else "odd",
            "_PID": str(400 + i),
            "PRIORITY": str(i % 8),
            "MESSAGE": f"m{i}" if i != 7 else "m7\nsecond line",
            "SPECIAL": SPECIAL[i % len(SPECIAL)] if i % 5 else b"bin\x00\x01",
        }
        out.append(export_entry(fields))
    return b"".join(out)


class Gatewayd:
    """The real systemd-journal-gatewayd over one journal file, on a loopback port."""

    def __init__(self, journal: Path) -> None:
        self.port = free_port()
        assert SOCKET_ACTIVATE is not None
        self.proc = subprocess.Popen([SOCKET_ACTIVATE, "-l", f"127.0.0.1:{self.port}", str(GATEWAYD),
                                      f"--file={journal}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=dict(os.environ, SYSTEMD_LOG_LEVEL="warning"))
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError("gatewayd did not start") from None
                time.sleep(0.05)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gatewayd, Server]]:
    need(GATEWAYD.exists(), f"{GATEWAYD} (Debian package systemd-journal-remote)")
    need(JOURNAL_REMOTE.exists(), f"{JOURNAL_REMOTE} (Debian package systemd-journal-remote)")
    need(SOCKET_ACTIVATE is not None, "systemd-socket-activate (package systemd)")
    tmp = tmp_path_factory.mktemp("vs-gatewayd")
    export = entries()
    journal = build_journal(export, tmp / "journal" / "remote.journal")
    gw = Gatewayd(journal)
    srv = None
    try:
        srv = Server(tmp / "hostlog")
        # the audit records of these requests are kept out of the spool compared
        # (the audit trail's own tests are tests/unit/http/test_server.py's)
        assert srv.served.server is not None
        kept: list = []
        srv.served.server.ctx.submit = kept.append
        records = [journal_to_record(e) for e in parse_export(export)]
        for at in range(0, N, 5):  # a few frames
            srv.write(records[at:at + 5])
        yield gw, srv
    finally:
        gw.stop()
        if srv is not None:
            srv.close()


def messages(body: bytes) -> list[str]:
    return [json.loads(line)["MESSAGE"] for line in body.splitlines() if line]


def cursor_of(get, message: str) -> str:
    status, body = get("/entries", {"Accept": "application/json"})
    for line in body.splitlines():
        obj = json.loads(line)
        if obj["MESSAGE"] == message:
            return obj["__CURSOR"]
    raise AssertionError(message)


def hostlog_get(srv: Server):
    def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        status, _, body = srv.get(path, headers)
        return status, body
    return get


# each: the query string, a Range (CURSOR stands for the cursor of entry m9)
TABLE = [
    ("", None), ("", "entries=:-3:2"), ("", "entries=:-1:5"), ("", "entries=:0:2"), ("", "entries=:2:2"),
    ("", "entries=:100:2"), ("", "entries=:-100:2"), ("", "entries=:5"), ("", "entries="),
    ("", "entries=CURSOR"), ("", "entries=CURSOR:2"), ("", "entries=CURSOR:-1:3"), ("", "entries=CURSOR:-20:3"),
    ("", "entries=CURSOR:30:3"), ("", "entries=CURSOR:-2:"), ("?discrete", "entries=CURSOR"),
    ("?discrete", "entries=CURSOR:1:3"), ("?discrete&SYSLOG_IDENTIFIER=odd", "entries=CURSOR"),
    ("?SYSLOG_IDENTIFIER=odd", None), ("?SYSLOG_IDENTIFIER=odd&SYSLOG_IDENTIFIER=even", "entries=:-2:3"),
    ("?SYSLOG_IDENTIFIER=third", "entries=CURSOR:-1:3"), ("?SYSLOG_IDENTIFIER=third", "entries=CURSOR:0:3"),
    ("?SYSLOG_IDENTIFIER=third", "entries=CURSOR:1:2"), ("?SYSLOG_IDENTIFIER=odd&PRIORITY=3", None),
    ("?_HOSTNAME=db-1&PRIORITY=0&PRIORITY=6", None), ("?boot", None), ("?boot&SYSLOG_IDENTIFIER=even", "entries=:-1:2"),
    ("?boot=no", "entries=:3"), (f"?_BOOT_ID={OTHER_BOOT}", "entries=:-2:5"),
    ("", "entries=:010:1"), ("", "entries=:0b11:1"), ("", "entries=:-0x2:1"), ("", "entries=: 1:2"),
    ("", "entries=:1: 2"), ("", "entries=:1:+2"),
]


@pytest.mark.parametrize("query, range_", TABLE)
def test_the_same_entries_are_shown(both: tuple[Gatewayd, Server], query: str, range_: str | None) -> None:
    gw, srv = both
    results = []
    for get in (gw.get, hostlog_get(srv)):
        headers = {"Accept": "application/json"}
        if range_ is not None:
            headers["Range"] = range_.replace("CURSOR", cursor_of(get, "m9"))
        status, body = get("/entries" + query, headers)
        results.append((status, messages(body) if status == 200 else None))
    assert results[1] == results[0]
    assert results[0][0] == 200


@pytest.mark.parametrize("query, range_", [
    # (white space after the value is not part of a header's value: HTTP's parser takes it off)
    ("", "entries=:1:0"), ("", "entries=:1:-2"), ("", "entries=:1:2:3"), ("", "entries=:a"),
    ("", "entries=::1"), ("", "entries=:9223372036854775808:2"), ("?follow=maybe", None), ("?lower=x", None),
    ("?discrete", None),
])
def test_the_same_requests_are_refused(both: tuple[Gatewayd, Server], query: str, range_: str | None) -> None:
    gw, srv = both
    headers = {} if range_ is None else {"Range": range_}
    assert gw.get("/entries" + query, headers)[0] == 400
    assert hostlog_get(srv)("/entries" + query, headers)[0] == 400


def _objects(body: bytes, mode: str) -> list[dict]:
    if mode == "export":
        out = [{k: [v.decode("utf-8", "replace") for v in vs] for k, vs in e.items()} for e in parse_export(body)]
    elif mode == "json-sse":
        out = [json.loads(chunk[len(b"data: "):]) for chunk in body.split(b"\n\n") if chunk]
    elif mode == "json-seq":
        out = [json.loads(chunk) for chunk in body.split(b"\x1e") if chunk]
    else:
        out = [json.loads(line) for line in body.splitlines()]
    return [{k: v for k, v in o.items() if k != "__CURSOR" and k not in HOSTLOG_FIELDS} for o in out]


@pytest.mark.parametrize("media, mode", [("application/json", "json"), ("text/event-stream", "json-sse"),
                                         ("application/json-seq", "json-seq"),
                                         ("application/vnd.fdo.journal", "export")])
def test_the_same_objects(both: tuple[Gatewayd, Server], media: str, mode: str) -> None:
    gw, srv = both
    theirs = _objects(gw.get("/entries", {"Accept": media})[1], mode)
    ours = _objects(hostlog_get(srv)("/entries", {"Accept": media})[1], mode)
    assert len(theirs) == N and ours == theirs


def test_the_same_text(both: tuple[Gatewayd, Server]) -> None:
    gw, srv = both
    for accept in ("text/plain", "*/*", "application/xml"):
        theirs = gw.get("/entries", {"Accept": accept})[1]
        assert hostlog_get(srv)("/entries", {"Accept": accept})[1] == theirs, accept
    assert b"second line" in theirs and b"-- Boot" not in theirs


@pytest.mark.parametrize("name", ["SYSLOG_IDENTIFIER", "PRIORITY", "SPECIAL", "MESSAGE", "_BOOT_ID"])
def test_the_same_field_values(both: tuple[Gatewayd, Server], name: str) -> None:
    gw, srv = both
    for headers in ({}, {"Accept": "application/json"}):
        theirs = gw.get(f"/fields/{name}", headers)[1]
        ours = hostlog_get(srv)(f"/fields/{name}", headers)[1]
        if headers:  # one line per value; gatewayd's order is its hash table's
            assert sorted(ours.splitlines()) == sorted(theirs.splitlines())
        else:  # a value may hold a newline: compare the values as a set of byte strings
            assert len(ours) == len(theirs) and set(ours.split(b"\n")) == set(theirs.split(b"\n"))
    assert gw.get("/fields/lower")[0] == hostlog_get(srv)("/fields/lower")[0] == 400


def test_the_same_machine(both: tuple[Gatewayd, Server]) -> None:
    gw, srv = both
    theirs = json.loads(gw.get("/machine")[1])
    ours = json.loads(hostlog_get(srv)("/machine")[1])
    assert list(ours) == list(theirs)
    for key in ("machine_id", "boot_id", "os_pretty_name", "cutoff_from_realtime", "cutoff_to_realtime"):
        assert ours[key] == theirs[key], key
    # hostname: the agent's [agent] hostname; usage: the spool's bytes; virtualization:
    # gatewayd asks systemd over D-Bus, hostlog runs systemd-detect-virt (docs/gatewayd.md)
    assert all(isinstance(v, str) for v in ours.values())
