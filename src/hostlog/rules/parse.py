"""``parse``: a message's fields, from JSON, logfmt or a regex with named
groups. Pure.

Each parser takes the message text and returns the fields it found, or
raises :class:`ParseFailed` with a reason that names what was expected and
where, never the message's content (the reason is stored in the record's
``PARSE_ERROR`` field and may be logged; the message may hold a secret).

Values become text: a JSON string as it is, a number as it was written,
true, false or null as those words, an object or array as compact JSON. Keys that name
hostlog's own fields (``_HOSTLOG_*``) and empty keys are left out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

__all__ = ["ParseFailed", "Parser", "make_parser", "parse_json", "parse_logfmt"]

Parser = Callable[[str], dict[str, str]]
_RESERVED = "_HOSTLOG_"
#: keys longer than this are not taken as field names
MAX_KEY = 128


class ParseFailed(ValueError):
    """The message is not in the format; ``str()`` is the reason (no content)."""


def _key_ok(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY and not (key[:1] == "_" and key[:9].upper() == _RESERVED)


def _json_text(value: object) -> str:
    kind = type(value)
    if kind is str:
        return value  # type: ignore[return-value]
    if kind is int:
        return str(value)  # (what JSON writes for an integer)
    if value is True:
        return "true"
    if value is False:
        return "false"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# numbers as the text they were written as: what a field keeps of them, and
# the common JSON log line (strings and numbers) then needs no pass after decoding
_DECODE_TEXT = json.JSONDecoder(parse_int=str, parse_float=str, parse_constant=str).raw_decode
_DECODE = json.JSONDecoder().raw_decode
_WHITESPACE = " \t\n\r"
_STR = {str}


def parse_json(text: str) -> dict[str, str]:
    """The members of a JSON object."""
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _DECODE_TEXT(text, start)
    except json.JSONDecodeError as exc:
        raise ParseFailed(f"json: {exc.msg} at character {exc.pos}") from None
    except RecursionError:
        raise ParseFailed("json: nested too deeply") from None
    if end != len(text) and text[end:].strip(_WHITESPACE):
        raise ParseFailed(f"json: extra data at character {end}")
    if not isinstance(value, dict):
        raise ParseFailed(f"json: an object was expected, not {type(value).__name__}")
    types = set(map(type, value.values()))
    if not types <= _STR:
        # nested objects and arrays: written back as compact JSON (of the numbers' values)
        nested = _DECODE(text, start)[0] if dict in types or list in types else value
        value = {k: _json_text(nested[k] if type(v) is dict or type(v) is list else v)
                 for k, v in value.items()}
    keys = "\x00" + "\x00".join(value)
    if "\x00_" in keys or "\x00\x00" in keys or keys.endswith("\x00") or (
            len(keys) > MAX_KEY and max(map(len, value)) > MAX_KEY):
        return {k: v for k, v in value.items() if _key_ok(k)}
    return value


_SPACE = re.compile(r"\s*")
_KEY = re.compile(r'[^\s="]+')
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_PLAIN = re.compile(r'[^\s"]*')
_WORD = re.compile(r"\S+")
_UNESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def _skip_space(text: str, pos: int) -> int:
    m = _SPACE.match(text, pos)
    return m.end() if m is not None else pos


def parse_logfmt(text: str) -> dict[str, str]:
    """``key=value key2="a value" ...`` (logfmt). Words without ``=`` are
    skipped; a message without a single ``key=value`` pair, or with a quote
    left open, does not parse."""
    out: dict[str, str] = {}
    pairs = 0
    pos = _skip_space(text, 0)
    end = len(text)
    while pos < end:
        key = _KEY.match(text, pos)
        if key is not None and key.end() < end and text[key.end()] == "=":
            start = key.end() + 1
            if text.startswith('"', start):
                quoted = _QUOTED.match(text, start)
                if quoted is None:
                    raise ParseFailed(f"logfmt: the quote at character {start} is not closed")
                value = _UNESCAPE.sub(lambda e: _ESCAPES.get(e.group(1), e.group(1)), quoted.group(1))
                pos = quoted.end()
            else:
                plain = _PLAIN.match(text, start)
                assert plain is not None  # (matches the empty string)
                value, pos = plain.group(0), plain.end()
            pairs += 1
            if _key_ok(key.group(0)):
                out[key.group(0)] = value
        elif text.startswith('"', pos):
            quoted = _QUOTED.match(text, pos)
            if quoted is None:
                raise ParseFailed(f"logfmt: the quote at character {pos} is not closed")
            pos = quoted.end()
        else:
            word = _WORD.match(text, pos)
            assert word is not None  # (not at a space)
            pos = word.end()
        pos = _skip_space(text, pos)
    if not pairs:
        raise ParseFailed("logfmt: no key=value pair")
    return out


def make_parser(spec: str) -> Parser:
    """The parser for a rule's ``parse`` value: ``json``, ``logfmt`` or a regex."""
    if spec == "json":
        return parse_json
    if spec == "logfmt":
        return parse_logfmt
    pattern = re.compile(spec)

    def parse_regex(text: str) -> dict[str, str]:
        m = pattern.search(text)
        if m is None:
            raise ParseFailed("regex: no match")
        return {k: v for k, v in m.groupdict().items() if v is not None and _key_ok(k)}

    return parse_regex
