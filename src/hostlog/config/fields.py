"""Field types and checks shared by the section models."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from hostlog.config.endpoints import parse_endpoint
from hostlog.config.units import format_size, parse_duration, parse_size

# --------------------------------------------------------------------------
# Reusable field types and checks
# --------------------------------------------------------------------------


def _absolute_path(value: Path) -> Path:
    # systemd's rule: a path in a config file is absolute; resolving it against
    # the file's directory or the cwd silently changes meaning when either moves.
    if not value.is_absolute():
        raise ValueError(f"must be an absolute path, got {str(value)!r}")
    return value


def _not_a_string(key: str, hint: str) -> BeforeValidator:
    """Refuse a string where a list is expected, with a message that shows the list form."""

    def check(value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(f"{key} must be {hint}")
        return value

    return BeforeValidator(check)


def _at_least_size(minimum: int) -> AfterValidator:
    def check(value: int) -> int:
        if value < minimum:
            raise ValueError(f"must be at least {format_size(minimum)} ({minimum} bytes), got {value} bytes")
        return value

    return AfterValidator(check)


def _positive_duration(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def _check_name(value: str) -> str:
    # Names become file names (checkpoints, cursors) and metric labels.
    if not _NAME_RE.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"invalid name {value!r}: use letters, digits, '_', '.' and '-' only")
    return value


Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive_duration)]
AbsPath = Annotated[Path, AfterValidator(_absolute_path)]
Name = Annotated[str, AfterValidator(_check_name)]
LineSize = Annotated[int, BeforeValidator(parse_size), _at_least_size(1)]


def _url(schemes: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        parse_endpoint(value, schemes)
        return value

    return AfterValidator(check)


class _Section(BaseModel):
    # extra="forbid": an unknown key is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid")
