"""Chunk layout version 2: a column store, each column its own block.

The layout is in docs/format.md ("Chunk (version 2)"). In short::

    chunk = 0x02 || msgpack [n, [len_0, ..., len_10]] || block_0 || ... || block_10

one block per record attribute (ts, host, source, app, pid, severity,
facility, msg, fields, origin, seq), each one msgpack value that decodes
alone, so a reader unpacks only the blocks it needs
(:class:`hostlog.chunk.v2_columns.FrameColumnsV2`). A column that holds one
value for the whole chunk is that value once; timestamps and seqs are a base
and deltas (or a step); host, source, app and origin are small dictionaries
with one-byte codes. Messages are stored by template: a cheap tokenizer cuts
the words that hold a digit out of the text (a *variable*; what is left,
words without digits, punctuation and spaces, is the template), and each
variable slot of a template is a column of its own: integers (delta-coded)
when every value reads back exactly as it was written, dictionary codes
otherwise. Byte for byte lossless: bytes messages and text that UTF-8 cannot
carry (lone surrogates) are kept verbatim.

Sans-IO and pure: bytes in, bytes out.
"""

from __future__ import annotations

import functools
import re
import sys
from array import array
from collections.abc import Callable, Sequence
from itertools import accumulate, chain, repeat
from operator import sub
from typing import Any, TypeVar, cast

import msgpack

from hostlog.errors import ChunkError
from hostlog.record import Columns, Record, record_columns

__all__ = ["CHUNK_VERSION", "MAGIC", "decode_chunk", "decode_columns", "encode_chunk",
           "encode_columns", "decode_messages", "encode_messages"]

CHUNK_VERSION = 2
#: The first byte of a version 2 chunk (a version 1 chunk starts with a msgpack
#: array header, 0x90-0x9f or 0xdc, never with this).
MAGIC = b"\x02"
#: The blocks, in their order in the chunk.
(B_TS, B_HOST, B_SOURCE, B_APP, B_PID, B_SEVERITY, B_FACILITY, B_MSG, B_FIELDS, B_ORIGIN,
 B_SEQ) = range(11)
BLOCKS = 11

# Template ids below this are verbatim messages: 0 bytes, 1 text UTF-8 cannot
# carry (stored as its "surrogatepass" encoding).
_VERBATIM_BYTES, _VERBATIM_TEXT, _FIRST_TEMPLATE = 0, 1, 2
# Slot kinds (the first element of a slot's encoding).
S_INT, S_DELTA, S_STR, S_DICT, S_PACKED, S_PACKED_DELTA = range(6)
# Widest decimal number kept as an integer: below 10**19 it fits msgpack's uint64.
_MAX_DIGITS = 19

# The variables of a message, in ASCII words (runs of letters and digits):
# a whole word when it is lowercase hex with a digit, or holds a letter after
# a digit, or ends in five digits or more (ids, hashes, plain numbers); only
# the digits when a word is letters and then one to four digits ("node12",
# "R02": the letters stay in the template). Words without a digit are
# template text. The look-behinds start a match only at a word's start (or
# its last letter), so a long word costs one pass.
VARIABLES = (r"((?<![0-9A-Za-z])(?:[0-9a-f]*[0-9][0-9a-f]*(?![0-9A-Za-z])"
             r"|[A-Za-z]*[0-9][0-9A-Za-z]*[A-Za-z][0-9A-Za-z]*"
             r"|[A-Za-z]*[0-9]{5,}(?![0-9A-Za-z])|[0-9]+(?![0-9A-Za-z]))"
             r"|(?<=[A-Za-z])[0-9]{1,4}(?![0-9A-Za-z]))")


@functools.cache
def _splitter() -> Callable[[str], list[str]]:
    # compiled on first use: ~6 ms, which a reader that never writes v2 skips
    return re.compile(VARIABLES).split

_ERRORS = (ValueError, TypeError, IndexError, KeyError, OverflowError, msgpack.UnpackException)


_F = TypeVar("_F", bound=Callable[..., Any])


def guard(fn: _F) -> _F:
    """A decoder whose malformed input raises ChunkError, never another error."""
    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ChunkError:
            raise
        except (*_ERRORS, AttributeError, UnicodeDecodeError, MemoryError) as exc:
            raise ChunkError(f"chunk is malformed ({fn.__name__}): {exc!r}") from exc
    return cast(_F, guarded)


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


# -- encoding ----------------------------------------------------------------------------

_INT64 = range(-(1 << 63), 1 << 63)


def _ints(values: Sequence[int]) -> list[Any]:
    """An int column: [base] (all equal), [base, step] (an arithmetic
    progression), [base, deltas] (n - 1 deltas) or [[values]] (deltas that
    int64 cannot hold)."""
    first = values[0]
    if type(values) is range and values.step in _INT64:
        return [first] if len(values) == 1 else [first, values.step]
    deltas = list(map(sub, values[1:], values))
    if not deltas:
        return [first]
    if not (min(deltas) in _INT64 and max(deltas) in _INT64):
        return [list(values)]
    step = deltas[0]
    if deltas.count(step) == len(deltas):
        return [first] if step == 0 else [first, step]
    return [first, deltas]


def _strings(column: Sequence[Any]) -> list[Any]:
    """A dictionary column: [value] (all equal) or [values, codes] (codes a
    bin of one byte each when there are at most 256 values)."""
    first = column[0]
    if column.count(first) == len(column):  # one value: a pointer compare per row
        return [first]
    table = dict.fromkeys(column)
    index = dict(zip(table, range(len(table))))
    codes = list(map(index.__getitem__, column))
    return [list(table), bytes(codes) if len(table) <= 256 else codes]


def _generic(column: Sequence[Any], *, binary: bool = False) -> list[Any]:
    """Any column: [value] (all equal) or [[values]] (bin when ``binary``)."""
    first = column[0]
    if column.count(first) == len(column) and type(first) is not list:
        return [first]
    return [bytes(column) if binary else list(column)]


def _packed(values: list[int]) -> list[Any]:
    """Integers as [low, w, bin]: each value less low in w little-endian bytes."""
    low = min(values)
    w = max(1, ((max(values) - low).bit_length() + 7) // 8)
    to_bytes = cast(Callable[[int, int, str], bytes], int.to_bytes)
    return [low, w, b"".join(map(to_bytes, map(sub, values, repeat(low)), repeat(w),
                                 repeat("little")))]


_ARRAYS: dict[int, str] = {}
for _code in "BHILQ":
    _ARRAYS.setdefault(array(_code).itemsize, _code)


def _unpacked(low: Any, w: Any, data: Any, count: int) -> list[int]:
    if (type(low) is not int or type(w) is not int or w < 1 or not isinstance(data, bytes)
            or len(data) != w * count):
        raise ChunkError("chunk packed integers are malformed")
    code = _ARRAYS.get(w)
    values: Sequence[int]
    if code is not None:
        packed = array(code)
        packed.frombytes(data)
        if sys.byteorder == "big":
            packed.byteswap()
        values = packed
    else:
        values = [int.from_bytes(data[i:i + w], "little") for i in range(0, len(data), w)]
    return [low + u for u in values] if low else list(values)


def _slot(values: Sequence[str]) -> list[Any]:
    """One variable slot of a template, over the rows that use it."""
    joined = "".join(values)
    if joined.isdigit() and joined.isascii():  # (the tokens are ASCII; isdigit alone takes '²')
        widths = set(map(len, values))
        if max(widths) <= _MAX_DIGITS:
            ints = list(map(int, values))
            if list(map(str, ints)) == list(values):
                width = 0
            elif len(widths) == 1:
                width = widths.pop()  # zero-padded to one width: zfill gives them back
            else:
                width = -1
            if width >= 0:
                # the smallest of: the values or their deltas, as msgpack ints
                # (small ones take a byte) or packed to one byte width
                forms = [[S_INT, width, ints], [S_PACKED, width, *_packed(ints)]]
                if len(ints) > 1 and max(ints) - min(ints) < 1 << 63:  # deltas fit int64
                    deltas = list(map(sub, ints[1:], ints))
                    forms += [[S_DELTA, width, ints[0], deltas],
                              [S_PACKED_DELTA, width, ints[0], *_packed(deltas)]]
                return min(forms, key=lambda f: len(_pack(f)))
    table = dict.fromkeys(values)
    if len(table) == len(values):
        return [S_STR, list(values)]
    index = dict(zip(table, range(len(table))))
    codes = list(map(index.__getitem__, values))
    return [S_DICT, list(table), bytes(codes) if len(table) <= 256 else codes]


def encode_messages(msgs: Sequence[str | bytes]) -> bytes:
    """The message block: msgpack [templates, template ids, slots, verbatim]."""
    try:
        return _pack(_messages(msgs, frozenset()))
    except UnicodeEncodeError:
        # text UTF-8 cannot carry (lone surrogates): those messages verbatim
        odd = set()
        for i, m in enumerate(msgs):
            if type(m) is str and not _utf8(m):
                odd.add(i)
        return _pack(_messages(msgs, frozenset(odd)))


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _messages(msgs: Sequence[str | bytes], odd: frozenset[int]) -> list[Any]:
    templates: dict[tuple[str, ...], int] = {}
    rows: list[list[list[str]]] = []  # per template: the variables of each of its rows
    tids: list[int] = []
    verbatim: list[bytes] = []
    split = _splitter()
    for i, m in enumerate(msgs):
        if type(m) is str and not (odd and i in odd):
            parts = split(m)
            key = tuple(parts[::2])
            t = templates.get(key)
            if t is None:
                t = templates[key] = len(rows) + _FIRST_TEMPLATE
                rows.append([])
            tids.append(t)
            rows[t - _FIRST_TEMPLATE].append(parts[1::2])
        elif type(m) is str:
            tids.append(_VERBATIM_TEXT)
            verbatim.append(m.encode("utf-8", "surrogatepass"))
        elif isinstance(m, (bytes, bytearray)):
            tids.append(_VERBATIM_BYTES)
            verbatim.append(bytes(m))
        else:
            raise ChunkError(f"a message is {type(m).__name__}, not str or bytes")
    # A slot with one value in all its template's rows (every slot of a
    # template used once) is folded into the template's text.
    texts_out: list[list[str]] = []
    slots: list[list[list[Any]]] = []
    for key, group in zip(templates, rows):
        texts = [key[0]]
        kept = []
        for j, column in enumerate(zip(*group), 1):
            first = column[0]
            if column.count(first) == len(column):
                texts[-1] += first + key[j]
            else:
                kept.append(_slot(column))
                texts.append(key[j])
        texts_out.append(texts)
        slots.append(kept)
    return [texts_out, _generic(tids, binary=len(rows) < 254), slots, verbatim]


def encode_columns(columns: Sequence[Sequence[Any]]) -> bytes:
    """A version 2 chunk of records given as :func:`record_columns` (not empty)."""
    ts, host, source, app, pid, severity, facility, msg, fields, origin, seq = columns
    n = len(ts)
    try:
        blocks = [
            _pack(_ints(ts)), _pack(_strings(host)), _pack(_strings(source)),
            _pack(_strings(app)), _pack(_generic(pid)), _pack(_generic(severity, binary=True)),
            _pack(_generic(facility)), encode_messages(msg), _pack(_fields(fields)),
            _pack(_strings(origin)), _pack(_ints(seq)),
        ]
    except ChunkError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise ChunkError(f"record does not encode: {exc}") from exc
    return b"".join([MAGIC, _pack([n, list(map(len, blocks))]), *blocks])


def _fields(fields: Sequence[Any]) -> list[Any]:
    first = fields[0]
    if fields.count(first) == len(fields):  # (shared dicts: an identity compare per row)
        return [first]
    return [list(fields)]


def encode_chunk(records: Sequence[Record]) -> bytes:
    """Encode records as one version 2 chunk (see docs/format.md)."""
    if not records:
        return MAGIC + _pack([0, []])
    return encode_columns(record_columns(records))


# -- decoding ----------------------------------------------------------------------------

@guard
def header(data: bytes | memoryview) -> tuple[int, list[tuple[int, int]]]:
    """The record count and where each block lies: (start, end) offsets in
    ``data``. ChunkError if it is not a version 2 chunk."""
    if data[:1] != MAGIC:
        raise ChunkError("chunk is not version 2")
    try:
        u = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(data)))
        u.feed(data[1:])
        head = u.unpack()
        at = 1 + u.tell()
    except _ERRORS as exc:
        raise ChunkError(f"chunk header is not valid msgpack: {exc}") from exc
    if (not isinstance(head, list) or len(head) != 2 or type(head[0]) is not int
            or not isinstance(head[1], list)):
        raise ChunkError("chunk header is malformed")
    n, lengths = head
    if n < 0:
        raise ChunkError(f"chunk record count {n!r} is not a count")
    if n == 0:
        if lengths:
            raise ChunkError("an empty chunk has blocks")
        return 0, []
    if len(lengths) != BLOCKS or any(type(x) is not int or x < 1 for x in lengths):
        raise ChunkError(f"chunk block lengths are malformed: {lengths!r}")
    spans = []
    for length in lengths:
        spans.append((at, at + length))
        at += length
    if at != len(data):
        raise ChunkError(f"chunk is {len(data)} bytes, its blocks say {at}")
    return n, spans


@guard
def unpack_block(data: bytes | memoryview, span: tuple[int, int], *, raw: bool = False) -> Any:
    try:
        return msgpack.unpackb(data[span[0]:span[1]], raw=raw, strict_map_key=True)
    except _ERRORS as exc:
        raise ChunkError(f"chunk block is not valid msgpack: {exc}") from exc


def _check(column: Any, n: int) -> Any:
    if not isinstance(column, (list, bytes)) or len(column) != n:
        raise ChunkError("chunk columns differ in length")
    return column


@guard
def ints_of(block: Any, n: int) -> list[int]:
    """An int column from its block."""
    if len(block) == 1 and isinstance(block[0], list):
        values = _check(block[0], n)
        if any(type(v) is not int for v in values):
            raise ChunkError("chunk int column is malformed")
        return values  # type: ignore[no-any-return]
    if not isinstance(block, list) or not 1 <= len(block) <= 2 or type(block[0]) is not int:
        raise ChunkError("chunk int column is malformed")
    base = block[0]
    if len(block) == 1:
        return [base] * n
    rest = block[1]
    if type(rest) is int:
        return list(range(base, base + rest * n, rest)) if rest else [base] * n
    if not isinstance(rest, list) or len(rest) != n - 1:
        raise ChunkError("chunk columns differ in length")
    out = [base]
    acc = base
    for d in rest:
        acc += d
        out.append(acc)
    return out


@guard
def strings_of(block: Any, n: int) -> tuple[list[Any], list[int] | bytes]:
    """A dictionary column from its block: (values, a code per row)."""
    if not isinstance(block, list) or not 1 <= len(block) <= 2:
        raise ChunkError("chunk dictionary column is malformed")
    if len(block) == 1:
        return [block[0]], bytes(n)
    values, codes = block
    if not isinstance(values, list) or not values:
        raise ChunkError("chunk dictionary is malformed")
    _check(codes, n)
    if isinstance(codes, list) and any(type(c) is not int or not 0 <= c < len(values) for c in codes):
        raise ChunkError("chunk dictionary code out of range")
    if isinstance(codes, bytes) and codes and max(codes) >= len(values):
        raise ChunkError("chunk dictionary code out of range")
    return values, codes


@guard
def generic_of(block: Any, n: int) -> Any:
    """A generic column (a list, or bin) from its block."""
    if not isinstance(block, list) or len(block) != 1:
        raise ChunkError("chunk column is malformed")
    value = block[0]
    if isinstance(value, (list, bytes)) and not isinstance(value, str):
        return _check(value, n)
    return [value] * n


@guard
def _slot_values(slot: Any, m: int) -> list[str]:
    kind = slot[0]
    if kind == S_STR:
        return _check(slot[1], m)  # type: ignore[no-any-return]
    if kind == S_DICT:
        table, codes = slot[1], slot[2]
        _check(codes, m)
        return list(map(table.__getitem__, codes))
    if kind in (S_INT, S_DELTA, S_PACKED, S_PACKED_DELTA):
        width = slot[1]
        if kind == S_INT and len(slot) == 3:
            ints = _check(slot[2], m)
        elif kind == S_DELTA and len(slot) == 4:
            ints = ints_of([slot[2], slot[3]], m)
        elif kind == S_PACKED and len(slot) == 5:
            ints = _unpacked(slot[2], slot[3], slot[4], m)
        elif kind == S_PACKED_DELTA and len(slot) == 6 and type(slot[2]) is int:
            ints = list(accumulate(_unpacked(slot[3], slot[4], slot[5], m - 1), initial=slot[2]))
        else:
            raise ChunkError("chunk integer slot is malformed")
        if type(width) is not int or width < 0:
            raise ChunkError("chunk integer slot width is malformed")
        text = list(map(str, ints))
        if width:
            text = [s.zfill(width) for s in text]
        return text
    raise ChunkError(f"chunk template slot kind {kind!r} is unknown")


@guard
def decode_messages(block: Any, n: int) -> list[str | bytes]:
    """The messages from the message block (as unpacked)."""
    try:
        templates, tid_block, slots, verbatim = block
        tids = generic_of(tid_block, n)
        if len(slots) != len(templates):
            raise ChunkError("chunk templates and slots differ in number")
        groups: list[list[str | bytes]] = []
        counts = [0] * (len(templates) + _FIRST_TEMPLATE)
        if isinstance(tids, list) and any(type(t) is not int or t < 0 for t in tids):
            raise ChunkError("chunk template id out of range")
        for t in tids:
            counts[t] += 1
        for texts, group, m in zip(templates, slots, counts[_FIRST_TEMPLATE:]):
            if len(group) != len(texts) - 1:
                raise ChunkError("chunk template and its slots differ")
            if not group:
                groups.append([texts[0]] * m)
                continue
            columns: list[list[str]] = [[texts[0]] * m]
            for slot, text in zip(group, texts[1:]):
                columns.append(_slot_values(slot, m))
                columns.append([text] * m)
            groups.append(list(map("".join, zip(*columns))))
        if len(verbatim) != counts[0] + counts[1]:
            raise ChunkError("chunk verbatim messages are miscounted")
        # Rows by template, in row order within each: a stable sort of the row
        # numbers by template id; the message of row i is at the rank of i.
        order = sorted(range(n), key=tids.__getitem__)
        rank = sorted(range(n), key=order.__getitem__)
        verbatim_msgs: list[str | bytes] = [
            v.decode("utf-8", "surrogatepass") if t == _VERBATIM_TEXT else v
            for v, t in zip(verbatim, (t for t in tids if t < _FIRST_TEMPLATE))]
        if any(not isinstance(v, bytes) for v in verbatim):
            raise ChunkError("chunk verbatim message is not bin")
        # the verbatim rows sort first: those of id 0, then those of id 1
        joined = list(chain(_verbatim_in_order(verbatim_msgs, tids), *groups))
        return list(map(joined.__getitem__, rank))
    except ChunkError:
        raise
    except (*_ERRORS, AttributeError, UnicodeDecodeError) as exc:
        raise ChunkError(f"chunk messages are malformed: {exc}") from exc


def _verbatim_in_order(msgs: list[str | bytes], tids: Sequence[int]) -> list[str | bytes]:
    """The verbatim messages in the order the sort puts their rows: id 0's
    rows first, then id 1's (the stored order is row order)."""
    if not msgs:
        return []
    kinds = [t for t in tids if t < _FIRST_TEMPLATE]
    return ([m for m, t in zip(msgs, kinds) if t == _VERBATIM_BYTES]
            + [m for m, t in zip(msgs, kinds) if t == _VERBATIM_TEXT])


@guard
def _all_columns(data: bytes) -> tuple[int, list[Any]]:
    n, spans = header(data)
    if n == 0:
        return 0, []
    view = memoryview(data)
    blocks = [unpack_block(view, span) for span in spans]
    try:
        ts = ints_of(blocks[B_TS], n)
        named = []
        for b in (B_HOST, B_SOURCE, B_APP, B_ORIGIN):
            values, codes = strings_of(blocks[b], n)
            if any(type(v) is not str for v in values):
                raise ChunkError("chunk dictionary value is not text")
            named.append([values[0]] * n if len(values) == 1 else list(map(values.__getitem__, codes)))
        severity = list(generic_of(blocks[B_SEVERITY], n))
        columns = [ts, named[0], named[1], named[2], generic_of(blocks[B_PID], n), severity,
                   generic_of(blocks[B_FACILITY], n), decode_messages(blocks[B_MSG], n),
                   fields_of(blocks[B_FIELDS], n), named[3], ints_of(blocks[B_SEQ], n)]
    except ChunkError:
        raise
    except _ERRORS as exc:
        raise ChunkError(f"chunk columns are malformed: {exc}") from exc
    return n, columns


@guard
def fields_of(block: Any, n: int) -> list[Any]:
    if not isinstance(block, list) or len(block) != 1:
        raise ChunkError("chunk fields column is malformed")
    value = block[0]
    if isinstance(value, dict):
        return [value] * n
    rows = _check(value, n)
    if any(type(row) is not dict for row in rows):  # (a fuzzed chunk: ints, a bytes column)
        raise ChunkError("chunk fields column holds a row that is not a map")
    return rows  # type: ignore[no-any-return]


def decode_chunk(data: bytes) -> list[Record]:
    """Decode a version 2 chunk; raise ChunkError if it is not one."""
    n, columns = _all_columns(data)
    if n == 0:
        return []
    ts, host, source, app, pid, severity, facility, msg, fields, origin, seq = columns
    # every row gets its own fields dict (a constant column shares one value)
    return [Record(ts=ts[i], msg=msg[i], host=host[i], source=source[i], app=app[i], pid=pid[i],
                   severity=severity[i], facility=facility[i], fields=dict(fields[i]),
                   origin=origin[i], seq=seq[i])
            for i in range(n)]


def decode_columns(data: bytes) -> Columns:
    """Decode a version 2 chunk into a batch; ChunkError if it is not one."""
    n, columns = _all_columns(data)
    if n == 0:
        return Columns.empty()
    return Columns(columns)
