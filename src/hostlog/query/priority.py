"""``-p/--priority``, read and applied as journalctl 252 does.

journalctl(1): "-p, --priority= Filter output by message priorities or priority
ranges. Takes either a single numeric or textual log level (i.e. between
0/"emerg" and 7/"debug"), or a range of numeric/text log levels in the form
FROM..TO." One level X means X *or more important* (0..X); a range includes both
ends and may be given backwards (``4..2`` == ``2..4``).

The quirks, observed on the recorded journalctl 252 (shared/corpora/journald/
NOTES.md §3) or read from systemd's source (src/journal/journalctl.c,
src/basic/parse-util.c, log_level_from_string()):

* names are exact and lower case (``err``, not ``ERR`` or ``error``);
* numbers go through safe_atou(): leading white space, a ``+`` sign, C octal
  (``07``), hex (``0x7``) and Python-style ``0b``/``0o`` prefixes are accepted,
  anything after the number is not; values above 7 are unknown levels;
* ``..3`` and ``3..`` are "Failed to parse log level range", ``8`` and ``bogus``
  are "Unknown log level";
* the filter works by adding ``PRIORITY=0`` … ``PRIORITY=N`` journal matches, so
  an entry without a PRIORITY field (or with a value other than one digit 0-7)
  is *not* shown -- unless the selection covers all eight levels, in which case
  journalctl adds no match at all and such entries *are* shown. (Of several
  PRIORITY values hostlog takes the last, the one shown; journalctl any.)

hostlog records always carry a severity; a record mapped from a journal entry
that had no PRIORITY remembers that (see hostlog.journal.fields), and
:func:`priority_matches` applies the rule above to it.
"""

from __future__ import annotations

from hostlog.errors import PriorityError
from hostlog.journal.fields import ABSENT_FIELD, field_values
from hostlog.record import SEVERITY_NAMES, Record

__all__ = ["ALL_LEVELS", "PriorityError", "parse_priority", "priority_matches", "selects_all"]

#: Every syslog level: the selection that adds no filter at all.
ALL_LEVELS: frozenset[int] = frozenset(range(8))

_UINT_MAX = 2**32 - 1
_ULONG_MAX = 2**64 - 1
_WS = " \t\n\r"  # systemd's WHITESPACE
_C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale, skipped by strtoul()
_PRIORITY_BYTES = {str(n).encode(): n for n in range(8)}


def parse_priority(spec: str) -> frozenset[int]:
    """The severities ``-p spec`` selects (0 = emerg … 7 = debug)."""
    dots = spec.find("..")
    if dots >= 0:
        low = _log_level(spec[:dots])
        high = _log_level(spec[dots + 2:])
        if low is None or high is None:
            raise PriorityError(f"Failed to parse log level range {spec}")
        if low > high:
            low, high = high, low
        return frozenset(range(low, high + 1))
    level = _log_level(spec)
    if level is None:
        raise PriorityError(f"Unknown log level {spec}")
    return frozenset(range(0, level + 1))


def selects_all(allowed: frozenset[int]) -> bool:
    """True when the selection adds no filter (journalctl's 0xFF mask)."""
    return allowed >= ALL_LEVELS


def priority_matches(allowed: frozenset[int], record: Record) -> bool:
    """Whether ``-p`` shows this record.

    All levels: always. Otherwise the record's journal PRIORITY value must be
    exactly one of the allowed digits, as for journalctl's ``PRIORITY=N``
    matches, so a record whose source entry had no PRIORITY (or ``06``) is
    excluded although it has a severity. Of an entry with several PRIORITY
    values, the last counts: the one its severity and colour come from
    (journalctl would take any of them; docs/query.md, "Differences").
    """
    if allowed >= ALL_LEVELS:
        return True
    fields = record.fields
    if not fields or ("PRIORITY" not in fields and ABSENT_FIELD not in fields):
        return record.severity in allowed  # the common case: no journal quirks
    values = field_values(record, "PRIORITY")
    return bool(values) and _PRIORITY_BYTES.get(values[-1], -1) in allowed


def _log_level(s: str) -> int | None:
    # log_level_from_string(): the name table first, then a number <= LOG_DEBUG.
    if s in SEVERITY_NAMES:
        return SEVERITY_NAMES.index(s)
    value = _safe_atou(s)
    return value if value is not None and value <= 7 else None


def _safe_atou(s: str) -> int | None:
    """systemd safe_atou() (base 0): None where it returns an error."""
    i = 0
    while i < len(s) and s[i] in _WS:
        i += 1
    s = s[i:]
    base = 0
    # mangle_base(): "0b" and "0o" prefixes, as in Python; C's "0x" and
    # leading-zero octal come from strtoul(base 0) itself.
    if s[:2] in ("0b", "0B"):
        base, s = 2, s[2:]
    elif s[:2] in ("0o", "0O"):
        base, s = 8, s[2:]
    value = _strtoul_whole(s, base)
    if value is None:
        return None
    if value != 0 and s.startswith("-"):
        return None
    if value > _UINT_MAX:
        return None
    return value


def _strtoul_whole(s: str, base: int) -> int | None:
    """strtoul(s, &end, base) when it consumes all of s; None otherwise or on
    overflow. A '-' sign wraps the value modulo 2**64, as C does."""
    i = 0
    while i < len(s) and s[i] in _C_SPACE:
        i += 1
    negative = False
    if i < len(s) and s[i] in "+-":
        negative = s[i] == "-"
        i += 1
    rest = s[i:]
    if base in (0, 16) and rest[:2] in ("0x", "0X") and rest[2:3] and \
            rest[2:3] in "0123456789abcdefABCDEF":
        base, rest = 16, rest[2:]
    elif base == 0:
        base = 8 if rest.startswith("0") else 10
    digits = "0123456789abcdef"[:base]
    if not rest or not rest.isascii() or any(c.lower() not in digits for c in rest):
        return None
    value = int(rest, base) if len(rest) < 80 else _ULONG_MAX + 1
    if value > _ULONG_MAX:
        return None
    return (-value) % 2**64 if negative else value
