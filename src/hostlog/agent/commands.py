"""The control socket's commands (docs/protocol.md, "Control socket"):
status, start/stop/restart of a supervised app, reload."""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

from hostlog import __version__
from hostlog.config import ConfigError, load_config
from hostlog.errors import ControlError

if TYPE_CHECKING:
    from hostlog.agent.wiring import WiredAgent, Wiring

__all__ = ["RELOAD_WAIT", "agent_info", "handle"]

RELOAD_WAIT = 30.0  # ctl reload waits this long for the agent to apply the new config


def acked_seq(agent: WiredAgent) -> int:
    """The highest seq every destination has acknowledged (0 without any)."""
    spool = agent.spool
    acked = spool.acked_seq() if spool is not None else None
    return acked or 0


def agent_info(agent: WiredAgent, wiring: Wiring | None) -> dict[str, Any]:
    """The agent's part of ``status``."""
    spool, writer = agent.spool, agent.writer
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime": round(time.monotonic() - agent.started, 3),
        "records_in": writer.stats.records if writer is not None else 0,
        # acknowledged by forward destinations since the agent started (0 without any)
        "records_out": max(0, acked_seq(agent) - wiring.acked_at_start) if wiring else 0,
        "spool_bytes": spool.total_bytes if spool is not None else 0,
        "spool_segments": len(spool.segments) if spool is not None else 0,
        # why writes wait for room (disk full, max_bytes), how long; drops to make room
        "spool": writer.status() if writer is not None else None,
        # compaction and the archive tier (spool/archive.py): what the thread did
        "archive": archiver.status() if (archiver := getattr(agent, "archiver", None)) else None,
        "sources": sorted(agent.collectors),
    }


async def handle(agent: WiredAgent, wiring: Wiring, command: str,
                 args: dict[str, Any]) -> dict[str, Any]:
    """Answer one control request; a ControlError's text goes back to the client."""
    sup = wiring.supervisor
    if command == "status":
        apps = sup.status()
        wanted = args.get("apps") or []
        if not isinstance(wanted, list) or not all(isinstance(a, str) for a in wanted):
            raise ControlError('"apps" must be a list of app names')
        unknown = sorted(set(wanted) - {a["name"] for a in apps})
        if unknown:
            raise ControlError(f"no such app: {', '.join(unknown)}")
        from hostlog.agent.forwarding import status as forwarding_status
        from hostlog.patterns.sink import patterns_status
        from hostlog.rules.sink import rules_status
        return {"agent": agent_info(agent, wiring),
                "apps": [a for a in apps if not wanted or a["name"] in wanted],
                **forwarding_status(agent),
                "rules": rules_status(agent),
                "patterns": patterns_status(agent),
                **({"http": wiring.http.status()} if wiring.http is not None else {})}
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
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        wiring.reload_waiters.append(fut)
        agent.request_reload()
        try:
            return await asyncio.wait_for(fut, RELOAD_WAIT)
        except TimeoutError:
            return {"requested": True}
    raise ControlError(f"unknown command {command!r} (commands: status, start, stop, restart, reload)")
