"""Collectors' checkpoints: one JSON file each, replaced atomically."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hostlog.spool.state import read_json, write_json


class CheckpointFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        # collector names come from the config; keep them to safe file names
        return self.directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".json")

    def load(self, name: str) -> Any:
        return read_json(self._path(name))

    def save(self, name: str, value: Any) -> None:
        write_json(self._path(name), value)
