"""A chunk read column by column, whatever its layout version.

``FrameColumns(chunk)`` gives the reader of the version the chunk carries
(:class:`hostlog.chunk.v1_columns.FrameColumnsV1` or
:class:`hostlog.chunk.v2_columns.FrameColumnsV2`); both offer what this class
declares, so a query filter, a formatter or the receiver reads either
without knowing which it holds.
"""

from __future__ import annotations

from typing import Any

from hostlog.record import Record

__all__ = ["FrameColumns", "is_v2"]


def is_v2(chunk: bytes | memoryview) -> bool:
    """Whether a chunk is of layout version 2 (its first byte says so)."""
    return chunk[:1] == b"\x02"


class FrameColumns:
    """One chunk; its columns are decoded on first use, and kept.

    Columns are read by the indices :mod:`hostlog.chunk` exports (``HOST``,
    ``MSG``, ...). ``strings`` is the dictionary the host, source, app and
    origin columns index into.
    """

    chunk: bytes
    n: int
    strings: list[str]

    def __new__(cls, chunk: bytes) -> FrameColumns:
        if cls is FrameColumns:
            if is_v2(chunk):
                from hostlog.chunk.v2_columns import FrameColumnsV2
                cls = FrameColumnsV2
            else:
                from hostlog.chunk.v1_columns import FrameColumnsV1
                cls = FrameColumnsV1
        return object.__new__(cls)

    def column(self, c: int) -> Any:
        """Column ``c``: a list of n values (indices into :attr:`strings` for
        host, source, app and origin), bytes for SEVERITY."""
        raise NotImplementedError

    def ts(self) -> list[int]:
        raise NotImplementedError

    def severity(self) -> bytes:
        raise NotImplementedError

    def msgs(self) -> list[Any]:
        raise NotImplementedError

    def seq(self) -> list[int]:
        raise NotImplementedError

    def some(self, c: int, idx: list[int], *, raw: bool = False) -> list[Any]:
        """Elements ``idx`` (ascending) of column ``c``; ``raw``: text as bytes."""
        raise NotImplementedError

    def span(self, c: int) -> tuple[int, int]:
        """Where column ``c`` lies in :attr:`chunk`."""
        raise NotImplementedError

    def may_hold(self, c: int, needle: bytes) -> bool:
        """False only when no element of column ``c`` can hold ``needle``
        (as text, in its UTF-8 bytes)."""
        raise NotImplementedError

    def holding(self, c: int, needles: list[bytes]) -> set[int]:
        """Indices of the elements of column ``c`` (FIELDS) whose encoding
        holds one of ``needles`` (a superset of those holding it as a value)."""
        raise NotImplementedError

    def records(self, idx: list[int], *, identity: bool = True) -> list[Record]:
        """The Records at ``idx`` (ascending); ``identity=False`` leaves
        ``origin`` and ``seq`` empty."""
        raise NotImplementedError
