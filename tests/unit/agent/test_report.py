"""The agent's reports ([report]): when each is due, its file names, the
files it writes (atomically) and the ones it prunes, and the [report] keys."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from hostlog.agent import report as agent_report
from hostlog.config import ConfigError, parse_config
from hostlog.config.schema import Report
from hostlog.spool.reader import SpoolReader
from tests.unit.query.test_report import T0, S, rec, write_spool

DOCS = Path(__file__).resolve().parents[3] / "docs" / "config.md"


def test_a_report_is_due_at_each_multiple_of_every() -> None:
    day = 86400 * S
    assert agent_report.next_end(T0, day) == (T0 // day + 1) * day
    assert agent_report.next_end(5 * day, day) == 6 * day  # at the boundary: the next one
    assert agent_report.next_end(5 * day - 1, day) == 5 * day
    assert agent_report.file_name(1_700_006_400 * S, "html") == "hostlog-report-20231115T000000Z.html"


def test_write_report_writes_each_format_and_keeps_the_newest(tmp_path: Path) -> None:
    write_spool(tmp_path, [[rec(T0 + i * S, f"line {i}", severity=3 if i % 4 == 0 else 6) for i in range(40)]])
    reader = SpoolReader.open(tmp_path / "spool")
    out = tmp_path / "reports"
    settings = Report(dir=out, every="10s", formats=["json", "md", "html"], keep=2)
    written = []
    for k in range(1, 5):
        end = T0 + k * 10 * S
        written.append(agent_report.write_report(reader, settings, end, now_ns=end))
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in written[-1] + written[-2])  # keep = 2, per format
    assert not [n for n in os.listdir(out) if n.startswith(".")]
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o640}  # record text: not for everyone
    last = json.loads(written[-1][0].read_text())
    assert last["period"]["since"].startswith("2023-11-14T22:13:50")  # [end - 10 s, end)
    assert last["volume"]["total"] == 10  # records T0+30 s .. T0+39 s
    (out / "unrelated.txt").write_text("x")
    agent_report.prune(out, 1)
    assert sorted(p.name for p in out.iterdir()) == sorted([p.name for p in written[-1]] + ["unrelated.txt"])
    assert agent_report.prune(out, 0) == []  # keep = 0: all


def test_a_failing_report_is_counted_and_the_next_period_is_tried(tmp_path: Path) -> None:
    class Errors:
        def __init__(self) -> None:
            self.seen: list[tuple[str, str, BaseException]] = []

        def report(self, source: str, where: str, exc: BaseException) -> None:
            self.seen.append((source, where, exc))

    async def main() -> tuple[int, int, Errors]:
        errors = Errors()
        writer = agent_report.ReportWriter(Report(dir=tmp_path / "r", every="1s"), tmp_path / "no-spool", None,
                                           errors)
        writer.start()
        for _ in range(100):  # bounded: two periods of 1 s, and the report processes' starts
            if writer.failed >= 2:
                break
            await asyncio.sleep(0.1)
        await writer.stop()
        return writer.failed, writer.written, errors

    failed, written, errors = asyncio.run(main())
    assert failed >= 2 and written == 0
    assert errors.seen[0][:2] == ("report", "write") and "exited with 1" in str(errors.seen[0][2])


def test_the_report_process_writes_what_write_report_writes(tmp_path: Path) -> None:
    write_spool(tmp_path, [[rec(T0 + i * S, f"line {i}") for i in range(20)]])
    settings = Report(dir=tmp_path / "r", every="10s", formats=["json"])
    writer = agent_report.ReportWriter(settings, tmp_path / "spool", tmp_path / "spool.key")
    end = T0 + 20 * S
    res = subprocess.run(writer.command(end), capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    (path,) = res.stdout.decode().split()
    assert Path(path) == tmp_path / "r" / agent_report.file_name(end, "json")
    assert json.loads(Path(path).read_text())["volume"]["total"] == 10


def test_report_keys_are_checked_and_documented() -> None:
    config = parse_config('[report]\ndir = "/var/lib/hostlog/reports"\n')
    assert config.report is not None
    assert (config.report.every, config.report.formats, config.report.keep) == (86400.0, ["html", "json"], 30)
    assert parse_config("").report is None
    for text, key in (('[report]\nevery = "1d"\n', "report.dir"),
                      ('[report]\ndir = "reports"\n', "report.dir"),
                      ('[report]\ndir = "/r"\nevery = "500ms"\n', "report.every"),
                      ('[report]\ndir = "/r"\nformats = ["pdf"]\n', "report.formats[0]"),
                      ('[report]\ndir = "/r"\nformats = []\n', "report.formats"),
                      ('[report]\ndir = "/r"\nkeep = -1\n', "report.keep"),
                      ('[report]\ndir = "/r"\nevry = "1d"\n', "report.evry")):
        with pytest.raises(ConfigError) as info:
            parse_config(text)
        assert [k for k, _ in info.value.problems] == [key], (text, info.value.problems)
    doc = DOCS.read_text()
    assert "## `[report]`" in doc
    for name in Report.model_fields:
        assert f"| `{name}` |" in doc.split("## `[report]`")[1].split("\n## ")[0], name
