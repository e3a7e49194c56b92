"""Forwarding wired into the agent: the ``[[forward]]`` destinations and the ``[receiver]``.

The agent calls :func:`attach` once the spool writer and the collector
context exist, :func:`detach` before it stops them, and :func:`on_reload`
with a new, validated config (a destination or receiver whose section
changed is restarted; its cursor is on disk, so it goes on where it was).
A part that cannot start (the port is taken, a certificate is unreadable)
is reported in the log and as a record, and the agent runs without it, as
with sources.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostlog.config import Config
from hostlog.forward.output import Identity
from hostlog.forward.receiver import Receiver
from hostlog.forward.sender import ChunkSource, Destination, build_destination, cursor_names
from hostlog.record import Columns
from hostlog.spool.reader import SpoolReader

log = logging.getLogger("hostlog.agent")

__all__ = ["DropReport", "Forwarding", "attach", "detach", "input_status", "on_reload", "status"]


#: How often the agent looks whether retention dropped unacknowledged records.
DROP_CHECK_S = 1.0


@dataclass
class Forwarding:
    destinations: dict[str, tuple[Any, Destination]] = field(default_factory=dict)  # name -> (config, dest)
    receiver: Receiver | None = None
    drops: DropReport | None = None
    drop_task: asyncio.Task[None] | None = None


class DropReport:
    """Records retention dropped before every destination acknowledged them
    (``on_full = "drop_oldest"``) are counted by the spool; this says so in
    the spool itself, as a record, so that a query shows the gap where it is."""

    def __init__(self, spool: Any, context: Any) -> None:
        self.spool = spool
        self.context = context
        self.reported = spool.dropped_records
        self.reported_for_room = getattr(spool, "dropped_for_space", 0)

    def check(self) -> int:
        """Submit a notice for what was dropped since the last check; returns that count."""
        dropped = self.spool.dropped_records  # (an int the writer's thread raises)
        new = dropped - self.reported
        if new <= 0:
            return 0
        self.reported = dropped
        for_room = getattr(self.spool, "dropped_for_space", 0)
        room, self.reported_for_room = for_room - self.reported_for_room, for_room
        first = self.spool.segments[0].first_seq if self.spool.segments else 0
        why = f"; {room} of them to make room on a full disk" if room else ""
        text = (f"retention dropped {new} records no destination had acknowledged "
                f"(on_full = drop_oldest{why}; the spool now starts at seq {first}; {dropped} in all)")
        log.warning("%s", text)
        self.context.sink.submit(Columns.of([self.context.notice("hostlog", text, severity=4,
                                                                 DROPPED=str(new))]))
        return new


def _reader(agent: Any) -> Callable[[], SpoolReader]:
    spool = agent.spool
    return lambda: SpoolReader(spool.directory, spool.keyring)


def _client_context(config: Config) -> Callable[[], ssl.SSLContext]:
    def make() -> ssl.SSLContext:
        from hostlog.forward.tls import client_context
        tls = config.tls
        return client_context(tls.ca if tls else None, tls.cert if tls else None, tls.key if tls else None)
    return make


def _cursors(agent: Any) -> Path:
    return Path(agent.spool.directory) / "state" / "cursors"


def _report(agent: Any, source: str) -> Callable[[str, BaseException], None]:
    return lambda where, exc: agent.context.error(source, where, exc)


def _notice(agent: Any, text: str) -> None:
    log.error("%s", text)
    if agent.context is not None and agent.writer is not None:
        agent.context.sink.submit(Columns.of([agent.context.notice("hostlog", text, severity=3)]))


async def attach(agent: Any) -> Forwarding:
    """Start the receiver and every destination of ``agent.config``."""
    fw = Forwarding()
    agent.forwarding = fw
    _forget_removed_cursors(agent, agent.config)
    for forward in agent.config.forwards:
        await _start_destination(agent, fw, forward)
    if agent.config.receiver is not None:
        await _start_receiver(agent, fw, agent.config)
    fw.drops = DropReport(agent.spool, agent.context)
    fw.drop_task = asyncio.create_task(_watch_drops(agent, fw.drops), name="retention drops")
    return fw


async def _watch_drops(agent: Any, drops: DropReport) -> None:
    while True:
        await asyncio.sleep(DROP_CHECK_S)
        try:
            drops.check()
        except Exception as exc:  # SinkError included: counted; the agent stops on a fatal one
            agent.context.error("hostlog", "drop_report", exc)


async def detach(agent: Any) -> None:
    fw: Forwarding | None = agent.forwarding
    if fw is None:
        return
    agent.forwarding = None
    if fw.drop_task is not None:
        fw.drop_task.cancel()
        if fw.drops is not None:
            try:
                fw.drops.check()  # the writer still runs: the last drops are said too
            except Exception as exc:
                agent.context.error("hostlog", "drop_report", exc)
    if fw.receiver is not None:
        await fw.receiver.stop()
    await asyncio.gather(*(dest.stop() for _, dest in fw.destinations.values()))


async def on_reload(agent: Any, new: Config) -> None:
    fw: Forwarding | None = agent.forwarding
    if fw is None:
        return
    tls_changed = new.tls != agent.config.tls
    wanted = {f.name: f for f in new.forwards}
    for name, (old, dest) in list(fw.destinations.items()):
        if wanted.get(name) != old or tls_changed:
            await dest.stop()
            del fw.destinations[name]
    _forget_removed_cursors(agent, new)
    for name, forward in wanted.items():
        if name not in fw.destinations:
            await _start_destination(agent, fw, forward, config=new)
    if fw.receiver is not None and (new.receiver != agent.config.receiver or tls_changed):
        await fw.receiver.stop()
        fw.receiver = None
    if fw.receiver is None and new.receiver is not None:
        await _start_receiver(agent, fw, new)


def status(agent: Any) -> dict[str, Any]:
    """The destinations, the receiver, and the inputs that take what other
    agents forward (``[[source]] type = "nats"``): each collector with a
    ``status()`` of its own."""
    inputs = input_status(agent)
    fw: Forwarding | None = getattr(agent, "forwarding", None)
    if fw is None:
        return {"forward": [], "receiver": None, "inputs": inputs}
    return {"forward": [dest.status() for _, dest in list(fw.destinations.values())],
            "receiver": fw.receiver.status() if fw.receiver is not None else None,
            "inputs": inputs}


def input_status(agent: Any) -> list[dict[str, Any]]:
    """``status()`` of every running collector that has one, in name order."""
    out = []
    collectors = dict(getattr(agent, "collectors", None) or {})  # (a copy: scrapes run on a thread)
    for name in sorted(collectors):
        entry = collectors[name]  # (source config, collector)
        collector = entry[1] if isinstance(entry, tuple) else entry
        report = getattr(collector, "status", None)
        if callable(report):
            out.append(report())
    return out


async def _start_destination(agent: Any, fw: Forwarding, forward: Any, *, config: Config | None = None) -> None:
    config = config or agent.config
    spool, writer = agent.spool, agent.writer
    identity = Identity(agent=spool.agent_id, host=config.agent.hostname)
    dest = build_destination(
        forward, cursors=_cursors(agent),
        source=lambda: ChunkSource(_reader(agent)(), spool.agent_id), identity=identity,
        durable=lambda: writer.durable_seq, ssl_context=_client_context(config),
        report=_report(agent, f"forward {forward.name}"))
    try:
        await dest.start()
    except (OSError, ValueError, ssl.SSLError) as exc:
        await dest.stop()
        _notice(agent, f"forward {forward.name} did not start: {exc}")
        return
    fw.destinations[forward.name] = (forward, dest)
    log.info("forwarding to %s (%s): %s", forward.name, dest.mode, ", ".join(forward.targets))


async def _start_receiver(agent: Any, fw: Forwarding, config: Config) -> None:
    writer = agent.writer
    receiver = Receiver(config.receiver, config.tls, agent.context, agent_id=agent.spool.agent_id,
                        state_path=Path(agent.spool.directory) / "state" / "receiver.json",
                        reader=_reader(agent), accepted_seq=lambda: writer.accepted_seq)
    try:
        await receiver.start()
    except (OSError, ValueError, ssl.SSLError) as exc:
        _notice(agent, f"receiver {config.receiver.listen if config.receiver else ''} did not start: {exc}")
        return
    fw.receiver = receiver


def _forget_removed_cursors(agent: Any, config: Config) -> None:
    """A cursor whose destination is gone from the config would hold the
    spool for ever (retention keeps what it has not acknowledged)."""
    directory = _cursors(agent)
    keep = {stem for forward in config.forwards for stem in cursor_names(forward)}
    for path in directory.glob("*.json") if directory.is_dir() else ():
        if path.stem not in keep:
            log.warning("forward: %s is no longer configured: its cursor %s is removed, and "
                        "retention no longer keeps the spool for it", path.stem, path.name)
            path.unlink(missing_ok=True)
