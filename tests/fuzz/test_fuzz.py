"""Fuzzing in the suite: every harness under atheris for a short, bounded run
(a few seconds each), and every seed (the CVE shapes, the corpora's cases,
the regressions of crashes found) through each harness in this process.
``make fuzz`` runs the harnesses for long (``FUZZ_SECONDS`` each)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CORPORA, need
from tests.fuzz.harnesses import HARNESSES, Finding, run_one
from tests.fuzz.seeds import CVE_MESSAGES, seeds

REPO = Path(__file__).resolve().parents[2]
#: Inputs per harness in the suite (a fixed libFuzzer seed: the same run each time; `make
#: fuzz` explores); the run is cut at RUN_SECONDS whatever it reached.
RUNS = int(os.environ.get("HOSTLOG_FUZZ_RUNS", "1000"))
RUN_SECONDS = 5


def atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_seeds_pass_every_harness(name: str) -> None:
    need(CORPORA.is_dir(), "the shared corpora (syslog and Fluent Forward cases)")
    count = 0
    for data in seeds(name, CORPORA):
        run_one(HARNESSES[name], data)
        count += 1
    assert count >= 4, f"{name}: only {count} seeds"


def test_the_cve_shapes_are_seeds_of_the_syslog_harnesses() -> None:
    shapes = {m for ms in CVE_MESSAGES.values() for m in ms}
    assert len(CVE_MESSAGES) >= 5 and len(shapes) >= 40
    assert shapes <= set(seeds("syslog_parse", None))


def test_a_finding_is_raised_not_swallowed() -> None:
    """The wrapper passes declared errors and raises anything else."""
    from tests.fuzz.harnesses import Harness

    def boom(data: bytes) -> None:
        if data == b"declared":
            raise ValueError("refused")
        raise KeyError("a bug")
    h = Harness("boom", boom, (ValueError,), "test")
    run_one(h, b"declared")
    with pytest.raises(KeyError):
        run_one(h, b"other")

    def slow(data: bytes) -> None:
        import time
        time.sleep(1.2)
    with pytest.raises(Finding, match="took"):
        run_one(Harness("slow", slow, (), "test"), b"")


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_fuzz_briefly(name: str, tmp_path: Path) -> None:
    need(atheris_available(), "atheris (pip install atheris; the test extras)")
    need(CORPORA.is_dir(), "the shared corpora (syslog and Fluent Forward cases)")
    try:
        proc = subprocess.run([sys.executable, "-m", "tests.fuzz.run", name, "--artifacts", str(tmp_path),
                               f"-runs={RUNS}", f"-max_total_time={RUN_SECONDS}", "-seed=20"],
                              cwd=REPO, capture_output=True, text=True, timeout=RUN_SECONDS + 60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"fuzzing {name} did not stop within {RUN_SECONDS + 60} s") from None
    found = sorted(p.name for p in tmp_path.iterdir() if re.match(r"(crash|timeout|oom|leak)-", p.name))
    assert proc.returncode == 0 and not found, (
        f"fuzzing {name} found {found} (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    executed = re.search(r"stat::number_of_executed_units: (\d+)", proc.stderr)
    assert executed and int(executed.group(1)) > 0, proc.stderr[-2000:]
    print(f"[fuzz {name}] {executed.group(1)} inputs")
