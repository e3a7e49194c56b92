"""The file collector: tail the files that globs name, across rotations.

The I/O half. Line framing (newlines, max line, partial lines, multiline) is
the sans-IO :mod:`hostlog.collectors.files.lines`; this module finds files, follows
them through rotation, reads them in big chunks and hands what the framer
returns to the sink, one batch per file per pass.

When it works: one task waits for a wake-up, then runs a *pass* on a worker
thread (stat, open and read may block on a slow disk) and writes its batches.
Wake-ups come from inotify (asyncinotify, watching the directories the globs
can match in), from the ``poll_interval`` timer (the safety net: events can be
lost to queue overflow, some file systems send none), and from the timers of
``flush_timeout`` and ``rotate_wait``. Inotify events are read only between
passes, so the kernel merges the flood of MODIFY events a busy writer causes.
A directory event (create, move, delete) or a poll re-evaluates the globs.

Identity: a file is its ``(st_dev, st_ino)``, checked against the first
:data:`FINGERPRINT_BYTES` bytes it had when first seen (fewer while it is
shorter; the fingerprint grows with the file). An open descriptor pins the
inode, so while a file is tracked it cannot be confused; the fingerprint
matters when comparing with a checkpoint (the inode may be reused by then) and
to notice a file truncated and refilled between two looks.

Rotation:

* rename-and-create: the old file is no longer at a matched path; it is read
  through its open descriptor until it has been quiet for ``rotate_wait``
  (the writer may not have reopened yet), then closed. The new file is read
  from its beginning.
* copytruncate: the file is smaller than the offset read (or its first bytes
  changed): what was held back is emitted and reading restarts at 0.
* delete, and a file replaced by another at the same path: like a rename;
  the old inode is read to its end through the descriptor.

Checkpoint: per file, its identity, fingerprint and the offset up to which
everything is in the spool (``LineFramer.committed``), saved once the pass
that reached it is durable. After a restart a file resumes at its offset; a
file renamed while the agent was down is looked for in its directory by inode
and read to its end. ``start`` applies on the source's first start only:
once a checkpoint exists, any file it does not know is new and is read from
its beginning, so nothing written while the agent was down is skipped.
"""

from __future__ import annotations

import asyncio
import codecs
import glob
import hashlib
import logging
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from hostlog.collectors.base import CollectorContext, finish_task
from hostlog.collectors.checkpoint import STOP_WAIT, DurableCheckpoint
from hostlog.collectors.events import Counted
from hostlog.collectors.files.lines import LineFramer, Lines, decode_messages
from hostlog.collectors.files.parse import LineParser
from hostlog.config import FileSource
from hostlog.errors import SinkError
from hostlog.record import Columns

try:
    from asyncinotify import Inotify, Mask
except ImportError:  # then the poll does all the work (see _open_inotify)
    Inotify = Mask = None  # type: ignore[assignment,misc]

log = logging.getLogger("hostlog.files")

CHUNK = 1 << 20               # one pread: big enough that per-call costs vanish
PASS_BUDGET = 4 << 20         # read per pass before writing: bounds the records held
FINGERPRINT_BYTES = 256
CHECKPOINT_VERSION = 1

Key = tuple[int, int]  # (st_dev, st_ino)


def fingerprint(prefix: bytes) -> str:
    """Stored form of a file's first bytes (a hash: logs stay out of state files)."""
    return hashlib.blake2b(prefix, digest_size=16).hexdigest()


def watch_dirs(pattern: str) -> set[str]:
    """Directories to watch so that files matching ``pattern`` are noticed:
    those its directory part matches, and its fixed (glob-free) base, or the
    nearest existing ancestor of that base, to notice new subdirectories."""
    directory = os.path.dirname(pattern)
    parts = directory.split(os.sep)
    fixed = os.sep.join(p for p in _until_magic(parts)) or os.sep
    dirs = {fixed}
    if "**" in directory:
        # a match may appear at any depth below the fixed base
        dirs.update(glob.glob(os.path.join(fixed, "**/"), recursive=True))
    elif glob.has_magic(directory):
        dirs.update(d for d in glob.glob(directory) if os.path.isdir(d))
    else:
        dirs.add(directory)
    out = set()
    for d in dirs:
        while not os.path.isdir(d) and d != os.sep:
            d = os.path.dirname(d)
        out.add(os.path.normpath(d))
    return out


def _until_magic(parts: list[str]) -> list[str]:
    out = []
    for p in parts:
        if glob.has_magic(p):
            break
        out.append(p)
    return out


@dataclass(eq=False)
class Tailed:
    """One open file."""

    key: Key
    path: str                   # where a glob found it: names its records
    fd: int
    framer: LineFramer
    prefix: bytes               # its first bytes (up to FINGERPRINT_BYTES)
    fields: dict[str, str]      # shared by its records: {"path": path}
    app: str
    size: int = -1              # size at the last look
    last_data: float = 0.0      # monotonic time data last came (flush, rotate wait)
    gone_since: float | None = None  # no longer at a matched path since then

    def checkpoint(self) -> dict[str, Any]:
        return {"path": self.path, "dev": self.key[0], "ino": self.key[1],
                "fp_len": len(self.prefix), "fp": fingerprint(self.prefix),
                "offset": self.framer.committed}


@dataclass
class PassResult:
    batches: list[Columns] = field(default_factory=list)
    last: Tailed | None = None  # the file the last batch holds lines of
    snapshot: list[dict[str, Any]] = field(default_factory=list)
    more: bool = False          # the byte budget ran out: run another pass at once


class FileCollector:
    """One ``[[source]] type = "file"``."""

    def __init__(self, config: FileSource, context: CollectorContext) -> None:
        self.name: str = config.name or "file"
        self.config = config
        self.context = context
        self.encoding = config.encoding
        self.utf8 = codecs.lookup(config.encoding).name == "utf-8"
        self.parser = LineParser(config.parse)  # the lines' own time, level, fields
        self.multiline = (re.compile(config.multiline_start.encode(config.encoding))
                          if config.multiline_start else None)
        self.flush_timeout: float = config.flush_timeout
        self.rotate_wait: float = config.rotate_wait
        self.checkpoint = DurableCheckpoint(context.checkpoints, self.name)
        self.stop_wait = STOP_WAIT  # for the last batches to be durable, in stop()
        self.files: dict[Key, Tailed] = {}
        self._saved: dict[Key, dict[str, Any]] = {}  # checkpoint entries not yet matched
        self._first_run = True
        self._initial = True
        self._submitted: list[dict[str, Any]] | None = None
        self._inotify: Any = None
        self._watches: dict[str, Any] = {}
        self._wake = asyncio.Event()
        self._rescan = True
        self._next_poll = 0.0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._working: asyncio.Future[PassResult] | None = None
        self._unreadable: set[str] = set()  # paths already reported
        # Counters the worker thread adds to; handed to the context on the loop
        # after each pass, so metrics never see the dict change under them.
        self._counts: dict[Counted, int] = {}

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        saved = await asyncio.to_thread(self.checkpoint.load)
        if isinstance(saved, dict) and saved.get("version") == CHECKPOINT_VERSION:
            self._first_run = False
            self._saved = {(e["dev"], e["ino"]): e for e in saved.get("files", [])}
        self._open_inotify()
        # The first pass runs before start() returns: files that exist now are
        # positioned by `start` now, not after some later event.
        await self._run_pass()
        self._task = asyncio.get_running_loop().create_task(
            self.context.guard(self.name, "run", self._run()), name=f"collector {self.name}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        await finish_task(self._task)
        if self._working is not None:
            await asyncio.gather(self._working, return_exceptions=True)
        if self._inotify is not None:
            asyncio.get_running_loop().remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None
        # Held partial lines and open multiline records are not emitted: their
        # bytes are past the checkpoint and are read again after a restart.
        for t in self.files.values():
            os.close(t.fd)
        self.files.clear()
        await self.checkpoint.close(self.context.sink, self.stop_wait)

    def _open_inotify(self) -> None:
        try:
            if Inotify is None:
                raise OSError("asyncinotify is not installed")
            self._inotify = Inotify(cache_size=256, sync_timeout=0)
        except OSError as exc:
            log.warning("%s: no inotify (%s); polling every %ss", self.name, exc,
                        self.config.poll_interval)
            return
        asyncio.get_running_loop().add_reader(self._inotify.fd, self._wake.set)

    # -- the loop --------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            timeout = max(0.0, self._next_deadline() - loop.time())
            if not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
            self._wake.clear()
            if self._stopping:
                break
            self._drain_events()
            try:
                await self._run_pass()
            except SinkError:
                return  # reported, and the agent is stopping with a failure
            except Exception as exc:
                # An I/O error nobody foresaw must not end the tailing for
                # good: counted and logged, and the next wake-up (at the
                # latest the poll) tries again. The checkpoint covers only
                # what reached the spool, so a restart reads again whatever
                # the failed pass had read.
                self.context.error(self.name, "pass", exc)

    async def _run_pass(self) -> None:
        now = time.monotonic()
        if now >= self._next_poll:
            self._rescan = True
            self._next_poll = now + self.config.poll_interval
        rescan, self._rescan = self._rescan, False
        self._working = asyncio.ensure_future(asyncio.to_thread(self._pass, rescan))
        result = await asyncio.shield(self._working)  # the thread owns the state until done
        self._working = None
        for event, n in self._counts.items():
            self.context.count(self.name, event, n)
        self._counts.clear()
        sink = self.context.sink
        changed = result.snapshot != self._submitted
        for i, batch in enumerate(result.batches):
            last = i == len(result.batches) - 1
            cb = self._durable_cb(result.snapshot) if last and changed else None
            await sink.write(batch, on_durable=cb)
        if not result.batches and changed:
            await sink.write(Columns.empty(), on_durable=self._durable_cb(result.snapshot))
        self._submitted = result.snapshot
        if result.more:
            self._wake.set()

    def _count(self, event: Counted, n: int = 1) -> None:
        self._counts[event] = self._counts.get(event, 0) + n

    def _durable_cb(self, snapshot: list[dict[str, Any]]) -> Any:
        return self.checkpoint.on_durable({"version": CHECKPOINT_VERSION, "files": snapshot})

    def _next_deadline(self) -> float:
        # loop.time() and time.monotonic() are the same clock on Linux
        deadline = self._next_poll
        for t in self.files.values():
            if t.framer.pending:
                deadline = min(deadline, t.last_data + self.flush_timeout)
            if t.gone_since is not None:
                deadline = min(deadline, max(t.gone_since, t.last_data) + self.rotate_wait)
        return deadline

    def _drain_events(self) -> None:
        if self._inotify is None:
            return
        while True:
            try:
                event = self._inotify.sync_get()
            except BlockingIOError:
                break
            if event is None:
                break
            # MODIFY only needs the read every pass does; anything else may
            # change what the globs match.
            if event.mask & ~(Mask.MODIFY | Mask.ISDIR):
                self._rescan = True

    # -- one pass (worker thread) -------------------------------------------------------
    def _pass(self, rescan: bool) -> PassResult:
        now = time.monotonic()
        out = PassResult()
        if rescan:
            self._scan(now)
        if self._initial:
            self._initial = False
            self._find_renamed(now)
        budget = max(CHUNK, PASS_BUDGET // max(1, len(self.files)))
        for t in list(self.files.values()):
            try:
                if self._read(t, now, out, budget):
                    out.more = True
                    continue
            except OSError as exc:
                # What was read before the error is in `out` and goes to the
                # spool; the read is tried again at the next pass.
                log.warning("%s: reading %s: %s", self.name, t.path, exc)
                self._count(Counted.READ_ERRORS)
                continue
            if t.framer.pending and now - t.last_data >= self.flush_timeout:
                self._emit(t, t.framer.flush(), out)
            if t.gone_since is not None and now - max(t.gone_since, t.last_data) >= self.rotate_wait:
                self._retire(t, out)
        out.snapshot = [t.checkpoint() for t in self.files.values()]
        return out

    def _scan(self, now: float) -> None:
        found: dict[Key, tuple[str, os.stat_result]] = {}
        wanted_dirs: set[str] = set()
        for pattern in self.config.paths:
            wanted_dirs |= watch_dirs(pattern)
            for path in sorted(glob.glob(pattern, recursive=True)):
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # gone between glob and stat
                if stat.S_ISREG(st.st_mode):
                    found.setdefault((st.st_dev, st.st_ino), (path, st))
        self._update_watches(wanted_dirs)
        for key, (path, _) in found.items():
            t = self.files.get(key)
            if t is None:
                self._discover(path, now)
            else:
                t.gone_since = None
        for t in self.files.values():
            if t.key not in found and t.gone_since is None:
                log.info("%s: %s was rotated or deleted; reading it to its end", self.name, t.path)
                t.gone_since = now
                self._count(Counted.ROTATIONS)

    def _update_watches(self, wanted: set[str]) -> None:
        if self._inotify is None:
            return
        mask = (Mask.CREATE | Mask.MOVED_TO | Mask.MOVED_FROM | Mask.DELETE | Mask.MODIFY
                | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.ONLYDIR)
        for d in wanted:
            try:
                # Re-adding is cheap and re-arms a directory deleted and recreated.
                self._watches[d] = self._inotify.add_watch(d, mask)
            except OSError as exc:
                if d not in self._watches:
                    log.warning("%s: cannot watch %s (%s); the poll will find its files",
                                self.name, d, exc)
                self._watches[d] = None
        for d in set(self._watches) - wanted:
            watch = self._watches.pop(d)
            if watch is not None:
                try:
                    self._inotify.rm_watch(watch)
                except OSError:
                    pass  # the directory is gone, and the watch with it

    def _discover(self, path: str, now: float) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if path not in self._unreadable:
                self._unreadable.add(path)
                log.warning("%s: cannot open %s: %s", self.name, path, exc)
            return
        self._unreadable.discard(path)
        st = os.fstat(fd)  # what was opened, whatever the path points to now
        key = (st.st_dev, st.st_ino)
        if key in self.files or not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return
        prefix = os.pread(fd, FINGERPRINT_BYTES, 0)
        saved = self._saved.pop(key, None)
        if saved is not None and _matches(saved, prefix):
            offset = saved["offset"] if saved["offset"] <= st.st_size else 0
            how = f"resuming at offset {offset}"
        elif self._initial and self._first_run and self.config.start == "end":
            offset, how = st.st_size, "from its end"
        else:
            offset, how = 0, "from its beginning"
        log.info("%s: tailing %s %s", self.name, path, how)
        self._track(key, path, fd, prefix, offset, now)

    def _track(self, key: Key, path: str, fd: int, prefix: bytes, offset: int, now: float) -> Tailed:
        framer = LineFramer(max_line=self.config.max_line, multiline_start=self.multiline,
                            offset=offset, utf8=self.utf8)
        t = Tailed(key=key, path=path, fd=fd, framer=framer, prefix=prefix,
                   fields={"path": path}, app=self.config.app or os.path.basename(path),
                   last_data=now)
        self.files[key] = t
        self._count(Counted.FILES_OPENED)
        return t

    def _find_renamed(self, now: float) -> None:
        """Checkpointed files the globs no longer match: renamed while the agent
        was down? Look for the inode in the same directory and read it to its end."""
        for key, saved in list(self._saved.items()):
            directory = os.path.dirname(saved["path"])
            try:
                entries = [e for e in os.scandir(directory) if e.inode() == key[1]]
            except OSError:
                entries = []
            for entry in entries:
                try:
                    fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    continue
                st = os.fstat(fd)
                prefix = os.pread(fd, FINGERPRINT_BYTES, 0)
                if (st.st_dev, st.st_ino) == key and key not in self.files and _matches(saved, prefix):
                    log.info("%s: %s was renamed to %s; reading it to its end",
                             self.name, saved["path"], entry.path)
                    offset = saved["offset"] if saved["offset"] <= st.st_size else 0
                    t = self._track(key, saved["path"], fd, prefix, offset, now)
                    t.gone_since = now
                    break
                os.close(fd)
            else:
                log.warning("%s: %s is gone; what it held past offset %d is lost",
                            self.name, saved["path"], saved["offset"])
                self._count(Counted.LOST_FILES)
        self._saved.clear()

    def _read(self, t: Tailed, now: float, out: PassResult, budget: int) -> bool:
        """Read what is new in ``t``; True if the budget ran out before its end."""
        try:
            size = os.fstat(t.fd).st_size
        except OSError:
            return False
        framer = t.framer
        if size == t.size and size == framer.read_offset:
            return False
        t.size = size
        if size < framer.read_offset or not self._same_start(t):
            # copytruncate (or truncated and refilled): what was held back is real
            # data written before the truncation; the file starts over.
            log.info("%s: %s was truncated; reading from its beginning", self.name, t.path)
            self._count(Counted.TRUNCATIONS)
            self._emit(t, framer.flush(), out)
            framer = t.framer = LineFramer(max_line=self.config.max_line,
                                           multiline_start=self.multiline, utf8=self.utf8)
            t.prefix = b""
        read = 0
        while read < budget:
            data = os.pread(t.fd, CHUNK, framer.read_offset)
            if not data:
                break
            read += len(data)
            t.last_data = now
            self._emit(t, framer.feed(data), out)
            if len(data) < CHUNK:
                break
        if len(t.prefix) < FINGERPRINT_BYTES and framer.read_offset > len(t.prefix):
            t.prefix = os.pread(t.fd, FINGERPRINT_BYTES, 0)
        self._count(Counted.BYTES, read)
        return read >= budget

    @staticmethod
    def _same_start(t: Tailed) -> bool:
        if not t.prefix:
            return True
        return os.pread(t.fd, len(t.prefix), 0) == t.prefix

    def _emit(self, t: Tailed, lines: Lines, out: PassResult) -> None:
        """The framer's messages as a Columns batch (one list per attribute,
        no Record per line), appended to the pass's batch of the same file."""
        n = len(lines.messages)
        if not n:
            return
        msgs = decode_messages(lines.messages, self.encoding)
        # the time read; the line's own time when parse finds one (parse.py)
        parsed = self.parser.parse(msgs, time.time_ns(), t.fields)
        # Fields dicts shared by the lines of a file (Columns rows are
        # read-only); only lines with fields of their own, and the few marked
        # lines, get their own.
        fields, pool = parsed.fields, parsed.pool
        for i, mark in lines.marks.items():
            fields[i] = marked = {**fields[i], mark: "true"}
            pool.append(marked)
        hostname = self.context.hostname
        hosts = [hostname] * n if parsed.host is None else [h or hostname for h in parsed.host]
        apps = [t.app] * n if parsed.app is None else [a or t.app for a in parsed.app]
        columns: list[list] = [parsed.ts, hosts, ["file"] * n, apps,
                               parsed.pid or [None] * n, parsed.severity, parsed.facility or [None] * n,
                               parsed.msg, fields, [""] * n, [0] * n]
        size = sum(map(len, lines.messages)) + n  # the bytes read for them, about
        batch = Columns(columns, text_size=size, fields_pool=pool)
        if out.batches and out.last is t:
            out.batches[-1].extend(batch)
        else:
            out.batches.append(batch)
            out.last = t
        self._count(Counted.RECORDS, n)

    def _retire(self, t: Tailed, out: PassResult) -> None:
        self._emit(t, t.framer.flush(), out)
        os.close(t.fd)
        del self.files[t.key]
        log.info("%s: done with rotated %s", self.name, t.path)


def _matches(saved: dict[str, Any], prefix: bytes) -> bool:
    """Is a file with first bytes ``prefix`` the one a checkpoint entry describes?"""
    n = saved.get("fp_len", 0)
    return len(prefix) >= n and fingerprint(prefix[:n]) == saved.get("fp")
