"""A chunk read column by column: what a query looks at without building
every Record.

The chunk layout (version 1) is in docs/format.md; :func:`hostlog.chunk.decode_chunk`
decodes all of it at once. A query usually needs a column or two to decide
(time, severity, message) and whole records for a few: this class finds where
the columns lie with msgpack's C skipper (only as far as it is asked to go),
unpacks a column only when asked, and builds Records only for the indices
asked for.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from typing import Any, cast

import msgpack

from hostlog.chunk.v1 import CHUNK_VERSION
from hostlog.chunk.view import FrameColumns
from hostlog.errors import ChunkError
from hostlog.record import Record

__all__ = ["APP", "FACILITY", "FIELDS", "HOST", "MSG", "ORIGIN", "PID", "SEQ_BASE", "SEVERITY",
           "SOURCE", "TS_DELTAS", "FrameColumns", "FrameColumnsV1"]

(_VERSION, _N, _STRINGS, _TS_BASE, TS_DELTAS, HOST, SOURCE, APP, PID, SEVERITY,
 FACILITY, MSG, FIELDS, ORIGIN, SEQ_BASE, SEQ_DELTAS) = range(16)
_COLUMNS = 16
# Below this share of the records wanted, the column of field maps is walked
# element by element (msgpack skips the others in C, ~60 ns each) rather
# than unpacked whole (~0.6 us for a map of 8 journal fields).
_SPARSE = 0.1
_MSGPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)


class FrameColumnsV1(FrameColumns):
    """One version 1 chunk; columns are located and unpacked on first use, and kept."""

    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk
        self._view = memoryview(chunk)
        # what is unpacked or derived, by key: a column by its index (a list;
        # bytes for SEVERITY, an int for SEQ_BASE), its raw form at index +
        # 1000, times at -1, seqs at -2, element offsets at -100 - index
        self._cols: dict[int, Any] = {}
        try:
            u = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=max(1, len(chunk)))
            u.feed(chunk)
            ncols = u.read_array_header()
            version = u.unpack()
            self.n = u.unpack() if ncols > 1 else 0
            if version != CHUNK_VERSION:
                raise ChunkError(f"chunk version {version!r} is not supported (want {CHUNK_VERSION})")
            if self.n == 0:
                self.strings: list[str] = []
                return
            if ncols != _COLUMNS:
                raise ChunkError(f"chunk has {ncols} columns, want {_COLUMNS}")
            self.strings = u.unpack()
            self.ts_base = u.unpack()
        except ChunkError:
            raise
        except _MSGPACK_ERRORS as exc:
            raise ChunkError(f"chunk is not valid msgpack: {exc}") from exc
        if not isinstance(self.strings, list) or not isinstance(self.ts_base, int):
            raise ChunkError("chunk strings or timestamps are malformed")
        self._unpacker = u
        self._starts: list[int] = [u.tell()]  # where columns TS_DELTAS, HOST, ... begin

    def _advance(self, c: int, *, take: bool = False) -> Any:
        """Move the sequential unpacker to the start of column ``c``, noting
        where the columns it passes begin; with ``take``, unpack column ``c``
        on the way (it is then parsed once, not skipped and parsed again)."""
        starts = self._starts
        u = self._unpacker
        value = None
        try:
            while len(starts) <= c - TS_DELTAS + (1 if take else 0):
                if take and len(starts) == c - TS_DELTAS + 1:
                    value = u.unpack()
                else:
                    u.skip()
                starts.append(u.tell())
        except _MSGPACK_ERRORS as exc:
            raise ChunkError(f"chunk is not valid msgpack: {exc}") from exc
        return value

    def start(self, c: int) -> int:
        """Where column ``c`` (>= TS_DELTAS) begins in the chunk."""
        self._advance(c)
        return self._starts[c - TS_DELTAS]

    def span(self, c: int) -> tuple[int, int]:
        """Where column ``c`` (>= TS_DELTAS) lies in the chunk."""
        self._advance(c + 1)
        return self._starts[c - TS_DELTAS], self._starts[c - TS_DELTAS + 1]

    def column(self, c: int) -> list[Any]:
        """Column ``c`` (>= TS_DELTAS) as msgpack unpacks it: a list of n values,
        except SEVERITY (bytes: see :meth:`severity`) and SEQ_BASE (an int)."""
        col: list[Any] | None = self._cols.get(c)
        if col is None:
            if len(self._starts) == c - TS_DELTAS + 1:  # the next one: unpack it in passing
                col = self._advance(c, take=True)
            else:
                start, end = self.span(c)
                try:
                    col = msgpack.unpackb(self._view[start:end], raw=False, strict_map_key=True)
                except _MSGPACK_ERRORS as exc:
                    raise ChunkError(f"chunk column {c} is not valid msgpack: {exc}") from exc
            if c == SEQ_BASE:
                if not isinstance(col, int):
                    raise ChunkError("chunk seq base is not an integer")
            elif not isinstance(col, (list, bytes)) or len(col) != self.n:
                raise ChunkError("chunk columns differ in length")
            self._cols[c] = col
        return col

    def ts(self) -> list[int]:
        col: list[int] | None = self._cols.get(-1)
        if col is None:
            col = list(accumulate(self.column(TS_DELTAS), initial=self.ts_base))
            del col[0]
            self._cols[-1] = col
        return col

    def severity(self) -> bytes:
        return cast(bytes, self.column(SEVERITY))  # a bin column: msgpack gives bytes

    def msgs(self) -> list[Any]:
        return self.column(MSG)

    def seq(self) -> list[int]:
        col: list[int] | None = self._cols.get(-2)
        if col is None:
            base = cast(int, self.column(SEQ_BASE))  # (column() checked it is an int)
            col = list(accumulate(self.column(SEQ_DELTAS), initial=base))
            del col[0]
            self._cols[-2] = col
        return col

    def some(self, c: int, idx: list[int], *, raw: bool = False) -> list[Any]:
        """Elements ``idx`` (ascending) of column ``c``; a column is unpacked
        whole only when much of it is wanted. ``raw``: text as bytes (a map's
        keys too), which unpacks about twice as fast: for readers that look
        at a few fields of each map."""
        key = c + 1000 if raw else c
        col: list[Any] | None = self._cols.get(key)
        if col is None and len(idx) > self.n * _SPARSE:
            if raw:
                start, end = self.span(c)
                try:
                    col = msgpack.unpackb(self._view[start:end], raw=True)
                except _MSGPACK_ERRORS as exc:
                    raise ChunkError(f"chunk column {c} is not valid msgpack: {exc}") from exc
                if not isinstance(col, list) or len(col) != self.n:
                    raise ChunkError("chunk columns differ in length")
                self._cols[key] = col
            else:
                col = self.column(c)
        if col is not None:
            if len(idx) == self.n:
                return col
            return [col[i] for i in idx]
        start = self.start(c)
        u = msgpack.Unpacker(raw=raw, strict_map_key=True,
                             max_buffer_size=max(1, len(self.chunk) - start))
        u.feed(self._view[start:])
        try:
            if u.read_array_header() != self.n:
                raise ChunkError("chunk columns differ in length")
            skip, unpack = u.skip, u.unpack
            out = []
            pos = 0
            for i in idx:
                for _ in range(i - pos):
                    skip()
                out.append(unpack())
                pos = i + 1
        except _MSGPACK_ERRORS as exc:
            raise ChunkError(f"chunk column {c} is not valid msgpack: {exc}") from exc
        return out

    def element_starts(self, c: int) -> list[int]:
        """Where each element of column ``c`` begins in the chunk, and where
        the column ends (n + 1 offsets): msgpack skips the elements in C, so
        this is far cheaper than unpacking a column of maps."""
        key = -100 - c
        starts: list[int] | None = self._cols.get(key)
        if starts is None:
            start = self.start(c)
            u = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(self.chunk) - start))
            u.feed(self._view[start:])
            try:
                if u.read_array_header() != self.n:
                    raise ChunkError("chunk columns differ in length")
                skip, tell = u.skip, u.tell
                starts = [tell()]
                append = starts.append
                for _ in range(self.n):
                    skip()
                    append(tell())
            except _MSGPACK_ERRORS as exc:
                raise ChunkError(f"chunk column {c} is not valid msgpack: {exc}") from exc
            starts = [start + off for off in starts]
            self._cols[key] = starts
        return starts

    def may_hold(self, c: int, needle: bytes) -> bool:
        return self.chunk.find(needle, *self.span(c)) >= 0

    def holding(self, c: int, needles: list[bytes]) -> set[int]:
        """Indices of the elements of column ``c`` whose bytes contain one of
        ``needles`` (a superset of those holding it as a whole value)."""
        starts = self.element_starts(c)
        chunk = self.chunk
        end = starts[-1]
        found: set[int] = set()
        for needle in needles:
            pos = chunk.find(needle, starts[0], end)
            while pos >= 0:
                i = bisect_right(starts, pos) - 1
                found.add(i)
                pos = chunk.find(needle, starts[i + 1], end)  # i is in: on to the next
        return found

    # -- records ---------------------------------------------------------------------
    def records(self, idx: list[int], *, identity: bool = True) -> list[Record]:
        """The Records at ``idx`` (ascending), each with all its fields.

        ``identity=False`` leaves ``origin`` and ``seq`` empty: what the short
        and cat layouts print does not need them, and they are the chunk's
        last columns (reaching them means walking past every field map).
        """
        if not idx:
            return []
        strings = self.strings
        ts = self.ts()
        host, source, app = self.column(HOST), self.column(SOURCE), self.column(APP)
        pids, sev, fac = self.column(PID), self.severity(), self.column(FACILITY)
        # strings unpack about as fast as msgpack skips them: take them all
        msgs = self.column(MSG)
        if len(idx) != self.n:
            msgs = [msgs[i] for i in idx]
        fields = self.some(FIELDS, idx)
        try:
            if identity:
                origin, seq = self.column(ORIGIN), self.seq()
                return [Record(ts[i], msgs[k], strings[host[i]], strings[source[i]],
                               strings[app[i]], pids[i], sev[i], fac[i], fields[k],
                               strings[origin[i]], seq[i])
                        for k, i in enumerate(idx)]
            return [Record(ts[i], msgs[k], strings[host[i]], strings[source[i]], strings[app[i]],
                           pids[i], sev[i], fac[i], fields[k])
                    for k, i in enumerate(idx)]
        except (TypeError, IndexError) as exc:
            raise ChunkError(f"chunk columns are malformed: {exc}") from exc
