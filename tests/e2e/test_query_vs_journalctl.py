"""`hostlog query` beside the real `journalctl` over the same entries.

One dataset -- the recorded fixture's 14 entries plus ~3,000 generated ones
(three hosts and boots, a dozen services, systemd's own reports about units,
coredumps, every priority and some entries without one, multi-line, binary,
TAB, colour and 5,000-byte messages, repeated fields, entries without
MESSAGE or SYSLOG_IDENTIFIER, source timestamps, times from three days ago to
two minutes ago) -- is written twice:

* into a journal file, by streaming its Journal Export Format into the real
  ``systemd-journal-remote``;
* into a spool, as the journald collector would: ``parse_export`` ->
  ``journal_to_record`` -> ``Spool.append`` in frames of 1-80 records, with
  16 KiB segments so there are a dozen sealed segments (footers) and an
  active one (walked), and the per-frame index is used for skipping.

Then each option set in the table below runs through the real
``journalctl --file JOURNAL --no-pager ...`` and the real
``hostlog query -D SPOOL --no-pager ...`` (both as processes, TZ fixed to a
zone with an offset, ``C.UTF-8``) and the outputs are compared: byte for byte
for the short formats and ``cat``; object by object for json and export
(every key journalctl prints, with its value); field by field for verbose.

Where hostlog differs from journalctl on purpose (docs/query.md,
"Differences from journalctl"), the test asserts hostlog's documented
behaviour, expressed through journalctl queries where it can be.
"""

from __future__ import annotations

import collections
import fnmatch
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CORPORA, need

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
JOURNALCTL = shutil.which("journalctl")
FIXTURE = CORPORA / "journald" / "fixture" / "fixture.export"
REPO = Path(__file__).resolve().parents[2]
HOSTLOG = [sys.executable, "-m", "hostlog.cli.main", "query"]
# A zone east of UTC, so local time and UTC differ in every stamp and bound.
ZONE = "Europe/Berlin"
# hostlog's own fields: its identity of a record, which journalctl has no
# equivalent of (docs/query.md, "Extra fields").
HOSTLOG_FIELDS = {"_HOSTLOG_SOURCE", "_HOSTLOG_ORIGIN", "_HOSTLOG_SEQ"}
# __CURSOR: journalctl's names a place in the journal file (s=...;i=...);
# hostlog's is <origin>:<seq> (docs/query.md, "Cursors"). Every other field,
# __MONOTONIC_TIMESTAMP and _BOOT_ID included, is compared: the generated
# entries carry both, and systemd-journal-remote keeps them as given.
NOT_COMPARED = {"__CURSOR"} | HOSTLOG_FIELDS
# Relative --since/--until offsets the table uses (seconds before "now"): the
# generator leaves no entry near them, so the few seconds between the two
# tools' runs (and the test's own run time) cannot move an entry across.
RELATIVE = (3600, 1800, 7200)
GAP_BEFORE, GAP_AFTER = 10, 240

# -- the dataset ---------------------------------------------------------------------------

HOSTS = {"web-1": "11111111111111111111111111111111", "web-2": "22222222222222222222222222222222",
         "db-1": "33333333333333333333333333333333"}
# SYSLOG_IDENTIFIER (None: only _COMM), _SYSTEMD_UNIT, _COMM, _TRANSPORT, weight
SERVICES = [
    ("nginx", "nginx.service", "nginx", "stdout", 20),
    ("sshd", "ssh.service", "sshd", "syslog", 10),
    ("CRON", "cron.service", "cron", "syslog", 6),
    ("kernel", None, None, "kernel", 5),
    ("systemd", "init.scope", "systemd", "journal", 8),
    ("app", "app@1.service", "python3", "stdout", 10),
    ("app", "app@2.service", "python3", "stdout", 5),
    (None, "worker.service", "worker", "stdout", 4),
    ("sudo", "session-3.scope", "sudo", "syslog", 3),
    ("systemd-coredump", "systemd-coredump@0-1-0.service", "systemd-coredum", "journal", 1),
    ("systemd-journald", "systemd-journald.service", "systemd-journal", "driver", 1),
    ("polkitd", "polkit.service", "polkitd", "journal", 1),
]
WORDS = ["request", "timeout", "Connection", "closed", "user", "root", "disk", "ERROR", "failed",
         "started", "GET /index.html", "ünïcödé", "日本語", "error:", "Error"]
ROOT = {"systemd", "systemd-coredump", "systemd-journald", "polkitd", "sshd"}


def _field(name: str, value: str | bytes) -> tuple[str, bytes]:
    return name, value.encode() if isinstance(value, str) else value


def generate(now_us: int, n: int = 3000, seed: int = 6) -> list[list[tuple[str, bytes]]]:
    """Entries (name, value) in time order, none near a RELATIVE boundary."""
    rnd = random.Random(seed)
    gaps = [(now_us - (r + GAP_BEFORE) * 10**6, now_us - (r - GAP_AFTER) * 10**6) for r in RELATIVE]
    times: set[int] = set()
    while len(times) < n:
        t = now_us - rnd.randrange(120 * 10**6, 3 * 86400 * 10**6)
        if not any(lo <= t <= hi for lo, hi in gaps):
            times.add(t)
    boot_us = now_us - 20 * 86400 * 10**6
    weights = [s[4] for s in SERVICES]
    entries = []
    for i, t in enumerate(sorted(times)):
        host = rnd.choice(sorted(HOSTS))
        ident, unit, comm, transport, _ = rnd.choices(SERVICES, weights)[0]
        pid = "1" if ident == "systemd" else str(rnd.randrange(100, 60000))
        e = [_field("__REALTIME_TIMESTAMP", str(t)), _field("__MONOTONIC_TIMESTAMP", str(t - boot_us)),
             _field("_BOOT_ID", HOSTS[host]), _field("_HOSTNAME", host), _field("_TRANSPORT", transport)]
        k = rnd.random()
        if k < 0.03:
            pass  # no PRIORITY at all
        elif k < 0.035:
            e.append(_field("PRIORITY", "06"))  # not one digit: matches no -p but "all"
        else:
            e.append(_field("PRIORITY", str(rnd.choices(range(8), [1, 1, 2, 6, 10, 10, 60, 10])[0])))
        e.append(_field("SYSLOG_FACILITY", str(rnd.choice([0, 1, 3, 4, 9, 10, 16, 23]))))
        if ident:
            e.append(_field("SYSLOG_IDENTIFIER", ident))
        if comm:
            e.append(_field("_COMM", comm))
        if ident != "kernel":
            e += [_field("_PID", pid), _field("_UID", "0" if ident in ROOT else "1000")]
        if unit:
            e.append(_field("_SYSTEMD_UNIT", unit))
        msg: str | bytes = " ".join(rnd.choice(WORDS) for _ in range(rnd.randrange(1, 9))) + f" #{i}"
        if ident == "systemd":
            target = rnd.choice(["nginx.service", "ssh.service", "app@1.service", "worker.service"])
            msg = f"{rnd.choice(['Started', 'Stopping', 'Reloaded'])} {target} #{i}"
            e.append(_field("UNIT", target))
        elif ident == "systemd-coredump":
            target = rnd.choice(["nginx.service", "app@2.service"])
            e += [_field("MESSAGE_ID", "fc2e22bc6ee647b6b90729ab34a250b1"),
                  _field("COREDUMP_UNIT", target)]
            msg = f"Process {pid} dumped core #{i}"
        elif ident == "systemd-journald":
            e.append(_field("OBJECT_SYSTEMD_UNIT", "nginx.service"))
            msg = f"Suppressed {rnd.randrange(2, 900)} messages from nginx.service #{i}"
        elif ident == "polkitd":
            e.append(_field("OBJECT_SYSTEMD_UNIT", "nginx.service"))
        shape = rnd.random()
        if shape < 0.04:
            msg = f"{msg}\nsecond line\n\tthird line"
        elif shape < 0.06:
            msg = msg.encode() + b" \xff\xfe bin \x00 x"
        elif shape < 0.07:
            msg = f"{msg}\twith tab"
        elif shape < 0.075:
            msg = f"\x1b[1;31m{msg}\x1b[0m"
        elif shape < 0.078:
            msg = "L" * 5000 + msg
        if 0.5 < shape < 0.505:
            pass  # no MESSAGE
        else:
            e.append(_field("MESSAGE", msg))
        if rnd.random() < 0.1:
            e.append(_field("_SOURCE_REALTIME_TIMESTAMP", str(t - rnd.randrange(0, 5_000_000))))
        if rnd.random() < 0.05:
            e += [_field("TAG", "one"), _field("TAG", "two")]
        if ident in ("sshd", "CRON") and rnd.random() < 0.5:
            e.append(_field("SYSLOG_PID", pid))
        entries.append(e)
    return entries


def build_stores(root: Path, export: bytes) -> dict[str, Any]:
    """The entries of an export stream as a journal file and as a spool."""
    need(JOURNAL_REMOTE.exists(), f"{JOURNAL_REMOTE} (Debian package systemd-journal-remote)")
    need(JOURNALCTL is not None, "journalctl")
    from hostlog.journal.fields import journal_to_record, parse_export
    from hostlog.record import Columns
    from hostlog.spool.keys import Keyring
    from hostlog.spool.spool import Spool

    journal = root / "data.journal"
    res = subprocess.run([str(JOURNAL_REMOTE), f"--output={journal}", "-"], input=export,
                         capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    entries = parse_export(export)
    keyring = Keyring.load_or_create(root / "spool.key")
    spool = Spool.open(root / "spool", keyring, segment_bytes=16 << 10)
    rnd = random.Random(1)
    records = [journal_to_record(e) for e in entries]
    i = 0
    while i < len(records):
        n = rnd.randrange(1, 80)
        spool.append(Columns.of(records[i:i + n]))
        i += n
    spool.close()
    return {"journal": journal, "spool": root / "spool", "count": len(entries)}


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Any]:
    """The dataset as a journal file and as a spool."""
    from hostlog.journal.fields import format_export_entry

    need(FIXTURE.exists(), f"the recorded journald fixture {FIXTURE}")
    root = tmp_path_factory.mktemp("query-vs-journalctl")
    now_us = time.time_ns() // 1000
    generated = generate(now_us)
    export = FIXTURE.read_bytes() + b"".join(format_export_entry(e) for e in generated)
    built = build_stores(root, export)
    segments = sorted((root / "spool" / "segments").glob("*.seg"))
    assert len(segments) >= 5  # several sealed segments (footers) and an active one
    times = sorted(int(dict(e)["__REALTIME_TIMESTAMP"]) for e in generated)
    return {**built, "now_us": now_us, "times_us": times}


ENV = dict(os.environ, TZ=ZONE, LC_ALL="C.UTF-8", SYSTEMD_COLORS="0", SYSTEMD_PAGER="cat",
           PAGER="cat", PYTHONPATH=str(REPO / "src"))


def journalctl(stores: dict[str, Any], args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([JOURNALCTL, "--file", str(stores["journal"]), "--no-pager", *args],
                          capture_output=True, env=ENV, timeout=60)


def hostlog(stores: dict[str, Any], args: list[str], *,
            workers: int | None = None) -> subprocess.CompletedProcess[bytes]:
    env = ENV if workers is None else dict(ENV, HOSTLOG_QUERY_WORKERS=str(workers))
    return subprocess.run([*HOSTLOG, "-D", str(stores["spool"]), "--no-pager", *args],
                          capture_output=True, env=env, timeout=60)


# -- comparing outputs -------------------------------------------------------------------

def json_objects(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in NOT_COMPARED}


def key(obj: dict[str, Any]) -> tuple[str, str]:
    """An entry's identity in both outputs: time and message."""
    return obj["__REALTIME_TIMESTAMP"], json.dumps(obj.get("MESSAGE"))


def verbose_entries(text: str) -> list[tuple[str, collections.Counter[str]]]:
    """(header without the cursor, multiset of field blocks) per entry, and
    the boot separator lines as entries of their own. Field order inside an
    entry is the journal file's data order, not a property of the entry."""
    entries: list[tuple[str, list[str]]] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("-- Boot "):
            entries.append((line, []))
        elif not line.startswith(" "):
            entries.append((line.split(" [", 1)[0], []))
        elif line[4] != " ":  # "    NAME=value" starts a field
            entries[-1][1].append(line)
        else:  # a continuation line of a multi-line value
            entries[-1][1][-1] += line
    return [(head, collections.Counter(b for b in blocks if b.split("=", 1)[0].strip()
                                       not in HOSTLOG_FIELDS)) for head, blocks in entries]


def assert_same(mode: str, ours: subprocess.CompletedProcess[bytes],
                theirs: subprocess.CompletedProcess[bytes]) -> None:
    assert ours.returncode == theirs.returncode, ours.stderr.decode(errors="replace")
    if mode.startswith("short") or mode == "cat":
        assert ours.stdout == theirs.stdout
    elif mode in ("json", "json-seq"):
        strip = (lambda raw: raw.replace(b"\x1e", b"")) if mode == "json-seq" else (lambda raw: raw)
        mine, their = json_objects(strip(ours.stdout)), json_objects(strip(theirs.stdout))
        assert [key(o) for o in mine] == [key(o) for o in their]  # the same entries, same order
        for o, t in zip(mine, their):
            assert comparable(o) == comparable(t)
    elif mode == "export":
        from hostlog.journal.fields import parse_export
        mine, their = parse_export(ours.stdout), parse_export(theirs.stdout)
        assert len(mine) == len(their)
        for o, t in zip(mine, their):
            # journalctl's header fields come first, in its order
            assert list(o)[:4] == list(t)[:4]
            assert comparable(o) == comparable(t)
    elif mode == "verbose":
        assert verbose_entries(ours.stdout.decode()) == verbose_entries(theirs.stdout.decode())
    else:
        raise AssertionError(f"no comparison for -o {mode}")


def mode_of(args: list[str]) -> str:
    for i, a in enumerate(args):
        if a in ("-o", "--output"):
            return args[i + 1]
        if a.startswith("--output="):
            return a.split("=", 1)[1]
    return "short"


# -- the table: option sets where hostlog prints what journalctl prints ------------------------

def local(us: int, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    old = os.environ.get("TZ")
    os.environ["TZ"] = ZONE
    time.tzset()
    try:
        return time.strftime(fmt, time.localtime(us // 10**6))
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


SAME: list[list[str]] = [
    # everything, every layout
    [], ["-o", "short-iso"], ["-o", "short-precise"], ["-o", "short-iso-precise"],
    ["-o", "short-full"], ["-o", "short-unix"], ["--utc"], ["--utc", "-o", "short-full"],
    ["-o", "cat"], ["-o", "json"], ["-o", "json-seq"], ["-o", "export"], ["-o", "verbose"],
    ["-q"], ["-o", "json", "--all"], ["-o", "short", "--all"],
    # -u, where hostlog's app rule and journalctl's unit rule agree
    ["-u", "worker"], ["-u", "worker.service", "-o", "json"], ["-u", "app@*"],
    ["-u", "app@*", "-o", "json"], ["-u", "ssh"], ["-u", "cron", "-o", "verbose"],
    ["-u", "wor?er.*", "-o", "json"], ["-u", "app@1.service", "-u", "worker"],
    # -u and -t: both must hold
    ["-u", "worker", "-t", "systemd"], ["-u", "app@2.service", "-t", "systemd-coredump", "-o", "json"],
    # -t
    ["-t", "sshd"], ["-t", "CRON", "-t", "sudo", "-o", "json"], ["-t", "worker"], ["-t", "python3"],
    # -p, levels and ranges; entries without PRIORITY (or with "06") only for all levels
    ["-p", "err"], ["-p", "3"], ["-p", "2..4"], ["-p", "warning..crit", "-o", "json"],
    ["-p", "7"], ["-p", "0..7", "-o", "json"], ["-p", "6"], ["-p", "info..info"],
    ["-p", "emerg"], ["-p", "5", "-u", "worker"],
    # -S / -U: absolute (local time, a zone east of UTC), relative, keywords, epoch
    ["-S", "yesterday"], ["-S", "yesterday", "-U", "today"], ["-S", "-1h"],
    ["-S", "-2h", "-U", "-30min", "-o", "json"], ["-U", "-1h", "-r", "-n", "15"],
    ["--since=-30min"], ["-S", "{since}"], ["-S", "{since}", "-U", "{until}", "-o", "json"],
    ["-S", "{since_min}"], ["-U", "{until} UTC"], ["-S", "@{epoch}"], ["-S", "2023-11-15"],
    ["-S", "2023-11-14 22:13:21.123456", "-U", "2023-11-15 23:59:59"],
    # -g: case rule, regex, anchors, on binary and multi-line messages (-q: see
    # test_boot_lines_are_printed_between_records_of_different_boots)
    ["-q", "-g", "error"], ["-q", "-g", "ERROR"], ["-q", "-g", "Error", "--case-sensitive=false"],
    ["-q", "-g", r"conn\w+ closed"], ["-q", "-g", "^Started"], ["-q", "-g", r"#12\d\b"],
    ["-q", "-g", "bin"], ["-q", "-g", "second line"], ["-g", "ünï", "-o", "json"],
    ["-g", "LLLL", "-o", "json"], ["-g", "nothing like this", "-o", "json"],
    ["-q", "-g", "(timeout|disk)$"], ["-g", r"(?i)\bcore\b", "-o", "cat"],
    # FIELD=VALUE: OR within a field, AND between fields, + between groups
    ["_HOSTNAME=web-1", "PRIORITY=3", "+", "_COMM=worker"], ["TAG=two", "-o", "json"],
    ["_TRANSPORT=syslog", "_TRANSPORT=kernel"], ["MESSAGE_ID=fc2e22bc6ee647b6b90729ab34a250b1"],
    ["PRIORITY=06"], ["_PID=1", "UNIT=nginx.service"], ["SYSLOG_IDENTIFIER=sshd", "-p", "err"],
    ["_BOOT_ID=22222222222222222222222222222222", "-o", "verbose"],
    ["_HOSTNAME=web-2", "-u", "worker", "-o", "json"],
    # -n, -r and both with filters
    ["-n", "20"], ["-n"], ["-r", "-n", "5"], ["-r"], ["-n", "7", "-p", "err"],
    ["-n", "3", "-u", "worker", "-o", "json"], ["-r", "-n", "4", "-t", "CRON"],
    ["-q", "-g", "timeout", "-n", "5"], ["-g", "timeout", "-n", "5", "-o", "json"],
    ["-r", "-n", "12", "-S", "yesterday", "-U", "today"], ["-n", "0"], ["-n", "all", "-p", "1"],
    # -n with -S, -U, -r as journalctl 252 reads them (docs/query.md): -S without
    # -r seeks to --since and shows the first N from there; -r (and -g, which
    # implies it) shows the newest N, from --until when given; -U without -S
    # or -r counts N back from the end and stops at --until. {tail} is the
    # time of the 5th newest entry, exactly, so a bound falls on an entry.
    ["-S", "-2h", "-n", "12"], ["-S", "yesterday", "-n", "7", "-o", "json"],
    ["-S", "{since}", "-n", "5", "-u", "worker"], ["-S", "yesterday", "-n", "5", "-p", "err"],
    ["-S", "{tail}", "-n", "3"], ["-S", "{tail}", "-n", "30"], ["-S", "yesterday", "-n", "0"],
    ["-S", "yesterday", "-U", "today", "-n", "12"],
    ["-S", "{since}", "-U", "{until}", "-n", "5", "-o", "json"],
    ["-U", "-1h", "-n", "12"], ["-U", "{tail}", "-n", "12"], ["-U", "{tail}", "-n", "12", "-o", "json"],
    ["-U", "{tail}", "-n", "3"], ["-U", "{tail}", "-n", "60", "-t", "sshd"],
    ["-S", "-2h", "-r"], ["-S", "yesterday", "-r", "-n", "9"], ["-S", "@{epoch}", "-r", "-o", "json"],
    ["-S", "{tail}", "-r"], ["-U", "{tail}", "-r", "-n", "4"], ["-S", "yesterday", "-U", "{tail}", "-r", "-n", "6"],
    ["-q", "-g", "error", "-S", "yesterday", "-n", "4"], ["-q", "-g", "timeout", "-U", "{tail}", "-n", "3"],
    ["-q", "-g", "error", "-S", "yesterday", "-U", "today", "-n", "4"],
    # --output-fields
    ["-o", "json", "--output-fields=MESSAGE,_PID"], ["-o", "export", "--output-fields=MESSAGE,TAG"],
    ["-o", "verbose", "--output-fields=MESSAGE,PRIORITY", "-n", "30"],
    ["-o", "cat", "--output-fields=SYSLOG_IDENTIFIER", "-n", "50"], ["-o", "cat", "--output-fields=TAG"],
]


def epoch_us(us: int) -> str:
    """An instant to the microsecond, as --since/--until take it."""
    return f"@{us // 10**6}.{us % 10**6:06d}"


def fill(args: list[str], stores: dict[str, Any]) -> list[str]:
    now_s = stores["now_us"] // 10**6
    since, until = now_s - 2 * 86400 + 1234, now_s - 86400 + 321
    values = {"since": local(since * 10**6), "until": local(until * 10**6),
              "since_min": local(since * 10**6, "%Y-%m-%d %H:%M"),
              "epoch": str(now_s - 3 * 3600 + 17), "tail": epoch_us(stores["times_us"][-5])}
    out = []
    for a in args:
        if a.endswith(" UTC") and "{until}" in a:
            out.append(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until)))
        else:
            out.append(a.format(**values))
    return out


@pytest.mark.parametrize("args", SAME, ids=lambda a: " ".join(a) or "(none)")
def test_hostlog_prints_what_journalctl_prints(stores, args):
    args = fill(args, stores)
    theirs = journalctl(stores, args)
    ours = hostlog(stores, args)
    assert theirs.returncode in (0, 1), theirs.stderr.decode(errors="replace")
    assert_same(mode_of(args), ours, theirs)


@pytest.mark.parametrize("args", [[], ["-r"], ["-o", "json"], ["-o", "verbose", "-p", "3"],
                                  ["-q", "-g", "error"], ["-S", "yesterday", "-o", "short-unix"],
                                  ["-o", "export", "-u", "app@*"], ["-r", "-o", "cat"],
                                  ["-S", "yesterday", "-r"], ["-U", "-1h", "-r", "-o", "json"],
                                  ["-S", "yesterday", "-U", "today", "-r", "-o", "short-iso"]],
                         ids=lambda a: " ".join(a) or "(none)")
def test_one_process_or_several_print_the_same(stores, args):
    """A scan over many frames is shared by forked workers (parallel.py); the
    output is the same, byte for byte, as one process's, boot lines included."""
    from hostlog.query.parallel import MIN_FRAMES
    from hostlog.spool.reader import SpoolReader

    assert len(list(SpoolReader.open(stores["spool"]).frames())) >= MIN_FRAMES  # workers do start
    one = hostlog(stores, args, workers=1)
    assert one.returncode == 0 and one.stdout
    for workers in (2, 3):
        assert hostlog(stores, args, workers=workers).stdout == one.stdout
    assert_same(mode_of(args), one, journalctl(stores, args))


def test_the_table_covers_the_dataset(stores):
    """The comparisons above are not vacuous: each kind of entry is there and
    the selective queries select some, not all."""
    everything = json_objects(journalctl(stores, ["-o", "json"]).stdout)
    assert len(everything) == stores["count"] > 3000
    assert {o["_HOSTNAME"] for o in everything} >= set(HOSTS) | {"fixturehost"}
    assert sum("PRIORITY" not in o for o in everything) > 50
    assert sum(isinstance(o.get("MESSAGE"), list) and o["MESSAGE"] and isinstance(o["MESSAGE"][0], int)
               for o in everything) > 30  # binary messages
    assert sum(o.get("MESSAGE") is None for o in everything) > 5  # 5000-byte messages: null
    assert sum("MESSAGE" not in o for o in everything) > 5
    for args in (["-u", "worker"], ["-p", "err"], ["-S", "-1h"], ["-g", "ERROR"], ["-u", "app@*"]):
        n = len(json_objects(journalctl(stores, ["-o", "json", *args]).stdout))
        assert 10 < n < len(everything) / 2, args


# -- documented differences ---------------------------------------------------------------

REPORTER_APPS = {"systemd", "systemd-coredump", "systemd-journald"}
REPORTER_UNITS = {"init.scope", "systemd-journald.service"}


def selection(result: subprocess.CompletedProcess[bytes]) -> list[tuple[str, str]]:
    assert result.returncode in (0, 1), result.stderr.decode(errors="replace")
    return [key(o) for o in json_objects(result.stdout)]


def app_of(obj: dict[str, Any]) -> str | None:
    ident = obj.get("SYSLOG_IDENTIFIER")
    return ident if isinstance(ident, str) and ident else obj.get("_COMM")


@pytest.mark.parametrize("name", ["nginx", "sshd", "nginx.service", "cron", "ngin?.service"])
def test_unit_selects_the_app_too_and_takes_reports_from_systemd_only(stores, name):
    """docs/query.md: ``-u NAME`` selects what journalctl's ``-u NAME`` does
    (the unit, and what systemd, its coredump handler and journald report
    about it), and also the records whose app is NAME (or NAME.service):
    syslog, file and supervised-app records have an app, not a unit. Reports
    about the unit by other root daemons (OBJECT_SYSTEMD_UNIT=) are not
    shown: the per-frame app filter could not skip a frame for -u otherwise."""
    from hostlog.query.filters import mangle_unit

    names = {name, mangle_unit(name)}
    journal = json_objects(journalctl(stores, ["-o", "json", "-u", name]).stdout)
    everything = json_objects(journalctl(stores, ["-o", "json"]).stdout)

    def named(value: object) -> bool:
        return isinstance(value, str) and any(fnmatch.fnmatchcase(value, n) for n in names)

    def documented(o: dict[str, Any]) -> bool:
        if named(o.get("_SYSTEMD_UNIT")) or named(app_of(o)):
            return True
        return key(o) in journal_keys and (app_of(o) in REPORTER_APPS
                                           or o.get("_SYSTEMD_UNIT") in REPORTER_UNITS)

    journal_keys = {key(o) for o in journal}
    expected = [key(o) for o in everything if documented(o)]
    ours = selection(hostlog(stores, ["-o", "json", "-u", name]))
    assert ours == expected
    if name.startswith("nginx"):
        # the difference is real in this dataset: polkitd reports about nginx
        dropped = [o for o in journal if key(o) not in set(expected)]
        assert dropped and {app_of(o) for o in dropped} == {"polkitd"}
    if name == "sshd":
        assert not journal and ours  # the unit is ssh.service; the app is sshd


def test_field_lists_distinct_values_of_the_selected_records(stores):
    """``-F`` lists the same values as journalctl (order aside: journalctl's is
    the journal file's); with filters, only the selected records' values --
    journalctl 252 ignores filters for -F."""
    for name in ("_HOSTNAME", "SYSLOG_IDENTIFIER", "PRIORITY", "TAG", "_SYSTEMD_UNIT"):
        ours, theirs = hostlog(stores, ["-F", name]), journalctl(stores, ["-F", name])
        assert sorted(ours.stdout.splitlines()) == sorted(theirs.stdout.splitlines()), name
    selected = json_objects(journalctl(stores, ["-o", "json", "-u", "worker"]).stdout)
    hosts = sorted({o["_HOSTNAME"] for o in selected})
    assert sorted(hostlog(stores, ["-F", "_HOSTNAME", "-u", "worker"]).stdout.decode().split()) == hosts
    assert len(journalctl(stores, ["-F", "_HOSTNAME", "-u", "worker"]).stdout.split()) == len(HOSTS) + 1


def test_lines_with_since_or_until_count_as_journalctl_252_does(stores):
    """The table compares these byte for byte; this says what they are, so a
    change in either tool shows up as a change of meaning, not of bytes. With
    -S (no -r): the oldest N in the range. With -r: the newest N, newest
    first. With -U alone: N counted back from the end of everything, then cut
    at --until -- fewer than N, or none."""
    tail = epoch_us(stores["times_us"][-5])
    for ours_or_theirs in (hostlog, journalctl):
        def pick(*args: str, run=ours_or_theirs) -> list[tuple[str, str]]:
            return selection(run(stores, ["-o", "json", *args]))
        in_range = pick("-S", "yesterday", "-U", "today")
        assert len(in_range) > 24
        assert pick("-n", "12", "-S", "yesterday", "-U", "today") == in_range[:12]
        assert pick("-n", "12", "-S", "yesterday", "-U", "today", "-r") == in_range[::-1][:12]
        since = pick("-S", "yesterday")
        assert pick("-n", "12", "-S", "yesterday") == since[:12] != since[-12:]
        assert pick("-n", "12", "-S", "yesterday", "-r") == since[::-1][:12]
        last12 = pick("-n", "12")
        until = pick("-U", tail)
        assert pick("-n", "12", "-U", tail) == last12[:8] == until[-8:]  # the 5th newest is in
        assert pick("-n", "12", "-U", tail, "-r") == until[::-1][:12]
        assert pick("-n", "12", "-U", "-1h") == []


def test_boot_lines_are_printed_between_records_of_different_boots(stores):
    """``-- Boot ID --`` separates two shown records of different boots (short
    and verbose, not with -q). journalctl 252 with -g also prints one for
    every boot change among the entries it skipped: several in a row, or
    before "-- No entries --"; without -g, the two agree exactly (table)."""
    for args in (["-g", "error"], ["-g", "nothing like this"], ["-g", "timeout", "-n", "5"]):
        ours = hostlog(stores, args).stdout.splitlines()
        theirs = journalctl(stores, args).stdout.splitlines()
        assert [ln for ln in ours if not ln.startswith(b"-- Boot ")] == \
            [ln for ln in theirs if not ln.startswith(b"-- Boot ")]
        verbose = hostlog(stores, ["-o", "verbose", *args]).stdout.decode()
        previous = None  # the boot of the last record shown
        announced = None  # the boot a separator named since then
        for ln in verbose.splitlines():
            if ln.startswith("-- Boot "):
                announced = ln.split()[2]
            elif ln.startswith("    _BOOT_ID="):
                boot = ln.split("=", 1)[1]
                # exactly where the boot changes, naming the new boot
                assert announced == (boot if previous is not None and boot != previous else None)
                previous, announced = boot, None
    assert hostlog(stores, ["-g", "nothing like this"]).stdout == b"-- No entries --\n"


def test_cat_prints_several_output_fields_in_the_order_given(stores):
    """journalctl 252 prints them in its hash set's order, which changes from
    run to run; the lines are the same."""
    args = ["-o", "cat", "--output-fields=SYSLOG_IDENTIFIER,MESSAGE", "-n", "50", "-t", "CRON"]
    ours, theirs = hostlog(stores, args).stdout, journalctl(stores, args).stdout
    assert sorted(ours.splitlines()) == sorted(theirs.splitlines())
    lines = ours.splitlines()
    assert lines[0] == b"CRON" and lines[1] != b"CRON"


def test_several_priority_or_message_values_count_by_the_one_shown(tmp_path):
    """Of an entry with several PRIORITY (or MESSAGE) values, -p (-g) looks at
    the last, the one short output shows and colours by; journalctl 252 takes
    any PRIORITY and greps the first MESSAGE."""
    from hostlog.journal.fields import format_export_entry

    def entry(n: int, *fields: tuple[str, str]) -> bytes:
        return format_export_entry([_field("__REALTIME_TIMESTAMP", str(1_700_000_000_000_000 + n)),
                                    _field("__MONOTONIC_TIMESTAMP", str(1000 + n)),
                                    _field("_BOOT_ID", HOSTS["web-1"]), _field("_HOSTNAME", "h"),
                                    _field("SYSLOG_IDENTIFIER", "quirk"),
                                    *(_field(k, v) for k, v in fields)])
    export = (entry(1, ("PRIORITY", "3"), ("PRIORITY", "5"), ("MESSAGE", "one"))
              + entry(2, ("PRIORITY", "5"), ("PRIORITY", "3"), ("MESSAGE", "two"))
              + entry(3, ("PRIORITY", "3"), ("MESSAGE", "first"), ("MESSAGE", "shown"))
              + entry(4, ("PRIORITY", "6"), ("MESSAGE", "plain")))
    pair = build_stores(tmp_path, export)

    def messages(tool, args):
        return [o["MESSAGE"] for o in json_objects(tool(pair, ["-o", "json", *args]).stdout)]

    assert messages(journalctl, ["-p", "err"]) == ["one", "two", ["first", "shown"]]
    assert messages(hostlog, ["-p", "err"]) == ["two", ["first", "shown"]]
    assert messages(journalctl, ["-p", "5..5"]) == ["one", "two"]
    assert messages(hostlog, ["-p", "5..5"]) == ["one"]
    assert messages(journalctl, ["-g", "first"]) == [["first", "shown"]]
    assert messages(hostlog, ["-g", "first"]) == []
    assert messages(hostlog, ["-g", "shown"]) == [["first", "shown"]]
    assert hostlog(pair, ["-t", "quirk", "-n", "1", "-o", "cat"]).stdout == b"plain\n"
    # the short line shows the last MESSAGE, for both
    assert hostlog(pair, ["-g", "shown"]).stdout.endswith(b": shown\n")
    assert journalctl(pair, ["-g", "first"]).stdout.endswith(b": shown\n")


def test_unit_glob_that_matches_nothing_prints_no_entries(stores):
    """journalctl 252 fails ("Failed to add filter for units"); hostlog shows
    the empty selection, as for any other filter."""
    theirs = journalctl(stores, ["-u", "nothing-like-this-*"])
    assert theirs.returncode == 1 and b"Failed to add filter for units" in theirs.stderr
    ours = hostlog(stores, ["-u", "nothing-like-this-*"])
    assert ours.returncode == 0 and ours.stdout == b"-- No entries --\n"


def test_cursor_is_origin_and_seq(stores):
    ours = json_objects(hostlog(stores, ["-o", "json", "-n", "3"]).stdout)
    for o in ours:
        origin, seq = o["__CURSOR"].rsplit(":", 1)
        assert origin == o["_HOSTLOG_ORIGIN"] and seq == o["_HOSTLOG_SEQ"]
        assert o["_HOSTLOG_SOURCE"] == "journald"
