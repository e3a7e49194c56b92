"""The ``-o`` layouts of whole entries: ``cat``, ``verbose`` and ``export``;
mixed into hostlog.query.output.Formatter."""

from __future__ import annotations

from collections.abc import Callable

from hostlog.journal.fields import (
    field_values,
    format_cursor,
    format_export_entry,
    is_printable,
    record_to_journal,
    to_entry,
)
from hostlog.query.output.colors import (
    ANSI_GREEN,
    ANSI_GREY,
    ANSI_HIGHLIGHT,
    ANSI_NORMAL,
    ANSI_UNDERLINE,
    _priority,
    log_colors,
)
from hostlog.query.output.common import _ALWAYS, _multiline, format_bytes
from hostlog.record import Record


class EntryLayouts:
    """The cat, verbose and export layouts of
    :class:`hostlog.query.output.Formatter` (which sets the attributes below;
    ``_verbose_timestamp`` and ``_display_usec`` come from ShortLayouts)."""

    color: bool
    all_fields: bool
    output_fields: frozenset[str] | None
    _cat_fields: list[str]
    _verbose_timestamp: Callable[[int], str]
    _display_usec: Callable[[Record], int]

    # -- cat --------------------------------------------------------------------------
    def _cat(self, record: Record, highlight: tuple[int, int] | None) -> bytes:
        on = off = hl_on = b""
        if self.color:
            # sd_journal_get_data() returns the first value of a field.
            prio = field_values(record, "PRIORITY")
            on, off, hl_on = log_colors(_priority(prio[0] if prio else None))
        out = []
        for name in self._cat_fields:
            values = field_values(record, name)
            if not values:
                continue
            data = values[0]
            if self.color and highlight is not None and name == "MESSAGE":
                start, end = highlight
                out.append(on + data[:start] + hl_on + data[start:end] + on + data[end:] + off)
            elif self.color:
                out.append(on + data + off)
            else:
                out.append(data)
            out.append(b"\n")
        return b"".join(out)

    # -- the full entry ---------------------------------------------------------------
    def _selected(self, record: Record, always: frozenset[str] = _ALWAYS) -> dict[str, list[bytes]]:
        entry = to_entry(record_to_journal(record))
        wanted = self.output_fields
        return {name: values for name, values in entry.items()
                if (name in _ALWAYS or not name.startswith("__"))
                and (wanted is None or name in always or name in wanted)}

    def _export(self, record: Record, highlight: tuple[int, int] | None) -> bytes:
        selected = self._selected(record)
        return format_export_entry((name, v) for name, values in selected.items() for v in values)

    def _verbose(self, record: Record, highlight: tuple[int, int] | None) -> bytes:
        color = self.color
        stamp = self._verbose_timestamp(self._display_usec(record)).encode()
        cursor = format_cursor(record.origin, record.seq).encode()
        if color:
            out = [ANSI_UNDERLINE + stamp + ANSI_NORMAL + b" " + ANSI_GREY
                   + b"[" + cursor + b"]" + ANSI_NORMAL + b"\n"]
        else:
            out = [stamp + b" [" + cursor + b"]\n"]
        # verbose lists _BOOT_ID as an ordinary field: --output-fields applies.
        for name, values in self._selected(record, frozenset()).items():
            if name.startswith("__"):
                continue  # shown in the header line
            key = name.encode()
            on = off = b""
            if color and name == "MESSAGE":
                on, off = ANSI_HIGHLIGHT, ANSI_NORMAL
            elif color and name.startswith("_"):
                on, off = ANSI_GREEN, ANSI_NORMAL
            for value in values:
                if self.all_fields or is_printable(value):
                    out.append(b"    " + on + key + b"="
                               + _multiline(value, 4 + len(key) + 1) + off)
                else:
                    out.append(b"    " + on + key + b"=["
                               + format_bytes(len(value)).encode() + b" blob data]" + off + b"\n")
        return b"".join(out)
