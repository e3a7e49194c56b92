"""``hostlog rules test``: the ``[[rule]]`` of a config over sample lines or stored records.

    hostlog rules test -c CONFIG [FILE|-] [--app NAME] [--priority LEVEL]
    hostlog rules test -c CONFIG --spool DIR [-n N] [--key-file FILE]

Each input line is one record: a line that starts with ``<PRI>`` is read
as the syslog collector reads a syslog message (RFC 5424 or 3164: its app,
pid, host, severity); any other line is a message as it is, of app
``--app`` at ``--priority``. With ``--spool``, the newest ``N`` records of
a spool are taken as they are stored.

The rules run as the agent runs them (hostlog.rules.engine, in file
order); for each record the command prints it before, then which rule
dropped it, or what it is after and which rules changed it; then what
each rule did. Nothing is written anywhere.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from hostlog.record import SEVERITY_NAMES, Columns, Record

__all__ = ["add_parser", "run", "status_lines"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("rules", help="try the [[rule]] of a config on sample lines or stored records")
    actions = p.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    t = actions.add_parser("test", help="run the rules over lines (or a spool's records); print before and after",
                           description="Run the [[rule]] entries of CONFIG, in order, over each line of FILE "
                                       "(- or none: standard input), or over the newest records of a spool, "
                                       "and print every record before and after, and which rule dropped what.")
    t.add_argument("-c", "--config", metavar="CONFIG", required=True, help="the agent config whose rules to run")
    t.add_argument("file", nargs="?", default="-", metavar="FILE", help="sample lines (default: standard input)")
    t.add_argument("--spool", metavar="DIR", help="take the records from this spool instead (<state_dir>/spool)")
    t.add_argument("--key-file", metavar="FILE", help="with --spool: the key file (default: the spool's)")
    t.add_argument("-n", "--lines", type=int, default=100, metavar="N",
                   help="with --spool: the newest N records (default 100)")
    t.add_argument("--app", default="", metavar="NAME", help="the app of lines without a syslog header")
    t.add_argument("--priority", default="info", metavar="LEVEL",
                   help="the priority of lines without a syslog header (default: info)")
    p.set_defaults(run_rules=run)


def _severity(name: str) -> int:
    if name.isdigit() and 0 <= int(name) <= 7:
        return int(name)
    if name in SEVERITY_NAMES:
        return SEVERITY_NAMES.index(name)
    raise ValueError(f"unknown priority {name!r} (emerg ... debug, or 0-7)")


def records_of_lines(lines: Iterable[bytes], *, app: str, severity: int, host: str) -> list[Record]:
    """Sample lines as records: syslog messages where they look like one."""
    import time

    from hostlog.collectors.syslog.parse_batch import parse_columns

    now = time.time_ns()
    out: list[Record] = []
    for raw in lines:
        raw = raw.rstrip(b"\r\n")
        if not raw:
            continue
        if raw.startswith(b"<"):
            out += parse_columns([raw], received_ns=now, default_host=host).records()
            continue
        try:
            msg: str | bytes = raw.decode("utf-8")
        except UnicodeDecodeError:
            msg = raw
        out.append(Record(now, msg, host, "test", app, None, severity))
    return out


def records_of_spool(directory: str, key_file: str | None, count: int) -> list[Record]:
    """The newest ``count`` records of a spool, oldest first."""
    from hostlog.spool.reader import SpoolReader

    reader = SpoolReader.open(directory, key_file)
    newest: list[Record] = []
    for _, record in reader.records(reverse=True):
        if len(newest) >= count:
            break
        newest.append(record)
    newest.reverse()
    return newest


def _show(r: Record) -> str:
    level = SEVERITY_NAMES[r.severity] if 0 <= r.severity < 8 else str(r.severity)
    who = r.app + (f"[{r.pid}]" if r.pid is not None else "")
    msg = r.msg if isinstance(r.msg, str) else repr(r.msg)
    fields = " ".join(f"{k}={v!r}" if not isinstance(v, str) or " " in v or not v else f"{k}={v}"
                      for k, v in sorted((r.fields or {}).items()))
    return f"{level} {who or '-'}: {msg}" + (f"  {{{fields}}}" if fields else "")


def _changes(before: Record, after: Record) -> list[str]:
    out = []
    if before.msg != after.msg:
        out.append("message")
    if before.severity != after.severity:
        out.append(f"priority {SEVERITY_NAMES[before.severity]} -> {SEVERITY_NAMES[after.severity]}"
                   if 0 <= before.severity < 8 and 0 <= after.severity < 8 else "priority")
    old, new = before.fields or {}, after.fields or {}
    added = sorted(k for k in new if k not in old)
    removed = sorted(k for k in old if k not in new)
    changed = sorted(k for k in new if k in old and new[k] != old[k])
    if added:
        out.append("+" + " +".join(added))
    if removed:
        out.append("-" + " -".join(removed))
    if changed:
        out.append("~" + " ~".join(changed))
    return out


def test_rules(rules: list[Any], records: list[Record], out: TextIO) -> dict[str, Any]:
    """Run ``rules`` over ``records``, rule by rule, and print each record's story."""
    from hostlog.rules.engine import RuleCounts, RuleEngine

    counts: dict[str, RuleCounts] = {}
    engines = [RuleEngine([rule], counts) for rule in rules]
    current = Columns.of(records)
    rows = list(range(len(records)))  # input row of each row of ``current``
    history: dict[int, list[str]] = {i: [] for i in rows}
    dropped_by: dict[int, str] = {}
    failures: list[str] = []
    for rule, engine in zip(rules, engines):
        before = current.records()
        outcome = engine.apply(current, explain=True)
        for row, name in outcome.dropped_by.items():
            dropped_by[rows[row]] = name
        kept = list(range(len(before))) if outcome.kept is None else outcome.kept
        after = outcome.batch.records()
        for k, row in enumerate(kept):
            what = _changes(before[row], after[k])
            if what:
                history[rows[row]].append(f"{rule.name}: {', '.join(what)}")
        failures += [f.describe() for f in outcome.failures]
        rows = [rows[row] for row in kept]
        current = outcome.batch
    final = dict(zip(rows, current.records()))
    for i, record in enumerate(records):
        out.write(f"--- record {i + 1}\n")
        out.write(f"before: {_show(record)}\n")
        if i in dropped_by:
            out.write(f"dropped by rule {dropped_by[i]}\n")
            continue
        if history[i]:
            out.write(f"after:  {_show(final[i])}\n")
            for line in history[i]:
                out.write(f"  changed by {line}\n")
        else:
            out.write("unchanged\n")
    out.write(f"--- {len(records)} records: {len(final)} kept, {len(dropped_by)} dropped\n")
    for rule in rules:
        c = counts[rule.name]
        done = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in c.as_dict().items() if v and k != "matched")
        out.write(f"rule {rule.name}: matched {c.matched}" + (f", {done}" if done else "") + "\n")
    for line in failures:
        out.write(f"failed: {line}\n")
    return {"kept": len(final), "dropped": len(dropped_by), "failures": failures}


def run(args: argparse.Namespace) -> int:
    from hostlog.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if not config.rules:
        print(f"{args.config}: no [[rule]] in it", file=sys.stderr)
        return 1
    if args.spool:
        records = records_of_spool(args.spool, args.key_file, args.lines)
    else:
        try:
            severity = _severity(args.priority)
        except ValueError as exc:
            print(f"hostlog rules test: {exc}", file=sys.stderr)
            return 2
        if args.file == "-":
            lines = sys.stdin.buffer.read().split(b"\n")
        else:
            lines = Path(args.file).read_bytes().split(b"\n")
        records = records_of_lines(lines, app=args.app, severity=severity, host=config.agent.hostname)
    result = test_rules(config.rules, records, sys.stdout)
    return 1 if result["failures"] else 0


def status_lines(rules: list[dict[str, Any]]) -> list[str]:
    """``hostlog ctl status``: one line per rule (the ``rules`` of the status answer)."""
    lines = []
    for r in rules:
        dropped = r.get("dropped", 0) + r.get("sampled_out", 0)
        extra = [f"{r[k]} {what}" for k, what in (("parsed", "parsed"), ("parse_errors", "parse errors"),
                                                   ("redacted", "redacted"), ("routed", "routed"),
                                                   ("errors", "failed")) if r.get(k)]
        line = f"rule {r['name']}: matched {r.get('matched', 0)}, dropped {dropped}"
        line += (", " + ", ".join(extra)) if extra else ""
        lines.append(line + (" (removed by a reload)" if r.get("removed") else ""))
    return lines
