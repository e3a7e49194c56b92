"""What the index keeps of a frame's records so that readers skip frames
unread, or count them without reading them.

* In each frame header: the severities present and a keyed filter of app and
  unit names (:func:`frame_index`); queries test them
  (``hostlog.query.filters``) before they decrypt anything.
* In a sealed segment's footer (encrypted, docs/format.md "Counts"): how many
  records of each frame share a host, source, app, severity and unit, with
  the few raw fields that change what those show (:func:`frame_counts`,
  :class:`CountsBuilder`); ``hostlog stats`` (``hostlog.query.stats``) counts
  from them.

Pure. The spool computes both for every frame it writes.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import compress, repeat
from operator import contains, not_
from typing import Any

import msgpack

from hostlog.record import Batch

__all__ = ["COUNTS_VERSION", "EXTRA_FIELDS", "REPORT_CONTEXT", "REPORT_FIELDS", "ROW_WIDTH",
           "VIEW_FIELDS", "CountKey", "CountsBuilder", "FrameCounts", "SegmentCounts",
           "app_bloom_bits", "frame_counts", "frame_index", "unpack_counts"]


@functools.lru_cache(maxsize=4096)
def app_bloom_bits(bloom_key: bytes, app: str) -> int:
    """Two bits of a 64-bit filter for ``app``, keyed so the spool does not
    reveal app names to someone without the key. (Cached: every frame the
    writer seals asks again for the same few apps under the same key, and a
    keyed blake2b is ~2.5 µs each.)"""
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


# --- per-frame counts (the footer's counts block, docs/format.md) ---------------------

#: One count key: (host, source, app, severity, unit, extra). ``unit`` is the
#: record's ``_SYSTEMD_UNIT`` when it is one text value (else None);
#: ``extra`` is None for most records, else the raw fields of
#: :data:`EXTRA_FIELDS` (and :data:`REPORT_CONTEXT` beside a reported unit)
#: that the record holds, as sorted (name, value) pairs, lists as tuples.
CountKey = tuple[str, str, str, int, str | None, tuple[tuple[str, Any], ...] | None]
#: How many records of one frame share each key.
FrameCounts = dict[CountKey, int]

#: Fields that change what a record's journal view shows for PRIORITY,
#: SYSLOG_IDENTIFIER or _HOSTNAME (a raw value wins over the attribute,
#: ``_HOSTLOG_ABSENT`` hides it), and the fields through which systemd reports
#: about a unit (``query -u`` shows those reports).
VIEW_FIELDS = ("PRIORITY", "SYSLOG_IDENTIFIER", "_HOSTNAME", "_HOSTLOG_ABSENT")
REPORT_FIELDS = ("UNIT", "COREDUMP_UNIT", "OBJECT_SYSTEMD_UNIT")
EXTRA_FIELDS = VIEW_FIELDS + REPORT_FIELDS
#: What decides whether a report about a unit is systemd's: kept (with
#: ``_PID``, raw or from the pid) for the records that hold a REPORT_FIELD.
REPORT_CONTEXT = ("_UID", "MESSAGE_ID")
#: Values of a row's count fields in the footer: host, source, app, severity,
#: unit, extra, count.
ROW_WIDTH = 7
COUNTS_VERSION = 1
_TEXT_OR_NONE = frozenset({str, type(None)})
_EXTRA = frozenset(EXTRA_FIELDS)


def frame_counts(batch: Batch) -> FrameCounts:
    """How many of one frame's records share each :data:`CountKey`: what the
    footer keeps so that ``hostlog stats`` counts by app, priority, host and
    source (with ``-u``, ``-t``, ``-p``, ``--host``, ``--source``) without
    reading the frame.

    On the writer's path, so C-level passes over the columns: constant
    columns (host and source, usually) are not part of what is counted, and
    only the records that hold one of :data:`EXTRA_FIELDS` or a unit that is
    not one text value get a Python step each.
    """
    fields: list[Any] = batch.fields
    n = len(fields)
    if n == 0:
        return {}
    pool = batch.fields_pool
    probe: list[Any] = pool if pool is not None else fields
    units: list[Any]
    plain: list[bool] | None = None
    try:
        if not any(probe):  # no row has a field (a file's or an app's lines, often)
            units = [None] * n
        else:
            if pool is not None and not any(map(contains, pool, repeat("_SYSTEMD_UNIT"))):
                units = [None] * n
            else:
                units = list(map(dict.get, fields, repeat("_SYSTEMD_UNIT")))
            if pool is None or not all(map(_EXTRA.isdisjoint, pool)):
                plain = list(map(_EXTRA.isdisjoint, fields))
                if all(plain):
                    plain = None
    except TypeError:  # a row whose fields are not a dict: record by record
        return _frame_counts_slow(batch)
    odd_units = False
    if units.count(None) != n:
        try:
            odd_units = not _TEXT_OR_NONE.issuperset(map(type, set(units)))
        except TypeError:  # a list: unhashable
            odd_units = True
    extras: list[Any] | None = None
    if plain is not None or odd_units:
        special = set(compress(range(n), map(not_, plain))) if plain is not None else set()
        if odd_units:
            special.update(i for i, u in enumerate(units) if u.__class__ not in _TEXT_OR_NONE)
        extras = [None] * n
        pids = batch.pid
        for i in special:
            extras[i] = _extra(fields[i], pids[i])
            if units[i].__class__ is not str:
                units[i] = None
    columns: list[Sequence[Any]] = [batch.host, batch.source, batch.app, batch.severity, units,
                                    extras if extras is not None else [None] * n]
    # count the columns that vary; the others hold one value for every row
    varying = [k for k, c in enumerate(columns) if c.count(c[0]) != n]
    if not varying:
        return {tuple(c[0] for c in columns): n}  # type: ignore[dict-item]
    counted: Counter[Any] = Counter(columns[varying[0]] if len(varying) == 1
                                    else zip(*(columns[k] for k in varying)))
    key = [c[0] for c in columns]
    out: FrameCounts = {}
    for values, count in counted.items():
        if len(varying) == 1:
            key[varying[0]] = values
        else:
            for k, v in zip(varying, values):
                key[k] = v
        out[tuple(key)] = count  # type: ignore[index]
    return out


def _frame_counts_slow(batch: Batch) -> FrameCounts:
    counts: Counter[CountKey] = Counter()
    for host, source, app, severity, pid, f in zip(batch.host, batch.source, batch.app,
                                                   batch.severity, batch.pid, batch.fields):
        f = f if isinstance(f, dict) else {}
        unit = f.get("_SYSTEMD_UNIT")
        extra = None
        if unit.__class__ not in _TEXT_OR_NONE or any(k in f for k in EXTRA_FIELDS):
            extra = _extra(f, pid)
        counts[(host, source, app, severity, unit if unit.__class__ is str else None, extra)] += 1
    return counts


def _extra(f: dict[str, Any], pid: int | None) -> tuple[tuple[str, Any], ...] | None:
    items = {k: f[k] for k in VIEW_FIELDS if k in f}
    unit = f.get("_SYSTEMD_UNIT")
    if unit.__class__ not in _TEXT_OR_NONE:
        items["_SYSTEMD_UNIT"] = unit
    if any(k in f for k in REPORT_FIELDS):
        for k in REPORT_FIELDS + REPORT_CONTEXT:
            if k in f:
                items[k] = f[k]
        raw_pid = f.get("_PID", None if pid is None else str(pid))
        if raw_pid is not None:
            items["_PID"] = raw_pid
    return tuple(sorted((k, _frozen(v)) for k, v in items.items())) or None


def _frozen(value: Any) -> Any:
    return tuple(map(_frozen, value)) if isinstance(value, (list, tuple)) else value


class CountsBuilder:
    """The counts of one segment's frames, as the writer appends them; packed
    into the footer's counts block when the segment is sealed.

    Rows refer to a per-segment table of strings and of extras, so a frame's
    rows are a few small integers each: ``[host, source, app, severity, unit,
    extra, count] ...`` (-1: no unit / no extra). A frame written without
    counts (one that was in the segment before a restart) is ``nil``, and the
    segment's totals are then ``nil`` too.
    """

    def __init__(self, frames_without: int = 0) -> None:
        self._strings: dict[str, int] = {}
        self._extras: dict[tuple[tuple[str, Any], ...], int] = {}
        self._frames: list[bytes] = [_NIL] * frames_without
        self._totals: Counter[tuple[int, ...]] = Counter()
        self._complete = frames_without == 0

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, counts: FrameCounts | None) -> None:
        """The next frame's counts (None: not known)."""
        if counts is None:
            self._frames.append(_NIL)
            self._complete = False
            return
        flat: list[int] = []
        sid, totals = self._sid, self._totals
        for (host, source, app, severity, unit, extra), n in counts.items():
            row = (sid(host), sid(source), sid(app), severity, -1 if unit is None else sid(unit),
                   -1 if extra is None else self._eid(extra))
            flat.extend(row)
            flat.append(n)
            totals[row] += n
        self._frames.append(msgpack.packb(flat))

    def _sid(self, s: str) -> int:
        i = self._strings.get(s)
        if i is None:
            i = self._strings[s] = len(self._strings)
        return i

    def _eid(self, extra: tuple[tuple[str, Any], ...]) -> int:
        i = self._extras.get(extra)
        if i is None:
            i = self._extras[extra] = len(self._extras)
        return i

    def pack(self) -> bytes:
        """``[version, strings, extras, totals or nil, [frame rows or nil, ...]]`` in msgpack."""
        totals: list[int] | None = None
        if self._complete:
            totals = []
            for row, n in self._totals.items():
                totals.extend(row)
                totals.append(n)
        head = msgpack.packb([COUNTS_VERSION, list(self._strings), [dict(e) for e in self._extras],
                              totals], use_bin_type=True)
        frames = msgpack.Packer().pack_array_header(len(self._frames)) + b"".join(self._frames)
        # the head is an array of 4; the whole is an array of 5: rewrite its header
        return _ARRAY5 + head[1:] + frames


_NIL = msgpack.packb(None)
_ARRAY5 = b"\x95"  # msgpack fixarray of 5 (the head's own header is fixarray of 4, 0x94)


class SegmentCounts:
    """A segment's counts block, decrypted: the string and extra tables, the
    segment's totals (None when a frame has no counts) and each frame's
    rows (None: no counts for that frame), flat, :data:`ROW_WIDTH` values a
    row. The frames' rows are unpacked when first asked for (a count that
    takes the totals never does)."""

    __slots__ = ("strings", "extras", "totals", "_data", "_at", "_n", "_frames")

    def __init__(self, strings: list[str], extras: list[dict[str, Any]], totals: list[int] | None,
                 data: bytes, at: int, n: int) -> None:
        self.strings, self.extras, self.totals = strings, extras, totals
        self._data, self._at, self._n = data, at, n
        self._frames: list[list[int] | None] | None = None

    @property
    def frames(self) -> list[list[int] | None]:
        """Each frame's rows; ValueError if they are malformed."""
        if self._frames is None:
            try:
                rows = msgpack.unpackb(memoryview(self._data)[self._at:], use_list=True)
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                raise ValueError(f"counts block is not valid msgpack: {exc}") from None
            if not isinstance(rows, list) or len(rows) != self._n:
                raise ValueError("counts block frames are malformed")
            _check_rows(r for r in rows if r is not None)
            self._frames = rows
        return self._frames


def _check_rows(rows: Iterable[Any]) -> None:
    for r in rows:
        if not isinstance(r, list) or len(r) % ROW_WIDTH:
            raise ValueError("counts block rows are malformed")


def unpack_counts(data: bytes, frames: int) -> SegmentCounts:
    """The counts block's plaintext; ValueError if it is not one for ``frames`` frames."""
    u = msgpack.Unpacker(raw=False, strict_map_key=True, use_list=True,
                         max_buffer_size=max(1, len(data)))
    u.feed(data)
    try:
        if u.read_array_header() != 5 or u.unpack() != COUNTS_VERSION:
            raise ValueError("counts block of an unknown version or shape")
        strings, extras, totals = u.unpack(), u.unpack(), u.unpack()
        at = u.tell()
        n = u.read_array_header()
    except (TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"counts block is not valid msgpack: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"counts block is malformed: {exc}") from None
    if not (isinstance(strings, list) and isinstance(extras, list)
            and all(isinstance(e, dict) for e in extras)
            and (totals is None or isinstance(totals, list))):
        raise ValueError("counts block is malformed")
    if n != frames:
        raise ValueError(f"counts block holds {n} frames, the index {frames}")
    if totals is not None:
        _check_rows([totals])
    return SegmentCounts(strings, extras, totals, data, at, n)
