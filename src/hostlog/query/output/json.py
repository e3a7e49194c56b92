"""The json family of ``-o`` layouts (``json``, ``json-pretty``, ``json-sse``,
``json-seq``); mixed into hostlog.query.output.Formatter."""

from __future__ import annotations

import json
import re

from hostlog.journal.fields import is_printable, record_to_journal, to_entry
from hostlog.query.output.common import _ALWAYS
from hostlog.record import Record

JSON_THRESHOLD = 4096  # logs-show.c: "NAME=value" this long is null in JSON
_JSON_NOT_PRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff" + "".join(
    chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(1, 17)) + "]")


class JsonLayouts:
    """The json layouts of :class:`hostlog.query.output.Formatter` (which sets
    the attributes below)."""

    mode: str
    output_fields: frozenset[str] | None
    all_fields: bool

    def _json(self, record: Record, highlight: tuple[int, int] | None) -> bytes:
        obj: dict[str, object] = {}
        wanted = self.output_fields
        for name, value in record_to_journal(record).items():
            if name.startswith("__") and name not in _ALWAYS:
                continue
            if wanted is not None and name not in _ALWAYS and name not in wanted:
                continue
            if isinstance(value, str):
                obj[name] = self._json_text(name, value)
            else:
                converted = [self._json_value(name, v) for v in to_entry({name: value})[name]]
                obj[name] = converted[0] if len(converted) == 1 else converted
        if self.mode == "json-pretty":
            return _pretty(obj).encode() + b"\n"
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        if self.mode == "json-seq":
            return b"\x1e" + text + b"\n"
        if self.mode == "json-sse":
            return b"data: " + text + b"\n\n"
        return text + b"\n"

    def _json_text(self, name: str, value: str) -> object:
        """_json_value() for a text value, without encoding it when it is short."""
        if not self.all_fields and len(name) + 1 + 4 * len(value) >= JSON_THRESHOLD:
            if len(name) + 1 + len(value.encode("utf-8", "surrogateescape")) >= JSON_THRESHOLD:
                return None
        if value.isascii():
            if value.isprintable() or _JSON_NOT_PRINTABLE.search(value) is None:
                return value
        elif _JSON_NOT_PRINTABLE.search(value) is None and _valid_utf8(value):
            return value
        return self._json_value(name, value.encode("utf-8", "surrogateescape"))

    def _json_value(self, name: str, value: bytes) -> object:
        if not self.all_fields and len(name) + 1 + len(value) >= JSON_THRESHOLD:
            return None
        if is_printable(value):
            return value.decode("utf-8")
        return list(value)


def _valid_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
        return False
    return True


def _pretty(value: object, prefix: str = "") -> str:
    """systemd json_format() with JSON_FORMAT_PRETTY: TAB indentation."""
    inner = prefix + "\t"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)} : {_pretty(v, inner)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + prefix + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [inner + _pretty(v, inner) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + prefix + "]"
    return json.dumps(value, ensure_ascii=False)
