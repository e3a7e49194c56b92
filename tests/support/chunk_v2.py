"""A pytest plugin: every spool the tests open writes chunk v2.

    .venv/bin/python -m pytest -p tests.support.chunk_v2 tests/unit/spool tests/unit/query ...

runs existing tests with ``[spool] chunk = "v2"`` as the writer's layout (in
process: agents started as processes read their own config), and says at
the end how many frames the spool writer encoded, by version, so a run can
show that v2 was written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import hostlog.spool.spool as spool_module
from hostlog.chunk import chunk_version

spool_module.Spool.chunk_version = 2
_encode = spool_module.encode_columns
written: Counter[int] = Counter()


def _counted(columns: Sequence[Sequence[Any]], version: int = 1) -> bytes:
    chunk = _encode(columns, version)
    written[chunk_version(chunk)] += 1
    return chunk


spool_module.encode_columns = _counted  # type: ignore[assignment]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(
        "spool frames encoded: " + ", ".join(f"v{v} {n}" for v, n in sorted(written.items())))
