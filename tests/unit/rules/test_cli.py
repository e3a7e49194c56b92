"""``hostlog rules test`` and ``hostlog config check`` on rules."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hostlog.cli.main import main
from hostlog.cli.rules_cmd import status_lines
from hostlog.record import Columns, Record
from hostlog.spool.keys import Keyring
from hostlog.spool.spool import Spool
from hostlog.spool.writer import SpoolWriter

CONFIG = r"""
[agent]
state_dir = "{tmp}/state"

[[forward]]
name = "central"
targets = ["tcp://127.0.0.1:7514"]

[[rule]]
name = "no-debug"
match = {{ priority = "debug..debug" }}
drop = true

[[rule]]
name = "secrets"
redact = ['(?i)password=\S+']

[[rule]]
name = "api"
match = {{ identifier = "api" }}
parse = "json"
to = ["central"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    return path


def test_rules_test_prints_before_after_and_who_dropped_what(config: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    sample = tmp_path / "sample.log"
    sample.write_text("<15>1 2026-01-01T00:00:00Z h cron 1 - - tick\n"
                      "login password=hunter2\n"
                      '<14>1 2026-01-01T00:00:00Z h api 7 - - {"level": "err"}\n'
                      "\n")
    assert main(["rules", "test", "-c", str(config), str(sample), "--app", "web"]) == 0
    out = capsys.readouterr().out
    assert "before: debug cron[1]: tick\ndropped by rule no-debug\n" in out
    assert "before: info web: login password=hunter2\nafter:  info web: login [REDACTED]\n" in out
    assert "  changed by secrets: message\n" in out
    assert "_HOSTLOG_ROUTE=central" in out and "changed by api: +_HOSTLOG_ROUTE +level" in out
    assert "--- 3 records: 2 kept, 1 dropped\n" in out
    assert "rule no-debug: matched 1, dropped 1\n" in out and "rule api: matched 1, parsed 1, routed 1\n" in out


def test_rules_test_over_a_spool(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def fill() -> None:
        spool = Spool.open(tmp_path / "state" / "spool", Keyring.load_or_create(tmp_path / "state" / "spool.key"))
        writer = SpoolWriter(spool, fsync="never")
        writer.start()
        await writer.write(Columns.of([Record(ts=i, msg=f"stored {i}", app="x", severity=7 if i == 2 else 6)
                                       for i in range(4)]))
        await writer.stop()
        spool.close()

    asyncio.run(fill())
    assert main(["rules", "test", "-c", str(config), "--spool", str(tmp_path / "state" / "spool"), "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "stored 0" not in out and "before: debug x: stored 2\ndropped by rule no-debug" in out
    assert "--- 3 records: 2 kept, 1 dropped" in out


def test_config_check_names_the_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "x"\nredact = ["("]\n[[rule]]\nname = "y"\nto = ["nowhere"]\n')
    assert main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "rule[0].redact[0]: invalid regular expression" in err
    assert main(["rules", "test", "-c", str(bad)]) == 1


def test_status_lines() -> None:
    assert status_lines([{"name": "a", "matched": 5, "dropped": 2, "sampled_out": 1, "redacted": 1},
                         {"name": "b", "matched": 0, "dropped": 0, "removed": True}]) == [
        "rule a: matched 5, dropped 3, 1 redacted", "rule b: matched 0, dropped 0 (removed by a reload)"]
