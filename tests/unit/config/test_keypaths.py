"""Tests for hostlog.config.keypaths: validation errors as TOML key paths and
plain messages."""

from __future__ import annotations

from tests.support.config import SYSLOG, only_problem, problems_of


def test_unknown_key_suggests_the_close_one() -> None:
    assert only_problem('[spool]\nmax_byte = "1GiB"\n') == (
        "spool.max_byte",
        "unknown key 'max_byte' (did you mean 'max_bytes'?)",
    )


def test_unknown_key_in_a_source_and_at_top_level() -> None:
    key, message = only_problem(SYSLOG + 'lisen = ["udp://127.0.0.1:1"]\n')
    assert key == "source[0].lisen"
    assert message == "unknown key 'lisen' (did you mean 'listen'?)"
    # The TOML name is "source"; the attribute name is not accepted in a file.
    assert only_problem("[[sources]]\ntype = 'syslog'\n") == (
        "sources",
        "unknown key 'sources' (did you mean 'source'?)",
    )


def test_bad_literal() -> None:
    key, message = only_problem('[spool]\nfsync = "sometimes"\n')
    assert key == "spool.fsync"
    assert message == "expected 'batch', 'always' or 'never', got a string ('sometimes')"


def test_unknown_source_type() -> None:
    text = SYSLOG + '[[source]]\ntype = "journald"\n[[source]]\ntype = "sylog"\n'
    assert only_problem(text) == (
        "source[2].type",
        "unknown source type 'sylog' (expected one of: syslog, journald, file, forward, nats)",
    )


def test_missing_source_type() -> None:
    key, message = only_problem('[[source]]\nlisten = ["udp://127.0.0.1:1"]\n')
    assert key == "source[0].type"
    assert "missing" in message and "syslog, journald, file" in message


def test_missing_required_key() -> None:
    assert only_problem('[[app]]\nname = "web"\n') == ("app[0].command", "missing required key")


def test_wrong_value_type_names_the_toml_type() -> None:
    assert only_problem('[[app]]\nname = "a"\ncommand = ["a"]\nenv = { PORT = 8080 }\n') == (
        "app[0].env.PORT",
        "expected a string, got an integer (8080)",
    )


def test_all_problems_are_reported_at_once() -> None:
    problems = problems_of('[spool]\nmax_bytes = "x"\nfsync = "no"\n[agent]\nhostnme = "a"\n')
    assert [key for key, _ in problems] == ["agent.hostnme", "spool.max_bytes", "spool.fsync"]
