"""The fault suite: short by default (CI, `make test`), long with
HOSTLOG_FAULTS_LONG=1 (`make faults`)."""

import os

import pytest

LONG = os.environ.get("HOSTLOG_FAULTS_LONG") == "1"


@pytest.fixture
def long_mode() -> bool:
    return LONG
