"""Selection: journalctl's rules, and the cheap tests in front of them giving
the same answer as the complete rule.

The comparison with the real journalctl over a real journal file is in
tests/e2e/test_query_vs_journalctl.py; here are the pieces, and properties:
whatever the chunk and column tests let through or drop, the result is what
the record test alone selects.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hostlog.chunk import ChunkError, FrameColumns, encode_chunk
from hostlog.journal.fields import journal_to_record
from hostlog.query.filters import GrepScan, Query, compile_grep, mangle_unit, parse_matches, unit_names
from hostlog.record import Record


@pytest.mark.parametrize("name,mangled", [
    ("nginx", "nginx.service"),
    ("nginx.service", "nginx.service"),
    ("foo.bar", "foo.bar.service"),  # ".bar" is no unit type
    ("sshd.socket", "sshd.socket"),
    ("app@1", "app@1.service"),
    ("app@1.service", "app@1.service"),
    ("app@*", "app@*"),  # a glob stays a glob, without a suffix
    ("ngin?.service", "ngin?.service"),
    ("/home/x", "home-x.mount"),
    ("/dev/sda", "dev-sda.device"),
    ("/", "-.mount"),
    ("my app", "my\\x20app.service"),
    ("a/b", "a-b.service"),
    ("ü", "\\xc3\\xbc.service"),
])
def test_unit_names_are_mangled_as_journalctl_does(name, mangled):
    assert mangle_unit(name) == mangled
    assert unit_names(name) == list(dict.fromkeys([name, mangled]))


def journald(app="nginx", unit="nginx.service", **fields):
    f = {"_SYSTEMD_UNIT": unit} if unit else {}
    f.update(fields)
    return Record(ts=1, msg="m", host="h", source="journald", app=app, pid=None, fields=f,
                  origin="o", seq=1)


def test_unit_matches_unit_app_and_what_systemd_reports_about_it():
    q = Query(units=["nginx"])
    assert q.record_test(journald())
    assert q.record_test(journald(app="nginx", unit=None))  # an app of that name
    assert not q.record_test(journald(app="other", unit="other.service"))
    # PID 1 about the unit
    pid1 = journald(app="systemd", unit="init.scope", UNIT="nginx.service")
    pid1.pid = 1
    assert q.record_test(pid1)
    pid1.pid = 2
    assert not q.record_test(pid1)
    # a coredump of it (MESSAGE_ID, uid 0)
    core = journald(app="systemd-coredump", unit="systemd-coredump@1.service", _UID="0",
                    MESSAGE_ID="fc2e22bc6ee647b6b90729ab34a250b1", COREDUMP_UNIT="nginx.service")
    assert q.record_test(core)
    core.fields["_UID"] = "1000"
    assert not q.record_test(core)
    # journald (root) about it; another root daemon is not a reporter (docs/query.md)
    assert q.record_test(journald(app="systemd-journald", unit="systemd-journald.service",
                                  _UID="0", OBJECT_SYSTEMD_UNIT="nginx.service"))
    assert not q.record_test(journald(app="polkitd", unit="polkit.service",
                                      _UID="0", OBJECT_SYSTEMD_UNIT="nginx.service"))
    assert Query(units=["ngin*"]).record_test(journald())
    assert Query(units=["nginx.service", "other"]).record_test(journald())


def test_unit_identifier_priority_and_fields_are_anded():
    r = journald(SYSLOG_IDENTIFIER="nginx")
    r.severity = 3
    assert Query(units=["nginx"], identifiers=["nginx"]).record_test(r)
    assert not Query(units=["nginx"], identifiers=["other"]).record_test(r)
    assert not Query(units=["other"], identifiers=["nginx"]).record_test(r)
    assert Query(units=["nginx"], priorities=frozenset({3})).record_test(r)
    assert not Query(units=["nginx"], priorities=frozenset({0})).record_test(r)
    assert Query(matches=parse_matches(["PRIORITY=3", "+", "X=y"]), units=["nginx"]).record_test(r)
    assert not Query(matches=parse_matches(["PRIORITY=4"]), units=["nginx"]).record_test(r)


def test_grep_reads_the_message_shown_and_skips_entries_without_one():
    # of several MESSAGEs the last, the one short output shows (journalctl
    # greps the first; docs/query.md, "Differences")
    two = journald(MESSAGE=["first", "second"])
    two.msg = "second"
    assert not Query(grep=compile_grep("first")).record_test(two)
    assert Query(grep=compile_grep("second")).record_test(two)
    none = journald(_HOSTLOG_ABSENT="MESSAGE")
    none.msg = ""
    assert not Query(grep=compile_grep("")).record_test(none)


def test_grep_case_follows_capitals_unicode_included():
    assert compile_grep("error").flags & re.IGNORECASE
    assert not compile_grep("Error").flags & re.IGNORECASE
    assert not compile_grep("ÜBER").flags & re.IGNORECASE
    assert compile_grep("Error", case_sensitive=False).flags & re.IGNORECASE


# -- the joined message scan is the per-message search ----------------------------------

PIECES = ["a", "b", "ab", "x", "\\b", "\\B", ".", ".*", "a+", "b?", "[ab]", "[^a]", "(a|b)",
          "(?:ab)+", "\\w", "\\s", "\\d", "\\W", "^", "$", "\\A", "\\Z", "(?=a)", "(?!b)",
          "(?<=a)", "(?<!x)", "(?>a+)", "a*+", "\\x00", "é", "(a)\\1", " "]
patterns = st.lists(st.sampled_from(PIECES), min_size=1, max_size=5).map("".join)
texts = st.text(alphabet="abx é\n\x00", max_size=8)
messages = st.lists(st.one_of(texts, texts.map(lambda t: t.encode() + b"\xff")), max_size=12)


@settings(max_examples=600, deadline=None)
@given(patterns, messages, st.booleans())
def test_joined_grep_scan_selects_what_per_message_search_selects(pattern, msgs, ignore_case):
    try:
        compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error:
        assume(False)
    texts_ = [m if isinstance(m, str) else m.decode("utf-8", "replace") for m in msgs]
    want = [i for i, t in enumerate(texts_) if compiled.search(t)]
    assert GrepScan(compiled).select(msgs, None) == want
    some = list(range(0, len(msgs), 2))
    assert GrepScan(compiled).select(msgs, some) == [i for i in want if i in some]


def test_patterns_with_anchors_or_lookaround_are_searched_one_by_one():
    assert GrepScan(re.compile("abc|d+")).joinable
    assert GrepScan(re.compile(r"\bword\b")).joinable
    for p in ("^a", "a$", r"\Aa", r"a\Z", "(?=a)", "(?<!a)b", "(?m)^a", "(a|^b)", "(a(?!b))+", r"\B"):
        assert not GrepScan(re.compile(p)).joinable, p


# -- chunk and column tests agree with the record test ------------------------------------

hosts = st.sampled_from(["web-1", "web-2", "db"])
apps = st.sampled_from(["nginx", "sshd", "systemd", "app", ""])


def maybe(draw, values):
    return draw(st.one_of(st.none(), st.sampled_from(values)))


@st.composite
def records(draw):
    """Records as the collectors make them: journald ones mapped from journal
    entries (quirks included: no or several PRIORITY / MESSAGE /
    SYSLOG_IDENTIFIER values, binary ones), and plain syslog ones."""
    ts = draw(st.integers(0, 100))
    host = draw(hosts)
    if draw(st.booleans()):
        r = Record(ts=ts * 1000, msg=draw(st.sampled_from(["disk full", "Error here", "ok", ""])),
                   host=host, source="syslog", app=draw(apps), pid=draw(st.sampled_from([None, 42])),
                   severity=draw(st.integers(0, 7)),
                   fields=draw(st.sampled_from([{}, {"TAG": "two"}, {"TAG": ["one", "two"]}])))
    else:
        entry: dict[str, list[bytes]] = {"__REALTIME_TIMESTAMP": [str(ts).encode()],
                                         "_HOSTNAME": [host.encode()]}
        for name, values in (
                ("SYSLOG_IDENTIFIER", [[b"nginx"], [b"sshd"], [b"systemd"], [b"sshd", b"nginx"],
                                       [b"ngin\xff"]]),
                ("_COMM", [[b"nginx"], [b"cron"]]),
                ("PRIORITY", [[b"0"], [b"3"], [b"6"], [b"06"], [b"3", b"5"], [b"5", b"3"]]),
                ("MESSAGE", [[b"disk full"], [b"Error here"], [b""], [b"a\nerror b"],
                             [b"bin \xff error"], [b"error first", b"ok"]]),
                ("_SYSTEMD_UNIT", [[b"nginx.service"], [b"init.scope"], [b"x.service"]]),
                ("UNIT", [[b"nginx.service"]]), ("_PID", [[b"1"], [b"42"]]), ("_UID", [[b"0"]]),
                ("TAG", [[b"one"], [b"two"], [b"one", b"two"]])):
            value = maybe(draw, values)
            if value is not None:
                entry[name] = value
        r = journal_to_record(entry)
    r.origin, r.seq = "o", draw(st.integers(1, 10**6))
    return r


queries = st.builds(
    Query,
    units=st.lists(st.sampled_from(["nginx", "sshd", "ngin*", "x.service", "systemd"]), max_size=2),
    identifiers=st.lists(st.sampled_from(["nginx", "sshd"]), max_size=1),
    priorities=st.one_of(st.none(), st.sets(st.integers(0, 7), min_size=1).map(frozenset)),
    since_ns=st.one_of(st.none(), st.integers(0, 100).map(lambda t: t * 1000)),
    until_ns=st.one_of(st.none(), st.integers(0, 100).map(lambda t: t * 1000)),
    grep=st.one_of(st.none(), st.sampled_from(["error", "^d", "Error", ""]).map(compile_grep)),
    matches=st.one_of(st.just([]), st.sampled_from([["TAG=two"], ["PRIORITY=3"], ["TAG=one", "+", "_PID=1"],
                                                    ["_HOSTNAME=db"], ["MESSAGE=ok"]]).map(parse_matches)),
    hosts=st.lists(hosts, max_size=1),
    sources=st.lists(st.sampled_from(["journald", "syslog"]), max_size=1),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(records(), min_size=1, max_size=30), queries)
def test_chunk_and_column_tests_select_what_the_record_test_selects(recs, query):
    """Chunk bytes, then columns, then verify() (or the record test, when the
    columns say they cannot decide) select exactly what the record test does."""
    want = [i for i, r in enumerate(recs) if query.record_test(r)]
    chunk = encode_chunk(recs)
    if not query.chunk_test(chunk):
        assert want == []
        return
    cols = FrameColumns(chunk)
    idx, need_records = query.candidates(cols)
    assert set(want) <= set(idx)
    built = cols.records(idx)
    test = query.record_test if need_records else query.verify
    got = [i for i, r in zip(idx, built) if test(r)]
    assert got == want
    assert [(r.ts, r.msg, r.fields, r.seq) for r in built] == \
        [(recs[i].ts, recs[i].msg, recs[i].fields, recs[i].seq) for i in idx]


def test_columns_refuse_what_is_not_a_chunk():
    import msgpack

    with pytest.raises(ChunkError):
        FrameColumns(b"\xc1")
    with pytest.raises(ChunkError):
        FrameColumns(msgpack.packb([2, 1]))
    assert FrameColumns(msgpack.packb([1, 0])).n == 0
    bad = msgpack.packb([1, 2, ["a"], 0, [0], [0, 0], [0, 0], [0, 0], [None] * 2, b"\x06\x06",
                         [None] * 2, ["m", "m"], [{}, {}], [0, 0], 1, [0, 1]])
    with pytest.raises(ChunkError):
        FrameColumns(bad).records([0, 1])  # a column one short
