"""`hostlog patterns` over a spool: the templates of what `hostlog query` selects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hostlog.cli.main import main
from hostlog.cli.patterns_cmd import sparkline
from hostlog.record import Columns, Record
from hostlog.spool.keys import Keyring
from hostlog.spool.spool import Spool

T0 = 1_764_000_000 * 10**9


def build(directory: Path) -> None:
    keyring = Keyring.load_or_create(directory / "spool.key")
    spool = Spool.open(directory / "spool", keyring)
    try:
        records = [Record(ts=T0 + i * 10**9, msg=f"GET /item/{i} 200 in {i % 7 + 1} ms", app="web", severity=6)
                   for i in range(50)]
        records += [Record(ts=T0 + i * 10**9, msg=f"user u{i} logged in from 10.0.0.{i}", app="sshd", severity=5)
                    for i in range(20)]
        records += [Record(ts=T0 + (100 + i) * 10**9, msg=f"disk /dev/sd{i} failed: I/O error", app="kernel",
                           severity=3) for i in range(3)]
        records.sort(key=lambda r: r.ts)
        spool.append(Columns.of(records))
        spool.sync()
    finally:
        spool.close()


def patterns(capsys, directory: Path, *args: str) -> list[dict]:
    assert main(["patterns", "-D", str(directory / "spool"), "-o", "json", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_each_template_with_its_count_times_and_an_example(tmp_path: Path, capsys) -> None:
    build(tmp_path)
    rows = patterns(capsys, tmp_path)
    assert [(r["app"], r["count"]) for r in rows] == [("web", 50), ("sshd", 20), ("kernel", 3)]
    web, sshd, kernel = rows
    assert web["template"] == "GET <PATH> <NUM> in <DURATION>" and web["example"] == "GET /item/0 200 in 1 ms"
    assert sshd["template"].startswith("user ") and sshd["template"] != sshd["example"]
    assert kernel["first"] == "2025-11-24T16:01:40Z" and kernel["last"] == "2025-11-24T16:01:42Z"
    assert sum(web["sparkline"]) == 50 and web["sparkline"][-1] == 0 and kernel["sparkline"][-1] == 3
    assert len({r["pattern_id"] for r in rows}) == 3


def test_the_query_options_select_and_new_and_top_narrow(tmp_path: Path, capsys) -> None:
    build(tmp_path)
    assert [r["app"] for r in patterns(capsys, tmp_path, "-p", "err")] == ["kernel"]
    assert [r["app"] for r in patterns(capsys, tmp_path, "-u", "sshd")] == ["sshd"]
    assert [r["app"] for r in patterns(capsys, tmp_path, "--new", "@1764000090", "--utc")] == ["kernel"]
    assert [r["app"] for r in patterns(capsys, tmp_path, "--top", "1")] == ["web"]
    ids = {r["pattern_id"] for r in patterns(capsys, tmp_path)}
    assert {r["pattern_id"] for r in patterns(capsys, tmp_path, "-u", "web")} <= ids  # ids are stable


def test_the_table_and_mistakes(tmp_path: Path, capsys) -> None:
    build(tmp_path)
    assert main(["patterns", "-D", str(tmp_path / "spool")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["COUNT", "FIRST", "LAST"] and len(lines) == 4
    assert "GET <PATH> <NUM> in <DURATION>" in lines[1]
    assert main(["patterns", "-D", str(tmp_path / "spool"), "--new", "not a time"]) == 1
    assert "hostlog patterns:" in capsys.readouterr().err
    assert main(["patterns", "-D", str(tmp_path / "spool"), "--top", "0"]) == 1


@pytest.mark.parametrize("seconds, expected", [
    ({0: 1, 9: 1}, [1] + [0] * 8 + [1]),
    ({5: 4}, [0] * 5 + [4] + [0] * 4),
])
def test_sparkline_counts_fall_in_equal_parts_of_the_range(seconds, expected) -> None:
    assert sparkline(seconds, 0, 9 * 10**9, buckets=10) == expected


def test_with_lists_the_templates_near_one_templates_records(tmp_path: Path, capsys) -> None:
    build(tmp_path)
    kernel = next(r["pattern_id"] for r in patterns(capsys, tmp_path) if r["app"] == "kernel")
    near = patterns(capsys, tmp_path, "--with", kernel, "--window", "60s")
    # web logs at T0+0..49 s, sshd at T0+0..19 s, the kernel at T0+100..102 s
    assert [(r["app"], r["with_count"], r["count"]) for r in near] == [("web", 10, 50)]
    assert patterns(capsys, tmp_path, "--with", kernel, "--window", "5s") == []
    assert main(["patterns", "-D", str(tmp_path / "spool"), "--with", "0123456789abcdef"]) == 1
    assert "no selected record has the pattern" in capsys.readouterr().err
