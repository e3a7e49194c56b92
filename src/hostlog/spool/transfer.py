"""``hostlog spool export`` / ``hostlog spool import``: records between spools.

The file is readable by other tools and lossless for hostlog:

* ``export`` (default): the Journal Export Format, each entry the record's
  journal view (what ``hostlog query -o export`` prints: journalctl's field
  names, ``__CURSOR``, ``_HOSTLOG_SOURCE``, ``_HOSTLOG_ORIGIN``,
  ``_HOSTLOG_SEQ``) plus ``_HOSTLOG_RECORD``: the record itself, exactly, as
  a one-record chunk (docs/format.md, "Chunk"), binary.
* ``json``: one JSON object per line, the same fields; binary values as
  journalctl writes them (arrays of byte values), ``_HOSTLOG_RECORD`` in
  base64.

The journal view alone loses what journald has no place for (nanoseconds,
text versus bytes, the source), so import takes ``_HOSTLOG_RECORD`` when an
entry has one, and maps the journal view otherwise (an export of
``journalctl -o export`` imports too: origin and seq then come from
``_HOSTLOG_ORIGIN``/``_HOSTLOG_SEQ`` when present, else the importing spool
gives them).

Import keeps each record's ``(origin, seq)``, so the same records imported
twice are stored once: the rows whose identity the spool already holds are
dropped (:class:`HeldSeqs`, built from the spool's origin and seq columns).
Unlike the receiver's per-origin mark (forward/dedup.py), which relies on a
sender's records arriving in seq order, this is exact per seq: an export
filtered by app, imported after another of the same origin, loses nothing.

Parsing and formatting are pure (no I/O); :func:`import_file` and
:func:`export_records` do the I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import IO, Any

from hostlog.chunk import ORIGIN, ChunkError, FrameColumns, decode_chunk, encode_chunk
from hostlog.errors import ExportFormatError
from hostlog.journal.fields import (
    ExportParser,
    entry_items,
    format_export_entry,
    journal_to_record,
    record_to_journal,
    to_entry,
)
from hostlog.record import Columns, Record

__all__ = ["HeldSeqs", "ImportReport", "RECORD_FIELD", "entry_record", "export_records",
           "format_json_line", "format_entry", "import_file", "parse_json_line"]

RECORD_FIELD = "_HOSTLOG_RECORD"
IMPORT_BATCH = 4096


# --- formatting (pure) ----------------------------------------------------------
def format_entry(record: Record) -> bytes:
    """One record as a Journal Export Format entry (blank line included)."""
    items = entry_items(to_entry(record_to_journal(record)))
    items.append((RECORD_FIELD, encode_chunk([record])))
    return format_export_entry(items)


def _json_value(values: list[bytes]) -> Any:
    out: list[Any] = []
    for v in values:
        try:
            text = v.decode("utf-8")
            out.append(text if text.isprintable() else list(v))
        except UnicodeDecodeError:
            out.append(list(v))
    return out[0] if len(out) == 1 else out


def format_json_line(record: Record) -> bytes:
    """One record as a JSON line (journalctl's conventions for bytes and repeats)."""
    entry = to_entry(record_to_journal(record))
    obj = {name: _json_value(values) for name, values in entry.items()}
    obj[RECORD_FIELD] = base64.b64encode(encode_chunk([record])).decode("ascii")
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


# --- parsing (pure) -------------------------------------------------------------
def _json_bytes(value: Any) -> list[bytes]:
    if isinstance(value, str):
        return [value.encode()]
    if isinstance(value, int) and not isinstance(value, bool):
        return [str(value).encode()]
    if isinstance(value, list) and value and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return [bytes(value)]  # one binary value
    if isinstance(value, list):
        out: list[bytes] = []
        for v in value:
            out.extend(_json_bytes(v))
        return out
    if value is None:
        return []
    raise ExportFormatError(f"a JSON field value {value!r} is not text, bytes or a list of them")


def parse_json_line(line: bytes) -> dict[str, list[bytes]]:
    """A JSON line as an entry (name -> raw values)."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise ExportFormatError(f"not a JSON object: {exc}") from None
    if not isinstance(obj, dict):
        raise ExportFormatError("a JSON line that is not an object")
    entry = {}
    for name, value in obj.items():
        if name == RECORD_FIELD and isinstance(value, str):
            try:
                entry[name] = [base64.b64decode(value, validate=True)]
            except binascii.Error as exc:
                raise ExportFormatError(f"{RECORD_FIELD} is not base64: {exc}") from None
        else:
            entry[name] = _json_bytes(value)
    return entry


def entry_record(entry: dict[str, list[bytes]]) -> Record:
    """The record an entry holds: its ``_HOSTLOG_RECORD`` exactly, else its
    journal view mapped (identity from ``_HOSTLOG_ORIGIN``/``_HOSTLOG_SEQ``
    when both are there, else none: the importing spool gives one)."""
    raw = entry.get(RECORD_FIELD)
    if raw:
        try:
            (record,) = decode_chunk(raw[0])
        except (ChunkError, ValueError) as exc:
            raise ExportFormatError(f"{RECORD_FIELD} does not decode: {exc}") from None
        return record
    record = journal_to_record(entry)
    source = entry.get("_HOSTLOG_SOURCE")
    origin, seq = entry.get("_HOSTLOG_ORIGIN"), entry.get("_HOSTLOG_SEQ")
    if source:
        record.source = source[-1].decode(errors="replace")
    if origin and seq and seq[-1].isdigit() and int(seq[-1]) > 0:
        record.origin, record.seq = origin[-1].decode(errors="replace"), int(seq[-1])
    return record


def parse_stream(chunks: Iterable[bytes]) -> Iterator[dict[str, list[bytes]]]:
    """Entries of an export file, export format or JSON lines (told apart by
    its first byte: ``{``)."""
    it = iter(chunks)
    first = b""
    for data in it:
        if data:
            first = data
            break
    if not first:
        return
    if first.lstrip()[:1] == b"{":
        buf = b""
        for data in _chain(first, it):
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    yield parse_json_line(line)
        if buf.strip():
            yield parse_json_line(buf)
        return
    parser = ExportParser()
    for data in _chain(first, it):
        yield from parser.feed(data)
    yield from parser.close()


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


# --- what a spool holds -----------------------------------------------------------
@dataclass
class HeldSeqs:
    """The seqs held per origin, as sorted disjoint runs ``[lo, hi]``."""

    runs: dict[str, list[list[int]]] = field(default_factory=dict)

    def add(self, origin: str, seq: int) -> None:
        runs = self.runs.setdefault(origin, [])
        if runs and runs[-1][1] + 1 == seq:  # the usual case: the next one
            runs[-1][1] = seq
            return
        i = bisect_right(runs, [seq, float("inf")])
        if i and runs[i - 1][1] >= seq:
            return  # held already
        if i and runs[i - 1][1] + 1 == seq:
            runs[i - 1][1] = seq
        else:
            runs.insert(i, [seq, seq])
            i += 1
        if i < len(runs) and runs[i][0] == runs[i - 1][1] + 1:  # join the next run
            runs[i - 1][1] = runs[i][1]
            del runs[i]

    def held(self, origin: str, seq: int) -> bool:
        runs = self.runs.get(origin)
        if not runs:
            return False
        i = bisect_right(runs, [seq, float("inf")])
        return bool(i) and runs[i - 1][0] <= seq <= runs[i - 1][1]

    @classmethod
    def of_spool(cls, reader: Any) -> HeldSeqs:
        """From every frame of a spool (``SpoolReader``): two columns each.
        A damaged frame holds nothing readable: its records count as not held."""
        held = cls()
        with closing(reader.frames_quick()) as frames:
            for seg, entry in frames:
                chunk = seg.read_chunk(entry)
                if not isinstance(chunk, bytes):
                    continue
                try:
                    cols = FrameColumns(chunk)
                    if not cols.n:
                        continue
                    origins = [cols.strings[i] for i in cols.column(ORIGIN)]
                    seqs = cols.seq()
                except (ChunkError, IndexError, TypeError):
                    continue
                for origin, seq in zip(origins, seqs):
                    held.add(origin, seq)
        return held


# --- I/O ----------------------------------------------------------------------------
def export_records(records: Iterable[Record], out: IO[bytes], fmt: str = "export") -> int:
    """Write records to ``out`` as ``fmt`` (export | json); returns how many."""
    write = format_entry if fmt == "export" else format_json_line
    n = 0
    for record in records:
        out.write(write(record))
        n += 1
    return n


@dataclass
class ImportReport:
    read: int = 0
    imported: int = 0
    duplicates: int = 0  # held already (same origin and seq): not stored again


def import_file(spool: Any, stream: IO[bytes], held: HeldSeqs, *,
                read_size: int = 1 << 20) -> ImportReport:
    """Append the records of an export file to an open ``Spool`` (the
    caller syncs and closes it), but those ``held`` already; ``held`` grows
    by what is imported. ExportFormatError at a malformed entry (what came
    before it is imported)."""
    report = ImportReport()
    batch: list[Record] = []

    def flush() -> None:
        if batch:
            spool.append(Columns.of(batch))
            batch.clear()

    chunks = iter(lambda: stream.read(read_size), b"")
    try:
        for entry in parse_stream(chunks):
            record = entry_record(entry)
            report.read += 1
            if record.origin and record.seq:
                if held.held(record.origin, record.seq):
                    report.duplicates += 1
                    continue
                held.add(record.origin, record.seq)
            batch.append(record)
            report.imported += 1
            if len(batch) >= IMPORT_BATCH:
                flush()
    finally:
        flush()  # what came before a malformed entry is imported
    return report
