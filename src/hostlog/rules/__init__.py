"""Rules at ingest (``[[rule]]``, docs/rules.md): drop, sample, parse, redact,
enrich and route records between the collectors and the spool writer, with
``hostlog query``'s own filter language.

* :mod:`~hostlog.rules.engine`: the rules over a batch (pure);
* :mod:`~hostlog.rules.select`: what a rule's ``match`` selects, with the
  query's own code (pure);
* :mod:`~hostlog.rules.parse`, :mod:`~hostlog.rules.redact`: JSON, logfmt
  and regex parsing; redaction and the built-in secret patterns (pure);
* :mod:`~hostlog.rules.route`: what a routed record means for the chunks a
  destination is sent (pure);
* :mod:`~hostlog.rules.sink`: the sink stage the agent puts in front of its
  spool writer.
"""

from hostlog.rules.engine import PARSE_ERROR, ROUTE_FIELD, RULE_ERROR, Outcome, RuleCounts, RuleEngine

__all__ = ["PARSE_ERROR", "ROUTE_FIELD", "RULE_ERROR", "Outcome", "RuleCounts", "RuleEngine"]
