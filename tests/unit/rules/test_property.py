"""Properties of the rules over any batch and any rule set.

* What a rule's ``match`` selects in a batch (the columns, the per-signature
  record test) is exactly what ``Query.record_test`` -- the complete rule of
  ``hostlog query`` -- says of each record.
* Each input record is either in the output or counted as dropped, by one
  rule: never both, never neither.
* The output is what the same rules make of the records one at a time (so
  the batch's vectorised paths change records only as the per-record
  semantics say), and the batch given is left as it was.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.config.rules import Rule
from hostlog.query.build import build_query
from hostlog.record import Columns, Record
from hostlog.rules import RuleEngine
from hostlog.rules.select import BatchView, Plan, select

# dicts shared by rows, as collectors share them; some with journal quirks
POOL: list[dict[str, Any]] = [
    {}, {"stream": "stdout"}, {"SYSLOG_IDENTIFIER": "web"}, {"PRIORITY": "3"}, {"PRIORITY": ["6", "3"]},
    {"_HOSTLOG_ABSENT": "PRIORITY SYSLOG_IDENTIFIER"}, {"_SYSTEMD_UNIT": "web.service"},
    {"level": "err", "KIND": "a"}, {"KIND": ["a", "b"], "n": "password=x"},
    {"_SYSTEMD_UNIT": "init.scope", "UNIT": "web.service", "_PID": "1"}, {"MESSAGE_ID": "m1", "lvl": "warn"},
]
MSGS = ["GET /healthz 200", "get /HEALTHZ", "password=hunter2 and more", "Bearer abc.def==", '{"level": "crit"}',
        '{"KIND": "b", "x": 1}', "level=info KIND=a", "plain", "", "card 4111 1111 1111 1111",
        b"\xffpassword=x", b"\xffGET /healthz",
        "GET /items 200 password=y"]
APPS = ["web", "api", "systemd", "cron", ""]

MATCHES: list[dict[str, Any]] = [
    {}, {"identifier": "web"}, {"identifier": ["api", "cron"]}, {"unit": "web"}, {"unit": "web*"},
    {"priority": "err"}, {"priority": "debug..debug"}, {"priority": "0..7"}, {"grep": "healthz"},
    {"grep": "GET /healthz"}, {"grep": "^GET"}, {"host": "h1"}, {"source": ["journald", "process"]},
    {"KIND": "a"}, {"PRIORITY": "3"}, {"SYSLOG_IDENTIFIER": "api"}, {"identifier": "api", "grep": "(?i)password"},
    {"MESSAGE": "plain"}, {"_HOSTNAME": "h2"}, {"unit": "web.service", "priority": "warning"},
    {"KIND": ["b"], "identifier": "web"}, {"identifier": "web", "grep": "GET /healthz"},
]


@st.composite
def records(draw: st.DrawFn) -> list[tuple[Record, int]]:
    """Records, each with the index of its fields dict in POOL."""
    n = draw(st.integers(0, 40))
    out = []
    for i in range(n):
        f = draw(st.integers(0, len(POOL) - 1))
        out.append((Record(ts=1_000 + i, msg=draw(st.sampled_from(MSGS)), host=draw(st.sampled_from(["h1", "h2"])),
                           source=draw(st.sampled_from(["syslog", "journald", "process"])),
                           app=draw(st.sampled_from(APPS)), pid=draw(st.sampled_from([None, 1, 42])),
                           severity=draw(st.integers(0, 7)), facility=None, fields=POOL[f]), f))
    return out


def batch_of(rows: list[tuple[Record, int]], with_pool: bool) -> Columns:
    """The records as a batch whose rows share the POOL dicts."""
    batch = Columns.of([r for r, _ in rows])
    batch.columns[8] = [POOL[f] for _, f in rows]
    batch.fields_pool = list(POOL) if with_pool else None
    return batch


@settings(max_examples=120, deadline=None)
@given(records(), st.sampled_from(MATCHES), st.booleans())
def test_select_is_the_record_test(rows: list[tuple[Record, int]], match: dict[str, Any], with_pool: bool) -> None:
    if not match:
        return
    query = build_query(**Rule.model_validate({"name": "x", "drop": True, "match": match}).query_words())
    batch = batch_of(rows, with_pool)
    got = select(Plan(query), BatchView(batch))
    want = [i for i, r in enumerate(batch.records()) if query.record_test(r)]
    assert (list(range(len(batch))) if got is None else got) == want, match


ACTIONS: list[dict[str, Any]] = [
    {"drop": True}, {"sample": 2}, {"sample": 3}, {"parse": "json"}, {"parse": "logfmt"},
    {"parse": r"(?P<verb>[A-Z]{3}) (?P<path>\S+)"}, {"set": {"KIND": "z", "env": "prod"}},
    {"remove": ["level", "KIND"]}, {"rename": {"level": "LEVEL", "lvl": "level"}},
    {"priority_from": "level"}, {"redact": [r"(?i)password=\S+"]}, {"redact": ["@builtin"]},
    {"to": ["central"]}, {"to": ["archive"], "set": {"routed": "1"}},
    {"parse": "json", "priority_from": "level", "redact": ["Bearer \\S+"], "to": ["central"]},
]


@st.composite
def rule_sets(draw: st.DrawFn) -> list[Rule]:
    rules = []
    for k in range(draw(st.integers(1, 4))):
        keys = {"name": f"r{k}", "match": draw(st.sampled_from(MATCHES)), **draw(st.sampled_from(ACTIONS))}
        rules.append(Rule.model_validate(keys))
    return rules


@settings(max_examples=120, deadline=None)
@given(records(), rule_sets(), st.booleans())
def test_every_record_is_kept_or_counted_dropped_once(rows: list[tuple[Record, int]], rules: list[Rule],
                                                       with_pool: bool) -> None:
    batch = batch_of(rows, with_pool)
    before = copy.deepcopy(batch.columns)
    engine = RuleEngine(rules)
    outcome = engine.apply(batch, explain=True)
    n, out = len(batch), outcome.batch
    kept = list(range(n)) if outcome.kept is None else outcome.kept
    # never both, never neither
    assert len(out) == len(kept)
    assert not set(kept) & set(outcome.dropped_by)
    assert sorted(kept + list(outcome.dropped_by)) == list(range(n))
    assert sum(outcome.dropped.values()) == len(outcome.dropped_by) == n - len(out)
    assert engine.dropped() == {r.name: sum(1 for v in outcome.dropped_by.values() if v == r.name)
                                for r in rules} | {name: 0 for name in engine.dropped()
                                                   if name not in outcome.dropped.keys()}
    # the batch given is intact, and so are the dicts its rows share
    assert batch.columns == before and [dict(d) for d in POOL] == copy.deepcopy(POOL)
    # changed only as the rules say: the same rules, one record at a time
    one_by_one = RuleEngine(rules)
    expected: list[Record] = []
    dropped_by: dict[int, str] = {}
    for i, r in enumerate(batch.records()):
        single = one_by_one.apply(Columns.of([r]), explain=True)
        expected += single.batch.records()
        if single.dropped_by:
            dropped_by[i] = single.dropped_by[0]
    assert out.records() == expected
    assert outcome.dropped_by == dropped_by
    assert {k: v.as_dict() for k, v in engine.counts.items()} == \
        {k: v.as_dict() for k, v in one_by_one.counts.items()}
    assert not outcome.failures
