"""`hostlog query --around CURSOR [--window]` over a real spool."""

from __future__ import annotations

import json
from pathlib import Path

from hostlog.cli.main import main
from hostlog.record import Columns, Record
from hostlog.spool.keys import Keyring
from hostlog.spool.spool import Spool

T0 = 1_764_000_000 * 10**9


def build(directory: Path) -> None:
    keyring = Keyring.load_or_create(directory / "spool.key")
    spool = Spool.open(directory / "spool", keyring)
    try:
        records = [Record(ts=T0 + i * 10**9, msg=f"web {i}", app="web", pid=10, host="h", source="syslog")
                   for i in range(0, 100, 5)]
        records += [Record(ts=T0 + i * 10**9, msg=f"db {i}", app="db", pid=20, host="h", source="journald",
                           fields={"REQUEST_ID": "r1" if i == 51 else "r2"}) for i in range(1, 100, 10)]
        records += [Record(ts=T0 + 50 * 10**9, msg="the error", app="api", pid=30, host="h", source="file",
                           severity=3, fields={"REQUEST_ID": "r1"})]
        records += [Record(ts=T0 + 60 * 10**9, msg="api again", app="api", pid=30, host="h", source="file")]
        records.sort(key=lambda r: r.ts)
        spool.append(Columns.of(records))
        spool.sync()
    finally:
        spool.close()


def query(capsys, directory: Path, *args: str) -> tuple[int, list[dict]]:
    code = main(["query", "-D", str(directory / "spool"), "-o", "json", "--no-pager", *args])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_around_shows_every_source_in_the_window_related_first(tmp_path: Path, capsys) -> None:
    build(tmp_path)
    _, rows = query(capsys, tmp_path, "-g", "the error")
    cursor = rows[0]["__CURSOR"]
    code, rows = query(capsys, tmp_path, "--around", cursor, "--window", "10s")
    assert code == 0
    messages = [r["MESSAGE"] for r in rows]
    # the error and what shares its pid (api again) or its request id (db 51), then the rest
    assert messages[:3] == ["the error", "db 51", "api again"]
    assert messages[3:] == ["web 40", "db 41", "web 45", "web 50", "web 55", "web 60"]
    assert {r["_HOSTLOG_SOURCE"] for r in rows} == {"syslog", "journald", "file"}
    # the selection options still apply
    _, rows = query(capsys, tmp_path, "--around", cursor, "--window", "10s", "-u", "web")
    assert [r["MESSAGE"] for r in rows] == ["web 40", "web 45", "web 50", "web 55", "web 60"]
    assert main(["query", "-D", str(tmp_path / "spool"), "--no-pager", "--around", "nosuch:1"]) == 1
    assert "no record has the cursor" in capsys.readouterr().err


def test_around_is_not_for_follow(tmp_path: Path, capsys) -> None:
    build(tmp_path)
    assert main(["query", "-D", str(tmp_path / "spool"), "--around", "x:1", "-f"]) == 1
    assert "not with -f" in capsys.readouterr().err
