"""Journal entries <-> hostlog records, and the Journal Export Format.

Three pure pieces (no I/O), shared by the journald collector and ``hostlog query``:

* :func:`journal_to_record` maps one journal entry (field name -> raw values)
  onto the record model; :func:`record_to_journal` gives a record's journal
  view, with journalctl's field names, for ``-o json|export|verbose`` and for
  ``FIELD=VALUE`` matches (:func:`field_values` answers one field cheaply).
* :class:`ExportParser`/:func:`parse_export` read the Journal Export Format
  (systemd docs/JOURNAL_EXPORT_FORMATS.md, summarised in
  shared/corpora/journald/NOTES.md §1); :func:`format_export_entry` writes it.

The mapping (journald entry -> record):

=============================  =============================================
``__REALTIME_TIMESTAMP`` (µs)  ``ts`` (ns); else ``_SOURCE_REALTIME_TIMESTAMP``
``_HOSTNAME``                  ``host``
``SYSLOG_IDENTIFIER``          ``app``; else ``_COMM`` (kept in fields too)
``_PID``                       ``pid``
``PRIORITY``                   ``severity``
``SYSLOG_FACILITY``            ``facility`` (0..23)
``MESSAGE``                    ``msg`` (``str`` if UTF-8, else ``bytes``)
every other field              ``fields[NAME]``: ``str`` if UTF-8, else
                               ``bytes``; several values -> a ``list``
``__MONOTONIC_TIMESTAMP``      kept in fields (journalctl prints it in json/export)
other ``__`` fields            dropped: ``__CURSOR`` and ``__SEQNUM`` name a
                               place in the source journal file, meaningless in
                               the spool (the record gets hostlog's own cursor)
``_HOSTLOG_*`` fields          dropped: they describe a record's identity in
                               some spool; the accepting spool assigns a new one
=============================  =============================================

The mapping is lossless for what it keeps: ``record_to_journal(journal_to_record(e))``
gives ``e`` back, minus the dropped fields, plus hostlog's ``__CURSOR``,
``_HOSTLOG_SOURCE``, ``_HOSTLOG_ORIGIN`` and ``_HOSTLOG_SEQ``. Two devices make
that true:

* a core field whose value does not fit its record attribute as-is (several
  values, not UTF-8, ``PRIORITY=06``, ``_PID=abc``, an empty ``_HOSTNAME``) is
  *also* kept raw in ``fields``, and the raw value is what the journal view
  shows; the attribute gets what journalctl would display (the last value);
* a core field the entry did not have although the record attribute has a
  value (``PRIORITY``: severity defaults to 6; ``SYSLOG_IDENTIFIER`` when the
  app came from ``_COMM``; ``MESSAGE``; ``__REALTIME_TIMESTAMP``) is listed in
  ``fields["_HOSTLOG_ABSENT"]`` (space-separated names) and left out of the
  journal view. This is what lets ``-p`` exclude entries without PRIORITY as
  journalctl does (see priority.py).

Record.fields is typed ``str -> str | bytes``; for journald's multi-valued
fields it holds a ``list`` of those (msgpack encodes lists in the chunk).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from hostlog.errors import ExportFormatError
from hostlog.record import Record

__all__ = [
    "ABSENT_FIELD",
    "HEADER_FIELDS",
    "MAX_FIELD_BYTES",
    "ExportFormatError",
    "ExportParser",
    "JournalValue",
    "entry_items",
    "field_values",
    "format_cursor",
    "format_export_entry",
    "is_printable",
    "is_valid_field_name",
    "journal_to_record",
    "parse_cursor",
    "parse_export",
    "record_to_journal",
    "to_entry",
]

JournalValue = str | bytes | list
#: fields key listing the core journal fields the source entry did not have.
ABSENT_FIELD = "_HOSTLOG_ABSENT"
SOURCE_FIELD = "_HOSTLOG_SOURCE"
ORIGIN_FIELD = "_HOSTLOG_ORIGIN"
SEQ_FIELD = "_HOSTLOG_SEQ"
_RESERVED_PREFIX = "_HOSTLOG_"

#: systemd's DATA_SIZE_MAX (journal-importer.h): no field is longer.
MAX_FIELD_BYTES = 768 * 1024 * 1024

# Core journal fields, in the order the journal view lists them.
_CORE = ("_HOSTNAME", "PRIORITY", "SYSLOG_FACILITY", "SYSLOG_IDENTIFIER", "_PID", "MESSAGE")
_CORE_ALL = frozenset(_CORE + ("__REALTIME_TIMESTAMP",))
# Fields journalctl prints for every entry, whatever --output-fields says.
HEADER_FIELDS = ("__CURSOR", "__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP", "_BOOT_ID")
_KEPT_DUNDER = frozenset({"__MONOTONIC_TIMESTAMP"})

# journal_field_valid(): 1-64 chars of A-Z, 0-9, _, not starting with a digit.
_FIELD_NAME = re.compile(rb"[A-Z_][A-Z0-9_]{0,63}")
_CANONICAL_UINT = re.compile(rb"0|[1-9][0-9]{0,18}")
# systemd utf8_is_printable(): C0 controls other than TAB/LF, DEL and C1, and
# what unichar_is_valid() refuses (U+FDD0..U+FDEF, U+xFFFE/U+xFFFF).
_NOT_PRINTABLE_CLASS = (
    "\x00-\x08\x0b-\x1f\x7f-\x9f\ufdd0-\ufdef"
    + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17))
)
_NOT_PRINTABLE = re.compile(f"[{_NOT_PRINTABLE_CLASS}]")
_NOT_PRINTABLE_NO_NL = re.compile(f"[\n{_NOT_PRINTABLE_CLASS}]")


def is_valid_field_name(name: str | bytes) -> bool:
    """journald's rule for field names (protected ``_`` names allowed)."""
    raw = name.encode("ascii", "replace") if isinstance(name, str) else name
    return _FIELD_NAME.fullmatch(raw) is not None


def is_printable(value: bytes, allow_newline: bool = True) -> bool:
    """systemd's utf8_is_printable(): valid UTF-8 without control characters.

    Decides the text or binary form in the export format (newline not allowed)
    and the string or byte-array form in JSON (newline allowed).
    """
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    pattern = _NOT_PRINTABLE if allow_newline else _NOT_PRINTABLE_NO_NL
    return pattern.search(text) is None


# --- cursors ----------------------------------------------------------------------

def format_cursor(origin: str, seq: int) -> str:
    """hostlog's cursor: the record's identity, ``<origin>:<seq>``."""
    return f"{origin}:{seq}"


def parse_cursor(cursor: str) -> tuple[str, int]:
    """(origin, seq) of a cursor made by :func:`format_cursor`."""
    origin, sep, seq = cursor.rpartition(":")
    if not sep or not seq.isascii() or not seq.isdigit():
        raise ValueError(f"not a hostlog cursor: {cursor!r}")
    return origin, int(seq)


# --- record -> journal --------------------------------------------------------------

def _absent(fields: Mapping[str, object]) -> frozenset[str]:
    marker = fields.get(ABSENT_FIELD)
    return frozenset(marker.split()) if isinstance(marker, str) else frozenset()


def _core_value(record: Record, name: str, fields: Mapping[str, object],
                absent: frozenset[str]) -> JournalValue | None:
    if name in fields:
        return fields[name]  # type: ignore[return-value]  # the source's raw value wins
    if name in absent:
        return None
    if name == "__REALTIME_TIMESTAMP":
        return str(record.ts // 1000)
    if name == "_HOSTNAME":
        return record.host or None
    if name == "PRIORITY":
        return str(record.severity)
    if name == "SYSLOG_FACILITY":
        return None if record.facility is None else str(record.facility)
    if name == "SYSLOG_IDENTIFIER":
        return record.app or None
    if name == "_PID":
        return None if record.pid is None else str(record.pid)
    return record.msg  # MESSAGE


def record_to_journal(record: Record) -> dict[str, JournalValue]:
    """The record as journalctl would show it (field name -> value).

    Values are ``str`` (UTF-8 text), ``bytes`` (anything else) or a ``list`` of
    those for a field with several values. Order: ``__CURSOR``,
    ``__REALTIME_TIMESTAMP``, ``__MONOTONIC_TIMESTAMP`` and ``_BOOT_ID`` when
    known, the core fields, the other fields as stored, then hostlog's own
    ``_HOSTLOG_SOURCE``/``_HOSTLOG_ORIGIN``/``_HOSTLOG_SEQ``.
    """
    fields = record.fields or {}
    absent = _absent(fields)
    out: dict[str, JournalValue] = {"__CURSOR": format_cursor(record.origin, record.seq)}
    value = _core_value(record, "__REALTIME_TIMESTAMP", fields, absent)
    if value is not None:
        out["__REALTIME_TIMESTAMP"] = value
    for name in ("__MONOTONIC_TIMESTAMP", "_BOOT_ID"):
        if name in fields:
            out[name] = fields[name]  # type: ignore[assignment]
    for name in _CORE:
        value = _core_value(record, name, fields, absent)
        if value is not None:
            out[name] = value
    for name, value in fields.items():
        if name not in out and not name.startswith(_RESERVED_PREFIX) and name != "__CURSOR":
            out[name] = value  # type: ignore[assignment]
    out[SOURCE_FIELD] = record.source
    out[ORIGIN_FIELD] = record.origin
    out[SEQ_FIELD] = str(record.seq)
    return out


def field_values(record: Record, name: str) -> list[bytes]:
    """The raw values of one journal field of the record ([] if it has none).

    Same answer as ``record_to_journal(record)[name]``, without building the
    whole view: what ``FIELD=VALUE`` matches, ``-F`` and the formatters use.
    """
    fields = record.fields or {}
    if name == "__CURSOR":
        return [format_cursor(record.origin, record.seq).encode()]
    if name == SOURCE_FIELD:
        return [record.source.encode()]
    if name == ORIGIN_FIELD:
        return [record.origin.encode()]
    if name == SEQ_FIELD:
        return [str(record.seq).encode()]
    if name.startswith(_RESERVED_PREFIX):
        return []
    if name in _CORE_ALL:
        return _as_bytes_list(_core_value(record, name, fields, _absent(fields)))
    return _as_bytes_list(fields.get(name))


def to_entry(journal: Mapping[str, object]) -> dict[str, list[bytes]]:
    """A journal view (as record_to_journal returns) as raw bytes lists."""
    return {name: _as_bytes_list(value) for name, value in journal.items()}


def _as_bytes_list(value: object) -> list[bytes]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [_to_bytes(v) for v in value]
    return [_to_bytes(value)]


def _to_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return str(value).encode()


# --- journal -> record --------------------------------------------------------------

def _decode(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _stored(values: list[bytes]) -> JournalValue:
    if len(values) == 1:
        return _decode(values[0])
    return [_decode(v) for v in values]


def _text(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def journal_to_record(entry: Mapping[str, object]) -> Record:
    """Map one journal entry onto a Record (``source="journald"``).

    ``entry`` maps field names to their values: ``bytes`` (also ``str`` or
    ``int``, or a list of those for a repeated field), as :func:`parse_export`
    or a raw journal reader gives them. See the module doc for the mapping.
    """
    fields: dict[str, JournalValue] = {}
    core: dict[str, list[bytes]] = {}
    for name, raw in entry.items():
        values = _as_bytes_list(raw)
        if not values:
            continue
        if name in _CORE_ALL:
            core[name] = values
        elif name.startswith("__"):
            if name in _KEPT_DUNDER:
                fields[name] = _stored(values)
        elif not name.startswith(_RESERVED_PREFIX):
            fields[name] = _stored(values)
    absent: list[str] = []

    def keep_raw(name: str) -> list[bytes] | None:
        # The single value when it fits the attribute as-is; otherwise keep
        # the raw values in fields (they win in the journal view).
        values = core.get(name)
        if values is None:
            return None
        if len(values) == 1:
            return values
        fields[name] = _stored(values)
        return None

    # __REALTIME_TIMESTAMP: µs since the epoch, written by journald on receipt.
    ts = 0
    rt = keep_raw("__REALTIME_TIMESTAMP")
    if rt is not None and _CANONICAL_UINT.fullmatch(rt[0]):
        ts = int(rt[0]) * 1000
    else:
        if rt is not None:
            fields["__REALTIME_TIMESTAMP"] = _stored(rt)
        elif "__REALTIME_TIMESTAMP" not in core:
            absent.append("__REALTIME_TIMESTAMP")
        src = _as_bytes_list(entry.get("_SOURCE_REALTIME_TIMESTAMP"))
        if src and _CANONICAL_UINT.fullmatch(src[-1]):
            ts = int(src[-1]) * 1000

    host = ""
    hv = keep_raw("_HOSTNAME")
    if hv is not None and hv[0] and _text(hv[0]) is not None:
        host = hv[0].decode()
    elif "_HOSTNAME" in core:
        fields["_HOSTNAME"] = _stored(core["_HOSTNAME"])
        host = _text(core["_HOSTNAME"][-1]) or ""

    app = ""
    iv = keep_raw("SYSLOG_IDENTIFIER")
    if iv is not None and iv[0] and _text(iv[0]) is not None:
        app = iv[0].decode()
    else:
        if "SYSLOG_IDENTIFIER" in core:
            fields["SYSLOG_IDENTIFIER"] = _stored(core["SYSLOG_IDENTIFIER"])
            app = _text(core["SYSLOG_IDENTIFIER"][-1]) or ""
        if not app:
            # journalctl shows _COMM when there is no usable identifier.
            comm = _as_bytes_list(entry.get("_COMM"))
            app = (_text(comm[-1]) or "") if comm else ""
            if app and "SYSLOG_IDENTIFIER" not in core:
                absent.append("SYSLOG_IDENTIFIER")

    pid = None
    pv = keep_raw("_PID")
    if pv is not None and _CANONICAL_UINT.fullmatch(pv[0]):
        pid = int(pv[0])
    elif pv is not None:
        fields["_PID"] = _stored(pv)

    severity = 6  # LOG_INFO: what journalctl assumes (colours) without PRIORITY
    sv = keep_raw("PRIORITY")
    if sv is not None and len(sv[0]) == 1 and 48 <= sv[0][0] <= 55:
        severity = sv[0][0] - 48
    elif "PRIORITY" in core:
        fields["PRIORITY"] = _stored(core["PRIORITY"])
        last = core["PRIORITY"][-1]
        if len(last) == 1 and 48 <= last[0] <= 55:
            severity = last[0] - 48
    else:
        absent.append("PRIORITY")

    facility = None
    fv = keep_raw("SYSLOG_FACILITY")
    if fv is not None and _CANONICAL_UINT.fullmatch(fv[0]) and int(fv[0]) <= 23:
        facility = int(fv[0])
    elif fv is not None:
        fields["SYSLOG_FACILITY"] = _stored(fv)

    msg: str | bytes = ""
    mv = core.get("MESSAGE")
    if mv is None:
        absent.append("MESSAGE")
    else:
        if len(mv) > 1:
            fields["MESSAGE"] = _stored(mv)
        msg = _decode(mv[-1])  # journalctl's short output shows the last one

    if absent:
        fields[ABSENT_FIELD] = " ".join(absent)
    return Record(ts=ts, msg=msg, host=host, source="journald", app=app, pid=pid,
                  severity=severity, facility=facility,
                  fields=fields)  # type: ignore[arg-type]  # lists for repeated fields


# --- Journal Export Format ----------------------------------------------------------

def format_export_entry(items: Iterable[tuple[str, bytes]]) -> bytes:
    """One entry in the export format, blank line included.

    A value that is printable UTF-8 without newlines is written ``NAME=value``;
    any other goes in the binary form ``NAME\\n<le64 length><bytes>\\n``.
    """
    out = []
    for name, value in items:
        key = name.encode()
        if is_printable(value, allow_newline=False):
            out.append(key + b"=" + value + b"\n")
        else:
            out.append(key + b"\n" + len(value).to_bytes(8, "little") + value + b"\n")
    out.append(b"\n")
    return b"".join(out)


class ExportParser:
    """Incremental, sans-IO reader of the Journal Export Format.

    ``feed(data)`` returns the entries completed by ``data``; ``close()`` the
    last one when the stream ended without its blank line, and raises
    :class:`ExportFormatError` if it ended inside a field. Each entry maps
    field names to their values in stream order (a repeated name = several
    values). As in systemd-journal-remote, a text field whose name is not a
    valid journal field name is skipped; so is such a binary field.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._entry: dict[str, list[bytes]] = {}

    def feed(self, data: bytes) -> list[dict[str, list[bytes]]]:
        buf = self._buf
        buf += data
        done: list[dict[str, list[bytes]]] = []
        pos = 0
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos > MAX_FIELD_BYTES + 65:
                    raise ExportFormatError("export line longer than any journal field")
                break
            if nl == pos:  # blank line: the entry is complete
                if self._entry:
                    done.append(self._entry)
                    self._entry = {}
                pos = nl + 1
                continue
            eq = buf.find(b"=", pos, nl)
            if eq >= 0:
                name, value = bytes(buf[pos:eq]), bytes(buf[eq + 1:nl])
                pos = nl + 1
            else:
                if len(buf) < nl + 9:
                    break
                size = int.from_bytes(buf[nl + 1:nl + 9], "little")
                if size > MAX_FIELD_BYTES:
                    raise ExportFormatError(f"binary field declares {size} bytes, "
                                            f"more than the {MAX_FIELD_BYTES} journald allows")
                end = nl + 9 + size
                if len(buf) <= end:
                    break
                if buf[end] != 0x0A:
                    raise ExportFormatError(f"expected a newline after {size} bytes of "
                                            f"binary field {bytes(buf[pos:nl])!r}")
                name, value = bytes(buf[pos:nl]), bytes(buf[nl + 9:end])
                pos = end + 1
            if _FIELD_NAME.fullmatch(name):
                self._entry.setdefault(name.decode("ascii"), []).append(value)
        del buf[:pos]
        return done

    def close(self) -> list[dict[str, list[bytes]]]:
        if self._buf:
            raise ExportFormatError(f"export stream ends inside a field "
                                    f"({len(self._buf)} bytes left over)")
        entry, self._entry = self._entry, {}
        return [entry] if entry else []


def parse_export(data: bytes) -> list[dict[str, list[bytes]]]:
    """Every entry of an export-format byte string (see :class:`ExportParser`)."""
    parser = ExportParser()
    return parser.feed(data) + parser.close()


def entry_items(entry: Mapping[str, Sequence[bytes]]) -> list[tuple[str, bytes]]:
    """(name, value) pairs of an entry, repeated names in value order."""
    return [(name, value) for name, values in entry.items() for value in values]
