"""Helpers that several ``-o`` layouts (hostlog.query.output) share: sizes,
the multi-line message layout, field look-ups."""

from __future__ import annotations

from hostlog.journal.fields import HEADER_FIELDS, field_values, is_printable
from hostlog.record import Record

PRINT_CHAR_THRESHOLD = 300  # logs-show.c: longer host/ident/pid are not shown
_ALWAYS = frozenset(HEADER_FIELDS)


def format_bytes(n: int) -> str:
    """systemd FORMAT_BYTES(): ``18B``, ``1.5K``, ``10.0M`` (powers of 1024)."""
    suffixes = ("E", "P", "T", "G", "M", "K")
    factors = [1024 ** (6 - i) for i in range(6)]
    for i, factor in enumerate(factors):
        if n >= factor:
            if i != 5:
                tenth = (n // factors[i + 1] * 10 // factors[5]) % 10
            else:
                tenth = (n * 10 // factor) % 10
            return f"{n // factor}.{tenth}{suffixes[i]}"
    return f"{n}B"


def _shall_print(value: bytes, all_fields: bool) -> bool:
    return all_fields or (len(value) < PRINT_CHAR_THRESHOLD and is_printable(value))


def _last(record: Record, name: str) -> bytes | None:
    values = field_values(record, name)
    return values[-1] if values else None


def _multiline(message: bytes, prefix: int, on: bytes = b"", off: bytes = b"",
               hl_on: bytes = b"", highlight: tuple[int, int] | None = None) -> bytes:
    """print_multiline() with full width (journalctl's default): every line,
    continuation lines indented by ``prefix`` spaces, colours per line."""
    if not message:
        return b"\n"
    lines = message.split(b"\n")
    if not lines[-1]:
        lines.pop()
    out = []
    for i, line in enumerate(lines):
        line = line.split(b"\0", 1)[0]  # printf("%.*s") stops at NUL
        indent = b" " * prefix if i else b""
        if i == 0 and highlight is not None and highlight[0] < len(line):
            start, end = highlight
            out.append(indent + on + line[:start] + hl_on + line[start:min(len(line), end)]
                       + (on + line[end:] if len(line) > end else b"") + off + b"\n")
        else:
            out.append(indent + on + line + off + b"\n")
    return b"".join(out)
