"""Tests for hostlog.config.sources: the [[source]] models (syslog, journald,
file) and their rate limits."""

from __future__ import annotations

from hostlog.config import Endpoint, SyslogSource, parse_config
from tests.support.config import only_problem, problems_of


def test_explicit_names_and_rate_limits() -> None:
    config = parse_config(
        '[[source]]\ntype = "syslog"\nname = "edge"\nlisten = ["udp://[::1]:514"]\n'
        "rate_limit = { rate = 2.5 }\nper_host_rate_limit = { rate = 10, burst = 50 }\n"
        '[[source]]\ntype = "syslog"\nlisten = ["unix-stream:///run/x.sock"]\n'
    )
    edge, other = config.sources
    assert edge.name == "edge" and other.name == "syslog-1"
    assert isinstance(edge, SyslogSource) and isinstance(other, SyslogSource)
    assert edge.endpoints() == [Endpoint("udp", "::1", 514, None)]
    assert edge.endpoints()[0].url == "udp://[::1]:514"
    assert edge.rate_limit is not None and (edge.rate_limit.rate, edge.rate_limit.burst) == (2.5, 3)
    assert edge.per_host_rate_limit is not None and edge.per_host_rate_limit.burst == 50
    assert other.endpoints() == [Endpoint("unix-stream", None, None, "/run/x.sock")]


def test_listen_as_string_says_so() -> None:
    key, message = only_problem('[[source]]\ntype = "syslog"\nlisten = "udp://127.0.0.1:5514"\n')
    assert key == "source[0].listen"
    assert "must be a list of URLs" in message


def test_file_source_checks() -> None:
    problems = dict(
        problems_of('[[source]]\ntype = "file"\npaths = ["/a"]\nmultiline_start = "("\nencoding = "nope"\n')
    )
    assert "invalid regular expression" in problems["source[0].multiline_start"]
    assert "unknown encoding 'nope'" in problems["source[0].encoding"]
