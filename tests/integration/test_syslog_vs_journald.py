"""RFC 3164 without a TIMESTAMP, beside the real readers: each message goes to
a standalone systemd-journald (its /dev/log socket) and to rsyslogd (imudp on
loopback), and what they store is held against ``parse_message``: the TAG
rule of docs/syslog.md is journald's, and rsyslog's where the two agree."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import pytest

from hostlog.collectors.syslog.parse import parse_message
from tests.agentproc import free_port, wait_for
from tests.conftest import need
from tests.integration.helpers import StandaloneJournald

# (message, in_rsyslog): in_rsyslog marks the TAG forms rsyslog reads the same
# way ("name:" or "name[pid]:", name without ":", "/", "[", "]")
CASES = [
    (b"<14>myapp: something happened", True), (b"<14>myapp[123]: text", True),
    (b"<14>ERROR: disk full", True), (b"<30>sshd[4711]: Accepted publickey", True),
    (b"<14>myapp:", True), (b"<14>myapp:  two spaces", False), (b"<14>myapp:\tx", False),
    (b"<14>a:b: x", False), (b"<14>a[b]c: x", False), (b"<14>myapp[12x]: x", True),
    (b"<14>myapp/sub[9]: x", False), (b"<14>12:34: x", False),
    (b"<14>hello world", False), (b"<14>Just a sentence: with colon", False),
    (b"<14>host myapp: x", False), (b"<14>myapp[123] text", False), (b"<14>myapp:text", False),
    (b"<14>myapp\t: tab", False), (b"<14>hello", False), (b"<14>", False),
    (b"<14>http://example.com/ is down", False),
]
#: where hostlog reads otherwise than journald, on purpose (docs/syslog.md)
JOURNALD_DIFFERS = {
    b"<14> lead: x": "journald skips blanks before the TAG; hostlog and rsyslog read no TAG",
}
SENDER = ("import socket, sys, time\n"
          "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
          "for m in sys.stdin.buffer.read().split(b'\\x01'):\n"
          "    s.sendto(m, '/run/systemd/journal/dev-log'); time.sleep(0.005)\n")


def ours(raw: bytes) -> tuple[str | None, str | None, str]:
    """parse_message's reading in journald's terms: identifier, pid, message."""
    rec = parse_message(raw, received_ns=1, default_host="h")
    assert "parse_error" not in rec.fields
    pid = str(rec.pid) if rec.pid is not None else rec.fields.get("procid")
    return rec.app or None, pid, rec.msg  # type: ignore[return-value]


def test_tags_read_as_journald_reads_them(tmp_path):
    sent = [raw for raw, _ in CASES] + list(JOURNALD_DIFFERS)
    with StandaloneJournald(tmp_path) as journald:
        journald.run("python3", "-c", SENDER, input=b"\x01".join(sent))

        def stored() -> list[dict]:
            res = subprocess.run(["journalctl", "-D", str(journald.journal_dir), "-o", "json",
                                  "--no-pager", "_TRANSPORT=syslog"], capture_output=True, timeout=60,
                                 check=True)
            return [json.loads(line) for line in res.stdout.splitlines()]
        entries = wait_for(lambda: (e := stored()) and len(e) == len(sent) and e,
                           what=f"{len(sent)} journal entries")
    for raw, entry in zip(sent, entries):
        theirs = (entry.get("SYSLOG_IDENTIFIER"), entry.get("SYSLOG_PID"), entry["MESSAGE"])
        if raw in JOURNALD_DIFFERS:
            assert ours(raw) != theirs, raw  # still a difference, as documented
        elif raw == b"<14>myapp[12x]: x":
            assert ours(raw) == theirs == ("myapp", "12x", "x")  # hostlog: a procid field
        else:
            assert ours(raw) == theirs, raw


RSYSLOG_CONF = """
global(workDirectory="{work}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{port}" ruleset="r")
template(name="t" type="string" string="%programname%\\t%procid%\\t%msg%\\n")
ruleset(name="r") {{ action(type="omfile" file="{work}/out.txt" template="t") }}
"""


def test_tags_read_as_rsyslog_reads_them(tmp_path):
    need(shutil.which("rsyslogd") is not None, "rsyslogd (Debian package rsyslog)")
    port = free_port(socket.SOCK_DGRAM)
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=tmp_path, port=port))
    proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(conf), "-i", str(tmp_path / "pid")],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr", "wb"))
    try:
        sent = [raw for raw, agreed in CASES if agreed]
        out = tmp_path / "out.txt"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # imudp may not be bound yet: send a probe until rsyslog writes it
            def probed() -> bool:
                assert proc.poll() is None, (tmp_path / "stderr").read_text()
                s.sendto(b"<14>probe: up", ("127.0.0.1", port))
                time.sleep(0.05)
                return out.exists() and b"probe" in out.read_bytes()
            wait_for(probed, what="rsyslog receiving")
            for raw in sent:
                s.sendto(raw, ("127.0.0.1", port))
                time.sleep(0.005)

        def lines() -> list[list[str]]:
            rows = [ln.split("\t") for ln in out.read_text().splitlines()]
            return [r for r in rows if r[0] != "probe"]
        got = wait_for(lambda: (r := lines()) and len(r) == len(sent) and r,
                       what=f"{len(sent)} lines from rsyslog")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for raw, (program, procid, msg) in zip(sent, got):
        app, pid, message = ours(raw)
        # rsyslog's %msg% keeps the SP after the TAG; "-" is its no-PROCID
        assert (app, pid or "-", message) == (program, procid, msg[1:] if msg[:1] == " " else msg), raw


@pytest.mark.parametrize("raw", [raw for raw, _ in CASES])
def test_every_case_is_a_headerless_rfc3164_message(raw):
    rec = parse_message(raw, received_ns=1, default_host="h")
    assert (rec.ts, rec.host) == (1, "h") and "parse_error" not in rec.fields
