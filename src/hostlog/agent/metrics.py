"""Prometheus metrics of the agent (``[control] metrics = "HOST:PORT"``).

Everything is read live at scrape time from the objects that already keep the
numbers (the spool, the writer, the collectors' counters, the supervisor):
one custom collector calls a set of reader functions, so nothing is counted
twice and nothing has to be pushed into metric objects on the hot path. The
one thing counted here is records/bytes per source, by the counting sink the
wiring puts in front of the spool writer (one addition per batch).

Names follow Prometheus conventions (``_total`` for counters, base units); the
list is in docs/apps.md ("Metrics"). The HTTP server runs in its own thread
(prometheus_client's), so a scrape never waits for the event loop; the
readers only copy numbers and dicts, which is safe from that thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from hostlog import __version__
from hostlog.collectors.events import LOSSES, Counted
from hostlog.config import Config, parse_host_port

if TYPE_CHECKING:
    from hostlog.agent.wiring import WiredAgent
    from hostlog.collectors.process.supervisor import ProcessSupervisor

log = logging.getLogger("hostlog.metrics")

__all__ = ["Metrics", "Readers", "agent_readers", "make_metrics"]


def _zero() -> int:
    return 0


def _empty() -> dict[str, int]:
    return {}


@dataclass
class Readers:
    """Functions that return live values; the agent's wiring fills them in."""

    spool_bytes: Callable[[], int] = _zero
    spool_segments: Callable[[], int] = _zero
    records_written: Callable[[], int] = _zero  # records the writer put in the spool
    spool_dropped: Callable[[], int] = _zero  # records retention dropped unacknowledged
    spool_full: Callable[[], int] = _zero  # 1 while writes wait for room (disk full, max_bytes)
    spool_blocked: Callable[[], float] = field(default=lambda: 0.0)  # seconds writes waited
    spool_dropped_for_room: Callable[[], int] = _zero  # of spool_dropped: to make room on a full disk
    source_dropped: Callable[[], dict[str, int]] = _empty  # per source name (queue full, rate limit)
    collector_events: Callable[[], dict[tuple[str, Counted], int]] = field(default=dict)
    forward: Callable[[], list[dict[str, Any]]] = field(default=list)  # per link: Link.status()
    receiver: Callable[[], dict[str, Any] | None] = field(default=lambda: None)  # Receiver.status()
    inputs: Callable[[], list[dict[str, Any]]] = field(default=list)  # collectors' status() (nats)
    app_restarts: Callable[[], dict[str, int]] = _empty
    app_up: Callable[[], dict[str, int]] = _empty  # 1 while the app's process runs
    uptime: Callable[[], float] = field(default=lambda: 0.0)
    errors: Callable[[], dict[tuple[str, str], int]] = field(default=dict)  # by (source, where)
    archiver: Callable[[], dict[str, Any] | None] = field(default=lambda: None)  # Archiver.status()


class _LiveCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        m, r = self.metrics, self.metrics.readers
        info = InfoMetricFamily("hostlog_build", "hostlog version")
        info.add_metric([], {"version": __version__})
        yield info
        yield GaugeMetricFamily("hostlog_agent_uptime_seconds", "Seconds since the agent started",
                                value=r.uptime())
        yield _labelled(CounterMetricFamily, "hostlog_records_in", "Records accepted from each source",
                        "source", dict(m.records_in))
        yield _labelled(CounterMetricFamily, "hostlog_bytes_in",
                        "Message bytes accepted from each source (characters of text messages)",
                        "source", dict(m.bytes_in))
        dropped = _labelled(CounterMetricFamily, "hostlog_records_dropped",
                            "Records a collector dropped (queue full, rate limit), by its configured "
                            'name; and records a [[rule]] dropped or sampled out (reason="rule")',
                            "collector", r.source_dropped())
        for rule, n in sorted(m.rule_dropped().items()):
            dropped.samples.append(Sample("hostlog_records_dropped_total", {"reason": "rule", "rule": rule}, n))
        yield dropped
        yield _labelled(CounterMetricFamily, "hostlog_anomalies",
                        "Anomalies said as records of source detect, by kind (docs/patterns.md)",
                        "kind", m.anomalies())
        events = CounterMetricFamily("hostlog_collector_events",
                                     "What each collector counts (collectors/events.py): records, "
                                     "drops, rotations, connections, ...", labels=["collector", "event"])
        for (collector, event), n in sorted(r.collector_events().items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
            events.add_metric([collector, event.value], n)
        yield events
        errors = CounterMetricFamily("hostlog_errors",
                                     "Errors caught at a collector's edge or in the agent, by "
                                     "source and where (parse, sink, event_loop, ...)",
                                     labels=["source", "where"])
        for (source, where), n in sorted(r.errors().items()):
            errors.add_metric([source, where], n)
        yield errors
        yield CounterMetricFamily("hostlog_spool_dropped_records",
                                  "Records retention dropped before every destination acknowledged them",
                                  value=r.spool_dropped())
        yield GaugeMetricFamily("hostlog_spool_full",
                                "1 while the spool writer waits for room (the disk is full, or "
                                "max_bytes with data not acknowledged): the sources are slowed",
                                value=r.spool_full())
        yield CounterMetricFamily("hostlog_spool_blocked_seconds",
                                  "Seconds the spool writer waited for room", value=r.spool_blocked())
        yield CounterMetricFamily("hostlog_spool_dropped_for_room_records",
                                  "Of hostlog_spool_dropped_records: dropped to make room on a full "
                                  'disk (on_full = "drop_oldest")', value=r.spool_dropped_for_room())
        yield CounterMetricFamily("hostlog_spool_records_written", "Records written to the spool",
                                  value=r.records_written())
        yield GaugeMetricFamily("hostlog_spool_bytes", "Size of all spool segments", value=r.spool_bytes())
        archiver = r.archiver()
        if archiver is not None:  # compaction or the archive tier is on (spool/archive.py)
            yield _labelled(CounterMetricFamily, "hostlog_spool_rewrites",
                            "Sealed segments the archiver rewrote since the start: compacted in "
                            "place, archived, or expired (deleted from the archive after keep)",
                            "kind", {k: int(archiver[k]) for k in ("compacted", "archived", "expired")})
            yield GaugeMetricFamily("hostlog_spool_rewrites_refused",
                                    "Sealed segments the archiver will not rewrite (a damaged frame, "
                                    "no intact footer): they stay as they are, reported",
                                    value=len(archiver["refused"]))
            yield GaugeMetricFamily("hostlog_spool_archive_held_segments",
                                    "Segments due for the archive tier's deletion that a forward "
                                    "destination has not acknowledged yet",
                                    value=len(archiver["held_for_destinations"]))
            yield CounterMetricFamily("hostlog_spool_archiver_failed_passes",
                                      "Archiver passes that failed (the reason is logged and in "
                                      "hostlog ctl status)", value=int(archiver["failed_passes"]))
        yield GaugeMetricFamily("hostlog_spool_segments", "Number of spool segments",
                                value=r.spool_segments())
        links = r.forward()
        for kind, name, key, doc in (
                (GaugeMetricFamily, "hostlog_forward_lag_records", "lag_records",
                 "Records in the spool a destination (or replica) has not acknowledged"),
                (GaugeMetricFamily, "hostlog_forward_lag_seconds", "lag_seconds",
                 "Age of the oldest record a destination (or replica) has not acknowledged"),
                (GaugeMetricFamily, "hostlog_forward_acked_seq", "acked_seq",
                 "The last spool seq a destination (or replica) has acknowledged"),
                (GaugeMetricFamily, "hostlog_forward_connected", "connected",
                 "1 while the destination (or replica) is connected"),
                (CounterMetricFamily, "hostlog_forward_records_sent", "records_sent",
                 "Records sent to a destination (or replica), resends included"),
                (CounterMetricFamily, "hostlog_forward_connects", "connects",
                 "Connections made to a destination (or replica)")):
            yield _labelled(kind, name, doc, "destination", {link["name"]: link[key] for link in links})
        events = CounterMetricFamily("hostlog_forward_output_events",
                                     "What an output counts of its own (otlp: retries, skipped records, ...)",
                                     labels=["destination", "event"])
        for link in links:
            for event, n in sorted(link.get("output", {}).items()):
                events.add_metric([link["name"], event], n)
        yield events
        receiver = r.receiver()
        if receiver is not None:
            for name, key, doc in (
                    ("hostlog_receiver_records", "records", "Records received from peers and stored"),
                    ("hostlog_receiver_duplicates", "duplicates",
                     "Records received that this spool held already (resends), dropped"),
                    ("hostlog_receiver_refused", "refused", "Peers refused (certificate, token)"),
                    ("hostlog_receiver_protocol_errors", "protocol_errors",
                     "Peers disconnected for breaking the protocol"),
                    ("hostlog_receiver_bad_chunks", "bad_chunks",
                     "Chunks received that did not decode (reported as a record, skipped)")):
                yield CounterMetricFamily(name, doc, value=receiver[key])
        yield from _nats_families([i for i in r.inputs() if i.get("type") == "nats"])
        yield _labelled(CounterMetricFamily, "hostlog_app_restarts",
                        "Restarts of a supervised app by its restart policy", "app", r.app_restarts())
        yield _labelled(GaugeMetricFamily, "hostlog_app_up", "1 while the supervised app runs",
                        "app", r.app_up())


#: ``[[source]] type = "nats"``: (family, metric, status key, help), labelled by source.
_NATS = (
    (GaugeMetricFamily, "hostlog_nats_connected", "connected", "1 while the NATS input is connected"),
    (CounterMetricFamily, "hostlog_nats_messages", "messages", "Messages the NATS input was delivered"),
    (CounterMetricFamily, "hostlog_nats_acked", "acked",
     "Messages the NATS input acked (their records durable in the spool)"),
    (CounterMetricFamily, "hostlog_nats_records", "records", "Records the NATS input stored"),
    (CounterMetricFamily, "hostlog_nats_duplicates", "duplicates",
     "Records the NATS input dropped as held already (by origin and seq)"),
    (CounterMetricFamily, "hostlog_nats_held_back", "held_back",
     "Messages handed back until the one before them on their subject is stored"),
    (CounterMetricFamily, "hostlog_nats_redeliveries", "redeliveries",
     "Messages JetStream delivered more than once (ack wait ended, or held back)"),
    (CounterMetricFamily, "hostlog_nats_bad_messages", "bad_messages",
     "Messages that did not decode (stored as a notice, terminated)"),
    (CounterMetricFamily, "hostlog_nats_errors", "errors", "Requests to the NATS server that failed"),
    (GaugeMetricFamily, "hostlog_nats_awaiting_durability", "awaiting_durability",
     "Messages taken into the spool writer, not yet durable (not acked)"),
)
#: The consumer info's numbers (fetched every few seconds), labelled by source.
_NATS_CONSUMER = (
    ("hostlog_nats_consumer_pending", "pending", "Messages in the stream the consumer has not been delivered"),
    ("hostlog_nats_consumer_ack_pending", "ack_pending", "Messages delivered to the consumer and not acked"),
)


def _nats_families(inputs: list[dict[str, Any]]) -> Iterator[Any]:
    for kind, name, key, doc in _NATS:
        yield _labelled(kind, name, doc, "source", {i["name"]: int(i.get(key) or 0) for i in inputs})
    for name, key, doc in _NATS_CONSUMER:
        yield _labelled(GaugeMetricFamily, name, doc, "source",
                        {i["name"]: int(i["consumer"].get(key) or 0) for i in inputs if i.get("consumer")})


def _labelled(kind: Any, name: str, doc: str, label: str, values: dict[str, int]) -> Any:
    family = kind(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class Metrics:
    """The agent's metrics: counts per source, live readers, the HTTP endpoint."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.readers = Readers()
        self.records_in: dict[str, int] = {}
        self.bytes_in: dict[str, int] = {}
        self.rule_dropped: Callable[[], dict[str, int]] = _empty  # by rule name (the agent's rules sink)
        self.anomalies: Callable[[], dict[str, int]] = _empty  # by kind (the agent's patterns sink)
        self.registry.register(_LiveCollector(self))
        # process_* (CPU, RSS, open fds) of the agent itself, from /proc
        ProcessCollector(registry=self.registry)
        self._server: Any = None
        self._thread: Any = None
        self.address: tuple[str, int] | None = None

    def count_batch(self, source: str, records: int, nbytes: int) -> None:
        """Called on the loop once per batch a collector hands to the sink."""
        self.records_in[source] = self.records_in.get(source, 0) + records
        self.bytes_in[source] = self.bytes_in.get(source, 0) + nbytes

    def serve(self, address: str) -> tuple[str, int]:
        """Start the HTTP endpoint on ``HOST:PORT`` (port 0: any free port); returns where."""
        host, port = _host_port(address)
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.address = (host, self._server.server_port)
        log.info("metrics at http://%s:%d/metrics", *self.address)
        return self.address

    def shutdown(self) -> None:
        """Stop the HTTP endpoint and wait for its thread."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None


def make_metrics(config: Config) -> Metrics | None:
    """The agent's Metrics when ``[control] metrics`` is set (else None).

    Made before any collector starts, so the counting sink in front of the
    spool writer sees every batch from the first (a collector may keep the
    sink it was given for as long as it runs). Served later, by the wiring."""
    return Metrics() if config.control.metrics else None


def dropped_by_collector(counters: dict[tuple[str, Counted], int]) -> dict[str, int]:
    """Records each collector dropped, by its name: every event that is a loss
    (collectors/events.py ``LOSSES``: a full queue, the kernel's drops on its
    socket, its rate limit) together."""
    out: dict[str, int] = {}
    for (name, event), value in dict(counters).items():
        if event in LOSSES:
            out[name] = out.get(name, 0) + value
    return out


def syslog_fallbacks() -> dict[tuple[str, str], int]:
    """The syslog parser's fallbacks (hostlog.collectors.syslog.parse.FALLBACKS) as errors."""
    from hostlog.collectors.syslog.parse import FALLBACKS
    return {("syslog", f"parse_fallback_{path}"): n for path, n in FALLBACKS.counts.items()}


def agent_readers(agent: WiredAgent, supervisor: ProcessSupervisor) -> Readers:
    """The live values of a running agent, read at scrape time."""
    from hostlog.agent.forwarding import input_status
    from hostlog.agent.forwarding import status as forwarding_status
    context = agent.context
    assert context is not None

    def spool_value(read: Callable[[Any], int]) -> Callable[[], int]:
        return lambda: read(agent.spool) if agent.spool is not None else 0

    return Readers(
        spool_bytes=spool_value(lambda s: s.total_bytes),
        spool_segments=spool_value(lambda s: len(s.segments)),
        records_written=lambda: agent.writer.stats.records if agent.writer is not None else 0,
        spool_dropped=spool_value(lambda s: s.dropped_records),
        spool_full=lambda: int(agent.writer is not None and agent.writer.full is not None),
        spool_blocked=lambda: agent.writer.stats.blocked_s if agent.writer is not None else 0.0,
        spool_dropped_for_room=spool_value(lambda s: s.dropped_for_space),
        source_dropped=lambda: dropped_by_collector(context.counters),
        collector_events=lambda: dict(context.counters),
        forward=lambda: [link for dest in forwarding_status(agent)["forward"] for link in dest["links"]],
        receiver=lambda: forwarding_status(agent)["receiver"],
        inputs=lambda: input_status(agent),
        app_restarts=supervisor.restart_counts,
        app_up=lambda: {n: int(s == "RUNNING") for n, s in supervisor.states().items()},
        uptime=lambda: time.monotonic() - agent.started,
        errors=lambda: {**context.errors.counts, **syslog_fallbacks()},
        archiver=lambda: agent.archiver.status() if agent.archiver is not None else None,
    )


def _host_port(address: str) -> tuple[str, int]:
    if address.rsplit(":", 1)[-1] == "0":  # tests ask for any free port
        host = address.rsplit(":", 1)[0].strip("[]")
        return host, 0
    return parse_host_port(address, what="metrics address")
