"""pydantic's validation errors as TOML key paths and plain messages."""

from __future__ import annotations

import difflib
import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from hostlog.config.schema import Config

# --------------------------------------------------------------------------
# Turning pydantic's errors into TOML key paths and plain messages
# --------------------------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional so the walk sees the model/list/dict/union inside."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
            continue
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _union_members(tp: Any) -> dict[str, type[BaseModel]]:
    """Tag -> model for a discriminated union of models (empty for anything else)."""
    if get_origin(tp) not in (Union, types.UnionType):
        return {}
    members: dict[str, type[BaseModel]] = {}
    for arg in get_args(tp):
        if isinstance(arg, type) and issubclass(arg, BaseModel) and "type" in arg.model_fields:
            for tag in get_args(arg.model_fields["type"].annotation):
                members[tag] = arg
    return members


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _walk(loc: tuple[str | int, ...]) -> tuple[str, Any]:
    """Render a pydantic location as a TOML key path; also return the type reached.

    Locations use the TOML names (aliases), so ``source`` stays ``source``.
    pydantic inserts the tag of a discriminated union (``("source", 0, "syslog",
    "listen")``); it is not a key the user wrote, so it is dropped.
    """
    path = ""
    tp: Any = Config
    for elem in loc:
        tp = _unwrap(tp) if tp is not None else None
        members = _union_members(tp) if tp is not None else {}
        if isinstance(elem, str) and elem in members:
            tp = members[elem]
            continue
        if isinstance(elem, int):
            path += f"[{elem}]"
            tp = get_args(tp)[0] if tp is not None and get_origin(tp) is list else None
            continue
        if elem == "[key]":  # pydantic marks a bad dict key this way; the key is already in the path
            continue
        path += ("." if path else "") + _key(str(elem))
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for n, f in tp.model_fields.items() if (f.alias or n) == elem), None)
            tp = field.annotation if field is not None else None
        elif tp is not None and get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            tp = None
    return path, tp


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__} ({value})"


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean (true or false)",
    "bool_parsing": "a boolean (true or false)",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "path_type": "a path string",
}


def _message(err: Any, parent_type: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        message = f"unknown key {key!r}"
        if isinstance(parent_type, type) and issubclass(parent_type, BaseModel):
            names = [f.alias or n for n, f in parent_type.model_fields.items()]
            close = difflib.get_close_matches(key, names, n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        return message
    if kind == "missing":
        return "missing required key"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return f"expected {ctx['expected']}, got {_toml_type(value)}"
    if kind in ("model_type", "model_attributes_type") and isinstance(value, list) and isinstance(err["loc"][-1], str):
        key = err["loc"][-1]
        return f"expected a table, got an array; write [{key}], not [[{key}]]"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_toml_type(value)}"
    if kind == "too_short":
        minimum = ctx.get("min_length", 1)
        return "must not be empty" if minimum == 1 else f"must have at least {minimum} items"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}, got {value!r}"
    return str(err["msg"])


def _translate(error: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "hostlog_config":
            for rel, message in err["ctx"]["problems"]:
                problems.append((_walk(loc + tuple(rel))[0], message))
            continue
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            section = next((str(e) for e in reversed(loc) if isinstance(e, str)), "source")
            tags = ", ".join(_union_members(_unwrap(_walk(loc)[1])))
            path = _walk(loc)[0] + ".type"
            if kind == "union_tag_invalid":
                problems.append((path, f"unknown {section} type {err['ctx']['tag']!r} (expected one of: {tags})"))
            else:
                problems.append((path, f"missing required key (one of: {tags})"))
            continue
        parent = _unwrap(_walk(loc[:-1])[1]) if loc else None
        problems.append((_walk(loc)[0], _message(err, parent)))
    return problems
