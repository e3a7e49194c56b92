"""Reading and validating a config file or TOML text."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hostlog.config.errors import ConfigError
from hostlog.config.keypaths import _translate
from hostlog.config.schema import Config

# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

_TOML_POS_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def parse_config(text: str, *, path: str | None = None) -> Config:
    """Parse and validate TOML text; ``path`` only labels the error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        match = _TOML_POS_RE.search(message)
        line = column = None
        if match:
            line, column = int(match[1]), int(match[2])
            message = f"invalid TOML at line {line}, column {column}: {message[: match.start()]}"
        else:
            message = f"invalid TOML: {message}"
        raise ConfigError([("", message)], path=path, line=line, column=column) from None
    return _validate(data, path)


def _validate(data: dict[str, Any], path: str | None) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_translate(e), path=path) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; ConfigError says what is wrong and where."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except OSError as e:
        raise ConfigError([("", f"cannot read config file: {e.strerror or e}")], path=name) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([("", f"not UTF-8 text (byte {e.start})")], path=name) from None
    return parse_config(text, path=name)
