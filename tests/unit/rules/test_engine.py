"""The rule engine, one action at a time, and what it promises around them:
file order, counts, the batch given left intact, failures contained."""

from __future__ import annotations

import copy

import pytest

from hostlog.config import parse_config
from hostlog.record import Columns
from hostlog.rules import PARSE_ERROR, ROUTE_FIELD, RULE_ERROR, RuleEngine
from hostlog.rules.engine import WITHHELD, level_of
from tests.unit.rules.support import rec, rule, run


def test_drop_drops_what_the_match_selects_and_counts_it() -> None:
    records = [rec("a", severity=7), rec("b", severity=6), rec("c", severity=7)]
    out, outcome, engine = run([rule(name="no-debug", match={"priority": "debug..debug"}, drop=True)], records)
    assert [r.msg for r in out] == ["b"]
    assert outcome.kept == [1] and outcome.dropped == {"no-debug": 2}
    assert outcome.dropped_by == {0: "no-debug", 2: "no-debug"}
    assert engine.counts["no-debug"].dropped == 2 and engine.counts["no-debug"].matched == 2
    assert engine.dropped() == {"no-debug": 2}


def test_sample_keeps_one_in_n_across_batches() -> None:
    engine = RuleEngine([rule(name="s", match={"identifier": "web"}, sample=3)])
    kept = []
    for start in (0, 4, 9):  # batches of 4, 5 and 6 matching records, with others between
        batch = [rec(f"{start + i}", app="web") for i in range(4 + start // 4)] + [rec("other", app="x")]
        kept += [r.msg for r in engine.apply(Columns.of(batch)).batch.records()]
    web = [m for m in kept if m != "other"]
    assert kept.count("other") == 3
    assert len(web) == 5  # ceil(15 / 3): the 1st, 4th, 7th, 10th and 13th matched
    assert engine.counts["s"].sampled_out == 10 and engine.counts["s"].matched == 15


def test_parse_json_logfmt_and_regex_add_fields() -> None:
    records = [rec('{"level": "warn", "n": 3, "ok": true, "x": null, "o": {"a": [1]}, "_HOSTLOG_ROUTE": "z"}',
                   app="j"),
               rec('level=info msg="a b \\"c\\"" flag n=', app="l"),
               rec("GET /items 200", app="r")]
    rules = [rule(name="j", match={"identifier": "j"}, parse="json"),
             rule(name="l", match={"identifier": "l"}, parse="logfmt"),
             rule(name="r", match={"identifier": "r"}, parse=r"(?P<method>[A-Z]+) (?P<path>\S+) (?P<code>\d+)")]
    out, _, engine = run(rules, records)
    assert out[0].fields == {"level": "warn", "n": "3", "ok": "true", "x": "null", "o": '{"a":[1]}'}
    assert out[1].fields == {"level": "info", "msg": 'a b "c"', "n": ""}
    assert out[2].fields == {"method": "GET", "path": "/items", "code": "200"}
    assert [engine.counts[n].parsed for n in "jlr"] == [1, 1, 1]


@pytest.mark.parametrize(("parse", "msg", "reason"), [
    ("json", "not json", "json: Expecting value at character 0"),
    ("json", "[1, 2]", "json: an object was expected, not list"),
    ("logfmt", "just words", "logfmt: no key=value pair"),
    ("logfmt", 'a="open', "logfmt: the quote at character 2 is not closed"),
    (r"(?P<code>\d{3})", "no digits", "regex: no match"),
])
def test_a_message_that_does_not_parse_is_kept_with_parse_error(parse: str, msg: str, reason: str) -> None:
    out, _, engine = run([rule(parse=parse)], [rec(msg, fields={"keep": "me"})])
    assert out[0].msg == msg and out[0].fields == {"keep": "me", PARSE_ERROR: reason}
    assert engine.counts["r"].parse_errors == 1 and engine.counts["r"].parsed == 0


def test_set_remove_rename() -> None:
    shared = {"a": "1", "b": "2", "pid": "9"}
    out, _, _ = run([rule(rename={"a": "alpha"}, remove=["pid", "absent"], set={"env": "prod", "b": "3"})],
                    [rec("x", fields=shared), rec("y", fields=shared)])
    assert out[0].fields == out[1].fields == {"alpha": "1", "b": "3", "env": "prod"}
    assert shared == {"a": "1", "b": "2", "pid": "9"}  # the collector's dict is not touched


@pytest.mark.parametrize(("value", "level"), [("error", 3), ("WARN", 4), ("warning", 4), ("fatal", 2), ("7", 7),
                                              ("Info", 6), ("panic", 0), ("loud", None), ("9", None)])
def test_priority_from_a_field(value: str, level: int | None) -> None:
    assert level_of(value) == level
    out, _, _ = run([rule(priority_from="lvl")], [rec("x", severity=5, fields={"lvl": value})])
    assert out[0].severity == (5 if level is None else level)


def test_priority_from_a_parsed_field_in_the_same_rule() -> None:
    out, _, _ = run([rule(parse="json", priority_from="level")], [rec('{"level": "crit"}')])
    assert out[0].severity == 2 and out[0].fields == {"level": "crit"}


def test_redact_the_message_and_field_values() -> None:
    records = [rec("login password=hunter2 ok", fields={"url": "x?password=s3cret&a=1", "n": "plain"}),
               rec("Authorization: Bearer abc.DEF-123==", fields={}),
               rec("nothing to see", fields={})]
    out, _, engine = run([rule(redact=[r"(?i)password=[^\s&]+", "Bearer [A-Za-z0-9._~+/-]+=*"])], records)
    assert out[0].msg == "login [REDACTED] ok"
    assert out[0].fields == {"url": "x?[REDACTED]&a=1", "n": "plain"}
    assert out[1].msg == "Authorization: [REDACTED]"
    assert out[2].msg == "nothing to see"
    assert engine.counts["r"].redacted == 2


def test_redact_only_the_secret_group_and_binary_messages() -> None:
    out, _, _ = run([rule(redact=[r"(?i)token=(?P<secret>\S+)"])],
                    [rec("TOKEN=abc rest"), rec(b"token=\xff\xfe end")])
    assert out[0].msg == "TOKEN=[REDACTED] rest"
    assert out[1].msg == b"token=[REDACTED] end"


@pytest.mark.parametrize(("text", "redacted"), [
    ("curl -H 'authorization: bearer eyJ0eXAi.eyJzdWIi.SflKxw'", "curl -H 'authorization: bearer [REDACTED]'"),
    ("fetch https://bob:pa55w0rd@db.example:5432/x", "fetch https://bob:[REDACTED]@db.example:5432/x"),
    ("user=bob password=hunter2 done", "user=bob password=[REDACTED] done"),
    ("PWD: hunter2", "PWD: [REDACTED]"),
    ("client_secret=abc123&x=1", "client_secret=[REDACTED]&x=1"),
    ("refresh_token=zzz", "refresh_token=[REDACTED]"),
    ("api_key=k-123 AWS_SECRET_KEY=s", "api_key=[REDACTED] AWS_SECRET_KEY=[REDACTED]"),
    ("key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED] used"),
    ("temp ASIAY34FZKBOKMUTVV7A", "temp [REDACTED]"),
    ("card 4111 1111 1111 1111 paid", "card [REDACTED] paid"),
    ("card 4012-8888-8888-1881", "card [REDACTED]"),
    ("amex 378282246310005.", "amex [REDACTED]."),
    ("order 4111111111111112 (not Luhn)", "order 4111111111111112 (not Luhn)"),
    ("id 123456789012 short", "id 123456789012 short"),
    ("nothing secret here", "nothing secret here"),
])
def test_the_builtin_patterns(text: str, redacted: str) -> None:
    out, _, _ = run([rule(redact=["@builtin"])], [rec(text)])
    assert out[0].msg == redacted


def test_to_routes_and_two_routes_add_up() -> None:
    rules = [rule(name="a", match={"identifier": "api"}, to=["central"]),
             rule(name="b", match={"priority": "err"}, to=["archive"])]
    out, _, engine = run(rules, [rec("1", app="api"), rec("2", app="api", severity=3), rec("3", severity=3),
                                 rec("4")])
    assert [r.fields.get(ROUTE_FIELD) for r in out] == ["central", "archive central", "archive", None]
    assert engine.counts["a"].routed == 2 and engine.counts["b"].routed == 2


def test_rules_run_in_file_order_and_see_what_came_before() -> None:
    config = parse_config("""
[[rule]]
name = "parse"
match = { identifier = "api" }
parse = "logfmt"
rename = { path = "PATH" }
set = { KIND = "api" }

[[rule]]
name = "drop-health"
match = { KIND = "api", PATH = "/health" }
drop = true
""")
    out, outcome, _ = run(config.rules, [rec("path=/health", app="api"), rec("path=/items", app="api"),
                                         rec("path=/health", app="web")])
    assert [r.msg for r in out] == ["path=/items", "path=/health"]
    assert outcome.dropped_by == {0: "drop-health"}


def test_the_batch_given_is_left_as_it_was() -> None:
    shared = {"stream": "stdout"}
    records = [rec(f'{{"level": "err", "i": {i}}} password=x{i}', app="api", severity=7 if i % 3 == 0 else 6,
                   fields=shared) for i in range(30)]
    batch = Columns.of(records)
    batch.columns[8] = [shared] * 30  # rows share one dict, as collectors make them
    before = copy.deepcopy(batch.columns)
    RuleEngine([rule(name="d", match={"priority": "debug"}, drop=True),
                rule(name="p", parse="json", priority_from="level", set={"env": "x"}, to=["c"]),
                rule(name="s", redact=["(?i)password=\\S+"], remove=["stream"])]).apply(batch)
    assert batch.columns == before and shared == {"stream": "stdout"} and len(batch) == 30


def test_no_rules_and_nothing_matched_give_the_same_batch() -> None:
    batch = Columns.of([rec("a"), rec("b")])
    assert RuleEngine([]).apply(batch).batch is batch
    assert RuleEngine([rule(match={"identifier": "none"}, drop=True)]).apply(batch).batch is batch


def test_a_rule_that_fails_on_a_record_keeps_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = RuleEngine([rule(name="bad", match={"identifier": "api"}, parse="json", redact=["x"]),
                         rule(name="after", set={"seen": "yes"})])
    parse = engine.rules[0].parser
    assert parse is not None

    def fragile(text: str) -> dict[str, str]:
        if "boom" in text:
            raise TypeError("a bug that quotes the record: boom secret")
        return parse(text)

    engine.rules[0].parser = fragile
    records = [rec('{"a": "1"}', app="api"), rec('{"boom": "secret"}', app="api"), rec("plain", app="web")]
    outcome = engine.apply(Columns.of(records))
    out = outcome.batch.records()
    assert len(out) == 3
    assert out[0].fields == {"a": "1", "seen": "yes"}
    assert out[1].fields == {RULE_ERROR: "bad", "seen": "yes"} and out[1].msg == WITHHELD
    assert out[2].fields == {"seen": "yes"} and out[2].msg == "plain"
    assert engine.counts["bad"].errors == 1
    [failure] = outcome.failures
    assert failure.rule == "bad" and failure.records == 1
    assert "secret" not in failure.describe() and "TypeError" in failure.describe()


def test_a_match_that_fails_falls_back_to_the_record_test(monkeypatch: pytest.MonkeyPatch) -> None:
    import hostlog.rules.engine as engine_module

    def broken(plan: object, view: object) -> list[int]:
        raise RuntimeError("columns")

    monkeypatch.setattr(engine_module, "select", broken)
    out, outcome, engine = run([rule(name="d", match={"identifier": "web"}, drop=True)],
                               [rec("a", app="web"), rec("b", app="api")])
    assert [r.msg for r in out] == ["b"]
    assert outcome.failures[0].where == "match" and engine.counts["d"].dropped == 1


def test_priority_from_replaces_a_raw_priority_so_query_sees_the_new_one() -> None:
    from hostlog.query.build import build_query
    out, _, _ = run([rule(priority_from="level")],
                    [rec("x", severity=6, fields={"PRIORITY": "06", "level": "err"}),
                     rec("y", severity=6, fields={"_HOSTLOG_ABSENT": "PRIORITY MESSAGE", "level": "err"})])
    assert out[0].fields == {"level": "err"} and out[1].fields == {"_HOSTLOG_ABSENT": "MESSAGE", "level": "err"}
    query = build_query(priority="err")
    assert all(query.record_test(r) for r in out)
