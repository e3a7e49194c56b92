"""The syslog collector with real clients: logger (util-linux) and rsyslog."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.agentproc import AgentProcess, free_port, wait_for
from tests.conftest import need
from tests.tlsutil import make_pki


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def logger(*args: str) -> None:
    need(shutil.which("logger") is not None, "logger (util-linux)")
    subprocess.run(["logger", *args], check=True, timeout=60)


@pytest.fixture
def agent(tmp_path):
    port, tls_port = free_port(), free_port()
    pki = make_pki(tmp_path / "pki")
    listen = [f"udp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port}", f"tls://127.0.0.1:{tls_port}",
              f"unix://{tmp_path}/dev-log", f"unix-stream://{tmp_path}/stream-log"]
    if has_ipv6():
        listen += [f"udp://[::1]:{port}", f"tcp://[::1]:{port}"]
    a = AgentProcess(tmp_path, textwrap.dedent(f"""
        [agent]
        hostname = "collector-host"
        state_dir = "{tmp_path}/state"
        [spool]
        fsync_interval = "20ms"
        [[source]]
        type = "syslog"
        name = "syslog"
        max_message = "8KiB"
        listen = {listen!r}
        [tls]
        ca = "{pki['ca']}"
        cert = "{pki['server']}"
        key = "{pki['server_key']}"
        """).replace("'", '"'))
    a.port, a.tls_port, a.pki = port, tls_port, pki
    a.start()
    yield a
    a.stop(signal.SIGKILL)


def by_message(agent, *args) -> dict[str, dict]:
    return {r["MESSAGE"]: r for r in agent.query_json(*args)}


def test_logger_over_every_transport_and_format(agent, tmp_path):
    port = str(agent.port)
    sends = {
        "udp 3164": ["--udp", "--server", "127.0.0.1", "--port", port, "--rfc3164"],
        "udp 5424": ["--udp", "--server", "127.0.0.1", "--port", port, "--rfc5424"],
        "tcp 3164": ["--tcp", "--server", "127.0.0.1", "--port", port, "--rfc3164"],
        "tcp 5424 octet": ["--tcp", "--octet-count", "--server", "127.0.0.1", "--port", port,
                           "--rfc5424"],
        "unix dgram": ["--socket", f"{tmp_path}/dev-log"],
        "unix stream": ["--socket", f"{tmp_path}/stream-log", "--tcp"],
    }
    if has_ipv6():
        sends["udp6"] = ["--udp", "--server", "::1", "--port", port]
        sends["tcp6"] = ["--tcp", "--server", "::1", "--port", port]
    for msg, args in sends.items():
        logger(*args, "-t", "client", "-p", "daemon.notice", "--id=4242", msg)
    got = wait_for(lambda: (m := by_message(agent, "-t", "client")) and len(m) == len(sends) and m,
                   what=f"{len(sends)} records")
    for msg in sends:
        r = got[msg]
        assert (r["PRIORITY"], r["SYSLOG_FACILITY"], r["_PID"]) == ("5", "3", "4242"), (msg, r)
        assert "parse_error" not in r, (msg, r)
    # RFC 5424 carries the sender's timestamp with fractions: it must survive
    assert got["udp 5424"]["__REALTIME_TIMESTAMP"] != ""
    # exactly once each
    assert len(agent.query_json("-t", "client")) == len(sends)


def test_tls_with_client_certificate(agent):
    ctx = ssl.create_default_context(cafile=str(agent.pki["ca"]))
    ctx.load_cert_chain(str(agent.pki["client"]), str(agent.pki["client_key"]))
    with socket.create_connection(("127.0.0.1", agent.tls_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            body = b"<34>1 2024-05-01T10:00:00.123456+02:00 tlshost su 77 ID47 - over tls"
            second = b"<13>1 - tlshost app 9 - - second over tls"
            tls.sendall(b"%d %s%d %s" % (len(body), body, len(second), second))
    got = wait_for(lambda: (m := by_message(agent, "--host", "tlshost")) and len(m) == 2 and m,
                   what="2 tls records")
    first = got["over tls"]
    assert (first["SYSLOG_IDENTIFIER"], first["_PID"], first["PRIORITY"]) == ("su", "77", "2")
    assert first["__REALTIME_TIMESTAMP"] == str(1714550400123456)  # 08:00:00.123456 UTC
    assert first["msgid"] == "ID47"


def test_an_over_long_tcp_message_is_cut_and_marked_and_the_connection_survives(agent):
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as s:
        s.sendall(b"<13>1 - h longapp - - - " + b"x" * 20000 + b"\n")
        s.sendall(b"<13>1 - h longapp - - - after the long one\n")
    got = wait_for(lambda: (r := agent.query_json("-t", "longapp", "--all")) and len(r) == 2 and r,
                   what="2 records")
    assert got[0]["truncated"] == "true" and len(got[0]["MESSAGE"]) < 8192
    assert got[1]["MESSAGE"] == "after the long one"


def test_later_reads_of_an_lf_connection_keep_cuts_nuls_and_rfc3164(agent):
    # After its first read an LF-framed connection's lines are read in place
    # as one block; what the framer must cut, or split at a NUL, and lines
    # the compiled splitter does not read, go the framer's and Python's way.
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as s:
        s.sendall(b"<13>1 - h blockapp - - - first\n")
        wait_for(lambda: agent.query_json("-t", "blockapp"), what="the first record")
        s.sendall(b"<13>1 - h blockapp - - - second\r\n"
                  b"<13>Jun 19 10:00:00 h blockapp[7]: third, rfc 3164\n")
        wait_for(lambda: len(agent.query_json("-t", "blockapp")) == 3, what="3 records")
        s.sendall(b"<13>1 - h blockapp - - - fourth\n<13>1 - h blockapp - - - "
                  + b"x" * 9000 + b"\n")
        wait_for(lambda: len(agent.query_json("-t", "blockapp")) == 5, what="5 records")
        s.sendall(b"<13>1 - h blockapp - - - sixth\x00<13>1 - h blockapp - - - seventh\n")
    got = wait_for(lambda: (r := agent.query_json("-t", "blockapp", "--all")) and len(r) == 7 and r,
                   what="7 records")
    assert [r["MESSAGE"][:6] for r in got] == ["first", "second", "third,", "fourth", "xxxxxx",
                                               "sixth", "sevent"]
    assert got[2]["_PID"] == "7" and "truncated" not in got[3]
    assert got[4]["truncated"] == "true" and len(got[4]["MESSAGE"]) < 8192


def test_later_reads_of_an_octet_counted_connection_keep_cuts_and_rfc3164(agent):
    def frame(msg: bytes) -> bytes:
        return b"%d %s" % (len(msg), msg)
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as s:
        s.sendall(frame(b"<13>1 - h countapp - - - first"))
        wait_for(lambda: agent.query_json("-t", "countapp"), what="the first record")
        last = frame(b"<13>1 - h countapp - - - sixth")
        s.sendall(frame(b"<13>1 - h countapp - - - second\nwith an LF inside")
                  + frame(b"<13>Jun 19 10:00:00 h countapp[7]: third, rfc 3164")
                  + frame(b"<13>1 - h countapp - - - fourth")
                  + frame(b"<13>1 - h countapp - - - " + b"x" * 9000)
                  + last[:20])  # a frame cut by the end of this read
        wait_for(lambda: len(agent.query_json("-t", "countapp")) == 5, what="5 records")
        s.sendall(last[20:])
    got = wait_for(lambda: (r := agent.query_json("-t", "countapp", "--all")) and len(r) == 6 and r,
                   what="6 records")
    assert [r["MESSAGE"][:6] for r in got] == ["first", "second", "third,", "fourth", "xxxxxx",
                                               "sixth"]
    assert got[1]["MESSAGE"] == "second\nwith an LF inside" and got[2]["_PID"] == "7"
    assert got[4]["truncated"] == "true" and "truncated" not in got[5]


def test_garbage_becomes_a_record_with_a_parse_error(agent):
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as s:
        s.sendall(b"<999>not syslog at all\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(b"\xff\xfe binary junk", ("127.0.0.1", agent.port))
    def bad():
        return [r for r in agent.query_json() if "parse_error" in r]
    rows = wait_for(lambda: len(bad()) == 2 and bad(), what="2 parse errors")
    raw = {str(r["MESSAGE"]) for r in rows}
    assert "<999>not syslog at all" in raw


def test_unix_sockets_are_removed_on_stop(agent, tmp_path):
    assert (tmp_path / "dev-log").is_socket() and (tmp_path / "stream-log").is_socket()
    assert agent.stop(signal.SIGTERM) == 0
    assert not (tmp_path / "dev-log").exists() and not (tmp_path / "stream-log").exists()


RSYSLOG_CONF = """
global(workDirectory="{work}" {tls_global})
module(load="imtcp")
input(type="imtcp" port="{in_port}" address="127.0.0.1")
template(name="fwd5424" type="string" string="<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% %PROCID% %MSGID% - %msg%")
action(type="omfwd" target="127.0.0.1" port="{out_port}" protocol="tcp" {framing} {tls_action}
       template="{template}" queue.type="LinkedList" action.resumeRetryCount="-1")
"""


def run_rsyslog(tmp_path, name, out_port, *, octet: bool, tls: dict | None = None):
    need(shutil.which("rsyslogd") is not None, "rsyslogd (Debian package rsyslog)")
    work = tmp_path / f"rsyslog-{name}"
    work.mkdir()
    in_port = free_port()
    tls_global = tls_action = ""
    if tls is not None:
        need(bool(list(Path("/usr/lib").rglob("lmnsd_gtls.so"))),
             "rsyslog's gtls driver (Debian package rsyslog-gnutls)")
        tls_global = f'defaultNetstreamDriverCAFile="{tls["ca"]}"'
        tls_action = 'StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="anon"'
    conf = work / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(
        work=work, in_port=in_port, out_port=out_port, tls_global=tls_global, tls_action=tls_action,
        framing='TCP_Framing="octet-counted"' if octet else 'TCP_Framing="traditional"',
        template="fwd5424" if octet else "RSYSLOG_ForwardFormat"))
    proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(conf), "-i", str(work / "pid")],
                            stdout=subprocess.DEVNULL, stderr=open(work / "stderr", "wb"))
    def listening():
        try:
            socket.create_connection(("127.0.0.1", in_port), timeout=0.2).close()
            return True
        except OSError:
            return False
    wait_for(lambda: listening() or proc.poll() is not None, what="rsyslog listening")
    assert proc.poll() is None, (work / "stderr").read_text()
    return proc, in_port


@pytest.mark.parametrize("octet", [True, False], ids=["octet-counted", "lf-framed"])
def test_rsyslog_forwards_to_hostlog_over_tcp(agent, tmp_path, octet):
    proc, in_port = run_rsyslog(tmp_path, "octet" if octet else "lf", agent.port, octet=octet)
    try:
        lines = tmp_path / "lines.txt"
        lines.write_text("".join(f"relayed {i:04d}\n" for i in range(500)))
        # --rfc3164: rsyslog then keeps the "relay:" tag, which its traditional
        # forward format needs to be read back (a tag without ":" is message text)
        logger("--tcp", "--rfc3164", "--server", "127.0.0.1", "--port", str(in_port), "-t", "relay",
               "-p", "local0.warning", "-f", str(lines))
        rows = wait_for(lambda: (r := agent.query_json("-t", "relay")) and len(r) >= 500 and r,
                        timeout=30, what="500 relayed records")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    msgs = [r["MESSAGE"].strip() for r in rows]
    assert msgs == [f"relayed {i:04d}" for i in range(500)]  # each once, in order
    assert {(r["PRIORITY"], r["SYSLOG_FACILITY"]) for r in rows} == {("4", "16")}


def test_rsyslog_forwards_to_hostlog_over_tls(agent, tmp_path):
    proc, in_port = run_rsyslog(tmp_path, "tls", agent.tls_port, octet=True, tls=agent.pki)
    try:
        for i in range(50):
            logger("--tcp", "--server", "127.0.0.1", "--port", str(in_port), "-t", "tlsrelay",
                   f"secure {i}")
        rows = wait_for(lambda: (r := agent.query_json("-t", "tlsrelay")) and len(r) >= 50 and r,
                        timeout=30, what="50 records over tls")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert [r["MESSAGE"].strip() for r in rows] == [f"secure {i}" for i in range(50)]


def test_rate_limit_drops_counts_and_says_so(tmp_path):
    port = free_port()
    a = AgentProcess(tmp_path, textwrap.dedent(f"""
        [agent]
        state_dir = "{tmp_path}/state"
        [[source]]
        type = "syslog"
        name = "limited"
        listen = ["udp://127.0.0.1:{port}"]
        per_host_rate_limit = {{ rate = 1, burst = 10 }}
        """))
    a.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            for i in range(100):
                u.sendto(f"<13>1 - h flood - - - m{i}".encode(), ("127.0.0.1", port))
        note = wait_for(lambda: [r for r in a.query_json("-t", "hostlog")
                                 if "Suppressed" in r["MESSAGE"]], what="suppression record")
        kept = a.query_json("-t", "flood")
        assert 10 <= len(kept) <= 13  # the burst, plus what a second's rate refilled
        suppressed = sum(int(r["suppressed"]) for r in note)
        wait_for(lambda: sum(int(r["suppressed"]) for r in a.query_json("-t", "hostlog")
                             if "Suppressed" in r["MESSAGE"]) + len(a.query_json("-t", "flood")) == 100,
                 what="every message kept or counted")
        assert suppressed > 0 and "127.0.0.1" in note[0]["MESSAGE"]
    finally:
        a.stop(signal.SIGKILL)
