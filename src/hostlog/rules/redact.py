"""Redaction: regexes whose matches are replaced by ``[REDACTED]``, and the
built-in set (``redact = ["@builtin"]``). Pure.

A pattern with a group named ``secret`` keeps what is around that group
(``password=[REDACTED]``, ``Bearer [REDACTED]``); without one the whole
match goes. The card number pattern has a check as well: a run of digits
is a card number only when it passes the Luhn check.

Speed: a batch's messages are searched together, and most batches hold no
secret. Each pattern has, when it can, a *literal*: a text every match
contains (``password=`` in ``(?i)password=\\S+``, found case-insensitively
when the pattern is). A batch whose messages, joined, do not contain it
has no match, which one ``str.rfind`` tells; where it is found, only the
messages that contain it are searched with the regex. The card number
pattern has a shape instead: a run of 13 digits, spaces or dashes, found
with one ``bytes.translate`` and one ``rfind``. A pattern without either is
searched over every message, as ``hostlog query -g`` does
(hostlog.query.filters.GrepScan).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hostlog.query.filters import GrepScan
from hostlog.query.regex_shape import longest_literal

if TYPE_CHECKING:
    from hostlog.rules.select import BatchView

__all__ = ["BUILTIN_PATTERNS", "MASK", "Redactor", "compile_redactors", "luhn_ok"]

MASK = "[REDACTED]"


def luhn_ok(digits: str) -> bool:
    """The Luhn check of a card number's digits."""
    total = 0
    for k, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if k % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# a card number is 13 to 19 digits with single spaces or dashes between: a run
# of at least 13 of those characters, which one translate and one rfind find
_CARD_SHAPE = bytes(0x64 if chr(c) in "0123456789 -" else 0x78 for c in range(256))
_CARD_RUN = b"d" * 13


def _card(match: re.Match[str]) -> bool:
    digits = re.sub(r"[ -]", "", match.group("secret"))
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


#: ``@builtin``: (name, pattern, literal or None, check or None). Each keeps
#: its key (``password=``) and replaces the secret; literals are lower case
#: for the case-insensitive ones.
BUILTIN_PATTERNS: tuple[tuple[str, str, str | None, Callable[[re.Match[str]], bool] | None], ...] = (
    ("bearer token", r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/-]+=*)", "bearer", None),
    ("password in a URL", r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]+:(?P<secret>[^\s/@]+)@", "://", None),
    ("password=", r"(?i)\b(?:pass|passwd|password)\s*[=:]\s*(?P<secret>[^\s&,;]+)", "pass", None),
    ("pwd=", r"(?i)\bpwd\s*[=:]\s*(?P<secret>[^\s&,;]+)", "pwd", None),
    ("secret=", r"(?i)\b\w*secret\s*[=:]\s*(?P<secret>[^\s&,;]+)", "secret", None),
    ("token=", r"(?i)\b\w*token\s*[=:]\s*(?P<secret>[^\s&,;]+)", "token", None),
    ("api key=", r"(?i)\b\w*(?:api|access|private|secret)[_-]?key\s*[=:]\s*(?P<secret>[^\s&,;]+)", "key",
     None),
    ("AWS access key id", r"\b(?P<secret>AKIA[0-9A-Z]{16})\b", "AKIA", None),
    ("AWS temporary access key id", r"\b(?P<secret>ASIA[0-9A-Z]{16})\b", "ASIA", None),
    ("card number", r"(?<![0-9])(?P<secret>[0-9](?:[ -]?[0-9]){12,18})(?![0-9])", None, _card),
)


@dataclass
class Redactor:
    """One pattern: what it replaces, and how a batch is searched for it."""

    pattern: re.Pattern[str]
    literal: str | None  # in every match; lower case when ``folded``
    folded: bool  # the literal is looked for case-insensitively
    check: Callable[[re.Match[str]], bool] | None = None
    name: str = ""
    #: (translate table, run): every match is such a run of the translated text
    shape: tuple[bytes, bytes] | None = None

    def __post_init__(self) -> None:
        self._scan = GrepScan(self.pattern)
        self._secret = "secret" in self.pattern.groupindex

    def _replace(self, m: re.Match[str]) -> str:
        if self.check is not None and not self.check(m):
            return m.group(0)
        if not self._secret:
            return MASK
        start, end = m.span("secret")
        if start < 0:
            return m.group(0)
        whole = m.group(0)
        base = m.start()
        return whole[:start - base] + MASK + whole[end - base:]

    def sub(self, text: str) -> str:
        """``text`` with every match replaced."""
        return self.pattern.sub(self._replace, text)

    def sub_value(self, value: str | bytes) -> str | bytes:
        """A message or field value with every match replaced (bytes stay bytes)."""
        if isinstance(value, str):
            return self.sub(value)
        text = value.decode("utf-8", "surrogateescape")
        out = self.sub(text)
        return value if out == text else out.encode("utf-8", "surrogateescape")

    def may_match(self, text: str) -> bool:
        """False when ``text`` cannot hold a match (it lacks the literal)."""
        literal = self.literal
        if literal is None:
            return True
        if self.folded:
            return literal in text.lower() if text.isascii() else True
        return literal in text

    def redact(self, value: str | bytes) -> str | bytes:
        """:meth:`sub_value`, after a look for the literal (a field value)."""
        text = value if isinstance(value, str) else value.decode("utf-8", "surrogateescape")
        if not self.may_match(text):
            return value
        return self.sub_value(value)

    def hits(self, view: BatchView, idx: list[int] | None, *, exact: bool = True) -> list[int]:
        """Rows (of ``idx``, or of all) whose message has a match (not
        ``exact``: and perhaps a few more, which hold the literal)."""
        msgs = view.msgs()
        literal = self.literal
        if self.shape is not None:  # (the card numbers)
            table, run = self.shape
            shaped = view.shape(table)
            if shaped is not None:
                if shaped.rfind(run) < 0:
                    return []
                found = _holding(shaped, view.starts(), run)
                if idx is not None:
                    wanted = set(idx)
                    found = [i for i in found if i in wanted]
                search = self.pattern.search
                return [i for i in found if search(_text(msgs[i])) is not None]
        if literal is not None:
            text = view.lowered() if self.folded else view.joined()
            if text is not None:
                if text.rfind(literal) < 0:
                    return []
                found = _holding(text, view.starts(), literal)
                if idx is not None:
                    wanted = set(idx)
                    found = [i for i in found if i in wanted]
                if not exact:
                    return found
                search = self.pattern.search
                return [i for i in found if search(_text(msgs[i])) is not None]
        return self._scan.select(msgs, idx)


def _text(m: str | bytes) -> str:
    return m if isinstance(m, str) else m.decode("utf-8", "surrogateescape")


def _holding(text: Any, starts: list[int], literal: Any) -> list[int]:
    """The rows whose message, in ``text`` (the messages joined with NUL,
    message k from ``starts[k]``), contains ``literal``, ascending. (Searched
    from the end: ``str.rfind`` is the faster of the two here.)"""
    out = []
    pos = text.rfind(literal)
    while pos >= 0:
        k = bisect_right(starts, pos) - 1
        out.append(k)
        if k == 0:
            break
        pos = text.rfind(literal, 0, starts[k] - 1 + len(literal) - 1)
    out.reverse()
    return out


def literal_of(pattern: re.Pattern[str]) -> tuple[str | None, bool]:
    """A text every match of ``pattern`` contains, and whether it is to be
    looked for case-insensitively: the longest run of plain characters at
    the top level of the pattern (outside any group, branch or repeat), of
    three characters at least. (None, False) when there is none."""
    best = longest_literal(pattern)
    if best is None:
        return None, False
    if len(best) < 3 or "\x00" in best:
        return None, False
    if pattern.flags & re.IGNORECASE:
        if not best.isascii():
            return None, False
        return best.lower(), True
    return best, False


def compile_redactors(entries: Sequence[str]) -> list[Redactor]:
    """The redactors of a rule's ``redact`` list (``@builtin`` stands for the built-in set)."""
    out: list[Redactor] = []
    for entry in entries:
        if entry == "@builtin":
            for name, source, literal, check in BUILTIN_PATTERNS:
                pattern = re.compile(source)
                shape = (_CARD_SHAPE, _CARD_RUN) if check is _card else None
                out.append(Redactor(pattern, literal, bool(pattern.flags & re.IGNORECASE), check, name, shape))
            continue
        pattern = re.compile(entry)
        literal, folded = literal_of(pattern)
        out.append(Redactor(pattern, literal, folded, None, entry))
    return out
