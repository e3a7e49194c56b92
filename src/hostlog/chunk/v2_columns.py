"""A version 2 chunk read column by column (the layout: :mod:`hostlog.chunk.v2`).

Each column is a block of its own, so this reader finds the blocks from the
chunk's header and unpacks a block only when a column of it is asked for:
``-p`` unpacks the severity block (n bytes, or one value), ``-u`` the app
block, and messages are rebuilt from their templates only when a filter or
a printer wants them.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from operator import sub
from typing import Any

import msgpack

from hostlog.chunk import v2
from hostlog.chunk.v1_columns import (
    APP,
    FACILITY,
    FIELDS,
    HOST,
    MSG,
    ORIGIN,
    PID,
    SEQ_BASE,
    SEVERITY,
    SOURCE,
    TS_DELTAS,
)
from hostlog.chunk.v2 import guard
from hostlog.chunk.view import FrameColumns
from hostlog.errors import ChunkError
from hostlog.record import Record

__all__ = ["FrameColumnsV2"]

_SEQ_DELTAS = SEQ_BASE + 1
# the block that holds each column (by the indices hostlog.chunk exports)
_BLOCK = {TS_DELTAS: v2.B_TS, HOST: v2.B_HOST, SOURCE: v2.B_SOURCE, APP: v2.B_APP, PID: v2.B_PID,
          SEVERITY: v2.B_SEVERITY, FACILITY: v2.B_FACILITY, MSG: v2.B_MSG, FIELDS: v2.B_FIELDS,
          ORIGIN: v2.B_ORIGIN, SEQ_BASE: v2.B_SEQ, _SEQ_DELTAS: v2.B_SEQ}
_NAMED = (HOST, SOURCE, APP, ORIGIN)
_MAP_FIRST = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}  # msgpack map headers
_MSGPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)
_OTHER_RUNS = re.compile(rb"[^0-9A-Za-z]+").findall  # runs of what no variable holds


class FrameColumnsV2(FrameColumns):
    """One version 2 chunk; blocks are unpacked on first use, and kept."""

    @guard
    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk
        self._view = memoryview(chunk)
        self.n, self._spans = v2.header(self._view)
        self._cols: dict[int, Any] = {}
        self.strings = []
        if self.n == 0:
            return
        # the four dictionaries, one after the other: host, source, app, origin
        self._named: dict[int, tuple[int, list[Any] | bytes]] = {}
        strings: list[str] = []
        for c in _NAMED:
            values, codes = v2.strings_of(self._block(c), self.n)
            if any(type(v) is not str for v in values):
                raise ChunkError("chunk dictionary value is not text")
            self._named[c] = (len(strings), codes)
            strings += values
        self.strings = strings

    def _block(self, c: int, *, raw: bool = False) -> Any:
        return v2.unpack_block(self._view, self._spans[_BLOCK[c]], raw=raw)

    @guard
    def column(self, c: int) -> Any:
        col = self._cols.get(c)
        if col is not None:
            return col
        n = self.n
        if c in _NAMED:
            offset, codes = self._named[c]
            if not offset:
                col = list(codes)
            else:
                col = [k + offset for k in codes]
        elif c == SEVERITY:
            col = self.severity()
        elif c == MSG:
            col = self.msgs()
        elif c == FIELDS:
            col = v2.fields_of(self._block(c), n)
        elif c in (PID, FACILITY):
            col = v2.generic_of(self._block(c), n)
            if isinstance(col, bytes):
                raise ChunkError("chunk column is malformed")
        elif c == TS_DELTAS:
            ts = self.ts()
            col = [0, *map(sub, ts[1:], ts)] if ts else []
        elif c == SEQ_BASE:
            return self.seq()[0] if n else 0
        elif c == _SEQ_DELTAS:
            seq = self.seq()
            col = [0, *map(sub, seq[1:], seq)] if seq else []
        else:
            raise ChunkError(f"chunk has no column {c}")
        self._cols[c] = col
        return col

    @guard
    def _ints(self, key: int, c: int) -> list[int]:
        col: list[int] | None = self._cols.get(key)
        if col is None:
            col = v2.ints_of(self._block(c), self.n) if self.n else []
            self._cols[key] = col
        return col

    def ts(self) -> list[int]:
        return self._ints(-1, TS_DELTAS)

    def seq(self) -> list[int]:
        return self._ints(-2, SEQ_BASE)

    @guard
    def severity(self) -> bytes:
        col: bytes | None = self._cols.get(-3)
        if col is None:
            if not self.n:
                return b""
            value = v2.generic_of(self._block(SEVERITY), self.n)
            if isinstance(value, bytes):
                col = value
            else:
                try:
                    col = bytes(value)
                except (TypeError, ValueError) as exc:
                    raise ChunkError(f"chunk severity is malformed: {exc}") from exc
            self._cols[-3] = col
        return col

    @guard
    def msgs(self) -> list[Any]:
        col: list[Any] | None = self._cols.get(-4)
        if col is None:
            col = v2.decode_messages(self._block(MSG), self.n) if self.n else []
            self._cols[-4] = col
        return col

    @guard
    def some(self, c: int, idx: list[int], *, raw: bool = False) -> list[Any]:
        if raw and c == FIELDS:
            col: list[Any] | None = self._cols.get(c + 1000)
            if col is None:
                col = v2.fields_of(self._block(c, raw=True), self.n)
                self._cols[c + 1000] = col
        elif raw and c == MSG:
            col = [m.encode("utf-8", "surrogatepass") if type(m) is str else m for m in self.msgs()]
        else:
            col = self.column(c)
        if len(idx) == self.n:
            return col
        return [col[i] for i in idx]

    def span(self, c: int) -> tuple[int, int]:
        return self._spans[_BLOCK[c]]

    def may_hold(self, c: int, needle: bytes) -> bool:
        start, end = self.span(c)
        if c != MSG:
            return self.chunk.find(needle, start, end) >= 0
        # A message's variables are ASCII letters and digits, so every run of
        # other characters in it lies whole in one template text (or in a
        # verbatim message), each a string of this block: a message holding
        # the needle holds each such run of it, and the block's bytes do.
        try:
            needle.decode("utf-8")
        except UnicodeDecodeError:
            return True  # (lone surrogates: verbatim text is stored otherwise)
        chunk = self.chunk
        return all(chunk.find(run, start, end) >= 0 for run in _OTHER_RUNS(needle))

    @guard
    def _fields_starts(self) -> list[int] | None:
        """Where each field map begins in the chunk and where the last ends,
        or None when the column is one map for every row."""
        key = -5
        if key in self._cols:
            starts: list[int] | None = self._cols[key]
            return starts
        start, end = self.span(FIELDS)
        if self.chunk[start + 1] in _MAP_FIRST:
            self._cols[key] = None
            return None
        u = msgpack.Unpacker(raw=False, max_buffer_size=max(1, end - start))
        u.feed(self._view[start:end])
        try:
            if u.read_array_header() != 1 or u.read_array_header() != self.n:
                raise ChunkError("chunk columns differ in length")
            skip, tell = u.skip, u.tell
            starts = [start + tell()]
            append = starts.append
            for _ in range(self.n):
                skip()
                append(start + tell())
        except _MSGPACK_ERRORS as exc:
            raise ChunkError(f"chunk fields are not valid msgpack: {exc}") from exc
        self._cols[key] = starts
        return starts

    @guard
    def holding(self, c: int, needles: list[bytes]) -> set[int]:
        if c != FIELDS:
            raise ChunkError("holding() reads the fields column only")
        chunk = self.chunk
        starts = self._fields_starts()
        if starts is None:  # one map for all
            start, end = self.span(c)
            if any(chunk.find(needle, start, end) >= 0 for needle in needles):
                return set(range(self.n))
            return set()
        end = starts[-1]
        found: set[int] = set()
        for needle in needles:
            pos = chunk.find(needle, starts[0], end)
            while pos >= 0:
                i = bisect_right(starts, pos) - 1
                found.add(i)
                pos = chunk.find(needle, starts[i + 1], end)
        return found

    @guard
    def records(self, idx: list[int], *, identity: bool = True) -> list[Record]:
        if not idx:
            return []
        strings = self.strings
        ts = self.ts()
        host, source, app = self.column(HOST), self.column(SOURCE), self.column(APP)
        pids, sev, fac = self.column(PID), self.severity(), self.column(FACILITY)
        msgs = self.msgs()
        fields = self.column(FIELDS)
        shared = self.n > 1 and fields[0] is fields[-1]  # one map for the chunk: a copy each
        try:
            out = [Record(ts[i], msgs[i], strings[host[i]], strings[source[i]], strings[app[i]],
                          pids[i], sev[i], fac[i], dict(fields[i]) if shared else fields[i])
                   for i in idx]
            if identity:
                origin, seq = self.column(ORIGIN), self.seq()
                for r, i in zip(out, idx):
                    r.origin, r.seq = strings[origin[i]], seq[i]
            return out
        except (TypeError, IndexError, ValueError) as exc:
            raise ChunkError(f"chunk columns are malformed: {exc}") from exc
