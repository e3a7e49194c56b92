"""Request parameters become the query `hostlog query` would build from the same words."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostlog.cli import query_cmd
from hostlog.http.params import ParamError, query_from_params, truthy


def _cli_query(argv: list[str]):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    query_cmd.add_parser(sub)
    return query_cmd.build_query(parser.parse_args(["query", *argv]))


def _same(a, b) -> bool:
    fields = ("units", "identifiers", "priorities", "since_ns", "until_ns", "matches", "hosts", "sources")
    grep = [(q.grep.pattern, q.grep.flags) if q.grep else None for q in (a, b)]
    return all(getattr(a, f) == getattr(b, f) for f in fields) and grep[0] == grep[1]


def test_each_parameter_is_the_option_of_the_same_name() -> None:
    params = [("unit", "nginx"), ("unit", "sshd*"), ("identifier", "cron"), ("priority", "warning..err"),
              ("since", "2026-12-01 00:00:00"), ("until", "2026-12-02"), ("grep", "Fail"),
              ("host", "web-1"), ("source", "syslog"), ("_PID", "42"), ("_PID", "43")]
    argv = ["-u", "nginx", "-u", "sshd*", "-t", "cron", "-p", "warning..err", "-S", "2026-12-01 00:00:00",
            "-U", "2026-12-02", "-g", "Fail", "--host", "web-1", "--source", "syslog", "--utc",
            "_PID=42", "_PID=43"]
    assert _same(query_from_params(params), _cli_query(argv))


@pytest.mark.parametrize("params, problem", [
    ([("unti", "x")], "unknown parameter 'unti'"),
    ([("priority", "loud")], "Unknown log level loud"),
    ([("since", "yesterday-ish")], "Failed to parse timestamp: yesterday-ish"),
    ([("grep", "(")], "bad --grep"),
    ([("priority", "err"), ("priority", "info")], "given twice"),
    ([("since", "2026-12-02"), ("until", "2026-12-01")], "--since= must be before --until="),
])
def test_a_bad_parameter_is_refused_by_name(params, problem) -> None:
    with pytest.raises(ParamError, match=problem):
        query_from_params(params)


def test_the_endpoint_names_its_own_parameters() -> None:
    query_from_params([("n", "10"), ("cursor", "x:1")], allowed=("n", "cursor"))
    with pytest.raises(ParamError, match="unknown parameter 'n'"):
        query_from_params([("n", "10")])


@given(st.lists(st.tuples(st.sampled_from(["unit", "host", "source", "identifier", "A_FIELD", "x", "n"]),
                          st.text(max_size=12)), max_size=6))
def test_any_parameters_give_a_query_or_a_param_error(params) -> None:
    try:
        query = query_from_params(params, allowed=("n",))
    except ParamError:
        assert any(name == "x" for name, _ in params)
        return
    assert query.hosts == [v for k, v in params if k == "host"]


def test_truthy_reads_a_flag_as_journalctl_users_write_it() -> None:
    assert truthy("") and truthy("1") and truthy("yes") and truthy("TRUE")
    assert not truthy("0") and not truthy("no") and not truthy("false")
