"""Tests for hostlog.config.apps: the [[app]] model."""

from __future__ import annotations

import pytest

from hostlog.config import parse_config
from tests.support.config import only_problem


@pytest.mark.parametrize(
    ("given", "stored"), [("TERM", "SIGTERM"), ("SIGINT", "SIGINT"), ("hup", "SIGHUP"), (9, "SIGKILL")]
)
def test_stop_signal_is_normalised(given: object, stored: str) -> None:
    text = '[[app]]\nname = "a"\ncommand = ["true"]\nstop_signal = ' + (
        f'"{given}"' if isinstance(given, str) else str(given)
    )
    assert parse_config(text).apps[0].stop_signal == stored


def test_command_as_string() -> None:
    key, message = only_problem('[[app]]\nname = "web"\ncommand = "python3 -m http.server"\n')
    assert key == "app[0].command"
    assert message == 'command must be a list of arguments (argv), e.g. ["python3", "-m", "http.server"]'


def test_bad_signal() -> None:
    key, message = only_problem('[[app]]\nname = "a"\ncommand = ["a"]\nstop_signal = "TERMINATE"\n')
    assert key == "app[0].stop_signal"
    assert "unknown signal 'TERMINATE'" in message
