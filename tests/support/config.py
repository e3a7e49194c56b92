"""What the tests of hostlog.config share: TOML snippets, size units, and the
problems a ConfigError reports for a text."""

from __future__ import annotations

import pytest

from hostlog.config import ConfigError, parse_config

GiB = 1024**3
MiB = 1024**2
KiB = 1024


def problems_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.problems


def only_problem(text: str) -> tuple[str, str]:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


SYSLOG = '[[source]]\ntype = "syslog"\nlisten = ["udp://127.0.0.1:5514"]\n'
