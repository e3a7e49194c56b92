"""What ``hostlog query`` selects, tested at three levels, cheapest first.

1. **Frame index** (:meth:`Query.frame_test`): a frame's time range, severity
   mask and keyed app/unit filter, from the footer or frame header, without
   decrypting anything.
2. **Chunk** (:meth:`Query.chunk_test`, :meth:`Query.candidates`): the
   decrypted chunk's bytes (a unit, identifier or field value that is not in
   the chunk cannot be matched by any of its records) and then single columns
   (time, severity, host, source, message) with no Record built.
3. **Record** (:meth:`Query.record_test`): the complete rule, on the records
   that are left.

Each level is exact for what it tests: it only ever drops what the complete
rule would drop, so the levels can be skipped or combined freely (``follow``
and ``-F`` use the same code).

The rule is journalctl's (systemd 252, ``journalctl.c``): the filters are
ANDed, each -- ``-u``, ``-t``, ``-p``, ``FIELD=VALUE`` groups -- an OR inside,
plus hostlog's own ``--host``, ``--source``, ``-S``/``-U`` and ``-g``.
"""

from __future__ import annotations

import fnmatch
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import add

from hostlog.chunk import APP, FIELDS, HOST, MSG, SOURCE, FrameColumns, chunk_version
from hostlog.journal.fields import ABSENT_FIELD, field_values
from hostlog.query.priority import priority_matches
from hostlog.query.regex_shape import context_free, longest_literal
from hostlog.record import Record
from hostlog.spool.frame import IndexEntry
from hostlog.spool.index import app_bloom_bits
from hostlog.spool.segment import SegmentReader

__all__ = ["Query", "compile_grep", "mangle_unit", "parse_matches", "unit_names"]

_GLOB_CHARS = frozenset("*?[")

# --- unit names: journalctl's unit_name_mangle_with_suffix(".service") -------------

_UNIT_TYPES = ("service", "mount", "swap", "socket", "target", "device", "automount",
               "timer", "path", "slice", "scope")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_VALID = _ALNUM | frozenset(":-_.\\")  # systemd VALID_CHARS
_VALID_GLOB = _VALID | frozenset("@[]!-*?")  # VALID_CHARS_GLOB
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.(%s)" % "|".join(_UNIT_TYPES))
UNIT_NAME_MAX = 255


def _is_glob(name: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(name)


def _has_unit_type(name: str) -> bool:
    return name.rpartition(".")[2] in _UNIT_TYPES and "." in name


def _escape_char(c: str) -> str:
    return "".join(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogateescape"))


def _path_escape(path: str) -> str:
    """unit_name_path_escape(): ``/var/log`` -> ``var-log``, ``/`` -> ``-``."""
    parts = [p for p in path.split("/") if p and p != "."]
    if not parts:
        return "-"
    out = []
    for i, c in enumerate("/".join(parts)):
        if c == "/":
            out.append("-")
        elif c in _ALNUM or c in ":_" or (c == "." and i > 0):
            out.append(c)
        else:
            out.append(_escape_char(c))
    return "".join(out)


def mangle_unit(name: str) -> str:
    """The unit name journalctl's ``-u NAME`` looks for.

    A valid unit name or glob stays as it is; an absolute path names its
    ``.device`` (under /dev or /sys) or ``.mount``; anything else has its
    invalid characters escaped (``/`` becomes ``-``) and, unless it is a glob
    or already ends in a unit type, ``.service`` appended: ``nginx`` ->
    ``nginx.service``, ``foo.bar`` -> ``foo.bar.service``.
    """
    if not name:
        return name
    if len(name) <= UNIT_NAME_MAX and _UNIT_NAME.fullmatch(name):
        return name
    if _is_glob(name) and _VALID_GLOB.issuperset(name):
        return name
    if name.startswith("/"):
        device = name.startswith(("/dev/", "/sys/")) or name in ("/dev", "/sys")
        return _path_escape(name) + (".device" if device else ".mount")
    out = "".join("-" if c == "/" else c if c in _VALID_GLOB else _escape_char(c) for c in name)
    if not _is_glob(out) and not _has_unit_type(out):
        out += ".service"
    return out


def unit_names(pattern: str) -> list[str]:
    """The names ``-u PATTERN`` stands for: as given (an app name) and mangled
    as journalctl does (``nginx`` -> ``nginx.service``)."""
    mangled = mangle_unit(pattern)
    return [pattern] if mangled == pattern else [pattern, mangled]


class _NameMatch:
    """One ``-u``/``-t`` argument: exact names, or a glob."""

    def __init__(self, names: Sequence[str], glob: bool) -> None:
        self.names = list(dict.fromkeys(names))
        self.glob = glob
        self.exact = frozenset(self.names)
        self.raw = frozenset(n.encode("utf-8", "surrogateescape") for n in self.names)

    def text(self, value: str) -> bool:
        if self.glob:
            return any(fnmatch.fnmatchcase(value, n) for n in self.names)
        return value in self.exact

    def raw_any(self, values: list[bytes]) -> bool:
        if not self.glob:
            return not self.raw.isdisjoint(values)
        return any(self.text(v.decode("utf-8", "surrogateescape")) for v in values)


# journalctl's add_matches_for_unit(): besides _SYSTEMD_UNIT=U it shows what
# systemd says about U -- _PID=1 with UNIT=U, coredumps (MESSAGE_ID below,
# _UID=0, COREDUMP_UNIT=U) and OBJECT_SYSTEMD_UNIT=U from root. hostlog takes
# those three from the records of systemd's own reporters only: the per-frame
# app filter knows apps and units, not pids or uids, and these names let it
# still rule frames out (docs/query.md, "Differences").
REPORTER_APPS = frozenset({"systemd", "systemd-coredump", "systemd-journald"})
REPORTER_UNITS = frozenset({"init.scope", "systemd-journald.service"})
COREDUMP_MESSAGE_ID = b"fc2e22bc6ee647b6b90729ab34a250b1"

# journal fields whose value is computed from a record attribute (so its text
# need not be in the chunk), and hostlog's computed identity fields
_DERIVED_FIELDS = frozenset({"__REALTIME_TIMESTAMP", "PRIORITY", "SYSLOG_FACILITY", "_PID",
                             "__CURSOR", "_HOSTLOG_SEQ"})


@dataclass
class Query:
    units: list[str] = field(default_factory=list)  # -u: app or unit, globs allowed
    identifiers: list[str] = field(default_factory=list)  # -t: SYSLOG_IDENTIFIER exactly
    priorities: frozenset[int] | None = None  # -p: allowed severities
    since_ns: int | None = None
    until_ns: int | None = None
    grep: re.Pattern[str] | None = None
    # FIELD=VALUE matches: OR of groups (journalctl "+"), AND between fields of
    # a group, OR between values of one field
    matches: list[dict[str, set[bytes]]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._bloom_cache: dict[bytes, tuple[list[int] | None, list[int] | None]] = {}
        self._prepared: _Prepared | None  # (set by __setattr__, made by _prepare())

    def __setattr__(self, name: str, value: object) -> None:
        # what _prepare() derives is derived again after any change
        object.__setattr__(self, name, value)
        if not name.startswith("_"):
            object.__setattr__(self, "_prepared", None)

    # -- derived once ----------------------------------------------------------------
    def _prepare(self) -> _Prepared:
        if self._prepared is not None:
            return self._prepared
        units = [_NameMatch(unit_names(u), _is_glob(u)) for u in self.units]
        idents = _NameMatch(self.identifiers, False) if self.identifiers else None
        # names whose absence from a frame's app filter rules the frame out
        unit_bloom = None
        if units and not any(u.glob for u in units):
            unit_bloom = sorted({n for u in units for n in u.names} | REPORTER_APPS | REPORTER_UNITS)
        ident_bloom = sorted(set(self.identifiers)) if idents else None
        # byte strings of which a chunk must hold one (per requirement) to match
        literals: list[list[bytes]] = []
        if self.hosts:
            literals.append([h.encode("utf-8", "surrogateescape") for h in self.hosts])
        if self.sources:
            literals.append([s.encode("utf-8", "surrogateescape") for s in self.sources])
        group_literals: list[list[list[bytes]]] = []
        for g in self.matches:
            need = [sorted(values) for name, values in g.items()
                    if name not in _DERIVED_FIELDS and all(values)]
            group_literals.append(need)
        grep = GrepScan(self.grep) if self.grep is not None else None
        severity_class = None
        if self.priorities is not None:
            severity_class = re.compile(b"[" + b"".join(re.escape(bytes([p]))
                                                        for p in sorted(self.priorities)) + b"]")
        prepared = (units, idents, unit_bloom, ident_bloom, literals, group_literals, grep,
                    severity_class)
        self._prepared = prepared
        self._bloom_cache.clear()
        return prepared

    # -- 1. frames ---------------------------------------------------------------------
    def frame_test(self, seg: SegmentReader, entry: IndexEntry) -> bool:
        if self.since_ns is not None and entry.ts_max < self.since_ns:
            return False
        if self.until_ns is not None and entry.ts_min > self.until_ns:
            return False
        if self.priorities is not None and not any(
                entry.severity_mask & (1 << p) for p in self.priorities):
            return False
        prepared = self._prepare()
        unit_bloom, ident_bloom = prepared[2], prepared[3]
        if unit_bloom is None and ident_bloom is None:
            return True
        key = seg.keys.bloom_key
        bits = self._bloom_cache.get(key)
        if bits is None:
            bits = (None if unit_bloom is None else [app_bloom_bits(key, n) for n in unit_bloom],
                    None if ident_bloom is None else [app_bloom_bits(key, n) for n in ident_bloom])
            self._bloom_cache[key] = bits
        have = entry.app_bloom
        for wanted in bits:
            if wanted is not None and not any(b & have == b for b in wanted):
                return False
        return True

    # -- 2. chunks and columns -----------------------------------------------------------
    def chunk_test(self, chunk: bytes) -> bool:
        """False when the chunk's bytes show that none of its records can match."""
        literals, group_literals = self._prepare()[4:6]
        for options in literals:
            if not any(s in chunk for s in options):
                return False
        # (a version 2 chunk holds messages by template, not as their text)
        if group_literals and chunk_version(chunk) == 1 and not any(
                all(any(v in chunk for v in values) for values in need) for need in group_literals):
            return False
        return True

    def candidates(self, cols: FrameColumns, entry: IndexEntry | None = None) -> tuple[list[int], bool]:
        """Indices of the chunk's records that pass the column tests, and
        whether :meth:`record_test` must still be run on them (False when
        the columns decided; :meth:`verify` is then enough)."""
        n = cols.n
        idx: list[int] | None = None  # None: all of them
        if self.since_ns is not None or self.until_ns is not None:
            lo = self.since_ns if self.since_ns is not None else -(1 << 63)
            hi = self.until_ns if self.until_ns is not None else 1 << 63
            if entry is None or entry.ts_min < lo or entry.ts_max > hi:
                ts = cols.ts()
                idx = [i for i in range(n) if lo <= ts[i] <= hi]
                if not idx:
                    return idx, False
        if self.hosts:
            idx = _by_string(cols, cols.column(HOST), self.hosts, idx)
        if self.sources:
            idx = _by_string(cols, cols.column(SOURCE), self.sources, idx)
        need_records = bool(self.units or self.identifiers or self.matches)
        if (self.units or self.identifiers) and idx != []:
            idx = self._named(cols, idx)
        if self.priorities is not None and idx != []:
            # the severity column holds what priority_matches() reads, except
            # for a raw or missing PRIORITY, which can only make it say yes
            # wrongly: verify() checks those records
            sev = cols.severity()
            if idx is None:
                idx = [m.start() for m in self._severity_class().finditer(sev)]
            else:
                allowed = self.priorities
                idx = [i for i in idx if sev[i] in allowed]
        grep = self._prepare()[6]
        if grep is not None and idx != []:
            # the message column holds the MESSAGE shown; a record without
            # one (verify() drops it) has an empty message there
            if grep.literal is not None and not cols.may_hold(MSG, grep.literal):
                idx = []  # a text every match holds is in no message
            else:
                idx = grep.select(cols.msgs(), idx)
        return (list(range(n)) if idx is None else idx), need_records

    def _named(self, cols: FrameColumns, idx: list[int] | None) -> list[int] | None:
        """-u and -t on columns: a record can only match if its app is one of
        the names or a name's bytes are in its field map (as _SYSTEMD_UNIT,
        UNIT, SYSLOG_IDENTIFIER, ...). A superset; the record test decides."""
        units, idents = self._prepare()[:2]
        wanted: list[set[int]] = []
        if units and not any(u.glob for u in units):
            wanted.append(_app_or_fields(cols, {n for u in units for n in u.names}))
        if idents is not None:
            wanted.append(_app_or_fields(cols, set(idents.names)))
        if not wanted:
            return idx  # globs: the record test alone
        keep = set.intersection(*wanted)
        if idx is None:
            return sorted(keep)
        return [i for i in idx if i in keep]

    def verify(self, r: Record) -> bool:
        """For a record the columns selected: the journal quirks they cannot
        see (a raw or missing PRIORITY, a missing MESSAGE; a record with
        several MESSAGEs keeps the one shown in the column). Cheap when the
        record has none."""
        fields = r.fields
        if not fields or ("PRIORITY" not in fields and ABSENT_FIELD not in fields):
            return True
        if self.priorities is not None and not priority_matches(self.priorities, r):
            return False
        if self.grep is not None:
            absent = fields.get(ABSENT_FIELD)
            if isinstance(absent, str) and "MESSAGE" in absent.split():
                return False  # journalctl -g skips entries without MESSAGE
        return True

    def _severity_class(self) -> re.Pattern[bytes]:
        pattern = self._prepare()[7]
        assert pattern is not None
        return pattern

    @property
    def needs_identity(self) -> bool:
        """Whether the record test reads a record's origin or seq."""
        return any(name in ("__CURSOR", "_HOSTLOG_ORIGIN", "_HOSTLOG_SEQ")
                   for g in self.matches for name in g)

    # -- 3. records ----------------------------------------------------------------------
    def record_test(self, r: Record) -> bool:
        if self.since_ns is not None and r.ts < self.since_ns:
            return False
        if self.until_ns is not None and r.ts > self.until_ns:
            return False
        if self.priorities is not None and not priority_matches(self.priorities, r):
            return False
        units, idents = self._prepare()[:2]
        if units and not self._unit_ok(r, units):
            return False
        if idents is not None and not idents.raw_any(field_values(r, "SYSLOG_IDENTIFIER")):
            return False  # journalctl -t: SYSLOG_IDENTIFIER only, not an app from _COMM
        if self.hosts and r.host not in self.hosts:
            return False
        if self.sources and r.source not in self.sources:
            return False
        if self.grep is not None:
            values = field_values(r, "MESSAGE")
            # the MESSAGE shown (of several, the last); an entry without one never matches
            if not values or not self.grep.search(values[-1].decode("utf-8", "replace")):
                return False
        if self.matches and not any(self._group_ok(r, g) for g in self.matches):
            return False
        return True

    @staticmethod
    def _unit_ok(r: Record, units: list[_NameMatch]) -> bool:
        fields = r.fields
        unit = fields.get("_SYSTEMD_UNIT") if fields else None
        if unit.__class__ is str:  # the common case, without the journal view
            unit_values = [unit.encode("utf-8", "surrogateescape")]
            for m in units:
                # hostlog: the app (supervised app, syslog APP-NAME, identifier) or the unit
                if m.text(r.app) or m.text(unit):
                    return True
            reporter = r.app in REPORTER_APPS or unit in REPORTER_UNITS
        else:
            unit_values = field_values(r, "_SYSTEMD_UNIT") if fields else []
            for m in units:
                if m.text(r.app) or (unit_values and m.raw_any(unit_values)):
                    return True
            reporter = r.app in REPORTER_APPS or any(
                v.decode("utf-8", "replace") in REPORTER_UNITS for v in unit_values)
        if not fields or not reporter:
            return False
        # journalctl: what systemd, its coredump handler and journald report about the unit
        pid1 = b"1" in field_values(r, "_PID")
        uid0 = b"0" in field_values(r, "_UID")
        coredump = uid0 and COREDUMP_MESSAGE_ID in field_values(r, "MESSAGE_ID")
        for m in units:
            if pid1 and m.raw_any(field_values(r, "UNIT")):
                return True
            if coredump and m.raw_any(field_values(r, "COREDUMP_UNIT")):
                return True
            if uid0 and m.raw_any(field_values(r, "OBJECT_SYSTEMD_UNIT")):
                return True
        return False

    @staticmethod
    def _group_ok(r: Record, group: dict[str, set[bytes]]) -> bool:
        return all(any(v in values for v in field_values(r, name)) for name, values in group.items())


def _app_or_fields(cols: FrameColumns, names: set[str]) -> set[int]:
    apps = {k for k, s in enumerate(cols.strings) if s in names}
    app = cols.column(APP)
    found = {i for i in range(cols.n) if app[i] in apps} if apps else set()
    raw = sorted(n.encode("utf-8", "surrogateescape") for n in names if n)
    # a name that holds another is found by searching for the other
    needles = [n for n in raw if not any(o != n and o in n for o in raw)]
    return found | cols.holding(FIELDS, needles)


def _by_string(cols, column: list[int], wanted: list[str], idx: list[int] | None) -> list[int]:
    keep = {i for i, s in enumerate(cols.strings) if s in wanted}
    return [i for i in (range(cols.n) if idx is None else idx) if column[i] in keep]


class GrepScan:
    """-g over a column of messages: one regex search over all of them joined
    (NUL between), then an exact check of the few that the joined search hits.

    Exact when the pattern has no anchors (``^``, ``$``, ``\\A``, ``\\Z``,
    ``\\B``) and no lookaround: then a match inside one message's span is a
    match of that message (``\\b`` sees the NUL as it sees a string's end),
    and a message with a match is always reached. Other patterns are searched
    message by message. (tests/unit/query/test_filters.py checks this against
    the per-message search on generated patterns.)
    """

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.joinable = context_free(pattern)
        #: UTF-8 of a text every match contains, if there is one worth a
        #: search of the message column's bytes (case-sensitive patterns only)
        self.literal = _required_literal(pattern)

    def select(self, msgs: list, idx: list[int] | None) -> list[int]:
        order = range(len(msgs)) if idx is None else idx
        texts = msgs if idx is None else [msgs[i] for i in idx]
        if not texts:
            return []
        search = self.pattern.search
        if self.joinable:
            try:
                joined = "\x00".join(texts)
            except TypeError:  # a binary message: grepped as decoded text
                texts = [_text(m) for m in texts]
                joined = "\x00".join(texts)
        else:
            return [i for i, m in zip(order, texts) if search(_text(m))]
        m = search(joined)
        if m is None:
            return []
        # where each message starts in the joined text (C loops, no Python one)
        lengths = list(map(len, texts))
        starts = list(map(add, accumulate(lengths, initial=0), range(len(texts) + 1)))
        out = []
        while m is not None:
            k = bisect_right(starts, m.start()) - 1
            if m.end() <= starts[k] + lengths[k] or search(texts[k]):
                out.append(order[k])
            if k + 1 >= len(texts):
                break
            m = search(joined, starts[k + 1])
        return out


# What Query._prepare() derives from the query: (units, idents, unit_bloom,
# ident_bloom, literals, group_literals, grep, severity_class).
_Prepared = tuple[list[_NameMatch], _NameMatch | None, list[str] | None, list[str] | None,
                  list[list[bytes]], list[list[list[bytes]]], GrepScan | None,
                  re.Pattern[bytes] | None]


def _text(m: str | bytes) -> str:
    return m if isinstance(m, str) else m.decode("utf-8", "replace")


def _required_literal(pattern: re.Pattern[str]) -> bytes | None:
    """A text of three characters at least that every match contains, as bytes."""
    if pattern.flags & re.IGNORECASE:
        return None
    best = longest_literal(pattern)
    # U+FFFD stands for undecodable bytes in a binary message: not in its bytes
    if best is None or len(best) < 3 or "\ufffd" in best:
        return None
    return best.encode("utf-8", "surrogateescape")


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


RecordTest = Callable[[Record], bool]
