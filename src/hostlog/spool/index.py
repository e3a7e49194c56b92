"""What a frame's header keeps of its records so that readers skip frames
unread: the severities present and a keyed filter of app and unit names.

Pure. The spool computes it for every frame it writes; queries test it
(``hostlog.query.filters``) before they decrypt anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from itertools import repeat
from operator import contains
from typing import Any

from hostlog.record import Batch

__all__ = ["app_bloom_bits", "frame_index"]


def app_bloom_bits(bloom_key: bytes, app: str) -> int:
    """Two bits of a 64-bit filter for ``app``, keyed so the spool does not
    reveal app names to someone without the key."""
    digest = hashlib.blake2b(app.encode("utf-8", "surrogateescape"), key=bloom_key,
                             digest_size=2).digest()
    return (1 << (digest[0] & 63)) | (1 << (digest[1] & 63))


def frame_index(batch: Batch, bloom_key: bytes) -> tuple[int, int]:
    """(severity mask, app filter) of one frame's records.

    The app filter covers apps and systemd units, the two things ``hostlog
    query -u`` matches; the severity mask also the PRIORITY values a journald
    record may carry beyond its severity (several, or "06"), which ``query
    -p`` matches too.
    """
    severity_mask = 0
    for s in set(batch.severity):
        severity_mask |= 1 << (s & 7)
    # every row's fields dict is one of the pool's, when the batch's maker knew it
    fields: Iterable[Any] = batch.fields_pool if batch.fields_pool is not None else batch.fields
    names: set[Any] = set(batch.app)
    try:  # C-level passes over per-row dicts (journald) or a pool of shared ones
        has_priority = any(map(contains, fields, repeat("PRIORITY")))
        names.update(map(dict.get, fields, repeat("_SYSTEMD_UNIT")))
    except TypeError:
        # a repeated _SYSTEMD_UNIT (a list: unhashable), or fields that are
        # not a dict: one by one, every value of the unit counts
        has_priority = True
        names = set(batch.app)
        for f in fields:
            unit = f.get("_SYSTEMD_UNIT") if f else None
            names.update(unit if isinstance(unit, list) else [unit])
    if has_priority:
        for f in fields:
            if f and "PRIORITY" in f:
                raw = f["PRIORITY"]
                for v in raw if isinstance(raw, list) else [raw]:
                    text = v if isinstance(v, str) else v.decode("latin-1")
                    severity_mask |= sum(1 << int(c) for c in set(text) if c in "01234567")
    bloom = 0
    for name in names:
        if isinstance(name, bytes):  # a unit that is not UTF-8: as `query -u` spells it
            name = name.decode("utf-8", "surrogateescape")
        if isinstance(name, str):
            bloom |= app_bloom_bits(bloom_key, name)
    return severity_mask, bloom
