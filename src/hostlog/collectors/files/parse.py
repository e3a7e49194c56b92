"""What a tailed file's line says of itself: its time, its level, its fields.

Sans-IO: lines in, columns out. The file source's ``parse`` chooses how:

* ``"auto"`` (the default): a line that is a JSON object is read as
  ``"json"``; any other line's leading header (a timestamp in the usual forms,
  a level word, a component: ``hostlog.patterns.header.split_header``, no
  per-format setting) gives the record its time and ``PRIORITY``, and the line
  stays whole in ``MESSAGE``;
* ``"json"``: a JSON object per line; its message member (``message``,
  ``msg``, ``log``, ``MESSAGE``) is ``MESSAGE``, its time member (``time``,
  ``timestamp``, ``ts``, ``@timestamp``) the record's time, its level member
  (``level``, ``severity``, ``lvl``, ``loglevel``) ``PRIORITY`` (it stays a
  field too), the other members fields (nested values as compact JSON). A line that is no JSON
  object stays as it is, with ``PARSE_ERROR``;
* ``"syslog"``: each line a syslog message (RFC 5424 or 3164, as the syslog
  source reads them): time, severity, facility, host, tag, pid and
  structured data from it; the file's app is kept unless the line names one;
* a regular expression with named groups: the groups are fields; a group
  ``time`` (or ``timestamp``) gives the time, ``level`` (or ``severity``) the
  priority; ``MESSAGE`` stays whole. A line it does not match gets
  ``PARSE_ERROR``;
* ``"none"``: the line as it is, at the time it was read.

When a line's own time is taken, the time it was read is kept in the field
``RECEIVED_TIMESTAMP`` (µs since the epoch, as journald writes its times).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hostlog.collectors.syslog.parse import parse_message
from hostlog.patterns.header import LEVELS, split_header
from hostlog.rules.parse import ParseFailed, parse_json

__all__ = ["MODES", "PARSE_ERROR", "RECEIVED_FIELD", "LineParser", "Parsed", "check_parse"]

MODES = ("auto", "none", "json", "syslog")
RECEIVED_FIELD = "RECEIVED_TIMESTAMP"
PARSE_ERROR = "PARSE_ERROR"

_MESSAGE_KEYS = ("message", "msg", "log", "MESSAGE")
_TIME_KEYS = ("time", "timestamp", "ts", "@timestamp")
_LEVEL_KEYS = ("level", "severity", "lvl", "loglevel")
_SYSLOG_LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "error": 3, "warning": 4, "warn": 4,
                  "notice": 5, "info": 6, "debug": 7}


def check_parse(value: str) -> str:
    """A valid ``parse`` value, or ValueError saying why not."""
    if value in MODES:
        return value
    try:
        pattern = re.compile(value)
    except re.error as exc:
        raise ValueError(f"parse: {', '.join(map(repr, MODES))} or a regular expression with named "
                         f"groups; {value!r} is neither ({exc})") from None
    if not pattern.groupindex:
        raise ValueError(f"parse: the regular expression {value!r} has no named group (?P<name>...)")
    return value


@dataclass(slots=True)
class Parsed:
    """The columns of a run of lines (one value per line)."""

    ts: list[int]
    severity: list[int]
    msg: list[str | bytes]
    fields: list[dict[str, Any]]
    pool: list[dict[str, Any]]  # every dict in ``fields``
    app: list[str] | None = None  # (syslog: the lines' tags)
    host: list[str] | None = None
    pid: list[int | None] | None = None
    facility: list[int | None] | None = None


def level_severity(word: str) -> int | None:
    """The syslog severity of a level word or number (``"warn"``, ``"ERROR"``, ``"3"``)."""
    w = word.strip()
    if w.isdigit() and len(w) == 1 and w < "8":
        return int(w)
    sev = LEVELS.get(w.upper())
    return sev if sev is not None else _SYSLOG_LEVELS.get(w.lower())


def _time_ns(text: str) -> int | None:
    """A time member's value (an ISO date, a syslog date, epoch seconds ...) in ns."""
    t = text.strip()
    try:
        number = float(t)
    except ValueError:
        header = split_header(t)
        return header.ts_ns
    if number != number or not 0 < number < 1e11:  # NaN, or not seconds since the epoch
        if 1e11 <= number < 1e14:  # milliseconds
            return int(number * 1_000_000)
        return None
    return int(number * 1e9)


class LineParser:
    """Turns a run of lines of one file into columns (see the module's docstring)."""

    def __init__(self, mode: str = "auto") -> None:
        self.mode = check_parse(mode)
        self._regex = None if mode in MODES else re.compile(mode)
        self.parse_errors = 0

    def parse(self, msgs: list[str | bytes], received_ns: int, base: dict[str, Any]) -> Parsed:
        n = len(msgs)
        mode = self.mode
        if mode == "none":
            return Parsed([received_ns] * n, [6] * n, msgs, [base] * n, [base])
        if mode == "syslog":
            return self._syslog(msgs, received_ns, base)
        received = {**base, RECEIVED_FIELD: str(received_ns // 1000)}
        ts = [received_ns] * n
        sev = [6] * n
        fields: list[dict[str, Any]] = [base] * n
        pool = [base, received]
        out_msgs = msgs
        regex = self._regex
        for i, line in enumerate(msgs):
            if line.__class__ is not str:
                continue  # (undecodable: kept as it is)
            assert isinstance(line, str)
            if regex is not None:
                self._by_regex(regex, i, line, base, received, ts, sev, fields, pool)
            elif mode == "json" or (line[:1] == "{" and line.rstrip()[-1:] == "}"):
                if out_msgs is msgs:
                    out_msgs = list(msgs)
                self._json(i, line, base, received, ts, sev, out_msgs, fields, pool, strict=mode == "json")
            else:
                header = split_header(line)
                if header.ts_ns is not None:
                    ts[i] = header.ts_ns
                    fields[i] = received
                if header.severity is not None:
                    sev[i] = header.severity
        return Parsed(ts, sev, out_msgs, fields, pool)

    def _json(self, i: int, line: str, base: dict[str, Any], received: dict[str, Any], ts: list[int],
              sev: list[int], msgs: list[str | bytes], fields: list[dict[str, Any]],
              pool: list[dict[str, Any]], *, strict: bool) -> None:
        try:
            members = parse_json(line)
        except ParseFailed as exc:
            if strict:
                self.parse_errors += 1
                fields[i] = f = {**base, PARSE_ERROR: str(exc)}
                pool.append(f)
            return  # (auto: a line that only looks like JSON is a line)
        f = {**base}
        for key in _MESSAGE_KEYS:
            if key in members:
                msgs[i] = members.pop(key)
                break
        for key in _TIME_KEYS:
            if key in members:
                t = _time_ns(members[key])
                if t is not None:
                    del members[key]
                    ts[i] = t
                    f[RECEIVED_FIELD] = received[RECEIVED_FIELD]
                break
        for key in _LEVEL_KEYS:
            if key in members:
                s = level_severity(members[key])
                if s is not None:
                    sev[i] = s
                break
        f.update(members)
        fields[i] = f
        pool.append(f)

    def _by_regex(self, regex: re.Pattern[str], i: int, line: str, base: dict[str, Any],
                  received: dict[str, Any], ts: list[int], sev: list[int],
                  fields: list[dict[str, Any]], pool: list[dict[str, Any]]) -> None:
        m = regex.search(line)
        if m is None:
            self.parse_errors += 1
            fields[i] = f = {**base, PARSE_ERROR: "regex: no match"}
            pool.append(f)
            return
        groups = {k: v for k, v in m.groupdict().items() if v is not None}
        f = {**base, **groups}
        for key in ("time", "timestamp"):
            if key in groups:
                t = _time_ns(groups[key])
                if t is not None:
                    ts[i] = t
                    f[RECEIVED_FIELD] = received[RECEIVED_FIELD]
                break
        for key in ("level", "severity"):
            if key in groups:
                s = level_severity(groups[key])
                if s is not None:
                    sev[i] = s
                break
        fields[i] = f
        pool.append(f)

    def _syslog(self, msgs: list[str | bytes], received_ns: int, base: dict[str, Any]) -> Parsed:
        n = len(msgs)
        out = Parsed([received_ns] * n, [6] * n, list(msgs), [base] * n, [base],
                     app=[""] * n, host=[""] * n, pid=[None] * n, facility=[None] * n)
        assert out.app is not None and out.host is not None and out.pid is not None and out.facility is not None
        received = str(received_ns // 1000)
        for i, line in enumerate(msgs):
            raw = line.encode("utf-8", "surrogateescape") if isinstance(line, str) else line
            rec = parse_message(raw, received_ns=received_ns)
            out.ts[i], out.severity[i], out.msg[i] = rec.ts, rec.severity, rec.msg
            out.app[i], out.host[i], out.pid[i], out.facility[i] = rec.app, rec.host, rec.pid, rec.facility
            f = {**base, **rec.fields}
            if rec.ts != received_ns:
                f[RECEIVED_FIELD] = received
            out.fields[i] = f
            out.pool.append(f)
        return out

