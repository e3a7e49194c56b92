"""Routing (``to = [...]``): what a destination is sent of a stored chunk. Pure.

A rule with ``to`` writes the destinations' names into the record's
``_HOSTLOG_ROUTE`` field (space-separated; a record two rules route goes to
the names of both). A record without the field goes to every destination.

The sender ships the spool's chunks as they are stored, compressed. A chunk
is opened only when its bytes hold the field's name (the LZ4 block is
inflated for that look; most chunks hold no routed record and go on as
they were), and only in a spool whose agent has routed at all
(:func:`routing_marker`). A chunk that holds routed records is decoded; the records for
this destination are kept, the field taken off them (it is this agent's
business: a central node has destinations of its own), and the chunk
encoded again. The records keep their origin and seq; the chunk claims the
seqs up to its last record's (``first = last - count + 1``), so that the
receiver's ack covers the records left out too, as the cursor needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lz4.block

from hostlog.chunk import decode_columns, encode_columns
from hostlog.record import Columns
from hostlog.rules.engine import ROUTE_FIELD

__all__ = ["MARK", "for_destination", "may_be_routed", "note_routing", "routes_of", "routing_marker"]

#: What a chunk's bytes hold when one of its records is routed.
MARK = ROUTE_FIELD.encode()


def routing_marker(spool_dir: Path) -> Path:
    """The file that says a spool may hold routed records (``<spool>/state/routed``).

    The agent writes it before its first batch goes through a rule with
    ``to``; a destination looks into chunks only once it exists, so an agent
    that never routed sends its chunks without inflating them."""
    return spool_dir / "state" / "routed"


def note_routing(spool_dir: Path) -> None:
    """Write the marker (kept from then on: routed records stay in the spool)."""
    marker = routing_marker(spool_dir)
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("records of this spool may carry _HOSTLOG_ROUTE\n")


def may_be_routed(chunk: bytes) -> bool:
    """False when no record of the (inflated) chunk is routed."""
    return MARK in chunk


def routes_of(fields: dict[str, Any]) -> frozenset[str] | None:
    """The destinations a record's fields route it to (None: every one)."""
    value = fields.get(ROUTE_FIELD) if fields else None
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, list):
        value = " ".join(v if isinstance(v, str) else v.decode("utf-8", "replace") for v in value)
    return frozenset(str(value).split())


def for_destination(chunk: bytes, destination: str) -> tuple[bytes, int, int] | None:
    """The chunk ``destination`` is sent: LZ4 block compressed (as the spool
    holds chunks), its inflated length and its records; None when none of
    its records goes there. ``chunk`` is an inflated stored chunk that
    :func:`may_be_routed`."""
    batch = decode_columns(chunk)
    fields = batch.fields
    keep: list[int] = []
    out_fields: list[dict[str, Any]] = []
    for i, f in enumerate(fields):
        routes = routes_of(f)
        if routes is None:
            keep.append(i)
            out_fields.append(f)
        elif destination in routes:
            keep.append(i)
            out_fields.append({k: v for k, v in f.items() if k != ROUTE_FIELD})
    if not keep:
        return None
    kept = Columns([[column[i] for i in keep] for column in batch.columns])
    kept.fields = out_fields
    encoded = encode_columns(kept.columns)
    return lz4.block.compress(encoded, store_size=False), len(encoded), len(keep)
