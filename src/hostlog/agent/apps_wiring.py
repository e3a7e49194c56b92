"""Supervised apps, the control socket and the metrics endpoint, wired into the agent.

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
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from hostlog import __version__
from hostlog.agent.control import ControlError, ControlServer
from hostlog.collectors.base import Batch, OnDurable, Sink
from hostlog.collectors.process import ProcessSupervisor
from hostlog.config import Config, ConfigError, load_config
from hostlog.record import Columns

log = logging.getLogger("hostlog.agent")

__all__ = ["AppsWiring", "CountingSink", "attach", "detach", "make_metrics", "on_reload"]

RELOAD_WAIT = 30.0  # ctl reload waits this long for the agent to apply the new config


@dataclass
class AppsWiring:
    supervisor: ProcessSupervisor
    control: ControlServer | None = None
    metrics: Any = None  # hostlog.agent.metrics.Metrics, while its endpoint serves
    acked_at_start: int = 0  # destinations' acked seq when the agent started
    reload_waiters: list[asyncio.Future] = field(default_factory=list)


class CountingSink:
    """The spool writer, counting records and message bytes per source on the way in.

    A batch comes from one collector, so its first record names the source:
    one dict update per batch; the bytes are the batch's text size (Columns
    often know it for free) or one ``len`` per record. Counted after the
    writer took the batch, so a batch it refused is not counted as in.
    """

    def __init__(self, inner: Sink, metrics: Any) -> None:
        self.inner = inner
        self.metrics = metrics

    def _count(self, batch: Batch) -> None:
        if not len(batch):
            return
        if isinstance(batch, Columns):
            self.metrics.count_batch(batch.columns[2][0], len(batch), batch.text_bytes())
        else:
            self.metrics.count_batch(batch[0].source, len(batch), sum([len(r.msg) for r in batch]))

    def has_room(self) -> bool:
        return self.inner.has_room()

    async def wait_room(self) -> None:
        await self.inner.wait_room()

    async def write(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        await self.inner.write(batch, on_durable)
        self._count(batch)

    def submit(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        self.inner.submit(batch, on_durable)
        self._count(batch)

    def write_nowait(self, batch: Batch, on_durable: OnDurable | None = None) -> bool:
        accepted = self.inner.write_nowait(batch, on_durable)
        if accepted:
            self._count(batch)
        return accepted

    def __getattr__(self, name: str) -> Any:  # flush(), stats, ... of the writer
        return getattr(self.inner, name)


async def attach(agent: Any) -> None:
    """Start metrics, the control socket and the supervised apps of ``agent.config``."""
    config: Config = agent.config
    context = agent.context
    supervisor = ProcessSupervisor(config.apps, context, state_file=config.agent.state_dir / "apps.json")
    wiring = AppsWiring(supervisor, acked_at_start=_acked(agent))
    agent.apps_wiring = wiring
    if agent.metrics is not None:
        _start_metrics(agent, wiring, config.control.metrics)
    control = ControlServer(config.control.socket, partial(_handle, agent, wiring))
    try:
        await control.start()
        wiring.control = control
    except (OSError, ControlError) as exc:
        log.error("control socket %s not available: %s", config.control.socket, exc)
    await supervisor.start()
    if config.apps:
        log.info("supervising %d apps", len(config.apps))


async def detach(agent: Any) -> None:
    """Stop the control socket, the apps (their last lines reach the spool) and metrics."""
    wiring: AppsWiring | None = getattr(agent, "apps_wiring", None)
    if wiring is None:
        return
    agent.apps_wiring = None
    if wiring.control is not None:
        await wiring.control.stop()
    await wiring.supervisor.stop()
    for fut in wiring.reload_waiters:
        fut.done() or fut.cancel()
    if wiring.metrics is not None:
        await asyncio.to_thread(wiring.metrics.shutdown)


async def on_reload(agent: Any, new_config: Config) -> None:
    """Apply the ``[[app]]`` list of a new config; ``[control]`` waits for a restart."""
    wiring: AppsWiring | None = getattr(agent, "apps_wiring", None)
    if wiring is None:
        return
    if new_config.control != agent.config.control:
        log.warning("reload: [control] changes take effect at the next restart")
    changes = await wiring.supervisor.reload(new_config.apps)
    log.info("reload: apps added [%s], removed [%s], changed [%s]",
             *(", ".join(changes[k]) for k in ("added", "removed", "changed")))
    waiters, wiring.reload_waiters = wiring.reload_waiters, []
    for fut in waiters:
        if not fut.done():
            fut.set_result(changes)


def make_metrics(config: Config) -> Any:
    """The agent's Metrics when ``[control] metrics`` is set (else None).

    Made before any collector starts, so the counting sink in front of the
    spool writer sees every batch from the first (a collector may keep the
    sink it was given for as long as it runs)."""
    if not config.control.metrics:
        return None
    try:
        from hostlog.agent.metrics import Metrics
    except ImportError as exc:
        log.error("metrics endpoint not started: %s (install prometheus_client)", exc)
        return None
    return Metrics()


def _start_metrics(agent: Any, wiring: AppsWiring, address: str) -> None:
    from hostlog.agent.metrics import Readers
    metrics = agent.metrics
    sup, context = wiring.supervisor, agent.context
    metrics.readers = Readers(
        spool_bytes=lambda: agent.spool.total_bytes if agent.spool is not None else 0,
        spool_segments=lambda: len(agent.spool.segments) if agent.spool is not None else 0,
        records_written=lambda: agent.writer.stats.records if agent.writer is not None else 0,
        spool_dropped=lambda: agent.spool.dropped_records if agent.spool is not None else 0,
        source_dropped=lambda: {k[:-len(".dropped")]: v for k, v in dict(context.counters).items()
                                if k.endswith(".dropped")},
        forward_lag=lambda: {f.name: 0 for f in agent.config.forwards},  # until forwarding runs
        app_restarts=sup.restart_counts,
        app_up=lambda: {n: int(s == "RUNNING") for n, s in sup.states().items()},
        uptime=lambda: time.monotonic() - agent.started,
        errors=lambda: dict(context.errors.counts),
    )
    try:
        metrics.serve(address)
    except OSError as exc:
        log.error("metrics endpoint %s not started: %s", address, exc)
        return
    wiring.metrics = metrics


def _acked(agent: Any) -> int:
    spool = getattr(agent, "spool", None)
    acked = spool.acked_seq() if spool is not None else None
    return acked or 0


def agent_info(agent: Any) -> dict[str, Any]:
    """The agent's part of ``status``."""
    wiring: AppsWiring | None = getattr(agent, "apps_wiring", None)
    spool, writer = agent.spool, agent.writer
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime": round(time.monotonic() - agent.started, 3),
        "records_in": writer.stats.records if writer is not None else 0,
        # acknowledged by forward destinations since the agent started (0 without any)
        "records_out": max(0, _acked(agent) - wiring.acked_at_start) if wiring else 0,
        "spool_bytes": spool.total_bytes if spool is not None else 0,
        "spool_segments": len(spool.segments) if spool is not None else 0,
        "sources": sorted(agent.collectors),
    }


async def _handle(agent: Any, wiring: AppsWiring, command: str, args: dict[str, Any]) -> dict[str, Any]:
    """The control socket's commands (docs/protocol.md, "Control socket")."""
    sup = wiring.supervisor
    if command == "status":
        apps = sup.status()
        wanted = args.get("apps") or []
        if not isinstance(wanted, list) or not all(isinstance(a, str) for a in wanted):
            raise ControlError('"apps" must be a list of app names')
        unknown = sorted(set(wanted) - {a["name"] for a in apps})
        if unknown:
            raise ControlError(f"no such app: {', '.join(unknown)}")
        return {"agent": agent_info(agent), "apps": [a for a in apps if not wanted or a["name"] in wanted]}
    if command in ("start", "stop", "restart"):
        name = args.get("app")
        if not isinstance(name, str) or not name:
            raise ControlError(f"{command} needs an app name: {{\"app\": \"NAME\"}}")
        action = {"start": sup.start_app, "stop": sup.stop_app, "restart": sup.restart_app}[command]
        return await action(name)
    if command == "reload":
        if agent.config_path is not None:
            # Check first, so the client sees what is wrong with the file (the
            # agent would only log it and keep the running config).
            try:
                await asyncio.to_thread(load_config, agent.config_path)
            except ConfigError as exc:
                raise ControlError(f"reload refused, the running config is kept:\n{exc}") from None
        fut = asyncio.get_running_loop().create_future()
        wiring.reload_waiters.append(fut)
        agent.request_reload()
        try:
            return await asyncio.wait_for(fut, RELOAD_WAIT)
        except asyncio.TimeoutError:
            return {"requested": True}
    raise ControlError(f"unknown command {command!r} (commands: status, start, stop, restart, reload)")
