"""What ``hostlog query`` selects: per-frame tests (from the index, without
decrypting) and per-record tests.

Frame tests only ever skip frames that cannot hold a wanted record: the time
range, the severity mask and the keyed app/unit filter are exact supersets of
what the frame holds.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from hostlog.query.journal_fields import field_values
from hostlog.query.priority import priority_matches
from hostlog.record import Record
from hostlog.spool.frame import IndexEntry
from hostlog.spool.keys import app_bloom_bits
from hostlog.spool.segment import SegmentReader

_GLOB = re.compile(r"[*?\[]")


def unit_names(pattern: str) -> list[str]:
    """journalctl's -u mangling: a name without a unit suffix also means NAME.service."""
    if "." in pattern.rsplit("/", 1)[-1] or _GLOB.search(pattern):
        return [pattern]
    return [pattern, pattern + ".service"]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass
class Query:
    units: list[str] = field(default_factory=list)  # -u: app or _SYSTEMD_UNIT, globs allowed
    identifiers: list[str] = field(default_factory=list)  # -t: the app exactly
    priorities: frozenset[int] | None = None  # -p: allowed severities
    since_ns: int | None = None
    until_ns: int | None = None
    grep: re.Pattern[str] | None = None
    # FIELD=VALUE matches: OR of groups (journalctl "+"), AND between fields of
    # a group, OR between values of one field
    matches: list[dict[str, set[bytes]]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    # -- frames ------------------------------------------------------------------
    def frame_test(self, seg: SegmentReader, entry: IndexEntry) -> bool:
        if self.since_ns is not None and entry.ts_max < self.since_ns:
            return False
        if self.until_ns is not None and entry.ts_min > self.until_ns:
            return False
        if self.priorities is not None and not any(
                entry.severity_mask & (1 << p) for p in self.priorities):
            return False
        names = self._exact_names()
        if names is not None:
            key = seg.keys.bloom_key
            if not any(app_bloom_bits(key, n) & entry.app_bloom == app_bloom_bits(key, n)
                       for n in names):
                return False
        return True

    def _exact_names(self) -> list[str] | None:
        """Names whose absence from a frame's filter rules the frame out, or
        None when a glob (or no -u/-t) makes the filter useless."""
        if not (self.units or self.identifiers):
            return None
        names = list(self.identifiers)
        for u in self.units:
            if _GLOB.search(u):
                return None
            names.extend(unit_names(u))
        return names

    # -- records -----------------------------------------------------------------
    def record_test(self, r: Record) -> bool:
        if self.since_ns is not None and r.ts < self.since_ns:
            return False
        if self.until_ns is not None and r.ts > self.until_ns:
            return False
        if self.priorities is not None and not priority_matches(self.priorities, r):
            return False
        if (self.units or self.identifiers) and not (self._unit_ok(r) or self._identifier_ok(r)):
            return False
        if self.hosts and r.host not in self.hosts:
            return False
        if self.sources and r.source not in self.sources:
            return False
        if self.grep is not None:
            msg = r.msg if isinstance(r.msg, str) else r.msg.decode("utf-8", "replace")
            if not self.grep.search(msg):
                return False
        if self.matches and not any(self._group_ok(r, g) for g in self.matches):
            return False
        return True

    def _unit_ok(self, r: Record) -> bool:
        unit = _text(r.fields.get("_SYSTEMD_UNIT")) if r.fields else None
        for pattern in self.units:
            for name in unit_names(pattern):
                if fnmatch.fnmatchcase(r.app, name) or (unit and fnmatch.fnmatchcase(unit, name)):
                    return True
        return False

    def _identifier_ok(self, r: Record) -> bool:
        # journalctl -t matches SYSLOG_IDENTIFIER only, not an app taken from _COMM
        if not self.identifiers:
            return False
        wanted = {i.encode("utf-8", "surrogateescape") for i in self.identifiers}
        return any(v in wanted for v in field_values(r, "SYSLOG_IDENTIFIER"))

    @staticmethod
    def _group_ok(r: Record, group: dict[str, set[bytes]]) -> bool:
        return all(any(v in values for v in field_values(r, name)) for name, values in group.items())


def parse_matches(args: list[str]) -> list[dict[str, set[bytes]]]:
    """``FIELD=VALUE`` arguments, with ``+`` between disjunctive groups."""
    groups: list[dict[str, set[bytes]]] = [{}]
    for arg in args:
        if arg == "+":
            groups.append({})
            continue
        name, sep, value = arg.partition("=")
        if not sep or not name or not re.fullmatch(r"[A-Z0-9_]+", name):
            raise ValueError(f"'{arg}' is not a FIELD=VALUE match (field names are A-Z, 0-9, _)")
        groups[-1].setdefault(name, set()).add(value.encode("utf-8", "surrogateescape"))
    return [g for g in groups if g]


def compile_grep(pattern: str, case_sensitive: bool | None = None) -> re.Pattern[str]:
    """journalctl: case-insensitive unless the pattern has an upper-case letter
    (``--case-sensitive`` decides when given)."""
    if case_sensitive is None:
        case_sensitive = any(c.isupper() for c in pattern)
    try:
        return re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"bad --grep pattern {pattern!r}: {exc}") from None
