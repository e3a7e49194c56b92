"""The ``[[app]]`` model: a supervised application."""

from __future__ import annotations

import re
import signal
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from hostlog.config.errors import _problems
from hostlog.config.fields import AbsPath, Duration, LineSize, Name, PositiveDuration, _not_a_string, _Section
from hostlog.config.units import format_duration


def _signal_name(value: Any) -> str:
    """Normalise "TERM", "SIGTERM", "term" or 15 to the name "SIGTERM"."""
    if isinstance(value, bool):
        raise ValueError(f"invalid signal {value!r}")
    if isinstance(value, int):
        try:
            return signal.Signals(value).name
        except ValueError:
            raise ValueError(f"invalid signal number {value}") from None
    if isinstance(value, str):
        name = value.strip().upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        if name in signal.Signals.__members__:
            return signal.Signals[name].name
    raise ValueError(f'unknown signal {value!r}: expected a name like "TERM", "SIGINT" or "HUP"')


class App(_Section):
    """``[[app]]``: an application the agent starts, supervises and collects stdout/stderr from."""

    name: Name
    """Unique name; also the ``app`` of its records and the argument of ``hostlog ctl``."""
    command: Annotated[
        list[str],
        _not_a_string("command", 'a list of arguments (argv), e.g. ["python3", "-m", "http.server"]'),
        Field(min_length=1),
    ]
    """argv; command[0] is looked up in PATH. No shell is involved."""
    cwd: AbsPath | None = None
    """Working directory; default: the agent's."""
    env: dict[str, str] = Field(default_factory=dict)
    """Variables added to (or overriding) the agent's environment."""
    user: str | None = None
    """Run as this user (name or numeric id); only when the agent runs as root."""
    group: str | None = None
    """Run with this group (name or numeric id); default: the user's primary group."""
    restart: Literal["always", "on-failure", "never"] = "on-failure"
    """Restart after any exit, after a non-zero exit or signal, or never."""
    backoff_initial: Duration = 1.0
    """Delay before the first restart; it doubles after each quick failure."""
    backoff_max: Duration = 60.0
    """Upper bound of the restart delay."""
    backoff_reset: PositiveDuration = 60.0
    """A run at least this long counts as healthy: the delay and failure count reset."""
    start_retries: Annotated[int, Field(ge=0)] = 5
    """Give up after this many consecutive quick failures; 0 never gives up."""
    stop_signal: Annotated[str, BeforeValidator(_signal_name)] = "SIGTERM"
    """Signal sent to the app's process group to stop it, stored as e.g. "SIGTERM"."""
    stop_timeout: PositiveDuration = 10.0
    """Then the group gets SIGKILL."""
    autostart: bool = True
    """Start with the agent; otherwise only by ``hostlog ctl start``."""
    max_line: LineSize = 64 * 1024
    """Longer output lines are split and marked."""
    multiline_start: str | None = None
    """A regex; an output line that does not match it is joined to the record before it
    (a stack trace is one record), as for files. None: every line is a record."""

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if not value[0]:
            raise ValueError("command[0] (the program) must not be empty")
        return value

    @field_validator("multiline_start")
    @classmethod
    def _multiline(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not key or "=" in key or "\0" in key or "\0" in val:
                raise ValueError(f"invalid environment variable {key!r}: names need no '=' and no NUL")
        return value

    @model_validator(mode="after")
    def _backoff(self) -> App:
        if self.backoff_max < self.backoff_initial:
            raise _problems(
                (
                    ("backoff_max",),
                    f"must be at least backoff_initial ({format_duration(self.backoff_initial)}), "
                    f"got {format_duration(self.backoff_max)}",
                )
            )
        return self
