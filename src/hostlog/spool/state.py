"""State files: atomic replace for everything the spool and collectors keep.

Every state file is written as temp + fsync + rename + fsync of the directory,
so after a crash it holds either the old or the new content, never a mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hostlog.crashpoint import crashpoint


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename or create in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    crashpoint("state-before-rename")
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json(path: str | os.PathLike[str], value: Any, *, mode: int = 0o644) -> None:
    atomic_write(path, json.dumps(value, indent=1, sort_keys=True).encode() + b"\n", mode=mode)


def read_json(path: str | os.PathLike[str], default: Any = None) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return default
