"""Syslog senders without a clock, through a real agent: Python's
``logging.handlers.SysLogHandler`` writes ``<PRI>ident: message`` with no
TIMESTAMP and no HOSTNAME (RFC 3164 4.3.2); the TAG must still become the
identifier, as journald reads it from /dev/log (docs/syslog.md)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.agentproc import wait_for
from tests.e2e.test_syslog_clients import agent, by_message  # noqa: F401  (the fixture)

SENDER = textwrap.dedent("""
    import logging, logging.handlers, socket, sys
    port, dev_log = int(sys.argv[1]), sys.argv[2]
    targets = {"udp": dict(address=("127.0.0.1", port), socktype=socket.SOCK_DGRAM),
               "tcp": dict(address=("127.0.0.1", port), socktype=socket.SOCK_STREAM),
               "unix": dict(address=dev_log)}
    for name, kw in targets.items():
        h = logging.handlers.SysLogHandler(facility="daemon", **kw)
        # the two forms senders use: ident "name: ", and "name[pid]: " in the format
        h.ident = "pyident: "
        log = logging.getLogger("a" + name)
        log.addHandler(h)
        log.error("first over %s", name)
        h.ident = ""
        h.setFormatter(logging.Formatter("pyfmt[%(process)d]: %(message)s"))
        log.warning("second over %s", name)
        h.setFormatter(logging.Formatter("%(message)s"))
        log.warning("Just a sentence: over %s", name)
        h.close()
""")


def test_python_syslog_handler_tags_become_identifiers(agent, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SENDER, str(agent.port), f"{tmp_path}/dev-log"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err.decode(errors="replace")
    kinds = ("udp", "tcp", "unix")
    first = wait_for(lambda: (m := by_message(agent, "-t", "pyident")) and len(m) == 3 and m,
                     what="3 records of pyident")
    for kind in kinds:
        r = first[f"first over {kind}"]
        assert (r["PRIORITY"], r["SYSLOG_FACILITY"]) == ("3", "3"), r
        assert r["_HOSTNAME"] == "collector-host" and "parse_error" not in r
    second = wait_for(lambda: (m := by_message(agent, "-t", "pyfmt")) and len(m) == 3 and m,
                      what="3 records of pyfmt")
    for kind in kinds:
        r = second[f"second over {kind}"]
        assert (r["_PID"], r["PRIORITY"], r["MESSAGE"]) == (str(proc.pid), "4", f"second over {kind}")
    # a first word without ":" is no TAG: the whole text is the message
    plain = wait_for(lambda: (m := [r for r in agent.query_json("-g", "Just a sentence")])
                     and len(m) == 3 and m, what="3 plain records")
    assert {r["MESSAGE"] for r in plain} == {f"Just a sentence: over {k}" for k in kinds}
    assert all("SYSLOG_IDENTIFIER" not in r or r["SYSLOG_IDENTIFIER"] == "" for r in plain)
    assert len(agent.query_json("-t", "pyident")) == 3  # exactly once each
