"""What a compiled regular expression's shape tells a scan before it runs.

``-g`` in queries, ``match.grep`` in rules and ``redact`` patterns all search
many messages with one pattern; a plain text every match must contain lets
them skip most messages with ``str.find`` / ``bytes.find`` (far cheaper than
the regex), and a pattern with no look-around can run once over messages
joined by newlines. The shape comes from CPython's own regex parser
(``re._parser``), a private module: where another Python lacks it or parses
differently, every function here answers "nothing known", and callers fall
back to running the pattern on each message, which is always correct.
"""

from __future__ import annotations

import re
from typing import Any

# What a Python whose re internals differ raises here: the module or a name
# missing, or a tree of another shape.
_INTERNALS_DIFFER = (ImportError, AttributeError, TypeError, ValueError)


def _tree(pattern: re.Pattern[str]) -> Any | None:
    """The parsed pattern (re._parser's SubPattern), or None where unknown."""
    try:
        from re import _parser  # type: ignore[attr-defined]
        return _parser.parse(pattern.pattern, pattern.flags)
    except _INTERNALS_DIFFER:
        return None


def longest_literal(pattern: re.Pattern[str]) -> str | None:
    """The longest run of plain characters at the top level of ``pattern``
    (outside any repeat, branch or group): every match contains it. None
    when the pattern has no such run or its shape is unknown."""
    tree = _tree(pattern)
    if tree is None:
        return None
    try:
        from re._constants import LITERAL
        best = run = ""
        for op, av in tree:
            if op is LITERAL:
                run += chr(av)
                if len(run) > len(best):
                    best = run
            else:
                run = ""
    except _INTERNALS_DIFFER:
        return None
    return best


def plain_text(pattern: re.Pattern[str]) -> str | None:
    """The text a pattern of plain characters only matches (None for any
    other, and for a case-insensitive one)."""
    if pattern.flags & re.IGNORECASE:
        return None
    tree = _tree(pattern)
    if tree is None:
        return None
    try:
        from re._constants import LITERAL
        if not all(op is LITERAL for op, _ in tree):
            return None
        return "".join(chr(av) for _, av in tree)
    except _INTERNALS_DIFFER:
        return None


def context_free(pattern: re.Pattern[str]) -> bool:
    """Whether the pattern matches a message the same inside a longer text
    of messages joined by newlines: no look-around and no anchor other than
    ``\\b``. False where the shape is unknown."""
    tree = _tree(pattern)
    if tree is None:
        return False
    try:
        from re._constants import ASSERT, ASSERT_NOT, AT, AT_BOUNDARY
    except _INTERNALS_DIFFER:
        return False

    def walk(items: Any) -> bool:
        for op, av in items:
            if op in (ASSERT, ASSERT_NOT):
                return False
            if op is AT and av is not AT_BOUNDARY:
                return False
            for sub in _subpatterns(av):
                if not walk(sub):
                    return False
        return True

    try:
        return walk(tree)
    except _INTERNALS_DIFFER:
        return False


def _subpatterns(av: Any) -> list[Any]:
    out: list[Any] = []
    if isinstance(av, (list, tuple)):
        for x in av:
            if hasattr(x, "data") or (isinstance(x, list) and x and isinstance(x[0], tuple)):
                out.append(x)
            elif isinstance(x, (list, tuple)):
                out.extend(_subpatterns(x))
    elif hasattr(av, "data"):
        out.append(av)
    return out
