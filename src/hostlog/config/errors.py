"""ConfigError, and the error that cross-key checks in the models raise."""

from __future__ import annotations

from pydantic_core import PydanticCustomError

from hostlog.errors import HostlogError

# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class ConfigError(HostlogError):
    """A configuration that cannot be used.

    ``problems`` holds one ``(key_path, message)`` pair per problem; the key path
    is written as in TOML (``source[1].listen[0]``) and is ``""`` for problems of
    the file as a whole (unreadable, not UTF-8, TOML syntax). ``line`` and
    ``column`` are set for TOML syntax errors when the parser reports them.
    """

    def __init__(
        self,
        problems: list[tuple[str, str]],
        *,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.path = path
        self.problems = list(problems)
        self.line = line
        self.column = column
        super().__init__(self.__str__())

    def __str__(self) -> str:
        lines = []
        for key, message in self.problems:
            parts = [p for p in (self.path, key) if p]
            parts.append(message)
            lines.append(": ".join(parts))
        return "\n".join(lines)


def _problems(*problems: tuple[tuple[str | int, ...], str]) -> PydanticCustomError:
    """Build the error that cross-key checks raise from model validators.

    A model validator can only fail as a whole, at the model's location; the key
    the problem is really about travels in the context as a location relative to
    the model, and :func:`_translate` splices it in.
    """
    summary = "; ".join(message for _, message in problems)
    return PydanticCustomError("hostlog_config", "{summary}", {"summary": summary, "problems": list(problems)})
