"""Injected I/O errors, for tests: make a chosen system call fail once.

``HOSTLOG_FAULT=NAME`` (or ``NAME:N``) makes the N-th time (default 1) the
point NAME is reached raise the error the point stands for, as the system
call there would, after writing ``fault NAME injected`` on stderr. Like
:mod:`hostlog.crashpoint`, the variable is read once, at import; unset,
:func:`faultpoint` costs a global lookup and a ``None`` test.

The points:

``segment-sync``
    every fsync / fdatasync of a segment: the group commit of fsync =
    "batch" (spool/writer.py ``SpoolWriter._run_sync``), ``Spool.sync``
    (fsync = "always", the writer's last sync), the fsync that seals a
    segment and the one that makes a new segment's header durable
    (spool/segment.py). It fails with ``EIO``, as a disk that lost the
    write does (docs/guarantees.md, "Disk full and I/O errors").
"""

from __future__ import annotations

import errno
import os
import sys
import threading

#: point -> the errno it fails with
POINTS: dict[str, int] = {"segment-sync": errno.EIO}

ENV = "HOSTLOG_FAULT"


def _parse(value: str | None) -> tuple[str, int] | None:
    """``NAME`` or ``NAME:N`` -> (NAME, N); unset or empty -> None; anything
    else is an error (a typo must not make a test wait for a fault that never comes)."""
    if not value:
        return None
    name, sep, count = value.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={value!r}: no fault point {name!r} (points: {', '.join(sorted(POINTS))})")
    if not sep:
        return name, 1
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"{ENV}={value!r}: N must be a whole number >= 1")
    return name, int(count)


_TARGET: tuple[str, int] | None = _parse(os.environ.get(ENV))
_hits = 0
_lock = threading.Lock()  # reached from the writer's and the sync thread


def faultpoint(name: str) -> None:
    """Raise the point's OSError here if HOSTLOG_FAULT names this point and
    this is the N-th time it is reached; otherwise nothing."""
    if _TARGET is None:
        return
    _reached(name)


def _reached(name: str) -> None:
    global _hits
    assert _TARGET is not None
    if name not in POINTS:
        raise ValueError(f"faultpoint({name!r}): not a listed point")
    if name != _TARGET[0]:
        return
    with _lock:
        _hits += 1
        if _hits != _TARGET[1]:
            return
    sys.stderr.write(f"fault {name} injected\n")
    sys.stderr.flush()
    code = POINTS[name]
    raise OSError(code, f"{os.strerror(code)} (injected by {ENV})")
