"""The sans-IO parts of journal-gatewayd compatibility: the Range header, the
numbers in it (held to the C library's strtoll/strtoull, as systemd reads
them), where /entries starts (held to a step-by-step simulation of
sd-journal's moves), the Accept header, /fields lines, /machine, and what
the export stream changes for systemd-journal-remote."""

from __future__ import annotations

import ctypes
import json
import string

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from hostlog.http.gatewayd_format import (
    INVALID_PREFIX,
    entries_mode,
    field_line,
    for_journal_remote,
    machine_json,
    os_pretty_name,
)
from hostlog.http.gatewayd_range import (
    INT64_MAX,
    INT64_MIN,
    UINT64_MAX,
    EntriesRange,
    RangeError,
    format_range,
    parse_int64,
    parse_range,
    parse_uint64,
    shown,
    start_index,
)
from hostlog.journal.fields import field_values, parse_export, record_to_journal
from hostlog.query.output import Formatter
from hostlog.record import Record

# -- the numbers: libc is the oracle -----------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.strtoll.restype = ctypes.c_longlong
_libc.strtoll.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]
_libc.strtoull.restype = ctypes.c_ulonglong
_libc.strtoull.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int]


def _c_parse(text: str, signed: bool) -> int | None:
    """systemd's safe_atoi64()/safe_atou64() around the real strtoll()/strtoull()."""
    raw = text.encode()
    raw = raw[len(raw) - len(raw.lstrip(b" \t\n\r")):]
    base = 0
    if raw[:2] in (b"0b", b"0B"):
        raw, base = raw[2:], 2
    elif raw[:2] in (b"0o", b"0O"):
        raw, base = raw[2:], 8
    buf = ctypes.create_string_buffer(raw)
    end = ctypes.c_char_p()
    ctypes.set_errno(0)
    fn = _libc.strtoll if signed else _libc.strtoull
    value = fn(buf, ctypes.byref(end), base)
    if ctypes.get_errno():
        return None
    consumed = ctypes.cast(end, ctypes.c_void_p).value - ctypes.addressof(buf)
    if consumed == 0 or consumed != len(raw):
        return None
    if not signed and value != 0 and raw[:1] == b"-":
        return None
    return int(value)


def _ours(fn, text: str) -> int | None:
    try:
        return fn(text)
    except RangeError:
        return None


_NUMBERISH = st.text(alphabet=" \t\n\r\v\f+-0123456789abcdefxXbBoO_", max_size=24)


@settings(max_examples=1500, deadline=None)
@given(_NUMBERISH)
@example("0x")
@example("-0x1f")
@example("010")
@example("08")
@example("0b11")
@example("0b-1")
@example(" +7")
@example("9223372036854775807")
@example("9223372036854775808")
@example("-9223372036854775808")
@example("-9223372036854775809")
@example("18446744073709551615")
@example("18446744073709551616")
@example("-0")
@example("\v-5")
def test_numbers_are_read_as_systemd_reads_them(text: str) -> None:
    assert _ours(parse_int64, text) == _c_parse(text, signed=True), text
    assert _ours(parse_uint64, text) == _c_parse(text, signed=False), text


@settings(deadline=None)
@given(st.integers(INT64_MIN, INT64_MAX), st.integers(0, UINT64_MAX))
def test_every_integer_is_read_back(signed: int, unsigned: int) -> None:
    assert parse_int64(str(signed)) == signed
    assert parse_int64(hex(signed).replace("0x", "0x") if signed >= 0 else "-" + hex(-signed)) == signed
    assert parse_uint64(str(unsigned)) == unsigned
    assert parse_uint64("0o%o" % unsigned) == unsigned


# -- the header ----------------------------------------------------------------------------------

CUR = "0123456789abcdef0123456789abcdef:42"

# what the real systemd-journal-gatewayd 252 does with these (a cursor of
# hostlog's in place of journald's); test_gatewayd_vs_systemd.py asks it again
@pytest.mark.parametrize("header, expected", [
    ("entries=", EntriesRange()),
    ("entries=:", EntriesRange()),
    ("entries=:1", EntriesRange(count=1)),
    ("entries=:-3:2", EntriesRange(skip=-3, count=2)),
    ("entries=:-1:", EntriesRange(skip=-1)),
    ("entries= :1:2", EntriesRange(skip=1, count=2)),
    ("entries=: 1:2", EntriesRange(skip=1, count=2)),
    ("entries=:1: 2", EntriesRange(skip=1, count=2)),
    ("entries=:1:+2", EntriesRange(skip=1, count=2)),
    ("entries=:010:1", EntriesRange(skip=8, count=1)),
    ("entries=:0x1:2", EntriesRange(skip=1, count=2)),
    ("entries=:-0x2:1", EntriesRange(skip=-2, count=1)),
    ("entries=:0b11:1", EntriesRange(skip=3, count=1)),
    ("entries=:-0:2", EntriesRange(count=2)),
    ("entries=:1:18446744073709551615", EntriesRange(skip=1, count=UINT64_MAX)),
    (f"entries={CUR}", EntriesRange(cursor=CUR)),
    (f"entries={CUR}:5", EntriesRange(cursor=CUR, count=5)),
    (f"entries={CUR}:-1:3", EntriesRange(cursor=CUR, skip=-1, count=3)),
    (f"entries={CUR}:2:", EntriesRange(cursor=CUR, skip=2)),
    (f"entries=  {CUR} trailing:1", EntriesRange(cursor=CUR, count=1)),
    ("entries=abc", EntriesRange(cursor="abc")),  # not a cursor of hostlog's: refused when seeking
])
def test_range_headers(header: str, expected: EntriesRange) -> None:
    assert parse_range(header) == expected


@pytest.mark.parametrize("header", [
    "entries=:1:0", "entries=:1:-2", "entries=:1:2 ", "entries=:1:2\t", "entries=:1:2:3", "entries=:a",
    "entries=::", "entries=::1", "entries=:1_0:1", "entries=:9223372036854775808:2",
    "entries=:1:18446744073709551616", f"entries={CUR}:x:1", f"entries={CUR}:1:2:3",
    # gatewayd ignores a Range of another unit and serves everything; hostlog says no
    "bytes=0-99", "Entries=:1:1", "entries =:1:1",
])
def test_bad_range_headers_are_refused_with_the_header_named(header: str) -> None:
    with pytest.raises(RangeError, match="Range"):
        parse_range(header)


_CURSORS = st.builds(lambda o, s: f"{o}:{s}", st.text(alphabet="0123456789abcdef", min_size=1, max_size=32),
                     st.integers(0, 10**12))


@settings(deadline=None)
@given(st.builds(EntriesRange, st.none() | _CURSORS, st.integers(INT64_MIN, INT64_MAX),
                 st.none() | st.integers(1, UINT64_MAX)))
def test_a_range_reads_back(value: EntriesRange) -> None:
    assert parse_range(format_range(value)) == value


@settings(deadline=None)
@given(st.text(max_size=60))
def test_any_header_parses_or_is_refused(header: str) -> None:
    try:
        parse_range(header)
    except RangeError as exc:
        assert "Range" in str(exc)


# -- where the output starts: held to sd-journal's moves ---------------------------------------

def _simulate(selected: list[int], position: int | None, skip: int, count: int | None,
              discrete: bool) -> list[int]:
    """gatewayd's request_reader_entries() over an sd-journal of the
    ``selected`` positions, one move at a time. The journal's location is
    the pair of indices next() and previous() step onto: a seek to the head
    (0, -1), to the tail (n, n-1), to a cursor's entry (i, i), between two
    entries (the one after, the one before); on entry i (i+1, i-1). A move
    that finds no entry leaves the location as it was."""
    n = len(selected)
    if position is None:
        nxt, prv = (0, -1) if skip >= 0 else (n, n - 1)
    elif position in selected:
        nxt = prv = selected.index(position)
    else:
        nxt = sum(1 for s in selected if s < position)
        prv = nxt - 1

    def moves(forward: bool, k: int) -> int:
        nonlocal nxt, prv
        done = 0
        for _ in range(k):
            target = nxt if forward else prv
            if not 0 <= target < n:
                break
            nxt, prv = target + 1, target - 1
            done += 1
        return done

    out: list[int] = []
    remaining = 1 if discrete else count
    first = True
    while remaining is None or remaining > 0:
        if first and skip < 0:
            moved = moves(False, -skip + 1)  # sd_journal_previous_skip(-n_skip + 1)
        elif first and skip > 0:
            moved = moves(True, skip + 1)  # sd_journal_next_skip(n_skip + 1)
        else:
            moved = moves(True, 1)
        first = False
        if moved == 0:
            break
        entry = selected[nxt - 1]
        if discrete and entry != position:  # sd_journal_test_cursor()
            break
        out.append(entry)
        if remaining is not None:
            remaining -= 1
    return out


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(1, 60), max_size=25, unique=True).map(sorted),
       st.none() | st.integers(0, 62), st.integers(-30, 30), st.none() | st.integers(1, 30), st.booleans())
@example([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], None, -3, 2, False)
@example([1, 3, 5, 7, 9], 4, -1, 3, False)
def test_where_entries_start_follows_sd_journal(selected: list[int], position: int | None, skip: int,
                                                count: int | None, discrete: bool) -> None:
    assume(not discrete or position is not None)
    expected = _simulate(selected, position, skip, count, discrete)
    assert shown(selected, position, EntriesRange("c" if position is not None else None, skip, count),
                 discrete=discrete) == expected
    if not discrete:
        assert (start_index(selected, position, skip) is None) == (expected == [])


def test_what_the_real_gatewayd_showed() -> None:
    # ten entries m0..m9, journal-gatewayd 252 (see the module of the comparison)
    ten = list(range(10))
    r = EntriesRange
    assert shown(ten, None, r(None, -3, 2)) == [6, 7]
    assert shown(ten, None, r(None, -1, 5)) == [8, 9]
    assert shown(ten, None, r(None, 100, 2)) == [9]
    assert shown(ten, None, r(None, -100, 2)) == [0, 1]
    assert shown(ten, 3, r("c", -1, 3)) == [2, 3, 4]
    assert shown(ten, 3, r("c", 10, 3)) == [9]
    assert shown(ten, 3, r("c", 1, 3), discrete=True) == []
    assert shown(ten, 3, r("c"), discrete=True) == [3]
    even = [0, 2, 4, 6, 8]
    assert shown(even, 3, r("c", -1, 3)) == [0, 2, 4]
    assert shown(even, 3, r("c", 0, 3)) == [4, 6, 8]
    assert shown(even, 3, r("c", 1, 2)) == [6, 8]
    assert shown(even, 3, r("c"), discrete=True) == []


# -- Accept, /fields, /machine --------------------------------------------------------------------

@pytest.mark.parametrize("accept, mode", [
    (None, "short"), ("*/*", "short"), ("text/plain", "short"), ("application/json", "json"),
    ("text/event-stream", "json-sse"), ("application/json-seq", "json-seq"),
    ("application/vnd.fdo.journal", "export"), ("text/html,application/xhtml+xml,*/*;q=0.8", "short"),
    ("application/json;q=0.9, */*;q=0.1", "json"), ("Application/JSON", "json"), ("application/xml", "short"),
])
def test_accept_picks_the_layout(accept: str | None, mode: str) -> None:
    assert entries_mode(accept) == mode


def test_fields_lines_as_gatewayd_writes_them() -> None:
    assert field_line("F", b"nginx", False) == b"nginx\n"
    assert field_line("F", b"nginx", True) == b'{ "F" : "nginx" }\n'
    assert field_line("F", b'a"b\\c\nd\te', True) == b'{ "F" : "a\\"b\\\\c\\nd\\u0009e" }\n'
    assert field_line("F", "ünï".encode(), True) == '{ "F" : "ünï" }\n'.encode()
    assert field_line("F", b"\x01\xff", True) == b'{ "F" : [ 1, 255 ] }\n'
    assert field_line("F", b"x" * 4096, True) == b'{ "F" : null }\n'
    assert field_line("F", b"x" * 4095, True) == b'{ "F" : "' + b"x" * 4095 + b'" }\n'


@settings(deadline=None)
@given(st.binary(max_size=64))
def test_a_fields_json_line_is_json_with_the_value(value: bytes) -> None:
    line = field_line("FIELD", value, True)
    assert line.endswith(b" }\n")
    parsed = json.loads(line)["FIELD"]
    if isinstance(parsed, list):
        assert bytes(parsed) == value
    else:
        assert parsed.encode() == value


def test_machine_is_laid_out_as_gatewayd_lays_it_out() -> None:
    body = machine_json(machine_id="m" * 32, boot_id="b" * 32, hostname="web-1", os_pretty_name='Debian "12"',
                        virtualization="kvm", usage=5, cutoff_from_realtime=1, cutoff_to_realtime=2)
    assert body.startswith(b'{ "machine_id" : "' + b"m" * 32 + b'","boot_id" : ')
    assert body.endswith(b'"cutoff_to_realtime" : "2" }\n')
    assert list(json.loads(body)) == ["machine_id", "boot_id", "hostname", "os_pretty_name", "virtualization",
                                      "usage", "cutoff_from_realtime", "cutoff_to_realtime"]
    assert json.loads(body)["os_pretty_name"] == 'Debian "12"'
    assert json.loads(body)["usage"] == "5"


def test_os_pretty_name() -> None:
    assert os_pretty_name('NAME="Debian GNU/Linux"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n') \
        == "Debian GNU/Linux 12 (bookworm)"
    assert os_pretty_name("NAME=Arch\n# PRETTY_NAME=x\n") == "Arch"
    assert os_pretty_name("") == "Linux"
    assert os_pretty_name("PRETTY_NAME='a \\\"b\\\"'\n") == 'a "b"'


# -- the export stream for systemd-journal-remote ---------------------------------------------------

def _accepted(record: Record) -> bool:
    """What journal-remote checks of an entry's export (its importer's
    process_special_field()): a realtime of 1..2^55-1, a monotonic below
    2^55, a _BOOT_ID that is a 128-bit id."""
    entry = parse_export(Formatter("export").format(record))[0]
    for value in entry.get("__REALTIME_TIMESTAMP", []):
        if not (value.isdigit() and 0 < int(value) < 1 << 55):
            return False
    for value in entry.get("__MONOTONIC_TIMESTAMP", []):
        if not (value.isdigit() and int(value) < 1 << 55):
            return False
    for value in entry.get("_BOOT_ID", []):
        text = value.replace(b"-", b"") if len(value) == 36 else value
        if len(text) != 32 or not all(c in string.hexdigits.encode() for c in text):
            return False
    return True


_TIMES = st.sampled_from([0, -5_000_000_000, 1, 999, 1_700_000_000 * 10**9, (1 << 55) * 1000, 2**63 - 1])
_RAW = st.sampled_from(["0", "1700000000000000", "abc", "", "+5", str(1 << 55), "12 ", "0123456789abcdef" * 2,
                        "01234567-89ab-cdef-0123-456789abcdef", "xyz", "0123456789ABCDEF0123456789ABCDEF"])


@settings(max_examples=250, deadline=None)
@given(_TIMES, st.dictionaries(st.sampled_from(["__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP", "_BOOT_ID",
                                                "OTHER"]),
                               _RAW | st.lists(_RAW, min_size=2, max_size=3), max_size=4),
       st.booleans())
def test_the_export_journal_remote_is_given_takes_every_record(ts: int, fields: dict, absent: bool) -> None:
    if absent:
        fields = dict(fields, _HOSTLOG_ABSENT="__REALTIME_TIMESTAMP")
    record = Record(ts=ts, msg="m", host="h", source="syslog", app="a", fields=fields, origin="o", seq=1)
    fixed = for_journal_remote(record)
    assert _accepted(fixed)
    if _accepted(record):
        assert fixed is record  # nothing changes what journal-remote takes as it is
        return
    before, after = record_to_journal(record), record_to_journal(fixed)
    # no value is lost: each one the record had is still there, under its name or the invalid one's
    for name, value in before.items():
        if name in ("__REALTIME_TIMESTAMP",) and fixed.ts != record.ts:
            assert field_values(fixed, INVALID_PREFIX + name) or field_values(fixed, name)
            continue
        assert name in after and after[name] == value or after.get(INVALID_PREFIX + name) == value, name
    assert fixed.msg == record.msg and fixed.host == record.host and fixed.app == record.app
