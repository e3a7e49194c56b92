"""The syslog message grammars, declared once: RFC 5424 and RFC 3164 as read here.

Every regex the syslog parsers use is built in this module from one
declaration of each field (its pattern and its limits), so the per-message
parser (:mod:`hostlog.collectors.syslog.parse`), its diagnostics (which name
the field that broke) and the batch splitter
(:mod:`hostlog.collectors.syslog.parse_batch`) cannot drift apart. The
compiled splitter (``_syslog5424.c``) is C and cannot import this module; it
exports its limits (``_syslog5424.LIMITS``), which the tests hold to
:data:`LIMITS`, and the differential tests hold its records to the Python
path's (tests/unit/collectors/syslog/test_differential.py).

No I/O, no state: names and compiled patterns only.

RFC 5424 section 6 ABNF::

    SYSLOG-MSG = HEADER SP STRUCTURED-DATA [SP MSG]
    HEADER     = PRI VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID
    PRIVAL     = 1*3DIGIT            ; 0..191, no leading zero (6.2.1)
    VERSION    = NONZERO-DIGIT 0*2DIGIT
    TIMESTAMP  = NILVALUE / FULL-DATE "T" FULL-TIME ; TIME-SECFRAC = "." 1*6DIGIT
    HOSTNAME   = NILVALUE / 1*255PRINTUSASCII
    APP-NAME   = NILVALUE / 1*48PRINTUSASCII
    PROCID     = NILVALUE / 1*128PRINTUSASCII
    MSGID      = NILVALUE / 1*32PRINTUSASCII
    SD-NAME    = 1*32PRINTUSASCII except '=', SP, ']', %d34
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "BSD_TS", "HEADER5424", "HEADERLESS_TAG", "ISO_TS", "LIMITS", "PRI", "PRIVAL_MAX", "PRI_ONLY",
    "RFC3164", "RFC5424", "SD_ELEMENT", "SD_NAME", "SD_PARAM", "SD_UNESCAPE", "SECFRAC_DIGITS",
    "SNIFF5424", "SPLIT3164", "SPLIT3164_GROUPS", "SPLIT5424", "SPLIT5424_GROUPS",
    "VERSION_START", "YEAR_MAX", "YEAR_MIN", "Field",
]

# --- limits ------------------------------------------------------------------------------------

PRIVAL_MAX: Final = 191  # facility 23, severity 7
HOSTNAME_MAX: Final = 255
APP_NAME_MAX: Final = 48
PROCID_MAX: Final = 128
MSGID_MAX: Final = 32
SD_NAME_MAX: Final = 32
SECFRAC_DIGITS: Final = 6
# Record.ts is epoch ns in a signed 64-bit integer, and a chunk stores the
# differences between neighbouring records' times (docs/format.md): a date
# outside these years is no such time here (a parse error that keeps the raw
# message), never a record the spool cannot encode.
YEAR_MIN: Final = 1900
YEAR_MAX: Final = 2190

#: Every limit by name, as the compiled splitter exports its own (``_syslog5424.LIMITS``).
LIMITS: Final = {
    "PRIVAL": PRIVAL_MAX, "HOSTNAME": HOSTNAME_MAX, "APP-NAME": APP_NAME_MAX,
    "PROCID": PROCID_MAX, "MSGID": MSGID_MAX, "SD-NAME": SD_NAME_MAX,
    "TIME-SECFRAC": SECFRAC_DIGITS, "YEAR-MIN": YEAR_MIN, "YEAR-MAX": YEAR_MAX,
}

# --- RFC 5424 pieces ---------------------------------------------------------------------------

#: PRI with PRIVAL as group 1; the value (<= PRIVAL_MAX) is checked after the
#: match. "<00>", "<002>" are not PRIs (section 6.2.1).
PRI: Final = r"<(0|[1-9][0-9]{0,2})>"
#: PRI whose PRIVAL is 0..191 by its shape alone (the batch regexes, which
#: cannot check a value after the match).
_PRI_VALID = r"<(1[0-8][0-9]|19[01]|[1-9][0-9]?|0)>"

_VERSION = r"[1-9][0-9]{0,2}"
_FULL_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_SECONDS = _FULL_DATE + r"T[0-9]{2}:[0-9]{2}:[0-9]{2}"  # the part that is a UTC second's key
_SECFRAC = r"[0-9]{1,%d}" % SECFRAC_DIGITS
_OFFSET = r"Z|[+-][0-9]{2}:[0-9]{2}"
_TIMESTAMP = r"-|" + _SECONDS + r"(?:\." + _SECFRAC + r")?(?:" + _OFFSET + r")"


def _printusascii(most: int) -> str:
    return r"[!-~]{1,%d}" % most


@dataclass(frozen=True)
class Field:
    """One space-separated field of the RFC 5424 HEADER after PRI."""

    name: str  # the RFC's name, as the diagnostics say it
    pattern: str  # a regex without groups for the whole field
    longest: int | None  # its longest text, where the RFC bounds it by a count

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern)


#: The HEADER after PRI, in order: what :data:`RFC5424` matches in one go and
#: what the diagnostics walk field by field.
HEADER5424: Final = (
    Field("VERSION", _VERSION, 3),
    Field("TIMESTAMP", _TIMESTAMP, None),
    Field("HOSTNAME", _printusascii(HOSTNAME_MAX), HOSTNAME_MAX),
    Field("APP-NAME", _printusascii(APP_NAME_MAX), APP_NAME_MAX),
    Field("PROCID", _printusascii(PROCID_MAX), PROCID_MAX),
    Field("MSGID", _printusascii(MSGID_MAX), MSGID_MAX),
)

#: PRI and the whole HEADER plus the SP before STRUCTURED-DATA: groups PRIVAL,
#: then one per field of HEADER5424. Its classes never overlap the separating
#: space, so it does not backtrack.
RFC5424: Final = re.compile(PRI + " ".join("(" + f.pattern + ")" for f in HEADER5424) + " ")

#: After PRI, a VERSION and SP (or the end) means the sender meant RFC 5424. A
#: longer digit run is RFC 3164 content ("<0>1990 Oct 22 ...", RFC 3164 5.4).
VERSION_START: Final = re.compile(_VERSION + r"(?: |$)")

# RFC 5424 6.3: PARAM-VALUE: '"', '\' and ']' MUST be escaped (6.3.3); any
# other backslash pair is kept as it is, so an escape accepts any character
# and SD_UNESCAPE leaves it alone.
SD_NAME: Final = r'[!#-<>-\\^-~]{1,%d}' % SD_NAME_MAX


def _sd_value(line: bool) -> str:
    """PARAM-VALUE; ``line``: holding no LF (the batch regexes read one line per message)."""
    plain = r'[^"\\\]' + (r"\n" if line else "") + r"]*"
    escape = r"\\[^\n]" if line else r"\\."  # (the per-message regexes use re.S)
    return plain + r"(?:" + escape + plain + r")*"


#: One SD-ELEMENT: group 1 its SD-ID, group 2 its params (each " NAME=VALUE").
SD_ELEMENT: Final = re.compile(r"\[(" + SD_NAME + r")((?: " + SD_NAME + r'="' + _sd_value(False)
                               + r'")*)\]', re.S)
SD_PARAM: Final = re.compile(r" (" + SD_NAME + r')="(' + _sd_value(False) + r')"', re.S)
SD_UNESCAPE: Final = re.compile(r'\\([\\"\]])')
_SD_ELEMENT_LINE = r"\[" + SD_NAME + r"(?: " + SD_NAME + r'="' + _sd_value(True) + r'")*\]'

# --- RFC 3164 pieces ---------------------------------------------------------------------------

# RFC 3164 section 4.1.2: TIMESTAMP = "Mmm dd hh:mm:ss" (day padded with a
# space). Real senders add: upper-case months, an unpadded day, a year after
# the day ("Mar  7 2008 19:06:53"), fractions of a second.
_BSD_MINUTE = r"[A-Za-z]{3} {1,2}[0-9]{1,2} (?:[0-9]{4} )?[0-9]{2}:[0-9]{2}"
_BSD = r"(" + _BSD_MINUTE + r"):([0-9]{2})(?:\.(" + _SECFRAC + r"))?"

#: BSD TIMESTAMP and the SP after it (or the end): group 1 is the part up to
#: the minute (the time cache key), 2 the second, 3 the fraction.
BSD_TS: Final = re.compile(_BSD + r"(?: |$)")
#: PRI and a BSD TIMESTAMP: the common RFC 3164 shape in one match.
RFC3164: Final = re.compile(PRI + _BSD + r"(?: |$)")
#: rsyslog's RFC 3339 flavour of RFC 3164 (RSYSLOG_ForwardFormat); no zone
#: means local time, like the BSD form.
ISO_TS: Final = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}):([0-9]{2})"
                           r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:?[0-9]{2})?(?: |$)")
PRI_ONLY: Final = re.compile(PRI)
#: A TAG at the start of a MSG without HEADER: a first word (up to a blank,
#: journald's WHITESPACE) that ends with ":", and the one blank after it.
HEADERLESS_TAG: Final = re.compile(r"([^ \t\n\r]*):(?:[ \t\n\r]|\Z)")

# --- the batch regexes -------------------------------------------------------------------------
# One re.split over a batch joined by LF cuts every line it takes whole into
# its groups (parse_batch). They accept a subset of what the per-message
# parser accepts, and every class excludes LF, so a match never spans lines.

#: RFC 5424 with VERSION 1 and a TIMESTAMP; groups: PRIVAL, the seconds, the
#: fraction, the zone, HOSTNAME, APP-NAME, PROCID, MSGID, STRUCTURED-DATA
#: (whole: parsed per distinct text). A BOM after the SP is dropped.
SPLIT5424: Final = re.compile(
    r"\n" + _PRI_VALID + r"1 (" + _SECONDS + r")(?:\.(" + _SECFRAC + r"))?(" + _OFFSET + r") "
    + " ".join("(" + f.pattern + ")" for f in HEADER5424[2:])
    + r" (-|(?:" + _SD_ELEMENT_LINE + r")+)(?: \ufeff?|(?=\n)|\Z)")
SPLIT5424_GROUPS: Final = 9
#: The first line of a batch the sender meant as RFC 5424.
SNIFF5424: Final = re.compile(r"\n<[0-9]{1,3}>[1-9]")

# A pid as the batch regex takes it: a plain decimal without leading zeros
# of at most 9 digits (below 2**31 by its length; longer ones go to parse_pid).
_PID_SHORT = r"[1-9][0-9]{0,8}|0"
#: RFC 3164 with PRI, a BSD TIMESTAMP, a HOSTNAME or none, and a TAG "name:",
#: "name[pid]:" or "name[pid]"; groups: PRIVAL, the minute, the second, the
#: fraction, HOSTNAME, TAG name, pid. HOSTNAME and TAG name hold no ":", "["
#: or "]", so a word the per-message rules read as a TAG is never taken for a
#: HOSTNAME here, and the reverse.
SPLIT3164: Final = re.compile(
    r"\n" + _PRI_VALID + _BSD + r" (?:([^ \n:\[\]]+) )?([^ \n:\[\]]+)"
    r"(?:\[(" + _PID_SHORT + r")\]:?|:)(?: |(?=\n)|\Z)")
SPLIT3164_GROUPS: Final = 7
