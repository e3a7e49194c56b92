"""The rules' place in the agent: a sink stage in front of the spool writer.

The agent's sink chain is ``GuardedSink -> CountingSink -> RulesSink ->
SpoolWriter``: the counting sink counts what the collectors hand over
(``hostlog_records_in``), this stage applies the rules, the writer stores
what is left. So what the agent took in is what its spool holds plus what
the rules dropped (``hostlog_records_dropped{reason="rule"}``).

Everything runs on the event loop, a batch at a time: a reload
(:meth:`RulesSink.use`) takes effect between two batches, and every record
goes through exactly one set of rules, old or new; none is held here. A
batch's ``on_durable`` callback goes on with what is left of it (an empty
batch when the rules dropped all of it), so checkpoints and acks move as
they do without rules.

A rule's failure is contained by the engine (the records are kept, marked);
here it is reported: counted as ``hostlog_errors{source="rules",
where="rule:NAME"}`` and logged once per kind, with the exception's type and
place, never its text (which may quote a record, and a record may hold a
secret the rule was to redact).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hostlog.collectors.base import ErrorCounts, Sink
from hostlog.config.rules import Rule
from hostlog.record import Batch, OnDurable
from hostlog.rules.engine import RuleCounts, RuleEngine
from hostlog.rules.route import note_routing

__all__ = ["RuleError", "RulesSink", "rules_status"]

log = logging.getLogger("hostlog.rules")


class RuleError(Exception):
    """What is reported of a rule's failure (no record content)."""


class RulesSink:
    """The rules, applied to every batch on its way to ``inner``."""

    def __init__(self, inner: Sink, rules: Sequence[Rule], errors: ErrorCounts | None = None, *,
                 spool_dir: Path | None = None) -> None:
        self.inner = inner
        self.errors = errors if errors is not None else ErrorCounts()
        self.spool_dir = spool_dir  # where the routing marker goes (hostlog.rules.route)
        self.counts: dict[str, RuleCounts] = {}  # by rule name, kept across reloads
        self._routing(rules)  # (an OSError here: the agent does not start, and says why)
        self.engine = RuleEngine(rules, self.counts)

    def _routing(self, rules: Sequence[Rule]) -> None:
        if self.spool_dir is not None and any(r.to for r in rules):
            note_routing(self.spool_dir)

    def use(self, rules: Sequence[Rule]) -> None:
        """Apply ``rules`` from the next batch on (a reload)."""
        try:
            self._routing(rules)
        except OSError as exc:  # routed records would reach every destination: keep the rules in use
            log.error("rules: the new rules route records, and %s cannot be written (%s); "
                      "the rules in use are kept", self.spool_dir, exc)
            return
        engine = RuleEngine(rules, self.counts)
        engine.carry_over(self.engine)
        self.engine = engine
        log.info("rules: %d in use%s", len(engine.rules),
                 f" ({', '.join(engine.names)})" if engine.rules else "")

    def _apply(self, batch: Batch) -> Batch:
        engine = self.engine
        if not engine.rules or not len(batch):
            return batch
        try:
            outcome = engine.apply(batch)
        except Exception as exc:  # not a rule's failure (those are contained): a bug here
            self.errors.report("rules", "engine", RuleError(
                f"the rule engine failed ({type(exc).__name__}); the batch is stored as it came"))
            return batch
        for failure in outcome.failures:
            self.errors.report("rules", f"rule:{failure.rule}", RuleError(
                f"{failure.describe()}; {failure.records} records kept as they were, "
                f"marked RULE_ERROR"))
        return outcome.batch

    # -- the Sink interface ---------------------------------------------------------------
    def has_room(self) -> bool:
        return self.inner.has_room()

    async def wait_room(self) -> None:
        await self.inner.wait_room()

    async def write(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        while not self.inner.has_room():  # (wait first: the rules run once per batch)
            await self.inner.wait_room()
        await self.inner.write(self._apply(batch), on_durable)

    def submit(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        self.inner.submit(self._apply(batch), on_durable)

    def write_nowait(self, batch: Batch, on_durable: OnDurable | None = None) -> bool:
        if not self.inner.has_room():  # refused as it came: its records are not the rules' to count
            return self.inner.write_nowait(batch, on_durable)
        return self.inner.write_nowait(self._apply(batch), on_durable)

    def __getattr__(self, name: str) -> Any:  # flush(), stats, ... of the writer
        return getattr(self.inner, name)

    # -- what the agent shows -----------------------------------------------------------------
    def dropped(self) -> dict[str, int]:
        """Records dropped or sampled out, by rule (metrics)."""
        return self.engine.dropped()

    def status(self) -> list[dict[str, Any]]:
        """One entry per rule, in file order, then rules a reload removed
        (their counts stay: the metrics are counters)."""
        active = self.engine.names
        counts = dict(self.counts)
        out = [{"name": name, **counts[name].as_dict()} for name in active]
        out += [{"name": name, "removed": True, **c.as_dict()} for name, c in counts.items()
                if name not in active]
        return out


def rules_status(agent: Any) -> list[dict[str, Any]]:
    """``hostlog ctl status``'s ``rules``: what each rule did (``[]`` without rules)."""
    sink = getattr(agent, "rules", None)
    return sink.status() if isinstance(sink, RulesSink) else []
