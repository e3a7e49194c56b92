"""Run a test module on both event loops: the agent runs on uvloop when it is
installed, asyncio otherwise. Import ``event_loop_kind`` into a module (it is
autouse there) and run coroutines with :func:`arun`."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from tests.conftest import need

try:
    import uvloop
except ImportError:  # optional in the agent too
    uvloop = None

LOOP = {"run": asyncio.run}


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request):
    if request.param == "uvloop":
        need(uvloop is not None, "uvloop (a dependency of hostlog)")
    LOOP["run"] = uvloop.run if request.param == "uvloop" else asyncio.run
    yield request.param
    LOOP["run"] = asyncio.run


def arun(coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
    return LOOP["run"](asyncio.wait_for(coro, timeout))
