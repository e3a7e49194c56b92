"""A :class:`~hostlog.query.filters.Query` from the words of ``hostlog query``:
the one place that turns them into a query, for the command line, the HTTP
API, the live tail and the rules."""

from __future__ import annotations

import time

from hostlog.query.filters import Query, compile_grep, parse_matches

__all__ = ["build_query"]


def build_query(*, units: list[str] = (), identifiers: list[str] = (),  # type: ignore[assignment]
                hosts: list[str] = (), sources: list[str] = (),  # type: ignore[assignment]
                matches: list[str] = (), priority: str | None = None,  # type: ignore[assignment]
                since: str | None = None, until: str | None = None, grep: str | None = None,
                case_sensitive: bool | None = None, utc: bool = False,
                now_ns: int | None = None) -> Query:
    """``-u``, ``-t``, ``--host``, ``--source``, ``FIELD=VALUE`` (``+`` between
    groups), ``-p``, ``-S``, ``-U`` (systemd.time), ``-g`` as journalctl reads
    them. ValueError says what is wrong, in journalctl's words where it has some."""
    from hostlog.query.priority import parse_priority, selects_all

    now = time.time_ns() if now_ns is None else now_ns
    query = Query(units=list(units), identifiers=list(identifiers), hosts=list(hosts),
                  sources=list(sources), matches=parse_matches(list(matches)))
    if priority is not None:
        allowed = parse_priority(priority)
        # all eight levels: journalctl adds no match, so records without a priority show too
        query.priorities = None if selects_all(allowed) else allowed
    if since or until:
        from hostlog.query.timespec import parse_timestamp
        if since:
            query.since_ns = parse_timestamp(since, now_ns=now, utc=utc)
        if until:
            query.until_ns = parse_timestamp(until, now_ns=now, utc=utc)
    if query.since_ns is not None and query.until_ns is not None and query.since_ns > query.until_ns:
        raise ValueError("--since= must be before --until=.")
    if grep:
        query.grep = compile_grep(grep, case_sensitive)
    return query
