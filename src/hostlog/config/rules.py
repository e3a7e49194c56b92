"""The ``[[rule]]`` model: what the agent does to records between its
collectors and its spool (docs/rules.md).

A rule selects records with ``match`` -- the words of ``hostlog query``,
read by :func:`hostlog.query.build.build_query` -- and then drops them,
samples them, parses their message into fields, redacts secrets, edits
their fields, takes their priority from a field, or routes them to some
``[[forward]]`` destinations only. The engine is :mod:`hostlog.rules`.

Everything that can be checked here is: the match builds a query, every
regex compiles (a ``parse`` regex needs a named group), field names are
ones a record may carry. That ``to`` names configured destinations is
checked with the whole file (``Config``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator

from hostlog.config.errors import _problems
from hostlog.config.fields import Name, _not_a_string, _Section

__all__ = ["BUILTIN", "MATCH_KEYS", "PARSE_FORMATS", "Rule", "match_words"]

#: ``redact`` entry that stands for the built-in patterns (hostlog.rules.redact).
BUILTIN = "@builtin"
#: ``parse`` values that name a format; anything else is a regex.
PARSE_FORMATS = ("json", "logfmt")
#: ``match`` keys besides FIELD = VALUE: the options of ``hostlog query`` they stand for.
MATCH_KEYS = {"unit": "-u", "identifier": "-t", "priority": "-p", "grep": "-g", "source": "--source",
              "host": "--host"}
#: Fields a rule may not set, rename or remove: hostlog's own (the record's
#: identity, its route), which the spool and the forwarders read.
_RESERVED_PREFIX = "_HOSTLOG_"
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")


def _compiles(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


def _redact_entry(value: str) -> str:
    if value.startswith("@"):
        if value != BUILTIN:
            raise ValueError(f"unknown pattern set {value!r} (the one there is: {BUILTIN!r})")
        return value
    pattern = re.compile(_compiles(value))
    if pattern.fullmatch("") is not None:
        raise ValueError(f"{value!r} matches the empty string (it would mark every position, and "
                         "redact nothing)")
    return value


def _field_name(value: str) -> str:
    if not _FIELD_NAME.fullmatch(value):
        raise ValueError(f"invalid field name {value!r}: 1 to 64 letters, digits and _ . : @ -")
    if value.upper().startswith(_RESERVED_PREFIX):
        raise ValueError(f"{value!r}: fields named {_RESERVED_PREFIX}* are hostlog's own")
    return value


FieldName = Annotated[str, AfterValidator(_field_name)]
MatchValue = str | Annotated[list[str], Field(min_length=1)]


class Rule(_Section):
    """``[[rule]]``: select records at ingest and act on them, in file order."""

    name: Name
    """Unique name: the rule's counts (metrics, ``hostlog ctl status``) are kept under it."""
    match: dict[str, MatchValue] = Field(default_factory=dict)
    """What ``hostlog query`` takes: ``unit``, ``identifier``, ``priority``, ``grep``, ``source``,
    ``host`` and ``FIELD = VALUE`` (a list: any of the values). Empty: every record."""
    drop: bool = False
    """Drop the records matched (counted, per rule)."""
    sample: Annotated[int, Field(ge=1)] | None = None
    """Keep one record in this many of those matched; the others are dropped (counted)."""
    parse: Annotated[str, AfterValidator(_compiles)] | None = None
    """``"json"``, ``"logfmt"``, or a regex with named groups: the message's fields become
    record fields. A message that does not parse is kept, with a ``PARSE_ERROR`` field."""
    redact: Annotated[
        list[Annotated[str, AfterValidator(_redact_entry)]],
        _not_a_string("redact", "a list of regexes, e.g. ['(?i)password=\\S+'] or ['@builtin']"),
    ] = Field(default_factory=list)
    """Regexes whose matches in the message and field values are replaced by ``[REDACTED]``
    (only the group named ``secret``, when the regex has one); ``"@builtin"``: the built-in set."""
    set_fields: dict[FieldName, str] = Field(default_factory=dict, alias="set")
    """Fields set on the records matched (``{ env = "prod" }``)."""
    remove: Annotated[list[FieldName], _not_a_string("remove", 'a list of field names, e.g. ["pid"]')] = Field(
        default_factory=list)
    """Fields removed from the records matched."""
    rename: dict[FieldName, FieldName] = Field(default_factory=dict)
    """Fields renamed, old name = new name."""
    priority_from: FieldName | None = None
    """A field whose value (``debug`` … ``emerg``, ``warn``, ``error``, ``fatal``, ... or 0-7) becomes
    the record's priority."""
    to: Annotated[list[Name], _not_a_string("to", 'a list of [[forward]] names, e.g. ["central"]'),
                  Field(min_length=1)] | None = None
    """Route: the records matched go only to these ``[[forward]]`` destinations (default: all)."""

    @field_validator("match", mode="before")
    @classmethod
    def _match_is_a_table(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError('match must be a table, e.g. { identifier = "web", priority = "err" }')
        return value

    @field_validator("match")
    @classmethod
    def _match(cls, value: dict[str, MatchValue]) -> dict[str, MatchValue]:
        problems = match_problems(value)
        if problems:
            raise _problems(*(((key,), message) for key, message in problems))
        return value

    @field_validator("parse")
    @classmethod
    def _parse(cls, value: str | None) -> str | None:
        if value is not None and value not in PARSE_FORMATS and not re.compile(value).groupindex:
            raise ValueError(f'{value!r}: "json", "logfmt", or a regex with named groups, '
                             "e.g. '(?P<method>[A-Z]+) (?P<path>\\S+)'")
        return value

    @model_validator(mode="after")
    def _checks(self) -> Rule:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        actions = [k for k in ("sample", "parse", "priority_from", "to") if getattr(self, k) is not None]
        actions += [k for k in ("redact", "remove", "rename") if getattr(self, k)]
        actions += ["set"] if self.set_fields else []
        if self.drop and actions:
            problems.append((("drop",), f"a rule that drops does nothing else: {', '.join(actions)} "
                                        "would never apply (write them in a rule of their own)"))
        if not self.drop and not actions:
            problems.append((("name",), f"rule {self.name!r} does nothing: give it drop, sample, parse, "
                                        "redact, set, remove, rename, priority_from or to"))
        if problems:
            raise _problems(*problems)
        return self

    def query_words(self) -> dict[str, Any]:
        """The ``match`` as :func:`hostlog.query.build.build_query` keywords."""
        return match_words(self.match)


def _values(value: MatchValue) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def match_words(match: dict[str, MatchValue]) -> dict[str, Any]:
    """``build_query`` keywords for a ``match`` table (it must have passed :func:`match_problems`)."""
    words: dict[str, Any] = {"units": [], "identifiers": [], "hosts": [], "sources": [], "matches": []}
    for key, value in match.items():
        if key == "unit":
            words["units"] = _values(value)
        elif key == "identifier":
            words["identifiers"] = _values(value)
        elif key == "host":
            words["hosts"] = _values(value)
        elif key == "source":
            words["sources"] = _values(value)
        elif key in ("priority", "grep"):
            words[key] = value
        else:
            words["matches"] += [f"{key}={v}" for v in _values(value)]
    return words


def match_problems(match: dict[str, MatchValue]) -> list[tuple[str, str]]:
    """(key, message) for each part of a ``match`` table that ``hostlog query`` would refuse."""
    from hostlog.query.build import build_query
    from hostlog.query.filters import parse_matches

    problems = []
    for key, value in match.items():
        if key in ("priority", "grep") and not isinstance(value, str):
            problems.append((key, f"{key} takes one string, as {MATCH_KEYS[key]} does"))
            continue
        if key in MATCH_KEYS:
            try:
                build_query(**match_words({key: value}))
            except ValueError as exc:
                problems.append((key, str(exc)))
            continue
        if not re.fullmatch(r"[A-Z0-9_]+", key):
            problems.append((key, f"unknown match key {key!r}: {', '.join(MATCH_KEYS)}, or a field "
                                  "name in upper case (FIELD = VALUE, as hostlog query takes it)"))
            continue
        try:
            parse_matches([f"{key}={v}" for v in _values(value)])
        except ValueError as exc:
            problems.append((key, str(exc)))
    return problems
