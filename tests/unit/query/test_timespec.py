"""--since/--until time syntax, pinned to journalctl 252.

Cases marked "observed" come from shared/corpora/journald (NOTES.md §4 and the
recorded journalctl_queries.jsonl, run with TZ=UTC); the others restate
systemd.time(7) or systemd's parse_timestamp()/parse_time() and glibc
strptime()/mktime(), which journalctl 252 uses.
"""

from __future__ import annotations

import calendar
import datetime as dt
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.query.timespec import USEC_INFINITY, TimeSpecError, parse_timestamp
from tests.support.tz import zone

S = 1_000_000  # µs per second
NOW_US = 1_700_000_000_123_456  # Tue 2023-11-14 22:13:20.123456 UTC, the fixture's base time
NOW_NS = NOW_US * 1000


def us(spec: str, *, now_us: int = NOW_US, utc: bool = False) -> int:
    ns = parse_timestamp(spec, now_ns=now_us * 1000, utc=utc)
    assert ns % 1000 == 0, "results are whole microseconds, like journalctl's"
    return ns // 1000


def utc_us(*fields: int, micro: int = 0) -> int:
    return calendar.timegm(fields + (0, 0, 0)[: 6 - len(fields)] + (0, 0, 0)) * S + micro


ACCEPTED_UTC = [
    # --- observed with journalctl 252 (TZ=UTC) ---
    ("2023-11-15 00:00:00", utc_us(2023, 11, 15)),
    ("2023-11-15 23:59:59", utc_us(2023, 11, 15, 23, 59, 59)),
    ("2023-11-14 22:13:22", utc_us(2023, 11, 14, 22, 13, 22)),
    ("2023-11-14 22:14", utc_us(2023, 11, 14, 22, 14)),  # seconds omitted -> :00
    ("2023-11-15", utc_us(2023, 11, 15)),  # time omitted -> 00:00:00
    ("2023-11-14 22:13:21", utc_us(2023, 11, 14, 22, 13, 21)),
    ("@1700000060", 1_700_000_060 * S),
    ("@1700086400", 1_700_086_400 * S),
    ("@1700000060.5", 1_700_000_060 * S + 500_000),  # fractions allowed
    ("2023-11-14 23:13:20 UTC", utc_us(2023, 11, 14, 23, 13, 20)),
    ("Wed 2023-11-15 22:13:21", utc_us(2023, 11, 15, 22, 13, 21)),  # matching weekday
    ("2023-11-14 22:13:21.123456", utc_us(2023, 11, 14, 22, 13, 21, micro=123456)),
    ("2023-11-14 22:13:21.123455", utc_us(2023, 11, 14, 22, 13, 21, micro=123455)),
    ("2023-11-14 22:13:21.123457", utc_us(2023, 11, 14, 22, 13, 21, micro=123457)),
    ("12-11-23", utc_us(2012, 11, 23)),  # 2-digit year
    # --- systemd.time(7) and the source ---
    ("wednesday 2023-11-15 22:13:21", utc_us(2023, 11, 15, 22, 13, 21)),
    ("WED 2023-11-15", utc_us(2023, 11, 15)),
    ("2023-11-14 23:13:20 utc", utc_us(2023, 11, 14, 23, 13, 20)),  # suffix case ignored
    ("70-01-01 00:00:00", 0),
    ("68-01-01", utc_us(2068, 1, 1)),  # 00-68 -> 20xx
    ("99-12-31 23:59:59", utc_us(1999, 12, 31, 23, 59, 59)),  # 69-99 -> 19xx
    ("2023-1-5", utc_us(2023, 1, 5)),  # strptime takes single digits
    ("2023-11-14  22:13:20", utc_us(2023, 11, 14, 22, 13, 20)),  # a format space eats any run
    (" 2023-11-14", utc_us(2023, 11, 14)),  # numbers skip leading white space
    ("2023-11-1422:13:20", utc_us(2023, 11, 14, 22, 13, 20)),  # ... or none at all
    ("22:13", utc_us(2023, 11, 14, 22, 13)),  # date omitted -> today
    ("22:13:21.5", utc_us(2023, 11, 14, 22, 13, 21, micro=500_000)),
    ("Tue 22:13", utc_us(2023, 11, 14, 22, 13)),  # time only: the weekday is today's
    ("now", NOW_US),
    ("today", utc_us(2023, 11, 14)),
    ("yesterday", utc_us(2023, 11, 13)),
    ("tomorrow", utc_us(2023, 11, 15)),
    ("today UTC", utc_us(2023, 11, 14)),
    # mktime() normalisation (observed with systemd-analyze timestamp, NOTES §4)
    ("2023-02-29", utc_us(2023, 3, 1)),
    ("2023-11-14 23:59:60", utc_us(2023, 11, 15)),
    ("2023-11-14 23:59:61", utc_us(2023, 11, 15, 0, 0, 1)),  # glibc %S allows 61
    ("2023-02-31", utc_us(2023, 3, 3)),
    ("Fri 2023-02-31", utc_us(2023, 3, 3)),  # the weekday of the normalised date
    # fractions: 6 digits, rounded on the 7th (parse_fractional_part_u)
    ("2023-11-14 22:13:21.1", utc_us(2023, 11, 14, 22, 13, 21, micro=100_000)),
    ("2023-11-14 22:13:21.1234565", utc_us(2023, 11, 14, 22, 13, 21, micro=123457)),
    ("2023-11-14 22:13:21.1234564999", utc_us(2023, 11, 14, 22, 13, 21, micro=123456)),
    ("2023-11-14 22:13:21.9999995", utc_us(2023, 11, 14, 22, 13, 22)),
    # journalctl's own -o short stamps (systemd >= 251): the current year
    ("Nov 14 22:13:20", utc_us(2023, 11, 14, 22, 13, 20)),
    ("november 14 22:13:20.5", utc_us(2023, 11, 14, 22, 13, 20, micro=500_000)),
    ("Tue Nov 14 22:13:20", utc_us(2023, 11, 14, 22, 13, 20)),
    ("Jun  4 01:02:03", utc_us(2023, 6, 4, 1, 2, 3)),
    # the far end: systemd formats nothing after 9999-12-30 23:59:59.999999 UTC
    ("9999-12-30 23:59:59 UTC", utc_us(9999, 12, 30, 23, 59, 59)),
    ("@0", 0),
    ("@infinity", USEC_INFINITY),
    ("@5min", 300 * S),  # "@" takes a time span: units allowed
]

RELATIVE = [
    ("-1h", -3600 * S),
    ("+3h30min", (3 * 3600 + 30 * 60) * S),
    ("11min ago", -11 * 60 * S),
    ("5s left", 5 * S),
    ("+5min", 300 * S),
    ("-5days", -5 * 86400 * S),
    ("-0", 0),
    ("+1.5h", 5400 * S),
    ("-2 weeks", -14 * 86400 * S),
    ("1y ago", -31_557_600 * S),  # 365.25 days
    ("+1M", 2_629_800 * S),  # 30.44 days
    ("+2months", 2 * 2_629_800 * S),
    ("-500ms", -500_000),
    ("-1msec", -1000),
    ("-10us", -10),
    ("-7usec", -7),
    ("-1\u03bcs", -1),
    ("-1\u00b5s", -1),
    ("-1d 2h", -(86400 + 7200) * S),
    ("-1h30", -(3600 + 30) * S),  # a bare number is seconds
    ("-5", -5 * S),
    ("-1 min", -60 * S),  # space between number and unit
    ("-1.5 .5s", -2 * S),  # "12.34 .56" is accepted by parse_time()
    ("-1m", -60 * S),  # "m" is minutes, "M" months
    ("-3 sec 2 seconds 1 second", -6 * S),
    ("-1hr", -3600 * S),
    ("-1w", -7 * 86400 * S),
    ("++1h", 3600 * S),  # strtoll() takes the second "+"
    ("1h 30min ago", -5400 * S),
    ("- 1h", -3600 * S),  # parse_time skips leading white space
]

REJECTED_UTC = [
    # --- observed (rc 1 "Failed to parse timestamp") ---
    "2023-11-14T22:13:22Z",
    "2023-11-15 00:13:20 +01:00",
    "Tue 2023-11-15 22:13:21",  # weekday does not match
    "garbage",
    "2023-11-14 24:00:00",
    # --- the ISO 8601 / RFC 3339 forms came with systemd 255 ---
    "2023-11-14T22:13",
    "2023-11-14 22:13:22Z",
    "2023-11-14 22:13:22+01:00",
    "2023-11-14 22:13:22 +0100",
    "2023-11-14 22:13:22 Europe/Berlin",  # observed rejected by 252 in the recording container
    # --- strptime ranges and trailing garbage ---
    "2023-11-14 23:60:00", "2023-13-01", "2023-11-00", "2023-11-32", "2023-11-14 22",
    "2023-11-14 ", "2023-11-14 22:13:21.", "2023-11-14 22:13:21.x", "2023-11-14 22:13:21.5 ",
    "22:13:21.5.6", "2023-11-14 22:13.5", "Nov 14 22:13", "Nov14", "Sundayx 2023-11-12",
    "Wed  ", "", " ", "T", "Z",
    # --- before the epoch, or after what systemd formats ---
    "69-12-31 23:59:59", "1969-12-31 23:59:59", "0000-01-01", "9999-12-31 00:00:00 UTC",
    # --- keywords are exact ---
    "Today", "NOW", "today ", " now", "now UTC", "yesterday ago",
    # --- relative spans ---
    "-", "+", "ago", " ago", "left", "5", "-1x", "--1h", "-1h UTC", "+1h ago", "-5.", "-5.s",
    "-1.2.3s", "-1h-", "-infinity", "+infinity", "infinity ago", "-99999999999y",
    "-100000000000000000000", "@", "@-1", "@-0", "@1.", "@abc", "@5 UTC", "@1 2 x",
    "-1 \u03bc", "5s left ago", "-0x10",
    "-30000y",  # more than 'now' -> below the epoch
    "+8000y",  # beyond 9999-12-30
    "2023-11-14\x0022:13",
]


@pytest.fixture(autouse=True)
def _utc_zone() -> Iterator[None]:
    # The recorded journalctl queries ran with TZ=UTC (fixture/run_queries.py).
    with zone("UTC"):
        yield


@pytest.mark.parametrize("spec,expected", ACCEPTED_UTC)
def test_accepts_what_journalctl_252_accepts(spec: str, expected: int) -> None:
    assert us(spec) == expected


@pytest.mark.parametrize("spec,delta", RELATIVE)
def test_relative_specs_count_from_now(spec: str, delta: int) -> None:
    assert us(spec) == NOW_US + delta


@pytest.mark.parametrize("spec", REJECTED_UTC)
def test_rejects_what_journalctl_252_rejects_with_its_wording(spec: str) -> None:
    with pytest.raises(TimeSpecError) as info:
        parse_timestamp(spec, now_ns=NOW_NS)
    assert str(info.value) == f"Failed to parse timestamp: {spec}"
    assert isinstance(info.value, ValueError)


def test_recorded_since_and_until_bound_the_fixture_like_journalctl() -> None:
    # --until 22:13:21.123456 includes the entry stamped exactly then, ...123455
    # excludes it (observed, NOTES §4): the parse is exact to the microsecond.
    entry = 1_700_000_001_123_456
    assert us("2023-11-14 22:13:21.123456") == entry
    assert us("2023-11-14 22:13:21.123455") == entry - 1
    # --since 2023-11-16 --until 2023-11-15: journalctl refuses (since > until)
    assert us("2023-11-16") > us("2023-11-15")


def test_local_time_is_the_default_and_a_utc_suffix_overrides_it() -> None:
    with zone("Europe/Berlin"):
        assert us("2023-11-14 23:13:20") == utc_us(2023, 11, 14, 22, 13, 20)
        assert us("2023-11-14 23:13:20 UTC") == utc_us(2023, 11, 14, 23, 13, 20)
        assert us("2023-07-01 12:00:00") == utc_us(2023, 7, 1, 10)  # CEST
        # the local zone's own abbreviations are understood and set tm_isdst
        assert us("2023-11-14 23:13:20 CET") == utc_us(2023, 11, 14, 22, 13, 20)
        assert us("2023-07-01 12:00:00 cest") == utc_us(2023, 7, 1, 10)
        assert us("2023-07-01 12:00:00 CET") == utc_us(2023, 7, 1, 11)  # mktime, isdst=0
        assert us("1970-01-01 01:00:00") == 0
        with pytest.raises(TimeSpecError):
            parse_timestamp("1970-01-01 00:00:00", now_ns=NOW_NS)  # -3600 s
        with pytest.raises(TimeSpecError):
            parse_timestamp("2023-07-01 12:00:00 JST", now_ns=NOW_NS)  # not the local zone


def test_today_is_the_local_day() -> None:
    with zone("Asia/Kolkata"):  # NOW is 2023-11-15 03:43:20 IST
        assert us("today") == utc_us(2023, 11, 14, 18, 30)
        assert us("yesterday") == utc_us(2023, 11, 13, 18, 30)
        assert us("22:13") == utc_us(2023, 11, 15, 16, 43)
        assert us("Wed 22:13") == utc_us(2023, 11, 15, 16, 43)
        with pytest.raises(TimeSpecError):
            parse_timestamp("Tue 22:13", now_ns=NOW_NS)
        assert us("today", utc=True) == utc_us(2023, 11, 14)


def test_utc_flag_reads_zoneless_times_as_utc() -> None:
    with zone("Europe/Berlin"):
        assert us("2023-11-14 23:13:20", utc=True) == utc_us(2023, 11, 14, 23, 13, 20)
        assert us("2023-11-14 23:13:20 CET", utc=True) == utc_us(2023, 11, 14, 22, 13, 20)
        assert us("-1h", utc=True) == NOW_US - 3600 * S


def test_yesterday_and_tomorrow_cross_month_and_year_ends() -> None:
    new_year = utc_us(2024, 1, 1, 0, 30)
    assert us("yesterday", now_us=new_year) == utc_us(2023, 12, 31)
    assert us("tomorrow", now_us=utc_us(2024, 2, 29, 12)) == utc_us(2024, 3, 1)


def test_now_keeps_microseconds_and_drops_nanoseconds() -> None:
    assert parse_timestamp("now", now_ns=NOW_NS + 999) == NOW_NS


# --- properties ---------------------------------------------------------------------

instants = st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(9999, 12, 29))


def _epoch_us(naive_utc: dt.datetime) -> int:
    return calendar.timegm(naive_utc.timetuple()) * S + naive_utc.microsecond


@settings(max_examples=300, deadline=None)
@given(instants)
def test_formatted_utc_times_parse_back(when: dt.datetime) -> None:
    with zone("UTC"):
        text = when.strftime("%Y-%m-%d %H:%M:%S")
        expected = _epoch_us(when)
        assert us(f"{text}.{when.microsecond:06d} UTC") == expected
        assert us(f"{text}.{when.microsecond:06d}") == expected
        assert us(f"{when:%a} {text} UTC") == expected - when.microsecond
        wrong_day = (when + dt.timedelta(days=1)).strftime("%a")
        with pytest.raises(TimeSpecError):
            parse_timestamp(f"{wrong_day} {text} UTC", now_ns=NOW_NS)
        assert us(f"@{expected // S}.{expected % S:06d}") == expected
        if 1970 <= when.year <= 2068:
            assert us(when.strftime("%y-%m-%d %H:%M:%S")) == expected - when.microsecond


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1)))
def test_formatted_local_times_parse_back(when: dt.datetime) -> None:
    # Asia/Kolkata has kept +05:30 without DST since 1945, so every local wall
    # time names exactly one instant.
    with zone("Asia/Kolkata"):
        expected = _epoch_us(when)
        local = time.localtime(expected // S)
        text = time.strftime("%Y-%m-%d %H:%M:%S", local)
        assert us(f"{text}.{when.microsecond:06d}") == expected
        assert us(f"{text} IST") == expected - when.microsecond
        assert us(f"{text} UTC") == expected - when.microsecond + 19800 * S


SPEC_ALPHABET = st.sampled_from(list("0123456789-:. @+TZUtcCagolefnwdysmihMWµμ\t\n\x00")
                                + ["UTC", "ago", "left", "now", "today", "min", "Wed",
                                   "Nov", "infinity", "2023-11-14", "22:13:20"])


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=40), st.lists(SPEC_ALPHABET, max_size=12).map("".join)),
       st.integers(min_value=0, max_value=2**62))
def test_never_raises_anything_but_timespecerror(spec: str, now_ns: int) -> None:
    try:
        result = parse_timestamp(spec, now_ns=now_ns)
    except TimeSpecError as exc:
        assert str(exc) == f"Failed to parse timestamp: {spec}"
    else:
        assert result >= 0 and result % 1000 == 0
