"""Token masks: the variable parts of a message replaced by typed placeholders.

Pure. ``mask(message)`` replaces, in one scan of the message by the regex
engine, every run of text that is a value rather than wording:

=============  ==================================================================
placeholder    what it stands for
=============  ==================================================================
``<TIME>``     a date and/or time: ``2005-07-03``, ``2005-07-03T10:05:25.5+02:00``,
               ``10:05:25.123``, ``Sun Jul  3 10:05:25 2005``, ``Jul  3 10:05:25``
``<UUID>``     ``123e4567-e89b-12d3-a456-426614174000`` (any case)
``<IP>``       an IPv4 address (``10.0.0.1``; a ``:port`` after it is a ``<NUM>``) or an
               IPv6 address with a ``::`` or all eight groups (``fe80::1%eth0``)
``<MAC>``      ``00:1a:2b:3c:4d:5e`` or ``00-1A-2B-3C-4D-5E``
``<URL>``      what follows ``scheme:``: ``hdfs://host:9000/a/b`` -> ``hdfs://<URL>``
``<PATH>``     an absolute path of at least one component (``/var/log/x.log``, ``~/x``,
               ``./x``, ``../x``) or a Windows path (``C:\\x\\y``)
``<HEX>``      ``0x1f``; or a run of 8 or more hex digits holding a digit (hashes, ids)
``<DURATION>`` a number with a time unit: ``12ms``, ``1h2m3.5s``, ``12 ms``, ``3 seconds``
``<SIZE>``     a number with a size unit: ``4KB``, ``1.5GiB``, ``16M``, ``5.2 KB``, ``300 bytes``
``<NUM>``      an integer or a decimal, with its sign (``-5``, ``3.14``, ``1,234,567``)
=============  ==================================================================

A value is masked only when it is not glued to a letter or digit: ``uid=0``
becomes ``uid=<NUM>`` and ``blk_-42`` ``blk_<NUM>``, while ``R02``, ``jk2_init`` or
``wl0`` stay as they are (the miner sees the digit and treats the token as a
parameter-like token). Where two masks could apply, the one listed first wins.

Speed: the masks are one expression whose first element is a character set
(the characters a value can start with), so the engine skips everything
else in C; each alternative then checks the first character it needs with
a one-character look-behind. That is why the expression is written as
"first character, then the rest" rather than one readable pattern per mask.

The placeholders are part of the templates, and so of the pattern ids:
renaming one or changing what a mask matches changes ids. ``MASKS_VERSION``
is saved in the miner's state, which refuses a state made with other masks.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MASKS_VERSION", "PLACEHOLDERS", "mask"]

#: Bumped whenever a mask is added, removed, reordered or changes what it matches.
MASKS_VERSION: Final = 1

#: Every placeholder a mask can write.
PLACEHOLDERS: Final = frozenset(
    ("<TIME>", "<UUID>", "<IP>", "<MAC>", "<URL>", "<PATH>", "<HEX>", "<DURATION>", "<SIZE>", "<NUM>"))

_H: Final = "[0-9A-Fa-f]"
_END: Final = r"(?![A-Za-z0-9])"  # not glued to a letter or digit after
# Look-behinds of width 2, placed after the first character: what precedes it.
_FREE: Final = r"(?<![A-Za-z0-9].)"  # not glued to a letter or digit before
_CLOCK: Final = r"\d{1,2}:\d{2}:\d{2}(?:[.,]\d{1,9})?"
_ZONE: Final = r"(?:Z|[+-]\d{2}:?\d{2})?"
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WDAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH: Final = "(?:" + "|".join(_MONTHS) + ")"
_UNIT_GLUED: Final = r"(?:ns|us|µs|ms|s|sec|secs|m|min|mins|h|hr|hrs|d)"
_UNIT_WORD: Final = r"(?:ns|us|µs|ms|secs?|seconds?|mins?|minutes?|hours?|days?)"
_SIZE_UNIT: Final = r"(?:[KMGTPE]i?B|[kKMGT]b?|B|bytes| (?:[KMGTPE]i?B|B|bytes))"
_IPV4_REST: Final = r"\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![0-9A-Za-z]|\.\d)"
_PATH_PART: Final = r"/[\w.@+%~-]+"


def _rest_of(words: tuple[str, ...]) -> str:
    """The rest of any of ``words`` once their first letter is consumed."""
    return "(?:" + "|".join(f"(?<={w[0]}){w[1:]}" for w in words) + ")"


_NAMED_DATE: Final = (
    # [Sun[,] ]Jul  3[,] [2005 ]10:05:25[ 2005]; the first letter is consumed
    r"(?:" + _rest_of(_WDAYS) + r",? +" + _MONTH + "|" + _rest_of(_MONTHS) + r")"
    r" +\d{1,2},? +(?:\d{4} +)?" + _CLOCK + r"(?: +\d{4})?" + _END
)

_NUM_REST: Final = r"\d*(?:[.,]\d+)*" + _END
_HEX_DIGIT_FIRST: Final = (
    # forms that may start with a digit or a hex letter, in priority order
    ("u", "<UUID>", _H + r"{7}-" + _H + r"{4}-" + _H + r"{4}-" + _H + r"{4}-" + _H + r"{12}" + _END),
    ("i6", "<IP>", r"(?<![:.].)" + _H + r"{0,3}:(?:(?:" + _H + r"{1,4}:){6}" + _H + r"{1,4}|(?:" + _H
     + r"{1,4}:){0,6}:(?:" + _H + r"{1,4}(?::" + _H + r"{1,4}){0,6})?)(?:%[0-9A-Za-z]+)?(?![0-9A-Za-z:])"),
    ("mac", "<MAC>", r"(?:" + _H + r":" + _H + r"{2}(?::" + _H + r"{2}){4}|" + _H + r"-" + _H + r"{2}(?:-"
     + _H + r"{2}){4})" + _END),
)
_HEX_RUN: Final = ("x", "<HEX>", r"(?:(?<=\d)|(?=[A-Fa-f]*\d))" + _H + r"{7,}" + _END)

# Each entry: (group, placeholder, the rest of the value after its first character).
# Grouped by that first character; within a group, in priority order.
_AFTER_DIGIT: Final = (
    # the common case first: a plain number before a delimiter (not before a
    # unit, nor a '.', ',', ':' or '-' that could make it an address, a time ...)
    ("n0", "<NUM>", r"\d*(?=[\s)\]}>\"'=;|]|$)(?! ?" + _UNIT_WORD + _END + r"| (?:[KMGTPE]i?B|B|bytes)" + _END + ")"),
    ("t2", "<TIME>", r"\d{3}-\d{2}-\d{2}(?:[T ]" + _CLOCK + _ZONE + r")?" + _END),
    ("t3", "<TIME>", r"\d?:\d{2}:\d{2}(?:[.,]\d{1,9})?" + _END),
    *_HEX_DIGIT_FIRST,
    ("i4", "<IP>", r"(?<![.].)" + _IPV4_REST),
    ("x0", "<HEX>", r"(?<=0)[xX]" + _H + r"+" + _END),
    ("d", "<DURATION>", r"\d*(?:\.\d+)?(?:" + _UNIT_GLUED + r"(?:\d+(?:\.\d+)?" + _UNIT_GLUED + r"){0,3}| "
     + _UNIT_WORD + r")" + _END),
    ("s", "<SIZE>", r"\d*(?:\.\d+)?" + _SIZE_UNIT + _END),
    ("n", "<NUM>", _NUM_REST),
    _HEX_RUN,
)
_AFTER_UPPER: Final = (
    ("t1", "<TIME>", _NAMED_DATE),
    ("p3", "<PATH>", r":\\[^\s\"']*"),
    *_HEX_DIGIT_FIRST,
    _HEX_RUN,
)
_AFTER_LOWER_HEX: Final = (*_HEX_DIGIT_FIRST, _HEX_RUN)
_AFTER_SIGN: Final = (("sn", "<NUM>", r"\d+(?:[.,]\d+)*" + _END),)
_AFTER_SLASH: Final = (
    ("p1", "<PATH>", r"(?<![/.~:].)(?!\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w.]))[\w.@+%~-]+(?:"
     + _PATH_PART + r")*/?"),
)
_AFTER_TILDE_DOT: Final = (("p2", "<PATH>", r"(?<![/.~:].)(?:(?<=\.)\.)?(?:" + _PATH_PART + r")+/?"),)
_AFTER_COLON: Final = (
    ("i6c", "<IP>", r"(?<![:.].):" + _H + r"{1,4}(?::" + _H + r"{1,4}){0,6}(?:%[0-9A-Za-z]+)?(?![0-9A-Za-z:])"),
)
# (first character, alternatives); all but the URL need a value not glued to a word before it
_GROUPS: Final = (
    (r"\d", _AFTER_DIGIT),
    ("[a-f]", _AFTER_LOWER_HEX),
    ("[A-Z]", _AFTER_UPPER),
    ("[-+]", _AFTER_SIGN),
    ("/", _AFTER_SLASH),
    ("[~.]", _AFTER_TILDE_DOT),
    (":", _AFTER_COLON),
)
_URL: Final = ("url", "://<URL>", r"(?<=[A-Za-z0-9+.-]:)//[^\s\])>\"',;]+")



def _compile() -> tuple[re.Pattern[str], dict[str, str]]:
    """The one expression for all masks, and the placeholder of each of its groups."""
    placeholders: dict[str, str] = {}

    def alternation(entries: tuple[tuple[str, str, str], ...]) -> str:
        parts = []
        for group, placeholder, rest in entries:
            name = group
            while name in placeholders:  # an alternative in several groups gets a name in each
                name += "_"
            placeholders[name] = placeholder
            parts.append(f"(?P<{name}>{rest})")
        return "(?:" + "|".join(parts) + ")"

    by_first = "|".join(f"(?<={first}){alternation(entries)}" for first, entries in _GROUPS)
    url = alternation((_URL,))
    return re.compile(_FIRST + "(?:" + _FREE + "(?:" + by_first + ")|(?<=:)" + url + ")"), placeholders


# Every value starts with one of these: the engine skips all other characters in C.
_FIRST: Final = r"[0-9A-Za-f/~.:+\-]"
_MASK_RE, _PLACEHOLDER_OF = _compile()


def _replace(match: re.Match[str]) -> str:
    return _PLACEHOLDER_OF[match.lastgroup]  # type: ignore[index]  # every alternative is a named group


def mask(message: str) -> str:
    """``message`` with every value replaced by its placeholder (see the module's docstring)."""
    return _MASK_RE.sub(_replace, message)
