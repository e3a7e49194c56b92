"""The agent: opens the spool, starts the collectors, runs until told to stop.

Lifecycle:

    start  -> key ring, spool (lock + recovery), spool writer thread,
              collectors listening, READY=1 to systemd
    SIGHUP -> re-read the config; collectors whose section changed are
              restarted, removed ones stopped, new ones started; a config
              that does not validate is reported and the running one kept
    SIGTERM/SIGINT -> collectors stop, everything queued is written and
              synced, the spool is closed, exit 0
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from hostlog import __version__
from hostlog.agent import forwarding
from hostlog.agent import wiring as wire
from hostlog.agent.counting import CountingSink
from hostlog.agent.credentials import credential_key_file
from hostlog.agent.metrics import Metrics, make_metrics
from hostlog.agent.notify import notify, watchdog_interval
from hostlog.collectors.base import CollectorContext, ErrorCounts, GuardedSink
from hostlog.config import Config, ConfigError, default_config, load_config
from hostlog.patterns.sink import PatternsSink, open_patterns
from hostlog.record import Columns
from hostlog.rules.sink import RulesSink
from hostlog.spool.archive import Archiver, start_archiver
from hostlog.spool.checkpoints import CheckpointFiles
from hostlog.spool.keys import Keyring
from hostlog.spool.spool import Spool
from hostlog.spool.writer import SpoolWriter

log = logging.getLogger("hostlog.agent")


def tune_gc() -> None:
    """The agent's cyclic-GC setting, once start-up is done (benchmarks call
    it too, to measure what the agent runs). Records are acyclic and freed by
    reference counting; the cyclic collector only walks them. Freeze what
    start-up made (modules, config) and collect the young generation less
    often: +10-15% msg/s."""
    gc.freeze()
    gc.set_threshold(50_000, 10, 10)


def build_collector(source: Any, context: CollectorContext, config: Config) -> Any:
    """The collector for one ``[[source]]`` section."""
    if source.type == "syslog":
        from hostlog.collectors.syslog.collector import SyslogCollector
        return SyslogCollector(source, context, tls=config.tls)
    if source.type == "journald":
        from hostlog.collectors.journald.collector import JournaldCollector
        return JournaldCollector(source, context)
    if source.type == "file":
        from hostlog.collectors.files.collector import FileCollector
        return FileCollector(source, context)
    if source.type == "forward":
        from hostlog.collectors.fluent.collector import FluentCollector
        return FluentCollector(source, context, tls=config.tls)
    if source.type == "nats":
        from hostlog.collectors.nats.collector import NatsCollector
        return NatsCollector(source, context, tls=config.tls)
    raise ValueError(f"source {source.name!r}: type {source.type!r} is not available yet")


class Agent:
    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.spool: Spool | None = None
        self.writer: SpoolWriter | None = None
        self.archiver: Archiver | None = None  # compaction and the archive tier (spool/archive.py)
        self.collectors: dict[str, tuple[Any, Any]] = {}  # name -> (source config, collector)
        self.context: CollectorContext | None = None
        self.metrics: Metrics | None = None  # with [control] metrics
        self.wiring: wire.Wiring | None = None  # apps, control socket, metrics endpoint
        self.forwarding: forwarding.Forwarding | None = None  # [[forward]] and [receiver]
        self.rules: RulesSink | None = None  # [[rule]]: between the counting sink and the writer
        self.patterns: PatternsSink | None = None  # [patterns]: between the rules and the writer
        # errors caught at the collectors' edges and by the event loop; a
        # fatal one (the spool writer did not take a batch) stops the agent
        self.errors = ErrorCounts(on_fatal=self._fatal)
        self.failure: BaseException | None = None
        self.started = time.monotonic()
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()

    # -- public ----------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def _fatal(self, exc: BaseException) -> None:
        """Data could not be kept: stop, and exit non-zero so that systemd's
        Restart=on-failure brings the agent back and replayable sources
        replay from their checkpoints."""
        if self.failure is None:
            self.failure = exc
        self.request_stop()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """What reaches the event loop's handler was caught nowhere else. An
        error in a protocol or transport callback is data lost with its
        connection: fatal. Anything else is counted and logged."""
        exc = context.get("exception")
        message = context.get("message", "unhandled error")
        data_path = "protocol" in context or "transport" in context
        self.errors.report("agent", "event_loop",
                           exc if exc is not None else RuntimeError(message), fatal=data_path)
        if exc is not None:
            log.error("event loop: %s", message)
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_exception)
        for sig, handler in ((signal.SIGTERM, self.request_stop), (signal.SIGINT, self.request_stop),
                             (signal.SIGHUP, self.request_reload)):
            loop.add_signal_handler(sig, handler)
        await self.open()
        tune_gc()
        notify(f"READY=1\nSTATUS=collecting from {len(self.collectors)} sources")
        log.info("hostlog %s running: spool %s, %d sources", __version__,
                 self.config.spool_dir, len(self.collectors))
        watchdog = watchdog_interval()
        failed = False
        try:
            while not self._stop.is_set():
                waiters = [asyncio.ensure_future(self._stop.wait()),
                           asyncio.ensure_future(self._reload.wait())]
                await asyncio.wait(waiters, timeout=watchdog,
                                   return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
                if watchdog:
                    notify("WATCHDOG=1")
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    await self.reload()
            if self.writer is not None and self.writer.error is not None:
                # the writer asked for this stop (on_failure): exit non-zero so
                # systemd's Restart=on-failure brings the agent back
                log.error("stopping: the spool writer failed: %s", self.writer.error)
                notify(f"STATUS=spool writer failed: {self.writer.error}")
                failed = True
            elif self.failure is not None:
                log.error("stopping: a batch could not be kept: %s", self.failure)
                notify(f"STATUS=failed: {self.failure}")
                failed = True
        finally:
            if self.spool is not None:
                notify("STOPPING=1")
                await self.close()
        return 1 if failed or self.failure is not None else 0

    async def open(self) -> None:
        config = self.config
        spool_dir = config.spool_dir
        # a systemd credential (LoadCredential[Encrypted]=spool.key) wins over the config
        key_file = credential_key_file() or config.spool_key_file()
        keyring = Keyring.load_or_create(key_file)
        self.spool = Spool.open(spool_dir, keyring, segment_bytes=config.spool.segment_bytes,
                                max_bytes=config.spool.max_bytes, max_age=config.spool.max_age,
                                on_full=config.spool.on_full, key_file=key_file,
                                seal_after=config.spool.seal_after)
        self.spool.chunk_version = 2 if config.spool.chunk == "v2" else 1
        for line in self.spool.recovery.lines():
            log.info("%s", line)
        checkpoints = CheckpointFiles(spool_dir / "state" / "checkpoints",
                                      recovered_seq=self.spool.next_seq - 1,
                                      last_seq=lambda: self.writer.accepted_seq if self.writer else 0)
        self.writer = SpoolWriter(self.spool, fsync=config.spool.fsync,
                                  fsync_interval=config.spool.fsync_interval,
                                  max_pending=config.spool.max_pending,
                                  note_position=checkpoints.note_written,
                                  on_failure=self.request_stop, on_error=self.errors.report)
        self.writer.start()
        self.archiver = start_archiver(self.spool, config, self.writer.spool_lock)
        # The one sink every collector is given, for as long as it runs:
        # errors guarded outermost, then the metrics count, then the rules,
        # then the writer (records in = records stored + records the rules dropped).
        self.metrics = make_metrics(config)
        self.patterns = open_patterns(config, self.writer, self.errors, keyring)
        self.rules = RulesSink(self.patterns if self.patterns is not None else self.writer,
                               config.rules, self.errors, spool_dir=spool_dir)
        inner: Any = self.rules
        if self.metrics is not None:
            self.metrics.rule_dropped = self.rules.dropped
            if self.patterns is not None:
                self.metrics.anomalies = self.patterns.anomalies
            inner = CountingSink(inner, self.metrics)
        self.context = CollectorContext(hostname=config.agent.hostname,
                                        sink=GuardedSink(inner, self.errors),
                                        checkpoints=checkpoints, errors=self.errors)
        if self.patterns is not None:
            self.patterns.outlet = self.context.sink  # anomaly records: counted in like any
        if self.spool.recovery.damage or self.spool.recovery.truncated_bytes:
            self.context.sink.submit(Columns.of([self.context.notice("hostlog", line, severity=4)
                                                 for line in self.spool.recovery.lines()]))
        for source in config.sources:
            await self._start_source(source)
        await forwarding.attach(self)  # destinations, and the receiver of a central node
        await wire.attach(self)  # supervised apps, control socket, metrics

    async def close(self) -> None:
        await wire.detach(self)  # first: the apps' last lines reach the writer
        await forwarding.detach(self)  # no more chunks from peers; cursors saved
        for name in list(self.collectors):
            await self._stop_source(name)
        if self.patterns is not None:
            await self.patterns.stop()  # the last state saved (records are the writer's)
        if self.archiver is not None:
            await asyncio.to_thread(self.archiver.stop)  # (a rewrite in progress is abandoned)
            self.archiver = None
        if self.writer is not None:
            await self.writer.stop()
            if self.writer.error is not None and self.failure is None:
                self.failure = self.writer.error  # it failed while stopping: exit non-zero
            self.writer = None
        if self.spool is not None:
            self.spool.close()
            log.info("stopped: spool closed at seq %d", self.spool.durable_seq)
            self.spool = None

    async def reload(self) -> None:
        if self.config_path is None:
            log.info("reload: running the built-in default config; nothing to re-read")
            new = default_config()
        else:
            try:
                new = load_config(self.config_path)
            except ConfigError as exc:
                log.error("reload refused, keeping the running config:\n%s", exc)
                return
        if new.spool != self.config.spool or new.agent != self.config.agent:
            log.warning("reload: [agent] and [spool] changes take effect at the next restart")
        if self.rules is not None and new.rules != self.config.rules:
            self.rules.use(new.rules)  # from the next batch on: each batch meets one set of rules
        await wire.on_reload(self, new)
        await forwarding.on_reload(self, new)
        old = {name: src for name, (src, _) in self.collectors.items()}
        wanted = {src.name or "": src for src in new.sources}  # every source is named once read
        tls_changed = new.tls != self.config.tls

        def uses_tls(src: Any) -> bool:
            return src.type == "syslog" and any(ep.scheme == "tls" for ep in src.endpoints())

        # the new config first: restarted collectors are built from it ([tls])
        self.config = new.model_copy(update={"agent": self.config.agent, "spool": self.config.spool})
        for name, src in old.items():
            if name not in wanted or wanted[name] != src or (tls_changed and uses_tls(src)):
                await self._stop_source(name)
        for name, src in wanted.items():
            if name not in self.collectors:
                await self._start_source(src)
        log.info("reloaded: %d sources", len(self.collectors))

    # -- collectors --------------------------------------------------------------
    async def _start_source(self, source: Any) -> None:
        assert self.context is not None
        try:
            collector = build_collector(source, self.context, self.config)
            await collector.start()
        except (OSError, ValueError, ImportError) as exc:
            # One source that cannot start (port in use, bad path) must not take
            # the others down: report it, loudly, and go on.
            log.error("source %s did not start: %s", source.name, exc)
            if self.writer is not None:
                self.context.sink.submit(Columns.of([self.context.notice(
                    "hostlog", f"source {source.name} did not start: {exc}", severity=3)]))
            return
        self.collectors[source.name] = (source, collector)

    async def _stop_source(self, name: str) -> None:
        _, collector = self.collectors.pop(name)
        try:
            await collector.stop()
        except Exception:
            log.exception("source %s did not stop cleanly", name)


def run_agent(config_path: str | None) -> int:
    """``hostlog agent [-c FILE]``: run in the foreground until SIGTERM."""
    logging.basicConfig(level=os.environ.get("HOSTLOG_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config_path is None:
        config, path = default_config(), None
    else:
        path = Path(config_path)
        config = load_config(path)
    try:
        import uvloop
    except ImportError:  # uvloop is optional: plain asyncio works, only slower
        return asyncio.run(Agent(config, path).run())
    return uvloop.run(Agent(config, path).run())
