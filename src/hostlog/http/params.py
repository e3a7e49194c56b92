"""The filter of an HTTP request, from its query string: the words of
``hostlog query`` as parameters, turned into a query by the same code
(:func:`hostlog.query.build.build_query`).

    unit, identifier, host, source  (repeatable: ?unit=a&unit=b)
    priority  (a level or FROM..TO), since, until  (systemd.time), grep
    FIELD=VALUE  (upper-case names: ?_SYSTEMD_UNIT=nginx.service)
    n, reverse, cursor  (read by the endpoints that page)

Anything else is refused with 400 and the parameter's name, as a bad config
key is: a typo must not silently widen what is shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from hostlog.query.build import build_query
from hostlog.query.filters import Query

__all__ = ["FILTER_PARAMS", "ParamError", "query_from_params"]

FILTER_PARAMS = ("unit", "identifier", "host", "source", "priority", "since", "until", "grep",
                 "case_sensitive")
_FIELD = re.compile(r"[A-Z0-9_]+")
_TRUE = ("1", "yes", "true", "on", "")


class ParamError(ValueError):
    """A parameter that cannot be used; the text names it."""


def truthy(value: str) -> bool:
    """``?reverse``, ``?reverse=1``, ``?reverse=true``: true; ``0``, ``no``, ``false``: false."""
    return value.lower() in _TRUE


def query_from_params(params: Mapping[str, str] | Iterable[tuple[str, str]], *,
                      allowed: Iterable[str] = ()) -> Query:
    """The query of ``params`` (pairs, a parameter may repeat). ``allowed``:
    other parameter names the endpoint reads itself (``n``, ``cursor``, ...)."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    extra = set(allowed)
    lists: dict[str, list[str]] = {"unit": [], "identifier": [], "host": [], "source": []}
    single: dict[str, str] = {}
    matches: list[str] = []
    for name, value in pairs:
        if name in lists:
            lists[name].append(value)
        elif name in FILTER_PARAMS:
            if name in single:
                raise ParamError(f"parameter {name!r} given twice")
            single[name] = value
        elif _FIELD.fullmatch(name):
            matches.append(f"{name}={value}")
        elif name not in extra:
            known = ", ".join((*FILTER_PARAMS, *sorted(extra), "FIELD=VALUE"))
            raise ParamError(f"unknown parameter {name!r} (known: {known})")
    case = single.get("case_sensitive")
    try:
        return build_query(units=lists["unit"], identifiers=lists["identifier"], hosts=lists["host"],
                           sources=lists["source"], matches=matches, priority=single.get("priority"),
                           since=single.get("since"), until=single.get("until"), grep=single.get("grep"),
                           case_sensitive=None if case is None else truthy(case), utc=True)
    except ValueError as exc:
        raise ParamError(str(exc)) from None
