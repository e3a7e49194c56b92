"""A tailed file's line read by its ``parse`` mode (sans-IO: hostlog.collectors.files.parse)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostlog.collectors.files.parse import PARSE_ERROR, RECEIVED_FIELD, LineParser, check_parse
from hostlog.config import parse_config

NOW = 1_700_000_000 * 10**9
BASE: dict[str, Any] = {"path": "/var/log/x.log"}


def test_auto_takes_the_lines_time_and_level_and_keeps_the_line() -> None:
    lines: list[str | bytes] = ["2015-10-18 18:01:47,978 ERROR [main] boom 1", "no header here",
                                "[Sun Dec 04 04:47:44 2005] [warn] careful", b"\xff\xfe bytes"]
    p = LineParser().parse(lines, NOW, BASE)
    assert p.msg == lines
    assert p.ts == [1445191307978 * 10**6, NOW, 1133671664 * 10**9, NOW]
    assert p.severity == [3, 6, 4, 6]
    assert p.fields[0] == {**BASE, RECEIVED_FIELD: str(NOW // 1000)} and p.fields[1] is BASE
    assert all(any(f is d for d in p.pool) for f in p.fields)


def test_json_lines_give_message_time_level_and_fields() -> None:
    line = '{"time": "2024-05-01T10:00:00Z", "level": "warn", "msg": "disk 90% full", "disk": "sda", "n": 3}'
    for mode in ("auto", "json"):
        p = LineParser(mode).parse([line], NOW, BASE)
        assert p.msg == ["disk 90% full"] and p.severity == [4]
        assert p.ts == [1714557600 * 10**9]
        assert p.fields[0] == {**BASE, "level": "warn", "disk": "sda", "n": "3", RECEIVED_FIELD: str(NOW // 1000)}
    p = LineParser("json").parse(["not json"], NOW, BASE)
    assert p.msg == ["not json"] and p.fields[0][PARSE_ERROR].startswith("json:")
    p = LineParser("auto").parse(["{not json}"], NOW, BASE)  # looks like JSON: then a line
    assert p.msg == ["{not json}"] and PARSE_ERROR not in p.fields[0]


def test_none_syslog_and_regex() -> None:
    p = LineParser("none").parse(["2015-10-18 18:01:47 ERROR x"], NOW, BASE)
    assert p.ts == [NOW] and p.severity == [6] and p.fields == [BASE]
    p = LineParser("syslog").parse(["<11>Jan  2 03:04:05 web nginx[42]: upstream down"], NOW, BASE)
    assert p.severity == [3] and p.app == ["nginx"] and p.pid == [42] and p.msg == ["upstream down"]
    assert p.host == ["web"] and p.facility == [1]
    rx = LineParser(r"^(?P<time>\S+) (?P<level>\w+) (?P<user>\w+):")
    p = rx.parse(["1714557600 crit bob: it broke", "other"], NOW, BASE)
    assert p.ts == [1714557600 * 10**9, NOW] and p.severity == [2, 6]
    assert p.fields[0]["user"] == "bob" and p.fields[1][PARSE_ERROR] == "regex: no match"
    assert p.msg == ["1714557600 crit bob: it broke", "other"]


def test_the_parse_setting_is_checked() -> None:
    assert check_parse("auto") == "auto" and check_parse(r"(?P<a>x)") == r"(?P<a>x)"
    for bad in ("(", "no groups", "jsonn"):
        with pytest.raises(ValueError):
            check_parse(bad)
    config = parse_config('[[source]]\ntype = "file"\npaths = ["/x/*.log"]\n')
    assert config.sources[0].parse == "auto"  # type: ignore[union-attr]


@given(st.lists(st.one_of(st.text(max_size=80), st.binary(max_size=40)), max_size=20),
       st.sampled_from(["auto", "none", "json", "syslog", r"(?P<level>\w+)"]))
def test_any_lines_give_one_row_each_and_never_raise(lines: list[str | bytes], mode: str) -> None:
    p = LineParser(mode).parse(lines, NOW, BASE)
    n = len(lines)
    assert len(p.ts) == len(p.severity) == len(p.msg) == len(p.fields) == n
    assert all(0 <= s <= 7 for s in p.severity)
    assert all(any(f is d for d in p.pool) for f in p.fields)
    assert all(f["path"] == BASE["path"] for f in p.fields)
    if mode in ("auto", "none"):
        assert p.msg == lines  # MESSAGE intact
