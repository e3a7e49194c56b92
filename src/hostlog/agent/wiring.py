"""Supervised apps, the control socket, the metrics endpoint and the HTTP
server, wired into the agent.

The agent calls three functions and nothing else:

* :func:`attach` at the end of ``Agent.open()`` (the spool writer and the
  collector context exist): starts the metrics endpoint, the control socket,
  then the supervisor (which first kills what a previous run left);
* :func:`detach` at the start of ``Agent.close()``, before the writer stops,
  so the apps' last lines and lifecycle records still reach the spool;
* :func:`on_reload` from ``Agent.reload()`` with the new, validated config:
  apps added are started, removed stopped, changed restarted.

A part that cannot start (the socket path is taken, the metrics port is in
use) is reported in the log and the agent runs without it, as with sources.
The commands the control socket answers are in ``agent/commands.py``, the
counting sink in ``agent/counting.py``, the metrics in ``agent/metrics.py``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from hostlog.agent import commands
from hostlog.agent.control import ControlServer
from hostlog.collectors.base import CollectorContext
from hostlog.collectors.process.supervisor import ProcessSupervisor
from hostlog.config import Config
from hostlog.errors import ControlError

log = logging.getLogger("hostlog.agent")

__all__ = ["WiredAgent", "Wiring", "attach", "detach", "on_reload"]


class WiredAgent(Protocol):
    """What the wiring uses of :class:`hostlog.agent.agent.Agent`."""

    config: Config
    config_path: Path | None
    context: CollectorContext | None
    spool: Any  # hostlog.spool.spool.Spool | None
    writer: Any  # hostlog.spool.writer.SpoolWriter | None
    archiver: Any  # hostlog.spool.archive.Archiver | None (compaction, the archive tier)
    collectors: dict[str, Any]
    started: float
    metrics: Any  # hostlog.agent.metrics.Metrics | None
    wiring: Wiring | None

    def request_reload(self) -> None: ...


@dataclass
class Wiring:
    supervisor: ProcessSupervisor
    control: ControlServer | None = None
    http: Any = None  # hostlog.http.server.HttpServer, with [http]
    metrics: Any = None  # hostlog.agent.metrics.Metrics, while its endpoint serves
    acked_at_start: int = 0  # destinations' acked seq when the agent started
    report: Any = None  # hostlog.agent.report.ReportWriter, with [report]
    reload_waiters: list[asyncio.Future[dict[str, Any]]] = field(default_factory=list)


async def attach(agent: WiredAgent) -> None:
    """Start metrics, the control socket and the supervised apps of ``agent.config``."""
    config, context = agent.config, agent.context
    assert context is not None, "attach() after the collector context exists"
    supervisor = ProcessSupervisor(config.apps, context,
                                   state_file=config.agent.state_dir / "apps.json")
    wiring = Wiring(supervisor, acked_at_start=commands.acked_seq(agent))
    agent.wiring = wiring
    if agent.metrics is not None and config.control.metrics:
        _start_metrics(agent, wiring, config.control.metrics)
    assert config.control.socket is not None  # filled in when the config is read
    control = ControlServer(config.control.socket, partial(commands.handle, agent, wiring))
    try:
        await control.start()
        wiring.control = control
    except (OSError, ControlError) as exc:
        log.error("control socket %s not available: %s", config.control.socket, exc)
    if config.http is not None:
        await _start_http(agent, wiring, config)
    await supervisor.start()
    if config.apps:
        log.info("supervising %d apps", len(config.apps))
    from hostlog.agent import report
    wiring.report = report.attach(agent, config.report)


async def detach(agent: WiredAgent) -> None:
    """Stop the control socket, the apps (their last lines reach the spool) and metrics."""
    wiring = agent.wiring
    if wiring is None:
        return
    agent.wiring = None
    if wiring.report is not None:
        await wiring.report.stop()
    await _stop_http(wiring)
    if wiring.control is not None:
        await wiring.control.stop()
    await wiring.supervisor.stop()
    for fut in wiring.reload_waiters:
        fut.done() or fut.cancel()
    if wiring.metrics is not None:
        await asyncio.to_thread(wiring.metrics.shutdown)


async def on_reload(agent: WiredAgent, new_config: Config) -> None:
    """Apply the ``[[app]]`` list of a new config; ``[control]`` waits for a restart."""
    wiring = agent.wiring
    if wiring is None:
        return
    if new_config.control != agent.config.control:
        log.warning("reload: [control] changes take effect at the next restart")
    if (new_config.http, new_config.tls) != (agent.config.http, agent.config.tls):
        await _stop_http(wiring)
        if new_config.http is not None:
            await _start_http(agent, wiring, new_config)
    if new_config.report != agent.config.report:
        from hostlog.agent import report
        if wiring.report is not None:
            await wiring.report.stop()
        wiring.report = report.attach(agent, new_config.report)
    changes = await wiring.supervisor.reload(new_config.apps)
    log.info("reload: apps added [%s], removed [%s], changed [%s]",
             *(", ".join(changes[k]) for k in ("added", "removed", "changed")))
    waiters, wiring.reload_waiters = wiring.reload_waiters, []
    for fut in waiters:
        if not fut.done():
            fut.set_result(changes)


async def _start_http(agent: WiredAgent, wiring: Wiring, config: Config) -> None:
    from hostlog.http.server import HttpServer
    server = HttpServer(agent, config)
    try:
        await server.start()
    except OSError as exc:
        log.error("http server not started: %s", exc)
        return
    wiring.http = server


async def _stop_http(wiring: Wiring) -> None:
    server, wiring.http = wiring.http, None
    if server is not None:
        await server.stop()


def _start_metrics(agent: WiredAgent, wiring: Wiring, address: str) -> None:
    from hostlog.agent.metrics import agent_readers
    metrics = agent.metrics
    metrics.readers = agent_readers(agent, wiring.supervisor)
    try:
        metrics.serve(address)
    except OSError as exc:
        log.error("metrics endpoint %s not started: %s", address, exc)
        return
    wiring.metrics = metrics
