"""Named crash points: kill the process with SIGKILL at a chosen line, for tests.

``HOSTLOG_CRASHPOINT=NAME`` (or ``NAME:N``) makes the process kill itself with
SIGKILL the N-th time (default 1) the point NAME is reached, after writing
``crashpoint NAME reached`` on stderr. The variable is read once, when this
module is imported; unset, :func:`crashpoint` costs a global lookup and a
``None`` test (it sits on the write path). tests/faults/test_kill.py kills a
real agent at each point and checks what the restarted one holds.

The points, in the order a record meets them:

``position-noted``
    spool/checkpoints.py ``CheckpointFiles.note_written``: the written pairs
    file (``NAME.written.json``) has been replaced, the frame it describes is
    not written yet (its newest pair points past the spool).
``frame-written``
    spool/segment.py ``SegmentWriter.write_frames``: the ``pwrite`` of a frame
    (or of a group of frames, spool/spool.py ``Spool.append_group``)
    returned, before any sync.
``synced``
    spool/writer.py ``SpoolWriter._run_sync`` (fsync = "batch") and
    spool/spool.py ``Spool.sync`` (fsync = "always", and the writer's last
    sync when it stops): an ``fdatasync`` returned, before durability is
    recorded and reported to the loop (so before any checkpoint moves).
``state-before-rename``
    spool/state.py ``atomic_write``: the temp file is written and fsynced,
    not yet renamed over the old one. Every state file goes through it:
    ``spool.json``, durable checkpoints (``NAME.json``), the written pairs
    dropped at start, destination cursors, the receiver's mark, the key file
    when a key is added.
``rotation-sealed``
    spool/spool.py ``Spool.rotate``: the old segment is sealed (footer,
    fsync, closed), the next one is not created yet.
``rotation-created``
    spool/spool.py ``Spool.rotate``: the next segment file is created (header
    fsynced, directory fsynced), the spool's segment list does not have it yet.
``retention-unlinked``
    spool/spool.py ``Spool.enforce_retention``: a segment has been unlinked,
    before the fsync of the segments directory.
``rewrite-synced``
    spool/archive.py ``Archiver._rewrite``: a compacted or archived copy of a
    sealed segment is written and fsynced under its temporary name, not yet
    renamed (the original is the only copy).
``archive-renamed``
    spool/archive.py ``Archiver._rewrite``: the archived copy has its name
    (directory fsynced); the original is still in ``segments/`` (both exist:
    readers take the archive's).
``archive-unlinked``
    spool/archive.py ``Archiver._drop_original``: the original of an archived
    segment has been unlinked, before the fsync of the segments directory.
``archive-expired``
    spool/archive.py ``Archiver._expire``: an archived segment past ``keep``
    has been unlinked, before the fsync of the archive directory.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

#: Every point :func:`crashpoint` is called with (see the module doc).
POINTS = frozenset({"position-noted", "frame-written", "synced", "state-before-rename",
                    "rotation-sealed", "rotation-created", "retention-unlinked",
                    "rewrite-synced", "archive-renamed", "archive-unlinked", "archive-expired"})

ENV = "HOSTLOG_CRASHPOINT"


def _parse(value: str | None) -> tuple[str, int] | None:
    """``NAME`` or ``NAME:N`` -> (NAME, N); unset or empty -> None. A name
    that is no point, or a bad N, is an error: a typo must not make a test
    wait for a crash that never comes."""
    if not value:
        return None
    name, sep, count = value.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={value!r}: no crash point {name!r} (points: {', '.join(sorted(POINTS))})")
    if not sep:
        return name, 1
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"{ENV}={value!r}: N must be a whole number >= 1")
    return name, int(count)


_TARGET: tuple[str, int] | None = _parse(os.environ.get(ENV))
_hits = 0
_lock = threading.Lock()  # the points are reached from several threads


def crashpoint(name: str) -> None:
    """Kill this process with SIGKILL here if HOSTLOG_CRASHPOINT names this
    point and this is the N-th time it is reached; otherwise nothing."""
    if _TARGET is None:
        return
    _reached(name)


def _reached(name: str) -> None:
    global _hits
    assert _TARGET is not None
    if name not in POINTS:
        raise ValueError(f"crashpoint({name!r}): not a listed point")
    if name != _TARGET[0]:
        return
    with _lock:
        _hits += 1
        if _hits != _TARGET[1]:
            return
        sys.stderr.write(f"crashpoint {name} reached\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
