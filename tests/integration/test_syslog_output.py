"""The syslog output to a real rsyslog over TCP and over TLS (RFC 5425):
every record arrives once, with its host, app, pid, severity, facility,
structured data and fields."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from hostlog.config import Forward, Tls
from hostlog.forward.output import Identity
from hostlog.forward.sender import ChunkSource, build_destination
from hostlog.forward.tls import client_context
from hostlog.record import Columns, Record
from hostlog.spool.reader import SpoolReader
from tests.agentproc import wait_for
from tests.conftest import need
from tests.integration.helpers import SpoolHarness
from tests.support.pki import make_test_pki

RSYSLOG_CONF = """
global(workDirectory="{work}" {tls_global})
module(load="imtcp" {tls_module})
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="r")
template(name="t" type="string"
         string="%hostname%\\t%app-name%\\t%procid%\\t%syslogseverity%\\t%syslogfacility%\\t%msgid%\\t%structured-data%\\t%msg%\\n")
ruleset(name="r") {{ action(type="omfile" file="{work}/out.txt" template="t") }}
"""
N = 3000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records() -> Columns:
    rows = []
    for i in range(N):
        fields = {"unit": "web.service", "quote": 'say "hi" [x]'}
        if i % 3 == 0:
            fields.update({"sd.exampleSDID@32473.iut": "3", "sd.exampleSDID@32473.eventSource": "App",
                           "msgid": "ID47"})
        rows.append(Record(ts=1_764_756_000_123_456_000 + i * 1000, msg=f"message {i} ünï", host="web-1",
                           source="syslog", app="shop", pid=4000 + i % 7, severity=i % 8,
                           facility=(3 if i % 2 else None), fields=fields))
    return Columns.of(rows)


@pytest.mark.parametrize("scheme", ["tcp", "tls"])
def test_rsyslog_receives_every_record_once_with_its_fields(tmp_path: Path, scheme: str) -> None:
    need(shutil.which("rsyslogd") is not None, "rsyslogd (Debian package rsyslog)")
    if scheme == "tls":
        need(Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists()
             or bool(list(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so"))),
             "rsyslog's TLS driver (Debian package rsyslog-gnutls)")
    pki = make_test_pki(tmp_path / "pki")
    port = free_port()
    tls_global = tls_module = ""
    if scheme == "tls":
        tls_global = (f'defaultNetstreamDriverCAFile="{pki["ca"]}" defaultNetstreamDriverCertFile="{pki["server"]}" '
                      f'defaultNetstreamDriverKeyFile="{pki["server_key"]}"')
        tls_module = 'streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon"'
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=tmp_path, port=port, tls_global=tls_global, tls_module=tls_module))
    proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(conf), "-i", str(tmp_path / "pid")],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr", "wb"))
    out = tmp_path / "out.txt"

    async def main() -> tuple[int, dict]:
        harness = SpoolHarness(tmp_path / "edge", hostname="web-1")
        harness.open()
        spool, writer = harness.spool, harness.writer
        await harness.context.sink.write(records())
        tls = Tls(ca=pki["ca"], cert=pki["client"], key=pki["client_key"])
        dest = build_destination(
            Forward(name="rsyslog", type="syslog", targets=[f"{scheme}://localhost:{port}"]),
            cursors=spool.directory / "state" / "cursors",
            source=lambda: ChunkSource(SpoolReader(spool.directory, spool.keyring), spool.agent_id),
            identity=Identity(spool.agent_id, "web-1"), durable=lambda: writer.durable_seq,
            ssl_context=lambda: client_context(tls.ca, tls.cert, tls.key),
            report=lambda where, exc: harness.context.error("forward", where, exc))
        await dest.start()
        deadline = asyncio.get_running_loop().time() + 30
        while dest.links[0].cursor.acked < N and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        status = dest.status()
        await dest.stop()
        await harness.close()
        return dest.links[0].cursor.acked, status

    try:
        def listening() -> bool:
            assert proc.poll() is None, (tmp_path / "stderr").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(listening, what="rsyslog listening")
        acked, status = asyncio.run(main())
        assert acked == N, status
        wait_for(lambda: out.exists() and out.read_text().count("\n") >= N, timeout=20, what="rsyslog's file")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    rows = [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == N
    for i, (host, app, procid, sev, fac, msgid, sd, msg) in enumerate(rows):
        assert (host, app, procid) == ("web-1", "shop", str(4000 + i % 7))
        assert (int(sev), int(fac)) == (i % 8, 3 if i % 2 else 1)
        assert msg.lstrip("\ufeff").strip() == f"message {i} ünï"
        assert f'seq="{i + 1}"' in sd and 'unit="web.service"' in sd and r'quote="say \"hi\" [x\]"' in sd
        if i % 3 == 0:
            assert msgid == "ID47" and '[exampleSDID@32473 iut="3" eventSource="App"]' in sd
        else:
            assert msgid == "-" and "exampleSDID" not in sd
