"""Scanning many frames on every core: forked workers, output merged in order.

A query that reads much of the spool (``-p``, ``-g``, ``-S`` over days,
without ``-n``) spends its time frame by frame: decrypt, decompress, look at
a column or two, build and format what matches. Frames are independent, so
W forked workers take batches of frames in turn (worker w: batches w, w+W,
w+2W, ...), format each batch into bytes and send it through their own pipe;
the parent writes the batches out in order, reading each from the worker
that has it. A pipe holds about one batch: a worker that is ahead of the
output waits on its pipe, so memory stays bounded and no sorting is needed.

The one piece of output state, the boot separator, is joined at batch
edges: a batch reports the first and last boot it printed.

Workers are the parent's own children, forked after the query is parsed and
the spool opened; each is waited for (and, if the parent stops early,
killed) by its pid.
"""

from __future__ import annotations

import os
import signal
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hostlog.query.filters import Query
from hostlog.query.run import ColumnPick, Printer, frame_selected
from hostlog.spool.frame import IndexEntry
from hostlog.spool.reader import SpoolReader
from hostlog.spool.segment import Damage

__all__ = ["BATCH_FRAMES", "MIN_FRAMES", "QueryWorkerError", "worker_count", "write_parallel"]

#: Fewer frames than this are read in the one process: forking, and the
#: caches each worker fills again, cost more (measured on 1,000-record frames).
MIN_FRAMES = 64
#: Frames per batch: enough to make the per-batch cost vanish, few enough
#: that the first output comes quickly and a pipe's worth stays small.
BATCH_FRAMES = 8
# payload length, records, highest spool seq, error/damage text length,
# first boot, last boot (32 hex digits, or zeros), flags
_HEADER = struct.Struct("<QQQI32s32sB")
_FAILED = 1


class QueryWorkerError(RuntimeError):
    """A worker could not do its part (its error, as text)."""


def worker_count() -> int:
    """One worker per CPU this process may use (at most 8);
    ``HOSTLOG_QUERY_WORKERS`` sets the number (1: no workers)."""
    forced = os.environ.get("HOSTLOG_QUERY_WORKERS", "")
    if forced.isdigit() and int(forced) > 0:
        return min(int(forced), 64)
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def write_parallel(out: BinaryIO, reader: SpoolReader, query: Query,
                   frames: list[tuple[Path, IndexEntry]], make_printer: Callable[[], Printer],
                   *, reverse: bool, identity: bool, workers: int) -> tuple[int, int]:
    """Write what the query selects from ``frames`` (in the order given),
    formatted; returns (records written, highest spool seq written)."""
    batches = [frames[i:i + BATCH_FRAMES] for i in range(0, len(frames), BATCH_FRAMES)]
    workers = max(1, min(workers, len(batches)))
    out.flush()  # nothing buffered may be written twice
    pids: list[int] = []
    fds: list[int] = []
    done = False
    try:
        for w in range(workers):
            rfd, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker
                os.close(rfd)
                for fd in fds:
                    os.close(fd)
                status = 1
                try:
                    _work(wfd, reader, query, batches, range(w, len(batches), workers),
                          make_printer, reverse=reverse, identity=identity)
                    status = 0
                finally:
                    os._exit(status)
            os.close(wfd)
            pids.append(pid)
            fds.append(rfd)
        result = _merge(out, fds, len(batches), make_printer(), reader=reader)
        done = True
        return result
    finally:
        for fd in fds:
            os.close(fd)
        for pid in pids:
            _reap(pid, kill=not done)


def _merge(out: BinaryIO, fds: list[int], n_batches: int, joiner: Printer, *,
           reader: SpoolReader) -> tuple[int, int]:
    total = top = 0
    previous_boot: str | None = None
    for b in range(n_batches):
        fd = fds[b % len(fds)]
        header = _read_exact(fd, _HEADER.size)
        if len(header) < _HEADER.size:
            raise QueryWorkerError("a query worker ended without its output")
        size, count, batch_top, text_len, first, last, flags = _HEADER.unpack(header)
        payload = _read_exact(fd, size)
        text = _read_exact(fd, text_len).decode("utf-8", "replace")
        if flags & _FAILED or len(payload) < size:
            raise QueryWorkerError(text or "a query worker failed")
        if text:
            reader.damage.extend(_Noted("", 0, line) for line in text.split("\n"))
        first_boot, last_boot = _boot(first), _boot(last)
        if joiner.boot_lines and first_boot and previous_boot and first_boot != previous_boot:
            out.write(joiner.separator(first_boot))
        out.write(payload)
        if last_boot:
            previous_boot = last_boot
        total += count
        top = max(top, batch_top)
    out.flush()
    return total, top


def _work(wfd: int, reader: SpoolReader, query: Query, batches: list[list[tuple[Path, IndexEntry]]],
          mine: range, make_printer: Callable[[], Printer], *, reverse: bool, identity: bool) -> None:
    seg_path: Path | None = None
    seg = None
    try:
        for b in mine:
            printer = make_printer()
            parts: list[bytes] = []
            count = top = 0
            damage_from = len(reader.damage)
            for path, entry in batches[b]:
                if path != seg_path:
                    if seg is not None:
                        seg.close()
                    seg, seg_path = reader.open_segment(path), path
                if seg is None:
                    continue  # removed by retention since the parent listed it
                piece = frame_selected(reader, seg, entry, query, identity=identity,
                                       columnar=printer.columns is not None)
                if isinstance(piece, ColumnPick):
                    picked: list = piece.idx
                    piece.reverse = reverse
                else:
                    picked = piece
                    if reverse:
                        piece.reverse()
                if not picked:
                    continue
                parts.append(printer(piece))
                count += len(picked)
                top = max(top, printer.top)
            payload = b"".join(parts)
            text = "\n".join(str(d) for d in reader.damage[damage_from:]).encode()
            first, last = (printer.first or "").encode(), (printer.last or "").encode()
            _write_all(wfd, _HEADER.pack(len(payload), count, top, len(text), first, last, 0)
                       + payload + text)
    except BrokenPipeError:
        pass  # the parent stopped reading: nothing more to do
    except BaseException as exc:  # report it, then end
        text = f"query worker: {type(exc).__name__}: {exc}".encode()
        try:
            _write_all(wfd, _HEADER.pack(0, 0, 0, len(text), b"", b"", _FAILED) + text)
        except OSError:
            pass
        raise
    finally:
        if seg is not None:
            seg.close()
        os.close(wfd)


@dataclass(frozen=True, slots=True)
class _Noted(Damage):
    """Damage a worker reported, kept as its text (``reason``: what str() of
    the worker's Damage gave), which is what str() gives again."""

    def __str__(self) -> str:
        return self.reason


def _boot(raw: bytes) -> str | None:
    text = raw.rstrip(b"\0").decode("ascii", "replace")
    return text or None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes:
    parts = []
    while n > 0:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _reap(pid: int, *, kill: bool) -> None:
    """Wait for a worker; when the parent stops early, one still running is
    killed first."""
    try:
        if kill and os.waitpid(pid, os.WNOHANG)[0] == 0:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
