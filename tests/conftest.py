import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPORA = REPO.parent / "shared" / "corpora"
IN_CI = os.environ.get("CI") == "true"


def need(condition: bool, what: str) -> None:
    """A test that needs a real component: in CI its absence is a failure, never a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing in CI: {what}")
    pytest.skip(f"missing: {what} (a skip only outside CI)")


@pytest.fixture
def corpora() -> Path:
    need(CORPORA.is_dir(), f"the shared corpora at {CORPORA}")
    return CORPORA
