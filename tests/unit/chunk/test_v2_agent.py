"""``[spool] chunk = "v2"`` in a real agent: an edge tails a file into a v2
spool and forwards it over mutual TLS to a central whose spool writes v1;
both hold every line, byte for byte, and verify.

Real ``hostlog agent`` processes on loopback; every wait bounded; every
process stopped by its PID.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from hostlog.chunk import chunk_version
from hostlog.spool.reader import SpoolReader
from tests.agentproc import AgentProcess, free_port, wait_for
from tests.support.pki import make_test_pki

LINES = 3000


def _versions(spool: Path) -> set[int]:
    reader = SpoolReader.open(spool)
    found = set()
    for seg, entry in reader.frames():
        chunk = reader.read_chunk(seg, entry)
        assert chunk is not None
        found.add(chunk_version(chunk))
    return found


def test_an_edge_writing_v2_forwards_to_a_central_writing_v1(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path / "pki")
    port = free_port()
    central_home, edge_home = tmp_path / "central", tmp_path / "edge"
    (edge_home / "logs").mkdir(parents=True)
    central_home.mkdir()
    central = AgentProcess(central_home, textwrap.dedent(f"""
        [agent]
        hostname = "central"
        state_dir = "{central_home}/state"

        [spool]
        fsync_interval = "20ms"

        [receiver]
        listen = "tls://127.0.0.1:{port}"

        [tls]
        ca = "{pki['ca']}"
        cert = "{pki['server']}"
        key = "{pki['server_key']}"
        """))
    edge = AgentProcess(edge_home, textwrap.dedent(f"""
        [agent]
        hostname = "edge"
        state_dir = "{edge_home}/state"

        [spool]
        fsync_interval = "20ms"
        chunk = "v2"

        [[source]]
        type = "file"
        name = "files"
        paths = ["{edge_home}/logs/*.log"]
        app = "web"
        start = "beginning"
        poll_interval = "100ms"

        [[forward]]
        name = "central"
        targets = ["tls://localhost:{port}"]

        [tls]
        ca = "{pki['ca']}"
        cert = "{pki['client']}"
        key = "{pki['client_key']}"
        """))
    lines = [f"2026-12-03 10:00:{i % 60:02d}.{i:06d} GET /item/{i * 37 % 1000} 200 {i * 13} bytes "
             f"user{i % 7} ✓ took 0{i % 9}ms" for i in range(LINES)]
    lines[5] = "tab\there, nul\x00 and a number 00012345678901234567890123"
    try:
        central.start()
        edge.start()
        (edge_home / "logs" / "web.log").write_text("".join(line + "\n" for line in lines))

        def shown(agent: AgentProcess) -> list[str]:
            return agent.hostlog("query", "-o", "cat", "--no-pager", "-q", "-u", "web").stdout \
                .decode().split("\n")[:-1]

        wait_for(lambda: len(shown(edge)) >= LINES, timeout=60, what="the edge's spool")
        wait_for(lambda: len(shown(central)) >= LINES, timeout=60, what="the central's spool")
        assert shown(edge) == lines
        assert shown(central) == lines
        for agent in (edge, central):
            verify = agent.hostlog("spool", "verify")
            assert b"OK" in verify.stdout, verify.stdout
    finally:
        edge.stop()
        central.stop()
    assert _versions(edge_home / "state" / "spool") == {2}
    assert _versions(central_home / "state" / "spool") == {1}
