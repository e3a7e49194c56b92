"""Collectors' checkpoints: where each replayable source resumes.

Two files per collector under ``<spool>/state/checkpoints/``:

* ``NAME.json``: the position whose records are durable (saved from the
  batch's on_durable callback, atomic replace with fsync);
* ``NAME.written.json``: the last two ``(seq, position)`` pairs the spool
  writer is about to write, replaced (rename, no fsync) *before* each frame
  that carries a position is written. "seq" is the spool seq of the last
  record that the position covers.

After a kill -9 (the kernel keeps every completed write), the newest written
pair whose seq the recovered spool holds is exactly where the records in the
spool end: resuming there neither loses nor repeats a line, even when the
durable checkpoint had not caught up. Two pairs are kept because a kill
between replacing the file and writing the frame leaves the newest pair
pointing past the spool; the one before it is then the right one. After a
power loss, the recovered spool may end before either pair; the durable
checkpoint is used and at most what it had not yet covered is read again.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hostlog.crashpoint import crashpoint
from hostlog.errors import SpoolError
from hostlog.spool.state import read_json, write_json


def _pairs(path: Path) -> list:
    """The written pairs; a file torn by a power loss (it is not fsynced) reads
    as none, and the durable checkpoint decides."""
    try:
        pairs = read_json(path, [])
    except ValueError:
        return []
    return pairs if isinstance(pairs, list) else []


class CheckpointFiles:
    def __init__(self, directory: Path, recovered_seq: int = 0,
                 last_seq: Callable[[], int] | None = None) -> None:
        self.directory = directory
        # the newest seq in the spool now (the spool writer's); pairs beyond
        # it describe a frame not written yet
        self.last_seq = last_seq or (lambda: recovered_seq)
        self._forget_unwritten(recovered_seq)

    def _forget_unwritten(self, recovered_seq: int) -> None:
        """At start: drop pairs past the recovered spool (frames that never
        reached it). Seqs written from now on would make them look valid."""
        for path in self.directory.glob("*.written.json"):
            pairs = _pairs(path)
            valid = [p for p in pairs if isinstance(p, dict) and p.get("seq", 0) <= recovered_seq]
            if valid != pairs:
                write_json(path, valid[-1:])

    def _path(self, name: str, suffix: str = ".json") -> Path:
        # collector names come from the config; keep them to safe file names
        return self.directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + suffix)

    def load(self, name: str) -> Any:
        path = self._path(name)
        try:
            durable = read_json(path)
        except ValueError as exc:
            raise SpoolError(f"checkpoint {path} is damaged ({exc}); move it away to start "
                             f"source {name!r} by its start rule") from None
        pairs = _pairs(self._path(name, ".written.json"))
        last = self.last_seq()
        valid = [p for p in pairs if isinstance(p, dict) and p.get("seq", 0) <= last]
        if valid:
            return valid[-1]["position"]
        return durable

    def save(self, name: str, value: Any) -> None:
        write_json(self._path(name), value)

    def note_written(self, name: str, seq: int, value: Any) -> None:
        """Called by the spool writer just before it writes the frame whose
        last record for ``name`` gets ``seq``. No fsync: this protects against
        a killed process, which loses no completed write; the durable
        checkpoint covers a lost machine."""
        path = self._path(name, ".written.json")
        pairs = _pairs(path)[-1:] + [{"seq": seq, "position": value}]
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(pairs))
        os.replace(tmp, path)
        crashpoint("position-noted")
