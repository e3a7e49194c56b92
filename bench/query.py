"""``hostlog query`` beside ``journalctl`` over the same 10 million records.

    .venv/bin/python bench/query.py [--data DIR] [--records 10000000] [--runs 5]

1. Builds, once, a dataset shaped like the journal of a busy server: 14 days
   of entries from ~20 services (real lines of the loghub samples as
   messages, journald's trusted fields, priorities mostly info, some
   warnings and errors, systemd's own "Started/Stopping UNIT" lines) and
   writes the same entries both
   * as journal files, by streaming the Journal Export Format into the real
     ``systemd-journal-remote`` (which rotates its files as journald does), and
   * into a hostlog spool: each entry mapped by ``journal_to_record`` (what the
     journald collector does) and appended in frames of 1,000 records
     (what a busy agent's writer produces), default 64 MiB segments.
   The dataset is kept in ``--data`` (default ``/var/tmp/hostlog-bench-query``)
   and reused by later runs; ``--rebuild`` starts again. Before building, the
   free space is checked and the record count scaled down if it would not fit.
2. Times each query for both tools as a command line, process start included,
   output to /dev/null: one warm-up run, then the median of ``--runs`` runs
   (what hyperfine reports), the two tools taking turns. The page cache is
   warm for both. hostlog runs as installed: bytecode cached, one query
   worker per CPU (``HOSTLOG_QUERY_WORKERS``, docs/query.md). ``-S -1h`` is
   the last hour of the data: ``-1h`` itself when the dataset was built in
   the last five minutes, else the same instant as ``@EPOCH`` (the data does
   not move with the clock).
3. Prints the build times, the sizes, and one table row per query: both
   medians, the ratio, and the number of lines each printed (they must agree:
   the same entries are selected).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from hostlog.journal.fields import format_export_entry, journal_to_record  # noqa: E402
from hostlog.record import Columns  # noqa: E402
from hostlog.spool.keys import Keyring  # noqa: E402
from hostlog.spool.spool import Spool  # noqa: E402

CORPORA = REPO.parent / "shared" / "corpora" / "loghub"
JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
DEFAULT_DATA = Path("/var/tmp/hostlog-bench-query")
DAYS = 14
FRAME_RECORDS = 1000
PIECE = 20_000  # entries generated, streamed and appended at a time
#: bytes on disk per record, both stores together (measured: journal files
#: ~250, spool ~60); used to scale the dataset down when space is short
BYTES_PER_RECORD = 330
BOOT_ID = "6f0c2e1a9b8d4c7e8f1a2b3c4d5e6f70"
MACHINE_ID = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
HOST = "bench-host"

# (SYSLOG_IDENTIFIER, _SYSTEMD_UNIT, _COMM, loghub sample, weight, uid)
SERVICES = [
    ("nginx", "nginx.service", "nginx", "Apache", 18, "33"),
    ("sshd", "ssh.service", "sshd", "OpenSSH", 14, "0"),
    ("hdfs-datanode", "hdfs-datanode.service", "java", "HDFS", 12, "997"),
    ("hadoop", "hadoop-yarn.service", "java", "Hadoop", 8, "997"),
    ("spark", "spark-worker.service", "java", "Spark", 8, "996"),
    ("zookeeper", "zookeeper.service", "java", "Zookeeper", 6, "995"),
    ("nova-compute", "nova-compute.service", "nova-compute", "OpenStack", 6, "994"),
    ("healthd", "healthd.service", "healthd", "HealthApp", 5, "1001"),
    ("proxy", "proxy.service", "proxy", "Proxifier", 4, "1002"),
    ("android-bridge", "adb.service", "adb", "Android", 4, "1003"),
    ("kernel", None, None, "BGL", 3, None),
    ("thunderbird", "tbird.service", "tbird", "Thunderbird", 3, "1004"),
    ("hpc-agent", "hpc-agent.service", "hpc", "HPC", 2, "0"),
    ("macd", "macd.service", "macd", "Mac", 2, "1005"),
    ("windows-sync", "winsync.service", "winsync", "Windows", 1, "1006"),
    ("CRON", "cron.service", "cron", "Linux", 1, "0"),
    ("systemd", "init.scope", "systemd", None, 1, "0"),
]
UNIT_NAMES = [s[1] for s in SERVICES if s[1] and s[1] != "init.scope"]
# info most of the time; the rest as on a server that has its troubles
PRIORITIES = (0, 1, 2, 3, 4, 5, 6, 7)
PRIORITY_WEIGHTS = (0.01, 0.04, 0.4, 3, 6, 6, 74.55, 10)

# The queries of the issue; {since} is "-1h" when the dataset ends now.
QUERIES = [
    ("-n 100", ["-n", "100"]),
    ("-u CRON -n 100", ["-u", "cron", "-n", "100"]),
    ("-S -1h", ["-S", "{since}"]),
    ("-p err", ["-p", "err"]),
    ("-g PATTERN", ["-g", "{grep}"]),
]
GREP = "Invalid user admin"


def loghub_lines(sample: str) -> list[str]:
    text = (CORPORA / f"{sample}_2k.log").read_bytes().decode("utf-8", "replace")
    return [ln for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]


class Generator:
    """Entries in time order, deterministic for a seed and a count."""

    def __init__(self, total: int, end_us: int, seed: int = 2024) -> None:
        self.rnd = random.Random(seed)
        self.total = total
        self.end_us = end_us
        self.start_us = end_us - DAYS * 86400 * 10**6
        self.boot_us = self.start_us - 3600 * 10**6
        self.step = (end_us - self.start_us) / total
        self.lines = {s[3]: loghub_lines(s[3]) for s in SERVICES if s[3]}
        self.weights = [s[4] for s in SERVICES]
        self.done = 0

    def piece(self, n: int) -> list[list[tuple[str, bytes]]]:
        rnd = self.rnd
        services = rnd.choices(SERVICES, self.weights, k=n)
        prios = rnd.choices(PRIORITIES, PRIORITY_WEIGHTS, k=n)
        out = []
        for k in range(n):
            i = self.done + k
            ts = self.start_us + int(i * self.step) + rnd.randrange(0, max(1, int(self.step)))
            ident, unit, comm, sample, _, uid = services[k]
            # a service keeps its pid for a while, then restarts with another
            pid = "1" if ident == "systemd" else str(1000 + (len(ident) * 977 + i // 50_000) % 30000)
            if sample is None:
                target = rnd.choice(UNIT_NAMES)
                verb = rnd.choice(("Started", "Stopping", "Reloading", "Finished"))
                msg = f"{verb} {target} - {target.split('.')[0]} daemon."
            else:
                lines = self.lines[sample]
                msg = lines[rnd.randrange(len(lines))]
            e = [("__REALTIME_TIMESTAMP", str(ts)), ("__MONOTONIC_TIMESTAMP", str(ts - self.boot_us)),
                 ("_BOOT_ID", BOOT_ID), ("_MACHINE_ID", MACHINE_ID), ("_HOSTNAME", HOST),
                 ("_TRANSPORT", "kernel" if ident == "kernel" else "journal" if ident == "systemd" else "stdout"),
                 ("PRIORITY", str(prios[k])), ("SYSLOG_FACILITY", "0" if ident == "kernel" else "3"),
                 ("SYSLOG_IDENTIFIER", ident)]
            if ident != "kernel":
                e += [("_PID", pid), ("_UID", uid), ("_COMM", comm), ("_SYSTEMD_UNIT", unit)]
            if ident == "systemd":
                e.append(("UNIT", target))
            e.append(("MESSAGE", msg))
            out.append([(name, value.encode()) for name, value in e])
        self.done += n
        return out


def export_bytes(entries: list[list[tuple[str, bytes]]]) -> bytes:
    return b"".join(format_export_entry(e) for e in entries)


def to_records(entries: list[list[tuple[str, bytes]]]):
    return [journal_to_record({name: [value] for name, value in e}) for e in entries]


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(data: Path, total: int) -> dict:
    """Write the dataset into data/journal/ and data/spool/; returns its facts."""
    if data.exists():
        shutil.rmtree(data)
    (data / "journal").mkdir(parents=True)
    end_us = time.time_ns() // 1000
    gen = Generator(total, end_us)
    keyring = Keyring.load_or_create(data / "spool.key")
    spool = Spool.open(data / "spool", keyring)  # default 64 MiB segments
    remote = subprocess.Popen([JOURNAL_REMOTE, f"--output={data / 'journal' / 'bench.journal'}", "-"],
                              stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert remote.stdin is not None
    t_gen = t_spool = t_journal = 0.0
    started = time.monotonic()
    last_report = started
    while gen.done < total:
        t = time.monotonic()
        entries = gen.piece(min(PIECE, total - gen.done))
        blob = export_bytes(entries)
        t_gen += time.monotonic() - t
        t = time.monotonic()
        remote.stdin.write(blob)  # journal-remote writes while we go on
        t_journal += time.monotonic() - t
        t = time.monotonic()
        records = to_records(entries)
        for i in range(0, len(records), FRAME_RECORDS):
            spool.append(Columns.of(records[i:i + FRAME_RECORDS]))
        t_spool += time.monotonic() - t
        if time.monotonic() - last_report > 30:
            last_report = time.monotonic()
            print(f"  {gen.done:,} / {total:,} records, {last_report - started:.0f} s", flush=True)
    spool.sync()
    spool.close()
    t = time.monotonic()
    remote.stdin.close()
    err = remote.stderr.read().decode(errors="replace") if remote.stderr else ""
    rc = remote.wait()
    t_journal += time.monotonic() - t
    if rc != 0:
        raise SystemExit(f"systemd-journal-remote failed ({rc}): {err}")
    facts = {
        "records": total,
        "end_us": end_us,
        "built_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds_total": round(time.monotonic() - started, 1),
        "seconds_generate": round(t_gen, 1),
        "seconds_spool": round(t_spool, 1),
        "seconds_journal_wait": round(t_journal, 1),
        "journal_bytes": dir_bytes(data / "journal"),
        "journal_files": len(list((data / "journal").glob("*.journal"))),
        "spool_bytes": dir_bytes(data / "spool" / "segments"),
        "spool_segments": len(list((data / "spool" / "segments").glob("*.seg"))),
        "journal_remote": err.strip().splitlines()[-1:] if err.strip() else [],
    }
    (data / "dataset.json").write_text(json.dumps(facts, indent=1))
    return facts


def run_times(cmds: list[list[str]], runs: int, env: dict[str, str]) -> list[tuple[float, int]]:
    """For each command: the median wall time (s) of ``runs`` runs after one
    warm-up, and the number of lines printed. The commands take turns, run
    after run, so a machine that gets busier or quieter meanwhile (shared
    machines do) weighs on all of them alike."""
    lines = []
    for cmd in cmds:
        warm = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        lines.append(warm.stdout.count(b"\n"))
    times: list[list[float]] = [[] for _ in cmds]
    with open(os.devnull, "wb") as null:
        for _ in range(runs):
            for k, cmd in enumerate(cmds):
                t = time.perf_counter()
                subprocess.run(cmd, stdout=null, stderr=subprocess.DEVNULL, env=env)
                times[k].append(time.perf_counter() - t)
    return [(statistics.median(t), n) for t, n in zip(times, lines)]


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, "
            f"Python {platform.python_version()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--only", help="run only the queries whose name contains this")
    ap.add_argument("--build-only", action="store_true", help="build the dataset, time nothing")
    args = ap.parse_args()

    facts_file = args.data / "dataset.json"
    facts = json.loads(facts_file.read_text()) if facts_file.exists() and not args.rebuild else None
    if facts is None or facts.get("records") != args.records:
        records = args.records
        args.data.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(args.data.parent).free
        if args.data.exists():
            free += dir_bytes(args.data)
        need = records * BYTES_PER_RECORD
        if need > free * 0.8:
            records = int(free * 0.8 / BYTES_PER_RECORD) // 100_000 * 100_000
            print(f"only {free / 2**30:.1f} GiB free under {args.data.parent}: "
                  f"scaled down to {records:,} records")
        print(f"building {records:,} records in {args.data} (journal files and spool) ...", flush=True)
        facts = build(args.data, records)
    print(json.dumps(facts, indent=1))
    if args.build_only:
        return 0

    # hostlog as installed: its bytecode cached (a package ships .pyc files;
    # compiling the sources on every run would be measured otherwise)
    env = dict(os.environ, TZ="UTC", LC_ALL="C.UTF-8", SYSTEMD_COLORS="0", PAGER="cat",
               PYTHONPATH=str(REPO / "src"), PYTHONPYCACHEPREFIX=str(args.data / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    age_s = time.time() - facts["end_us"] / 1e6
    since = "-1h" if age_s < 300 else f"@{facts['end_us'] // 10**6 - 3600}"
    hostlog = [sys.executable, "-m", "hostlog.cli.main", "query", "-D", str(args.data / "spool"),
               "--no-pager"]
    journalctl = ["journalctl", "--directory", str(args.data / "journal"), "--no-pager"]
    load_before = load()
    rows = []
    for name, q in QUERIES:
        if args.only and args.only not in name:
            continue
        q = [a.format(since=since, grep=GREP) for a in q]
        (h, h_lines), (j, j_lines) = run_times([hostlog + q, journalctl + q], args.runs, env)
        rows.append((name, " ".join(q), h, j, h_lines, j_lines))
        print(f"  {name}: hostlog {h * 1000:.0f} ms, journalctl {j * 1000:.0f} ms", flush=True)
    print()
    print(f"machine: {machine()}; load average before/after: {load_before} / {load()}")
    print("| query | arguments | hostlog query | journalctl | journalctl / hostlog | lines (hostlog / journalctl) |")
    print("|---|---|---|---|---|---|")
    for name, q, h, j, hl, jl in rows:
        print(f"| `{name}` | `{q}` | {fmt_ms(h)} | {fmt_ms(j)} | {j / h:.1f}x | {hl:,} / {jl:,} |")
    return 0


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


if __name__ == "__main__":
    sys.exit(main())
