"""-o formats, pinned byte for byte to the real journalctl 252.

Conformance material: shared/corpora/journald/fixture/ (generated on Debian 12
with systemd 252): fixture.export holds the 14 entries systemd-journal-remote
turned into the journal file the recorded queries read, and
journalctl_queries.jsonl holds 90 `journalctl --file FIXTURE --no-pager ARGS`
runs with their rc, stdout and stderr (env TZ=UTC, LC_ALL=C.UTF-8, see
run_queries.py; none uses a time relative to "now").

Each recorded query is replayed here: the entries are mapped with
journal_to_record, the query's filters are applied with hostlog's pure
functions (parse_priority/priority_matches, parse_timestamp, field_values) and
a few lines of test code for what belongs to the query engine (-n, -r,
FIELD=VALUE groups, --facility names, -g), and the selected records are
formatted with Formatter and compared with journalctl's stdout.
"""

from __future__ import annotations

import base64
import collections
import json
import re
from pathlib import Path
from typing import Any

import pytest

from hostlog.journal.fields import (
    field_values,
    journal_to_record,
    parse_export,
    record_to_journal,
    to_entry,
)
from hostlog.query.output import MODES, Formatter, format_bytes
from hostlog.query.priority import PriorityError, parse_priority, priority_matches
from hostlog.query.timespec import TimeSpecError, parse_timestamp
from hostlog.record import Record
from tests.conftest import need
from tests.support.tz import zone

FIXTURE = Path(__file__).resolve().parents[3] / ".." / "shared" / "corpora" / "journald" / "fixture"
HOSTLOG_EXTRA = {"_HOSTLOG_SOURCE", "_HOSTLOG_ORIGIN", "_HOSTLOG_SEQ"}
# Queries left out of the conformance run, with the reason.
EXCLUDED = {
    ("--utc", "-o", "short-monotonic"):
        "short-monotonic is not supported: records from non-journal sources have no monotonic clock",
}


def _load() -> tuple[list[Record], list[dict[str, Any]]] | None:
    try:
        exported = (FIXTURE / "fixture.export").read_bytes()
        lines = (FIXTURE / "journalctl_queries.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    records = [journal_to_record(e) for e in parse_export(exported)]
    for seq, record in enumerate(records, start=1):
        record.origin, record.seq = "fixture", seq  # as the spool would number them
    return records, [json.loads(line) for line in lines]


LOADED = _load()
QUERIES = LOADED[1] if LOADED else []


def test_the_recorded_corpus_is_present() -> None:
    if LOADED is None:
        need(False, f"{FIXTURE}")
    assert len(QUERIES) == 90 and len(LOADED[0]) == 14


# --- replaying a recorded query -----------------------------------------------------

FACILITIES = {name: n for n, name in enumerate(
    "kern user mail daemon auth syslog lpr news uucp cron authpriv ftp".split())}
FACILITIES.update({f"local{n}": 16 + n for n in range(8)})


class Refused(Exception):
    """journalctl exits with rc 1 and this message."""


def replay(args: list[str], records: list[Record]) -> dict[str, Any]:
    q: dict[str, Any] = {"mode": "short", "utc": False, "all": False, "fields": None, "F": None}
    keep: list[Any] = []
    groups: list[dict[str, list[bytes]]] = [{}]
    grep = None
    case_sensitive = None
    since = until = None
    lines = None
    reverse = False
    it = iter(args)
    for a in it:
        if a == "--utc":
            q["utc"] = True
        elif a == "-o":
            q["mode"] = next(it)
        elif a == "--all":
            q["all"] = True
        elif a.startswith("--output-fields="):
            q["fields"] = a.split("=", 1)[1].split(",")
        elif a == "-F":
            q["F"] = next(it)
        elif a == "-p":
            allowed = parse_priority(next(it))
            keep.append(lambda r, allowed=allowed: priority_matches(allowed, r))
        elif a in ("--since", "--until"):
            spec = next(it)
            ns = parse_timestamp(spec, now_ns=1_600_000_000 * 10**9)
            # none of the recorded specs depends on "now"
            assert ns == parse_timestamp(spec, now_ns=1_800_000_000 * 10**9)
            if a == "--since":
                since = ns
            else:
                until = ns
        elif a == "-n":
            lines = int(next(it))
        elif a == "-r":
            reverse = True
        elif a.startswith("--facility="):
            wanted = {str(FACILITIES.get(f, f)).encode() for f in a.split("=", 1)[1].split(",")}
            keep.append(lambda r, w=wanted: bool(set(field_values(r, "SYSLOG_FACILITY")) & w))
        elif a == "-t":
            ident = next(it).encode()
            keep.append(lambda r, i=ident: i in field_values(r, "SYSLOG_IDENTIFIER"))
        elif a == "-g":
            grep = next(it)
        elif a == "--case-sensitive=false":
            case_sensitive = False
        elif a == "+":
            groups.append({})
        elif "=" in a:
            name, value = a.split("=", 1)
            groups[-1].setdefault(name, []).append(value.encode())
        else:
            raise AssertionError(f"replay does not know {a!r}")
    if since is not None and until is not None and since > until:
        raise Refused("--since= must be before --until=.")
    if since is not None:
        keep.append(lambda r: r.ts >= since)  # both bounds inclusive (NOTES §4)
    if until is not None:
        keep.append(lambda r: r.ts <= until)
    if any(groups):
        keep.append(lambda r: any(all(set(field_values(r, name)) & set(values)
                                      for name, values in g.items()) for g in groups if g))
    if grep is not None:
        if case_sensitive is None:  # journalctl: lower-case pattern -> case-insensitive
            case_sensitive = grep != grep.lower()
        pattern = re.compile(grep, 0 if case_sensitive else re.IGNORECASE)
        keep.append(lambda r: bool(pattern.search(
            field_values(r, "MESSAGE")[0].decode("utf-8", "surrogateescape"))))
    selected = [r for r in records if all(k(r) for k in keep)]
    if lines is not None:
        selected = selected[-lines:]
    if reverse:
        selected.reverse()
    q["records"] = selected
    return q


def _verbose_entries(text: str) -> list[tuple[str, collections.Counter[str]]]:
    """(header without the cursor, multiset of field blocks) per entry."""
    entries: list[tuple[str, list[str]]] = []
    for line in text.splitlines(keepends=True):
        if not line.startswith(" "):
            entries.append((line.split(" [", 1)[0], []))
        elif line[4] != " ":  # "    NAME=value" starts a field
            entries[-1][1].append(line)
        else:  # a continuation line of a multi-line value
            entries[-1][1][-1] += line
    return [(head, collections.Counter(b for b in blocks if not b.startswith("    _HOSTLOG_")))
            for head, blocks in entries]


def _json_objects(raw: bytes, seq: bool) -> list[dict[str, Any]]:
    if seq:
        assert raw == b"" or raw.startswith(b"\x1e")
        chunks = raw.split(b"\x1e")[1:]
        assert all(c.endswith(b"\n") for c in chunks)  # RFC 7464: RS json LF
    else:
        chunks = raw.splitlines()
    return [json.loads(c) for c in chunks]


def _without(obj: dict[str, Any], names: set[str]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in names}


def assert_same_output(q: dict[str, Any], recorded: bytes) -> None:
    mode = q["mode"]
    formatter = Formatter(mode, utc=q["utc"], output_fields=q["fields"], all_fields=q["all"])
    ours = b"".join(formatter.format(r) for r in q["records"])
    if mode.startswith("short") or mode == "cat":
        assert ours == recorded
    elif mode in ("json", "json-seq"):
        theirs = _json_objects(recorded, mode == "json-seq")
        mine = _json_objects(ours, mode == "json-seq")
        assert len(mine) == len(theirs)
        for record, obj, their in zip(q["records"], mine, theirs):
            # __CURSOR: journalctl's names a place in the journal file (it changes
            # with every systemd-journal-remote run); ours is <origin>:<seq>.
            # _HOSTLOG_*: hostlog's identity fields, which journalctl has no
            # equivalent of. Every other key must be there with the same value.
            assert obj["__CURSOR"] == f"fixture:{record.seq}"
            assert _without(obj, {"__CURSOR"} | HOSTLOG_EXTRA) == _without(their, {"__CURSOR"})
    elif mode == "export":
        theirs_e, mine_e = parse_export(recorded), parse_export(ours)
        assert len(mine_e) == len(theirs_e)
        for obj, their in zip(mine_e, theirs_e):
            # journalctl's header order: __CURSOR, __REALTIME_TIMESTAMP, __MONOTONIC_TIMESTAMP, _BOOT_ID
            assert list(obj)[:4] == list(their)[:4]
            assert _without(obj, {"__CURSOR"} | HOSTLOG_EXTRA) == _without(their, {"__CURSOR"})
    elif mode == "verbose":
        # The order of fields inside an entry is the order of data objects in
        # the journal file (first written, first listed): a property of that
        # file, not of the entry. Compare each field block exactly, order aside.
        assert _verbose_entries(ours.decode()) == _verbose_entries(recorded.decode())
    else:
        raise AssertionError(f"no comparison for {mode}")


CONFORMANCE = [q for q in QUERIES if tuple(q["args"]) not in EXCLUDED]


@pytest.mark.parametrize("query", CONFORMANCE, ids=lambda q: " ".join(q["args"]))
def test_replayed_query_matches_recorded_journalctl(query: dict[str, Any]) -> None:
    assert LOADED is not None
    records = LOADED[0]
    recorded = base64.b64decode(query["stdout_b64"])
    with zone("UTC"):  # the recording's TZ
        if query["rc"] != 0 and query["stderr"]:
            with pytest.raises((PriorityError, TimeSpecError, Refused)) as info:
                replay(query["args"], records)
            assert str(info.value) + "\n" == query["stderr"]
            return
        q = replay(query["args"], records)
        if recorded == b"-- No entries --\n":
            # journalctl's notice for an empty selection (rc 1 after -g, else 0):
            # printing it is the query engine's job; the selection must be empty.
            assert q["records"] == []
            return
        assert query["rc"] == 0
        if q["F"] is not None:
            # -F lists distinct values in the journal file's data order; compare as sets
            values = {v for r in q["records"] for v in field_values(r, q["F"])}
            assert sorted(values) == sorted(recorded.splitlines())
            return
        assert_same_output(q, recorded)


def test_exclusions_are_what_hostlog_does_not_support() -> None:
    assert len(CONFORMANCE) + len(EXCLUDED) == len(QUERIES)
    for args in EXCLUDED:
        with pytest.raises(ValueError):
            Formatter(args[args.index("-o") + 1])


# --- layouts beyond the fixture ----------------------------------------------------

BASE_US = 1_700_000_000_123_456  # Tue 2023-11-14 22:13:20.123456 UTC


def rec(msg: str | bytes = "hello", **kw: Any) -> Record:
    args: dict[str, Any] = dict(ts=BASE_US * 1000, msg=msg, host="h", app="app", pid=None,
                                severity=6, source="syslog", origin="o", seq=1)
    args.update(kw)
    return Record(**args)


def fmt(record: Record, mode: str = "short", **kw: Any) -> bytes:
    return Formatter(mode, utc=kw.pop("utc", True), **kw).format(record)


def test_unknown_modes_are_refused() -> None:
    for mode in ("short-monotonic", "short-delta", "with-unit", "json-lines", ""):
        with pytest.raises(ValueError):
            Formatter(mode)
    assert {"short", "short-iso", "short-precise", "short-unix", "json", "json-pretty",
            "json-seq", "cat", "verbose", "export"} <= set(MODES)


def test_local_time_and_offsets() -> None:
    r = rec()
    with zone("Asia/Kolkata"):
        assert fmt(r, utc=False).startswith(b"Nov 15 03:43:20 h app: ")
        assert fmt(r, "short-iso", utc=False).startswith(b"2023-11-15T03:43:20+0530 ")
        assert fmt(r, "short-iso-precise", utc=False).startswith(b"2023-11-15T03:43:20.123456+0530 ")
        assert fmt(r, "short-full", utc=False).startswith(b"Wed 2023-11-15 03:43:20 IST ")
        assert fmt(r, "verbose", utc=False).startswith(b"Wed 2023-11-15 03:43:20.123456 IST [o:1]\n")
        assert fmt(r, "short-unix", utc=False).startswith(b"1700000000.123456 ")
        assert fmt(r, utc=True).startswith(b"Nov 14 22:13:20 ")
    with zone("America/St_Johns"):
        assert fmt(r, "short-iso", utc=False).startswith(b"2023-11-14T18:43:20-0330 ")
    assert fmt(rec(ts=5 * 10**9), "short-unix").startswith(b"         5.000000 ")
    assert fmt(rec(ts=86400 * 4 * 10**9)).startswith(b"Jan 05 00:00:00 ")  # zero-padded day


def test_identifier_pid_and_indentation() -> None:
    r = rec("a\nb\n\n\tc\n", app="", pid=42, fields={"_COMM": "comm"})
    head = b"Nov 14 22:13:20 h comm[42]: "
    pad = b" " * len(head)
    assert fmt(r) == head + b"a\n" + pad + b"b\n" + pad + b"\n" + pad + b"        c\n"
    # no identifier and no _COMM: "unknown", which journalctl leaves out of the indent
    r = rec("a\nb", app="", fields={"SYSLOG_PID": "7"})
    head = b"Nov 14 22:13:20 h unknown[7]: "
    assert fmt(r) == head + b"a\n" + b" " * (len(head) - 8) + b"b\n"
    # indentation counts bytes, not characters
    r = rec("a\nb", app="ünï")
    head = "Nov 14 22:13:20 h ünï: ".encode()
    assert len(head) == 25 and fmt(r) == head + b"a\n" + b" " * 25 + b"b\n"
    # a 300-byte identifier or a non-printable host is not shown
    r = rec("m", app="x" * 300, host="bad\x01host", fields={"_COMM": "c"})
    assert fmt(r) == b"Nov 14 22:13:20 c: m\n"
    assert fmt(r, all_fields=True) == b"Nov 14 22:13:20 bad\x01host " + b"x" * 300 + b": m\n"
    assert fmt(rec("", host="")) == b"Nov 14 22:13:20 app: \n"


def test_messages_that_are_not_printable_become_blobs() -> None:
    assert fmt(rec("\x1b[1;31mred\x1b[0m and\tmore")) == b"Nov 14 22:13:20 h app: red and        more\n"
    assert fmt(rec("a\rb")) == b"Nov 14 22:13:20 h app: [3B blob data]\n"
    assert fmt(rec(b"\xff" * 1536)) == b"Nov 14 22:13:20 h app: [1.5K blob data]\n"
    assert fmt(rec("x\x1b[2Jy")) == b"Nov 14 22:13:20 h app: [6B blob data]\n"  # only colours go
    # --all: raw bytes, each line up to its first NUL
    assert fmt(rec(b"ab\x00cd\nef\x01\tg"), all_fields=True) == (
        b"Nov 14 22:13:20 h app: ab\n" + b" " * 23 + b"ef\x01\tg\n")


@pytest.mark.parametrize("n,text", [(0, "0B"), (1023, "1023B"), (1024, "1.0K"), (1536, "1.5K"),
                                    (10 * 1024**2, "10.0M"), (1024**3 + 1, "1.0G"),
                                    (5 * 1024**6, "5.0E")])
def test_format_bytes_is_systemds(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_source_realtime_is_shown_in_short_and_verbose_only() -> None:
    r = rec(fields={"_SOURCE_REALTIME_TIMESTAMP": "1700000001000000"})
    assert fmt(r).startswith(b"Nov 14 22:13:21 ")
    assert fmt(r, "verbose").startswith(b"Tue 2023-11-14 22:13:21.000000 UTC [o:1]\n")
    assert json.loads(fmt(r, "json"))["__REALTIME_TIMESTAMP"] == "1700000000123456"


def test_colours_follow_priority_on_the_message_only() -> None:
    red, yellow, bold = b"\x1b[0;1;31m", b"\x1b[0;1;38;5;185m", b"\x1b[0;1;39m"
    grey, blue, normal = b"\x1b[0;38;5;245m", b"\x1b[0;34m", b"\x1b[0m"
    head = b"Nov 14 22:13:20 h app: "
    pad = b" " * len(head)
    for severity, on in [(0, red), (3, red), (4, yellow), (5, bold), (7, grey)]:
        assert fmt(rec("a\nb", severity=severity), color=True) == (
            head + on + b"a" + normal + b"\n" + pad + on + b"b" + normal + b"\n")
    assert fmt(rec("a", severity=6), color=True) == head + b"a\n"
    assert fmt(rec("a", fields={"_TRANSPORT": "audit"}), color=True) == head + blue + b"a" + normal + b"\n"
    assert fmt(rec("a", severity=3), "cat", color=True) == red + b"a" + normal + b"\n"
    # -g highlighting on a terminal
    assert Formatter("short", utc=True, color=True).format(rec("say hello", severity=3),
                                                           highlight=(4, 9)) == (
        head + red + b"say " + bold + b"hello" + normal + b"\n")
    verbose = fmt(rec("m", severity=3), "verbose", color=True)
    assert verbose.startswith(b"\x1b[0;4mTue 2023-11-14 22:13:20.123456 UTC\x1b[0m " + grey + b"[o:1]" + normal)
    assert b"    " + bold + b"MESSAGE=m\n" + normal in verbose
    assert b"    \x1b[0;32m_HOSTNAME=h\n" + normal in verbose
    assert fmt(rec("m"), "json", color=True) == fmt(rec("m"), "json")


def test_json_values_thresholds_and_framing() -> None:
    r = rec("x" * 4087, fields={"BIG": "y" * 4092, "BIN": b"\x00\x01", "TAG": ["one", b"\xff", "z" * 5000]})
    obj = json.loads(fmt(r, "json"))
    assert obj["MESSAGE"] == "x" * 4087  # "MESSAGE=" + 4087 bytes = 4095
    assert obj["BIG"] is None  # "BIG=" + 4092 bytes = 4096: null, as journalctl
    assert obj["BIN"] == [0, 1]
    assert obj["TAG"] == ["one", [255], None]
    assert all(isinstance(v, (str, list)) or v is None for v in obj.values())
    everything = json.loads(fmt(r, "json", all_fields=True))
    assert everything["BIG"] == "y" * 4092 and everything["TAG"][2] == "z" * 5000
    one = rec("m", fields={"TAG": ["a", "b"]})
    line = fmt(one, "json")
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    assert fmt(one, "json-seq") == b"\x1e" + line
    assert fmt(one, "json-sse") == b"data: " + line + b"\n"
    pretty = fmt(one, "json-pretty").decode()
    assert pretty.startswith('{\n\t"__CURSOR" : "o:1",\n\t"__REALTIME_TIMESTAMP" : "1700000000123456",\n')
    assert '\t"TAG" : [\n\t\t"a",\n\t\t"b"\n\t],\n' in pretty and pretty.endswith('"\n}\n')
    assert json.loads(pretty) == json.loads(line)


def test_output_fields() -> None:
    r = rec("m", fields={"_BOOT_ID": "b", "__MONOTONIC_TIMESTAMP": "5", "A": "1", "B": "2"})
    obj = json.loads(fmt(r, "json", output_fields=["A", "MESSAGE"]))
    assert obj == {"__CURSOR": "o:1", "__REALTIME_TIMESTAMP": "1700000000123456",
                   "__MONOTONIC_TIMESTAMP": "5", "_BOOT_ID": "b", "MESSAGE": "m", "A": "1"}
    assert parse_export(fmt(r, "export", output_fields=["B"])) == [
        {"__CURSOR": [b"o:1"], "__REALTIME_TIMESTAMP": [b"1700000000123456"],
         "__MONOTONIC_TIMESTAMP": [b"5"], "_BOOT_ID": [b"b"], "B": [b"2"]}]
    assert fmt(r, "verbose", output_fields=["B"]) == b"Tue 2023-11-14 22:13:20.123456 UTC [o:1]\n    B=2\n"
    assert fmt(r, "cat", output_fields=["B", "NONE", "A"]) == b"2\n1\n"


def test_verbose_values() -> None:
    r = rec(b"\xff\x00", fields={"ML": "a\nb", "TAG": ["x", "y"]})
    out = fmt(r, "verbose").decode("utf-8", "replace")
    assert "    MESSAGE=[2B blob data]\n" in out
    assert "    ML=a\n       b\n" in out
    assert "    TAG=x\n    TAG=y\n" in out
    assert b"    MESSAGE=\xff\n" in fmt(r, "verbose", all_fields=True)


def test_entries_without_message() -> None:
    r = journal_to_record({"__REALTIME_TIMESTAMP": [b"1"], "PRIORITY": [b"3"]})
    assert fmt(r) == b"" and fmt(r, "cat") == b""  # journalctl skips them
    assert "MESSAGE" not in json.loads(fmt(r, "json"))


def test_export_output_is_the_journal_view() -> None:
    r = rec(b"bin\x00", pid=3, fields={"TAG": ["a", "b"], "ML": "x\ny"})
    assert parse_export(fmt(r, "export")) == [to_entry(record_to_journal(r))]
    assert b"MESSAGE\n\x04\x00\x00\x00\x00\x00\x00\x00bin\x00\n" in fmt(r, "export")
    assert b"TAG=a\nTAG=b\n" in fmt(r, "export")


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "Europe/Amsterdam", "Asia/Kolkata",
                                "America/St_Johns", "Australia/Lord_Howe", "Africa/Monrovia"])
def test_cached_stamps_are_the_stamps(tz: str) -> None:
    """The per-minute cache gives what rendering each time gives, across DST
    changes, half-hour zones and historical offsets with seconds."""
    import random

    rnd = random.Random(tz)
    times = [rnd.randrange(-2 * 10**9, 4 * 10**9) for _ in range(300)]
    # around changes: every second of a few hours around 2024's transitions
    for day in (1711846800, 1729990800, 1712440800):
        times += range(day - 120, day + 120, 7)
    with zone(tz):
        for mode in ("short", "short-precise", "short-iso", "short-iso-precise", "short-full",
                     "short-unix"):
            for utc in (False, True):
                f = Formatter(mode, utc=utc)
                for t in times:
                    usec = t * 1_000_000 + 123_456
                    if usec < 0:
                        continue
                    assert f._cached_timestamp(usec) == f._timestamp(usec), (mode, utc, t)
