"""What the rules' tests share: rules from dicts, batches from records."""

from __future__ import annotations

from typing import Any

from hostlog.config.rules import Rule
from hostlog.record import Columns, Record
from hostlog.rules import RuleEngine
from hostlog.rules.engine import Outcome


def rule(**keys: Any) -> Rule:
    """A [[rule]] as the TOML keys give it (``set`` is the TOML name)."""
    keys.setdefault("name", "r")
    return Rule.model_validate(keys)


def run(rules: list[Rule], records: list[Record]) -> tuple[list[Record], Outcome, RuleEngine]:
    engine = RuleEngine(rules)
    outcome = engine.apply(Columns.of(records), explain=True)
    return outcome.batch.records(), outcome, engine


def rec(msg: str | bytes = "hello", **attrs: Any) -> Record:
    attrs.setdefault("ts", 1_700_000_000_000_000_000)
    attrs.setdefault("host", "h")
    attrs.setdefault("source", "syslog")
    return Record(msg=msg, **attrs)
