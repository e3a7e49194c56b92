"""Rewriting sealed segments: compaction and the archive tier.

One mechanism used twice (docs/operations.md "Archive and compaction"):

* **compaction**: a segment sealed with small frames (a quiet host writes a
  frame per sync interval) is rewritten in place, LZ4 HC, frames filled up
  to ``frame_records`` / ``frame_bytes``; same name, same records, same
  seqs, a better ratio.
* **archiving** (``[spool.archive]``): a sealed segment whose newest record
  is older than ``after`` is rewritten into the archive directory with zstd
  at ``compression``; deleted there once its newest record is older than
  ``keep`` and every forward destination has acknowledged it.

A rewrite reads every frame (authenticated; a segment with a damaged frame
is never rewritten: it stays as it is, reported), re-chunks the records into
full frames in seq order (a frame never spans a gap in the seqs), seals them
with a new salt and new nonces, rebuilds the footer with its counts, and
keeps the original's first seq (its name), agent id, creation and sealing
times (so retention by age is not reset). It is written to a temporary name
(``.<name>.rewrite``), fsynced, renamed to ``<name>`` in its directory, and
the directory fsynced; only then is an archived segment's original deleted.

Crash safety: before the rename only the original exists (a temporary file
left behind is removed at the next start). A compaction's rename replaces
the original atomically. An archive's rename makes both copies exist until
the original is unlinked: readers (spool/reader.py) list ``segments/``
first, then the archive, and read a name found in both from the archive
only (a copy there is complete, it got its name by a rename); the next
start, or the next pass, unlinks such an original. Nothing is lost and
nothing is read twice at any point.

Threads: the rewrite itself (reading, compressing, writing the temporary
file) runs on the archiver's thread without the spool's lock; the commit
(rename, unlink, the spool's list of segments) runs under it, and checks
that retention did not delete the segment meanwhile.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hostlog.chunk import ChunkError, chunk_version, decode_columns, encode_columns
from hostlog.crashpoint import crashpoint
from hostlog.errors import SpoolError
from hostlog.record import Columns
from hostlog.spool import frame as F
from hostlog.spool.index import CountsBuilder, frame_counts, frame_index
from hostlog.spool.keys import Keyring, derive_segment_keys
from hostlog.spool.segment import Damage, SegmentReader, segment_first_seq
from hostlog.spool.state import fsync_dir, read_json, write_json

if TYPE_CHECKING:
    from hostlog.config import Config
    from hostlog.config import Spool as SpoolConfig
    from hostlog.spool.spool import SegmentInfo, Spool

log = logging.getLogger("hostlog.spool.archive")

__all__ = ["ArchivePolicy", "Archiver", "PassReport", "RewriteRefused", "RewriteResult",
           "archive_dir", "rewrite_segment"]

#: A temporary rewrite: never a segment name (readers and recovery pass over it).
TMP_SUFFIX = ".rewrite"
_TMP_RE = re.compile(r"^\.\d{20}\.seg\.rewrite$")
ARCHIVE_META = "archive.json"  # in the spool directory: where the archive is, when not the default


def archive_dir(spool_dir: Path) -> Path:
    """The archive directory of a spool: the one its agent recorded in
    ``archive.json`` (``[spool.archive] dir``), else ``<spool>/archive``."""
    try:
        meta = read_json(spool_dir / ARCHIVE_META, {})
    except ValueError:
        meta = {}
    if isinstance(meta, dict) and isinstance(meta.get("dir"), str):
        return Path(meta["dir"])
    return spool_dir / "archive"


class RewriteRefused(SpoolError):
    """A segment that is not rewritten (damaged, unsealed): it stays as it is."""


@dataclass(frozen=True, slots=True)
class RewriteResult:
    name: str
    records: int
    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int
    chunk_bytes: int
    ts_max: int


def _runs(seg: SegmentReader, entries: list[F.IndexEntry]) -> Iterator[tuple[int, Columns, int]]:
    """(first seq, rows, chunk layout version) of every frame, in order;
    RewriteRefused at damage."""
    for entry in entries:
        chunk = seg.read_chunk(entry)
        if isinstance(chunk, Damage):
            raise RewriteRefused(f"{seg.path.name}: a damaged frame is not rewritten ({chunk})")
        try:
            cols = decode_columns(chunk)
        except ChunkError as exc:
            raise RewriteRefused(f"{seg.path.name}: frame at {entry.offset} does not decode "
                                 f"({exc}); not rewritten") from None
        if len(cols) != entry.count:
            raise RewriteRefused(f"{seg.path.name}: frame at {entry.offset} holds {len(cols)} "
                                 f"records, its index says {entry.count}; not rewritten")
        # (the codec may give bytes or ranges for a column: lists, to join frames)
        yield (entry.first_seq, Columns([c if isinstance(c, list) else list(c) for c in cols.columns]),
               chunk_version(chunk))


def _fit(msgs: list[str | bytes], most: int, room: int) -> int:
    """How many leading rows (at least one, at most ``most``) fit ``room`` bytes of text."""
    size = 0
    for i in range(min(most, len(msgs))):
        size += len(msgs[i])
        if size > room and i:
            return i
    return min(most, len(msgs))


def rewrite_segment(src: Path, dst: Path, keyring: Keyring, *, zstd_level: int | None,
                    frame_records: int, frame_bytes: int,
                    pause: Callable[[], None] | None = None) -> RewriteResult:
    """Write ``src`` (a sealed segment) again as ``dst`` (a new file, created
    O_EXCL), full frames, with zstd at ``zstd_level`` or LZ4 HC (None);
    ``dst`` is fsynced and closed, not renamed. ``pause``: called between
    frames (the archiver's CPU budget). RewriteRefused when ``src`` is
    unsealed or has damage (``dst`` is then removed)."""
    with SegmentReader(src, keyring) as seg:
        index = seg.index()
        if not index.sealed or index.footer is None:
            raise RewriteRefused(f"{src.name}: not sealed; not rewritten")
        old = seg.header
        salt = os.urandom(32)
        keys = derive_segment_keys(keyring.current, salt)
        header = F.SegmentHeader(agent_id=old.agent_id, salt=salt, key_id=keyring.current_id,
                                 key_check=keys.check, first_seq=old.first_seq,
                                 created_ns=old.created_ns,
                                 flags=F.SEGMENT_ZSTD if zstd_level is not None else 0)
        aead = F.AESGCM(keys.data_key)
        fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            end = F.SEGMENT_HEADER_SIZE
            os.pwrite(fd, header.pack(), 0)
            entries: list[F.IndexEntry] = []
            counts = CountsBuilder()
            records = chunk_bytes = 0
            ts_max = 0
            out: list[bytes] = []
            out_size = 0

            def emit(first: int, batch: Columns) -> None:
                nonlocal end, records, chunk_bytes, ts_max, out_size
                severity_mask, bloom = frame_index(batch, keys.bloom_key)
                chunk = encode_columns(batch.columns, version)  # the layout the frames had
                ts = batch.ts
                n = len(batch)
                data = F.seal_frame(chunk, key=keys.data_key, key_id=header.key_id, salt=salt,
                                    offset=end, first_seq=first, count=n, ts_min=min(ts),
                                    ts_max=max(ts), severity_mask=severity_mask, app_bloom=bloom,
                                    aead=aead, zstd_level=zstd_level)
                entries.append(F.IndexEntry(end, first, n, min(ts), max(ts), severity_mask, bloom,
                                            len(data), len(chunk)))
                counts.add(frame_counts(batch))
                out.append(data)
                out_size += len(data)
                end += len(data)
                records += n
                chunk_bytes += len(chunk)
                ts_max = max(ts_max, max(ts))
                if out_size >= 1 << 20:
                    _flush()

            def _flush() -> None:
                nonlocal out_size
                if out:
                    data = b"".join(out)
                    _pwrite_all(fd, data, end - len(data))
                    out.clear()
                    out_size = 0

            pending: Columns | None = None
            pending_first = 0
            version = 1
            for first, cols, layout in _runs(seg, index.entries):
                version = layout  # (emit writes the newest frame's layout: the writer's choice)
                if pause is not None:
                    pause()
                if pending is not None and first != pending_first + len(pending):
                    while len(pending):  # a gap in the seqs: the frame ends before it
                        k = _fit(pending.msg, frame_records, frame_bytes)
                        emit(pending_first, pending.slice(0, k))
                        pending, pending_first = pending.slice(k, len(pending)), pending_first + k
                    pending = None
                if pending is None:
                    pending, pending_first = cols.slice(0, len(cols)), first
                else:
                    pending.extend(cols)
                while len(pending) >= frame_records or pending.text_bytes() >= frame_bytes:
                    k = _fit(pending.msg, frame_records, frame_bytes)
                    emit(pending_first, pending.slice(0, k))
                    pending, pending_first = pending.slice(k, len(pending)), pending_first + k
            while pending is not None and len(pending):
                k = _fit(pending.msg, frame_records, frame_bytes)
                emit(pending_first, pending.slice(0, k))
                pending, pending_first = pending.slice(k, len(pending)), pending_first + k
            _flush()
            want = sum(e.count for e in index.entries)
            if records != want:  # (a bug, never data: the original stays)
                raise RewriteRefused(f"{src.name}: rewrite holds {records} records, not {want}")
            footer = F.pack_footer(entries, index.footer.sealed_ns, counts.pack(),
                                   key=keys.data_key, salt=salt, offset=end)
            _pwrite_all(fd, footer, end)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            dst.unlink(missing_ok=True)
            raise
        os.close(fd)
        return RewriteResult(src.name, records, len(index.entries), len(entries), seg.size(),
                             end + len(footer), chunk_bytes, ts_max)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


@dataclass(frozen=True, slots=True)
class ArchivePolicy:
    """What a pass does; from ``[spool]`` and ``[spool.archive]``."""

    archive: bool = False  # [spool.archive] is configured
    after_s: float = 7 * 86400.0
    keep_s: float = 365 * 86400.0
    level: int = 19
    dir: Path | None = None  # None: <spool>/archive
    compact: bool = True
    #: compaction rewrites a sealed segment whose mean records per frame is
    #: below frame_records * compact_below (docs/operations.md, measured)
    compact_below: float = 0.25
    frame_records: int = 4096
    frame_bytes: int = 1 << 20
    #: CPU budget of the archiver's thread: after each frame it sleeps so
    #: that its work takes at most this share of one core
    cpu_share: float = 0.25


@dataclass(slots=True)
class PassReport:
    compacted: list[RewriteResult] = field(default_factory=list)
    archived: list[RewriteResult] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # expired, kept for a destination
    refused: list[str] = field(default_factory=list)


class Archiver:
    """Compaction and archiving of one open :class:`~hostlog.spool.spool.Spool`.

    :meth:`run_once` does one pass (the offline path and the tests);
    :meth:`start` runs passes on a thread (the agent), woken every
    ``interval`` seconds or by :meth:`wake`. ``lock``: the lock the spool's
    owner holds while it uses the spool (the agent's writer thread's)."""

    def __init__(self, spool: Spool, policy: ArchivePolicy, *,
                 lock: AbstractContextManager[object] | None = None, interval: float = 5.0) -> None:
        self.spool = spool
        self.policy = policy
        self.lock: AbstractContextManager[object] = lock if lock is not None else nullcontext()
        self.interval = interval
        self.dir = policy.dir or spool.directory / "archive"
        # since the start: counts, the segments held in the last pass, the last refusals
        self.counts = {"compacted": 0, "archived": 0, "expired": 0}
        self.held: list[str] = []
        self.refused: list[str] = []
        self.error: BaseException | None = None  # the last pass that failed, and how many did
        self.failures = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._done: set[str] = set()  # refused (damaged, unreadable): not tried again
        self._summaries: dict[tuple[Path, int], _Summary] = {}  # by path and inode
        self._work_s = 0.0
        self._recover()

    # -- start / stop ------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="spool-archiver", daemon=True)
        self._thread.start()

    def status(self) -> dict[str, object]:
        """For ``hostlog ctl status``: what the thread did since the agent started."""
        return {**self.counts, "held_for_destinations": self.held, "refused": self.refused,
                "failed_passes": self.failures,
                "last_error": None if self.error is None else str(self.error)}

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("archiver: still rewriting after %.0f s; its temporary file is "
                          "removed at the next start", timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.interval
            try:
                self.run_once()
            except _Stopped:
                return
            except Exception as exc:  # contained: the spool stays as it is; logged, counted
                self.error = exc
                self.failures += 1
                wait = max(wait, 60.0)  # (a lasting cause, e.g. an unwritable dir: not a log flood)
                log.error("archiver: pass failed (the spool is unchanged by it; next try in "
                          "%.0f s): %s", wait, exc, exc_info=exc)
            self._wake.wait(wait)
            self._wake.clear()

    def _pause(self) -> None:
        """Between frames: stop if asked; sleep to keep to the CPU share."""
        if self._stop.is_set() and self._thread is not None:
            raise _Stopped
        now = time.thread_time()
        spent, self._work_s = now - self._work_s, now
        share = self.policy.cpu_share
        if self._thread is not None and 0 < share < 1 and 0 < spent < 1:
            # (the agent's thread; a pass run offline, hostlog spool archive, goes full speed)
            self._stop.wait(spent * (1 - share) / share)
        self._work_s = time.thread_time()

    # -- recovery -----------------------------------------------------------------
    def _recover(self) -> None:
        """Remove temporary rewrites a crash left; finish an archiving whose
        original was not unlinked yet."""
        for d in (self.spool.segments_dir, self.dir):
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            stale = [n for n in names if _TMP_RE.match(n)]
            for n in stale:
                (d / n).unlink(missing_ok=True)
                log.info("archiver: removed %s/%s, a rewrite a crash left unfinished", d, n)
            if stale:
                fsync_dir(d)
        if self.policy.archive or self.dir.is_dir():
            with self.lock:
                for info in list(self.spool.segments[:-1]):
                    copy = self.dir / info.path.name
                    if copy.exists() and self._complete(copy):
                        self._drop_original(info)
                        log.info("archiver: %s is archived; its original is removed now",
                                 info.path.name)

    def _complete(self, path: Path) -> bool:
        try:
            with SegmentReader(path, self.spool.keyring) as seg:
                return seg.index().sealed
        except (OSError, SpoolError):
            return False

    # -- a pass --------------------------------------------------------------------
    def run_once(self, now_ns: int | None = None) -> PassReport:
        """One pass: compact, archive, expire. Returns what it did."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        report = PassReport()
        policy = self.policy
        with self.lock:
            sealed = [(info, info.path) for info in self.spool.segments[:-1]
                      if info.sealed_ns is not None]
        if policy.archive:
            self._archive_meta()
        for info, path in sealed:
            if path.name in self._done:
                continue
            try:
                summary = self._summary(path)
            except FileNotFoundError:
                continue  # removed by retention since
            except SpoolError as exc:
                self._done.add(path.name)
                report.refused.append(f"{path.name}: {exc}")
                continue
            if (policy.archive and summary.ts_max is not None
                    and now_ns - summary.ts_max > policy.after_s * 1e9):
                result = self._rewrite(info, path, report, archive=True)
                if result is not None:
                    report.archived.append(result)
            elif policy.compact and summary.small_frames(policy):
                # (once compacted, its new inode's summary has full frames: not taken again)
                result = self._rewrite(info, path, report, archive=False)
                if result is not None:
                    report.compacted.append(result)
        archived = self._expire(now_ns, report)
        live = {p for _, p in sealed} | archived  # (what was rewritten or removed: forgotten)
        self._summaries = {k: v for k, v in self._summaries.items() if k[0] in live}
        for name in self.counts:
            self.counts[name] += len(getattr(report, name))
        self.held = report.held
        self.refused = (self.refused + report.refused)[-5:]
        return report

    def _rewrite(self, info: SegmentInfo, path: Path, report: PassReport, *,
                 archive: bool) -> RewriteResult | None:
        policy = self.policy
        target_dir = self.dir if archive else path.parent
        if archive:
            target_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        tmp = target_dir / f".{path.name}{TMP_SUFFIX}"
        tmp.unlink(missing_ok=True)
        st = os.statvfs(target_dir)
        if st.f_bavail * st.f_frsize < 4 * info.size + (64 << 20):
            # the copy takes room until the original goes: never the spool's last room
            report.refused.append(f"{path.name}: not rewritten now, the file system under "
                                  f"{target_dir} is nearly full")
            return None
        try:
            ino = os.stat(path).st_ino
            self._work_s = time.thread_time()
            result = rewrite_segment(path, tmp, self.spool.keyring,
                                     zstd_level=policy.level if archive else None,
                                     frame_records=policy.frame_records,
                                     frame_bytes=policy.frame_bytes, pause=self._pause)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            return None
        except RewriteRefused as exc:
            self._done.add(path.name)
            report.refused.append(str(exc))
            log.warning("archiver: %s", exc)
            return None
        crashpoint("rewrite-synced")
        with self.lock:
            if info not in self.spool.segments or _ino(path) != ino:
                tmp.unlink(missing_ok=True)  # retention took it meanwhile
                return None
            final = target_dir / path.name
            os.rename(tmp, final)
            fsync_dir(target_dir)
            if archive:
                crashpoint("archive-renamed")
                self._drop_original(info)
            else:
                info.size = result.bytes_out
        log.info("archiver: %s %s: %d records, %d frames -> %d, %d -> %d bytes",
                 "archived" if archive else "compacted", path.name, result.records,
                 result.frames_in, result.frames_out, result.bytes_in, result.bytes_out)
        return result

    def _drop_original(self, info: SegmentInfo) -> None:
        """Under the lock: the original of an archived segment goes."""
        path = info.path
        path.unlink(missing_ok=True)
        crashpoint("archive-unlinked")
        fsync_dir(path.parent)
        self.spool.segments.remove(info)

    def _expire(self, now_ns: int, report: PassReport) -> set[Path]:
        """Delete archived segments whose newest record is older than keep,
        unless a destination has not acknowledged all of them; returns the
        archived segments left."""
        if not self.policy.archive:
            return set()
        try:
            names = sorted(n for n in os.listdir(self.dir) if segment_first_seq(Path(n)) is not None)
        except FileNotFoundError:
            return set()
        with self.lock:
            acked = self.spool.acked_seq()
        removed = False
        for name in names:
            path = self.dir / name
            try:
                summary = self._summary(path)
            except FileNotFoundError:
                continue
            except SpoolError as exc:
                report.refused.append(f"{name}: {exc}")
                continue
            if summary.ts_max is None or now_ns - summary.ts_max <= self.policy.keep_s * 1e9:
                continue
            last = summary.last_seq
            if acked is not None and last is not None and acked < last:
                report.held.append(name)
                continue
            path.unlink(missing_ok=True)
            crashpoint("archive-expired")
            report.expired.append(name)
            removed = True
        if removed:
            fsync_dir(self.dir)
        return {self.dir / n for n in names if n not in report.expired}

    def _summary(self, path: Path) -> _Summary:
        """What a pass needs of a sealed segment, from its footer; cached by
        path and inode (a rewrite is a new inode)."""
        ino = os.stat(path).st_ino
        summary = self._summaries.get((path, ino))
        if summary is None:
            summary = self._summaries[(path, ino)] = _index_summary(path, self.spool.keyring, ino)
        return summary

    def _archive_meta(self) -> None:
        """Record a non-default archive directory where readers find it."""
        meta_path = self.spool.directory / ARCHIVE_META
        want = {"dir": str(self.dir)} if self.policy.dir is not None else None
        have = read_json(meta_path) if meta_path.exists() else None
        if want is None:
            if have is not None:
                meta_path.unlink(missing_ok=True)
        elif have != want:
            write_json(meta_path, want)


class _Stopped(Exception):
    """The archiver was asked to stop in the middle of a rewrite."""


def _ino(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


@dataclass(frozen=True, slots=True)
class _Summary:
    ino: int
    ts_max: int | None  # newest record
    last_seq: int | None
    frames: int
    records: int
    chunk_bytes: int

    def small_frames(self, policy: ArchivePolicy) -> bool:
        """Would a rewrite fill its frames much better? More than one frame,
        and fewer records and chunk bytes per frame than the share
        ``compact_below`` of the frame limits (a segment compacted once has
        full frames, and is not taken again)."""
        if self.frames < 2:
            return False
        below = policy.compact_below
        return (self.records / self.frames < policy.frame_records * below
                and self.chunk_bytes / self.frames < policy.frame_bytes * below)


def _index_summary(path: Path, keyring: Keyring, ino: int) -> _Summary:
    with SegmentReader(path, keyring) as seg:
        index = seg.index()
        if not index.sealed:
            raise RewriteRefused(f"{path.name}: no intact footer")
        entries = index.entries
        return _Summary(ino, max((e.ts_max for e in entries), default=None),
                        entries[-1].last_seq if entries else None, len(entries),
                        sum(e.count for e in entries), sum(e.chunk_len for e in entries))


def policy_of(spool_config: SpoolConfig) -> ArchivePolicy:
    """The policy of a ``[spool]`` config section."""
    from hostlog.spool.writer import FRAME_RECORDS, frame_bytes_for
    archive = spool_config.archive
    compact = spool_config.compact
    frame_bytes = frame_bytes_for(spool_config.segment_bytes)
    if archive is None:
        return ArchivePolicy(compact=compact, frame_records=FRAME_RECORDS, frame_bytes=frame_bytes)
    return ArchivePolicy(archive=True, after_s=archive.after, keep_s=archive.keep or float("inf"),
                         level=archive.compression, dir=archive.dir, compact=compact,
                         frame_records=FRAME_RECORDS, frame_bytes=frame_bytes)


def start_archiver(spool: Spool, config: Config,
                   lock: AbstractContextManager[object]) -> Archiver | None:
    """The agent's archiver thread for ``config``, started; None when neither
    compaction nor the archive is on."""
    policy = policy_of(config.spool)
    if not (policy.compact or policy.archive):
        return None
    archiver = Archiver(spool, policy, lock=lock)
    archiver.start()
    return archiver
