"""-p/--priority, pinned to journalctl 252.

"observed" cases come from shared/corpora/journald (NOTES.md §3 and the recorded
journalctl_queries.jsonl); the others from systemd's log_level_from_string()
and safe_atou() (src/basic/parse-util.c), which journalctl 252 calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.journal.fields import journal_to_record, parse_export
from hostlog.query.priority import (
    ALL_LEVELS,
    PriorityError,
    parse_priority,
    priority_matches,
    selects_all,
)
from hostlog.record import Record
from tests.conftest import need

FIXTURE = (Path(__file__).resolve().parents[3] / ".." / "shared" / "corpora"
           / "journald" / "fixture" / "fixture.export")

ACCEPTED = [
    # --- observed ---
    *[(str(n), set(range(n + 1))) for n in range(8)],
    ("emerg", {0}), ("alert", {0, 1}), ("crit", {0, 1, 2}), ("err", {0, 1, 2, 3}),
    ("warning", set(range(5))), ("notice", set(range(6))), ("info", set(range(7))),
    ("debug", set(range(8))),
    ("2..4", {2, 3, 4}), ("crit..warning", {2, 3, 4}),
    ("4..2", {2, 3, 4}), ("warning..crit", {2, 3, 4}),  # reversed ranges work the same
    ("5..5", {5}), ("0..7", set(range(8))), ("3..3", {3}), ("err..err", {3}),
    # --- from the source: mixed forms and safe_atou() number syntax ---
    ("emerg..7", set(range(8))), ("3..notice", {3, 4, 5}),
    (" 3", {0, 1, 2, 3}),  # leading white space is skipped
    ("+3", {0, 1, 2, 3}),  # strtoul takes a sign
    ("03", {0, 1, 2, 3}),  # C octal
    ("07", set(range(8))),
    ("0x3", {0, 1, 2, 3}),  # C hex
    ("0b11", {0, 1, 2, 3}),  # mangle_base(): Python-style binary
    ("0o7", set(range(8))),  # ... and octal
    ("-0", {0}),  # strtoul("-0") is 0, which safe_atou() lets through
    (" 1.. 2", {1, 2}),
]

REJECTED = [
    # --- observed ---
    ("..3", "Failed to parse log level range ..3"),
    ("3..", "Failed to parse log level range 3.."),
    ("8", "Unknown log level 8"),
    ("bogus", "Unknown log level bogus"),
    # --- from the source ---
    ("ERR", "Unknown log level ERR"),  # names are exact
    ("error", "Unknown log level error"),
    ("warn", "Unknown log level warn"),
    ("", "Unknown log level "),
    ("-1", "Unknown log level -1"),
    ("3 ", "Unknown log level 3 "),  # nothing may follow the number
    ("08", "Unknown log level 08"),  # not octal
    ("0x", "Unknown log level 0x"),
    ("0b", "Unknown log level 0b"),
    ("1e0", "Unknown log level 1e0"),
    ("4294967299", "Unknown log level 4294967299"),  # would wrap to 3 as an unsigned int
    ("3_0", "Unknown log level 3_0"),
    ("\u0663", "Unknown log level \u0663"),  # a non-ASCII digit
    ("..", "Failed to parse log level range .."),
    ("1..2..3", "Failed to parse log level range 1..2..3"),
    ("1...3", "Failed to parse log level range 1...3"),
    ("0..8", "Failed to parse log level range 0..8"),
    ("err..bogus", "Failed to parse log level range err..bogus"),
]


@pytest.mark.parametrize("spec,expected", ACCEPTED)
def test_accepts_levels_and_ranges_like_journalctl(spec: str, expected: set[int]) -> None:
    assert parse_priority(spec) == frozenset(expected)


@pytest.mark.parametrize("spec,message", REJECTED)
def test_rejects_with_journalctls_wording(spec: str, message: str) -> None:
    with pytest.raises(PriorityError) as info:
        parse_priority(spec)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_only_a_selection_of_every_level_is_no_filter() -> None:
    assert selects_all(parse_priority("7")) and selects_all(parse_priority("debug"))
    assert selects_all(parse_priority("0..7")) and selects_all(parse_priority("7..0"))
    assert not selects_all(parse_priority("6")) and not selects_all(parse_priority("1..7"))
    assert ALL_LEVELS == frozenset(range(8))


def _journald(**fields: bytes | list[bytes]) -> Record:
    return journal_to_record({"__REALTIME_TIMESTAMP": b"1700000000000000",
                              "MESSAGE": b"m", **fields})


def test_an_entry_without_priority_is_excluded_unless_all_levels_are_selected() -> None:
    # NOTES §3, observed for -p 6 and -p 7 / debug / 0..7.
    record = _journald(SYSLOG_IDENTIFIER=b"x")
    assert record.severity == 6  # what journalctl assumes for its colours
    for spec in ("6", "info", "0..6", "6..6", "5..7"):
        assert not priority_matches(parse_priority(spec), record), spec
    for spec in ("7", "debug", "0..7", "emerg..debug"):
        assert priority_matches(parse_priority(spec), record), spec


def test_priority_matches_compare_the_journal_value_exactly() -> None:
    plain = Record(ts=0, msg="m", severity=3)
    assert priority_matches(parse_priority("3"), plain)
    assert priority_matches(parse_priority("err..warning"), plain)
    assert not priority_matches(parse_priority("2"), plain)
    assert not priority_matches(parse_priority("4..7"), plain)
    # PRIORITY=06 is not the match PRIORITY=6: only "all levels" shows it
    odd = _journald(PRIORITY=b"06")
    assert not priority_matches(parse_priority("6"), odd)
    assert priority_matches(parse_priority("7"), odd)
    # of a repeated PRIORITY the last value counts, the one shown (journalctl:
    # any of them; docs/query.md, "Differences")
    twice = _journald(PRIORITY=[b"3", b"5"])
    assert twice.severity == 5
    assert not priority_matches(parse_priority("3..3"), twice)
    assert priority_matches(parse_priority("5..5"), twice)
    assert priority_matches(parse_priority("5"), twice)
    assert not priority_matches(parse_priority("4..4"), twice)
    assert not priority_matches(parse_priority("2"), twice)
    assert not priority_matches(parse_priority("2"), _journald(PRIORITY=[b"3", b"x"]))


def test_fixture_counts_per_level_match_journalctl() -> None:
    # NOTES §3: -p 0 -> 1 entry ... -p 7 -> 14 (one entry has no PRIORITY).
    if not FIXTURE.is_file():
        need(False, f"{FIXTURE}")
    records = [journal_to_record(e) for e in parse_export(FIXTURE.read_bytes())]
    counts = [sum(priority_matches(parse_priority(str(p)), r) for r in records) for p in range(8)]
    assert counts == [1, 2, 3, 5, 7, 9, 12, 14]


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=12),
                 st.lists(st.sampled_from(list("0123456789.+- xXbBoO\t") + ["err", "..", "debug"]),
                          max_size=8).map("".join)))
def test_never_raises_anything_but_priorityerror(spec: str) -> None:
    try:
        allowed = parse_priority(spec)
    except PriorityError as exc:
        assert str(exc) in (f"Unknown log level {spec}", f"Failed to parse log level range {spec}")
    else:
        assert allowed and allowed <= ALL_LEVELS
        # a level is "X or more important", a range is contiguous
        assert allowed == frozenset(range(min(allowed), max(allowed) + 1))
        if ".." not in spec:
            assert min(allowed) == 0
