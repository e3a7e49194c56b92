"""Running a fault campaign in a child process, bounded in time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run_campaign(name: str, work: Path, timeout: float, **args: Any) -> dict[str, Any]:
    """Run ``tests.faults.campaigns`` NAME in a child; a hang is a failure."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run([sys.executable, "-m", "tests.faults.campaigns", name,
                               json.dumps({"work": str(work), **args})],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-2000:]
        raise AssertionError(f"campaign {name} hung (> {timeout} s); last progress:\n{tail!r}") from None
    if proc.returncode != 0:
        raise AssertionError(f"campaign {name} failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


_CLI = "import sys; from hostlog.cli.main import main; sys.exit(main(sys.argv[1:]))"


def hostlog(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real CLI, in a child with a timeout."""
    try:
        return subprocess.run([sys.executable, "-c", _CLI, *args], capture_output=True,
                              text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"hostlog {' '.join(args)} hung (> {timeout} s)") from None
