"""Tests for hostlog.config.rules: the ``[[rule]]`` model and its checks across the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostlog.config import ConfigError, parse_config
from tests.support.config import only_problem, problems_of

FORWARD = '[[forward]]\nname = "central"\ntargets = ["tcp://127.0.0.1:7514"]\n'


def _docs_example() -> str:
    """The first ``toml`` block of docs/rules.md: the example a user copies."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "rules.md").read_text()
    return text.split("```toml\n", 1)[1].split("```", 1)[0]


# (the docs' example sends to "central": a [[forward]] of that name first)
ISSUE_EXAMPLE = FORWARD + _docs_example()


def test_the_issue_example_is_read_in_file_order() -> None:
    config = parse_config(ISSUE_EXAMPLE)
    assert [r.name for r in config.rules] == ["no-debug", "health-checks", "secrets", "api"]
    api = config.rules[3]
    assert api.parse == "json" and api.set_fields == {"env": "prod"} and api.to == ["central"]
    assert config.rules[1].query_words()["identifiers"] == ["web"]
    assert config.rules[0].query_words()["priority"] == "debug..debug"


def test_match_takes_lists_and_field_values() -> None:
    config = parse_config('[[rule]]\nname = "x"\ndrop = true\n'
                          'match = { unit = ["a", "b*"], host = "h", source = ["syslog"], '
                          'MESSAGE_ID = ["1", "2"], _SYSTEMD_UNIT = "u.service" }\n')
    words = config.rules[0].query_words()
    assert words["units"] == ["a", "b*"] and words["hosts"] == ["h"] and words["sources"] == ["syslog"]
    assert sorted(words["matches"]) == ["MESSAGE_ID=1", "MESSAGE_ID=2", "_SYSTEMD_UNIT=u.service"]


@pytest.mark.parametrize(("match", "key", "says"), [
    ('{ priority = "bogus" }', "rule[0].match.priority", "Unknown log level"),
    ('{ priority = ["err"] }', "rule[0].match.priority", "one string"),
    ('{ grep = "(" }', "rule[0].match.grep", "bad --grep pattern"),
    ('{ level = "error" }', "rule[0].match.level", "unknown match key"),
    ('"priority=err"', "rule[0].match", "must be a table"),
])
def test_a_bad_match_names_its_key(match: str, key: str, says: str) -> None:
    got_key, message = only_problem(f'[[rule]]\nname = "x"\ndrop = true\nmatch = {match}\n')
    assert got_key == key and says in message


@pytest.mark.parametrize(("line", "key", "says"), [
    ("redact = ['(']", "rule[0].redact[0]", "invalid regular expression"),
    ("redact = ['ok', 'a*']", "rule[0].redact[1]", "empty string"),
    ("redact = ['@everything']", "rule[0].redact[0]", "@builtin"),
    ("redact = 'x'", "rule[0].redact", "a list of regexes"),
    ("parse = '[a-z]+'", "rule[0].parse", "named groups"),
    ("parse = '(?P<x'", "rule[0].parse", "invalid regular expression"),
    ("sample = 0", "rule[0].sample", ">= 1"),
    ('set = { _HOSTLOG_ROUTE = "x" }', "rule[0].set._HOSTLOG_ROUTE", "hostlog's own"),
    ('rename = { a = "_hostlog_x" }', "rule[0].rename.a", "hostlog's own"),
    ('remove = ["a b"]', "rule[0].remove[0]", "invalid field name"),
    ('to = []', "rule[0].to", "must not be empty"),
    ("frobnicate = true", "rule[0].frobnicate", "unknown key"),
])
def test_a_bad_action_names_its_key(line: str, key: str, says: str) -> None:
    got_key, message = only_problem(f'[[rule]]\nname = "x"\n{line}\n')
    assert got_key == key and says in message, (got_key, message)


def test_to_must_name_a_configured_destination() -> None:
    key, message = only_problem(FORWARD + '[[rule]]\nname = "x"\nto = ["central", "archive"]\n')
    assert key == "rule[0].to[1]" and "no [[forward]] named 'archive'" in message and "central" in message
    key, message = only_problem('[[rule]]\nname = "x"\nto = ["central"]\n')
    assert key == "rule[0].to[0]" and "none is configured" in message


def test_a_rule_does_something_and_a_drop_nothing_else() -> None:
    key, message = only_problem('[[rule]]\nname = "idle"\nmatch = { identifier = "x" }\n')
    assert key == "rule[0].name" and "does nothing" in message
    key, message = only_problem('[[rule]]\nname = "x"\ndrop = true\nset = { a = "b" }\n')
    assert key == "rule[0].drop" and "set" in message


def test_rule_names_are_unique_and_the_array_is_an_array() -> None:
    problems = problems_of('[[rule]]\nname = "x"\ndrop = true\n[[rule]]\nname = "x"\ndrop = true\n')
    assert problems == [("rule[1].name", "duplicate rule name 'x' (also used by rule[0])")]
    key, message = only_problem('[rule]\nname = "x"\ndrop = true\n')
    assert key == "rule" and "[[rule]]" in message


def test_builtin_and_secret_groups_are_accepted() -> None:
    config = parse_config('[[rule]]\nname = "r"\nredact = ["@builtin", "(?i)token=(?P<secret>\\\\S+)"]\n')
    assert config.rules[0].redact == ["@builtin", "(?i)token=(?P<secret>\\S+)"]


def test_an_app_takes_multiline_start_and_checks_it() -> None:
    app = '[[app]]\nname = "a"\ncommand = ["true"]\n'
    assert parse_config(app + 'multiline_start = "^\\\\S"\n').apps[0].multiline_start == "^\\S"
    key, message = only_problem(app + 'multiline_start = "("\n')
    assert key == "app[0].multiline_start" and "invalid regular expression" in message


def test_config_error_is_raised_for_rules() -> None:
    with pytest.raises(ConfigError):
        parse_config('[[rule]]\nname = "bad name!"\ndrop = true\n')
