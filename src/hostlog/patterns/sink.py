"""Template mining at ingest: a sink stage that gives every record its pattern.

The agent's sink chain is ``GuardedSink -> CountingSink -> RulesSink ->
PatternsSink -> SpoolWriter``: what the rules keep is mined here, a batch at
a time on the event loop, and every row gets two fields:

* ``PATTERN_ID``: 16 hex digits, the id of the row's pattern (per app, fixed
  when the pattern was created: ``hostlog.patterns.drain``);
* ``PATTERN``: the pattern's template when the row was filed.

The fields travel with the record into the spool and in forwarded frames. A
row that already carries ``PATTERN_ID`` (a record a peer mined) keeps it.
A file source's line is mined without its own header (timestamp, level,
component: ``hostlog.patterns.header``); other sources hand over messages
without one.

Rows share ``fields`` dicts (``hostlog.record.Columns``): a row's dict is
never changed; the rows of one dict and one pattern share one new dict.

The miner's state is kept in ``<state_dir>/patterns/`` (``PatternState``):
saved, when it changed, every ``checkpoint_interval`` and at stop, with an
atomic replace; the state carries its own checksum, and the agent seals it
(AES-256-GCM, a key derived from the spool's master key): its templates are
record text. A state that cannot be
loaded is set aside, said in the log, and mining starts afresh: no record is
lost, only the ids of patterns seen before may differ.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hostlog.collectors.base import ErrorCounts, Sink
from hostlog.errors import KeyFileError
from hostlog.patterns.detect import KINDS, Anomaly, Detector, DetectSettings
from hostlog.patterns.drain import Match, Miner, PatternStateError, Settings
from hostlog.patterns.header import split_header
from hostlog.record import SEVERITY_NAMES, Batch, Columns, OnDurable, Record
from hostlog.spool.keys import Keyring
from hostlog.spool.state import atomic_write

__all__ = ["PATTERN_FIELD", "PATTERN_ID_FIELD", "PatternState", "PatternsSink", "patterns_status"]

log = logging.getLogger("hostlog.patterns")

PATTERN_ID_FIELD = "PATTERN_ID"
PATTERN_FIELD = "PATTERN"
STATE_NAME = "miner.state"


class MiningError(Exception):
    """What is reported of the miner's failure (no record content)."""


_SEALED_MAGIC = b"HLPS"
_SEALED_VERSION = 1
_HKDF_INFO = b"hostlog patterns state v1"
_SEALED_HEAD = struct.Struct(">4sBI16s12s")  # magic, version, key id, salt, nonce


def _state_key(master: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_HKDF_INFO).derive(master)


def seal_state(data: bytes, keyring: Keyring) -> bytes:
    """The miner's state encrypted (AES-256-GCM) with a key derived from the
    spool's current master key: the templates are record text, and nothing the
    agent keeps on disk holds record text in the clear."""
    salt, nonce = os.urandom(16), os.urandom(12)
    head = _SEALED_HEAD.pack(_SEALED_MAGIC, _SEALED_VERSION, keyring.current_id, salt, nonce)
    return head + AESGCM(_state_key(keyring.current, salt)).encrypt(nonce, data, head)


def open_state(sealed: bytes, keyring: Keyring) -> bytes:
    """``seal_state``'s input again; PatternStateError if it is not one, or damaged."""
    if len(sealed) < _SEALED_HEAD.size:
        raise PatternStateError("the state file is shorter than its header (torn?)")
    head = sealed[:_SEALED_HEAD.size]
    magic, version, key_id, salt, nonce = _SEALED_HEAD.unpack(head)
    if magic != _SEALED_MAGIC or version != _SEALED_VERSION:
        raise PatternStateError("the state file does not start as one (magic or version)")
    try:
        key = keyring.get(key_id)
    except KeyFileError as exc:
        raise PatternStateError(str(exc)) from None
    try:
        return AESGCM(_state_key(key, salt)).decrypt(nonce, sealed[_SEALED_HEAD.size:], head)
    except InvalidTag:
        raise PatternStateError("the state does not authenticate (torn, damaged or changed)") from None


class PatternState:
    """The miner's state file in ``directory``: load (with what went wrong) and
    save; sealed with ``keyring`` when one is given (the agent gives the spool's)."""

    def __init__(self, directory: Path, keyring: Keyring | None = None) -> None:
        self.directory = directory
        self.path = directory / STATE_NAME
        self.keyring = keyring
        self.problem: str | None = None  # why the last load started afresh

    def load(self, settings: Settings) -> Miner:
        """The saved miner, or a new one with ``settings`` (none saved, or a
        state that cannot be used: moved aside as ``miner.state.damaged``,
        and :attr:`problem` says why)."""
        self.problem = None
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Miner(settings)
        except OSError as exc:
            self.problem = f"cannot be read ({exc.strerror or exc})"
        else:
            try:
                miner = Miner.from_bytes(data if self.keyring is None else open_state(data, self.keyring))
            except PatternStateError as exc:
                self.problem = f"is damaged ({exc})"
            else:
                if miner.settings != settings:
                    return _with_settings(miner, settings)
                return miner
        damaged = self.path.with_name(STATE_NAME + ".damaged")
        try:
            os.replace(self.path, damaged)
        except OSError as exc:
            self.problem += f"; it could not be moved aside ({exc.strerror or exc})"
        else:
            self.problem += f"; kept as {damaged}"
        log.error("patterns: the miner's state %s %s; mining starts afresh (records are not "
                  "affected; patterns seen before may get new ids)", self.path, self.problem)
        return Miner(settings)

    def save(self, data: bytes) -> None:
        """Store ``Miner.to_bytes()`` (sealed, with a keyring) with an atomic replace."""
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, data if self.keyring is None else seal_state(data, self.keyring), mode=0o600)


def _with_settings(miner: Miner, settings: Settings) -> Miner:
    """A loaded miner that matches with the configured ``similarity``. The
    bounds it was saved with stay (docs/patterns.md, "Left to do")."""
    if miner.settings.similarity == settings.similarity:
        return miner
    from dataclasses import replace
    miner.settings = replace(miner.settings, similarity=settings.similarity)
    return miner


def _decode(msg: bytes) -> str:
    return msg.decode("utf-8", "replace")  # (for mining only: MESSAGE keeps its bytes)


def _message(msg: str | bytes, source: str) -> str:
    text = msg if isinstance(msg, str) else _decode(msg)
    if source == "file":
        header = split_header(text)
        if header.message_start:
            return text[header.message_start:]
    return text


class PatternsSink:
    """Mines every batch on its way to ``inner`` (see the module's docstring)."""

    def __init__(self, inner: Sink, miner: Miner, errors: ErrorCounts | None = None, *,
                 store: PatternState | None = None, interval: float = 5.0,
                 detector: Detector | None = None, hostname: str = "",
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.inner = inner
        self.miner = miner
        self.errors = errors if errors is not None else ErrorCounts()
        self.store = store
        self.interval = interval
        self.clock = clock
        self.records = 0  # mined
        self.created = 0  # patterns created
        self.saves = 0  # states saved
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self.detector = detector  # anomalies: records of source "detect" (detect.py)
        self.hostname = hostname
        self.latencies: deque[int] = deque(maxlen=10_000)  # ns, record received -> anomaly durable
        self._ticker: asyncio.Task[None] | None = None
        # where anomaly records go: the agent's whole sink chain (counted as records
        # in, through the rules, then mined here), else straight to ``inner``
        self.outlet: Sink | None = None

    # -- mining ---------------------------------------------------------------------
    def apply(self, batch: Batch) -> Batch:
        """``batch`` with ``PATTERN_ID`` and ``PATTERN`` in every row's fields."""
        n = len(batch)
        if not n:
            return batch
        try:
            return self._mine(batch, n)
        except Exception as exc:  # a bug in the miner: the records are stored as they came
            self.errors.report("patterns", "miner", MiningError(
                f"the miner failed ({type(exc).__name__}); {n} records stored without a pattern"))
            return batch

    def _mine(self, batch: Batch, n: int) -> Batch:
        # The hot path, a batch at a time: whole-column passes where they can be.
        apps, msgs, fields = batch.app, batch.msg, batch.fields
        pool = batch.fields_pool
        if pool is not None and not any(PATTERN_ID_FIELD in d for d in pool):
            todo: list[int] | None = None  # every row (the pool bounds what rows hold)
        else:
            todo = [i for i in range(n) if PATTERN_ID_FIELD not in fields[i]]
            if not todo:
                return batch  # mined where it came from
        if "file" in set(batch.source):
            sources = batch.source
            texts = [_message(msgs[i], sources[i]) for i in range(n)]
        else:
            texts = [m if isinstance(m, str) else _decode(m) for m in msgs]
        add_many = self.miner.add_many
        matches: list[Match | None]
        names = set(apps) if todo is None else {apps[i] for i in todo}
        if todo is None and len(names) == 1:
            matches = list(add_many(apps[0], texts))
        else:
            matches = [None] * n
            for app in names:
                rows = [i for i in (range(n) if todo is None else todo) if apps[i] == app]
                for i, match in zip(rows, add_many(app, [texts[i] for i in rows])):
                    matches[i] = match
        made: dict[tuple[int, int], dict[str, Any]] = {}
        if todo is None:  # every row mined: whole-column passes (map and zip run in C)
            every = cast("list[Match]", matches)
            keys = list(zip(map(id, fields), map(id, every)))  # (all alive until the batch is done)
            firsts: dict[tuple[int, int], tuple[dict[str, Any], Match]] = dict(zip(keys, zip(fields, every)))
            made = {key: {**old, PATTERN_ID_FIELD: m.pattern_id, PATTERN_FIELD: m.template}
                    for key, (old, m) in firsts.items()}
            batch.fields = list(map(made.__getitem__, keys))
            if pool is not None:
                batch.fields_pool = pool + list(made.values())
            self.records += n
            self.created += sum(m.new for _, m in firsts.values())
            self._dirty = True
            return batch
        created = 0
        made.clear()
        new_fields: list[dict[str, Any]] = list(fields)
        for i, found in enumerate(matches):
            if found is None:
                continue
            match = found
            old = fields[i]
            key = (id(old), id(match))
            d = made.get(key)
            if d is None:
                created += match.new
                d = made[key] = {**old, PATTERN_ID_FIELD: match.pattern_id, PATTERN_FIELD: match.template}
            new_fields[i] = d
        batch.fields = new_fields
        if pool is not None:
            batch.fields_pool = pool + list(made.values())
        self.records += len(todo)
        self.created += created
        self._dirty = True
        return batch

    # -- the state ----------------------------------------------------------------------
    def start(self) -> None:
        """Save the state every ``interval`` while it changes, and let the
        detector's windows close on time (on the running loop)."""
        loop = asyncio.get_running_loop()
        if self.store is not None and self._task is None:
            self._task = loop.create_task(self._saver(), name="patterns-state")
        if self.detector is not None and self._ticker is None:
            self._ticker = loop.create_task(self._tick(), name="patterns-detect")

    async def _tick(self) -> None:
        assert self.detector is not None
        while True:
            await asyncio.sleep(1.0)
            try:
                self._emit(self.detector.tick(self.clock()))
            except Exception as exc:  # a bug in the detector: counted, mining goes on
                self.errors.report("patterns", "detect", MiningError(
                    f"the detector failed ({type(exc).__name__})"))

    async def _saver(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.save()

    async def save(self) -> None:
        """Save the state if it changed since the last save."""
        if self.store is None or not self._dirty:
            return
        self._dirty = False
        data = self.miner.to_bytes()  # (on the loop: the miner is the loop's)
        try:
            await asyncio.to_thread(self.store.save, data)
        except OSError as exc:
            self._dirty = True  # tried again at the next interval
            self.errors.report("patterns", "state", exc)
        else:
            self.saves += 1

    async def stop(self) -> None:
        """Stop the periodic saves and save the last state."""
        for task in (self._task, self._ticker):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._task = self._ticker = None
        await self.save()

    # -- anomalies ------------------------------------------------------------------------
    def _detect(self, batch: Batch) -> None:
        detector = self.detector
        if detector is None:
            return
        try:
            fields, sources = batch.fields, batch.source
            rows = [(app, f[PATTERN_ID_FIELD], f[PATTERN_FIELD], sev)
                    for app, f, sev, src in zip(batch.app, fields, batch.severity, sources)
                    if src != "detect" and PATTERN_ID_FIELD in f]
            found = detector.observe(rows, self.clock())
        except Exception as exc:  # a bug in the detector: counted, the batch goes on
            self.errors.report("patterns", "detect", MiningError(
                f"the detector failed ({type(exc).__name__})"))
            return
        self._emit(found)

    def _emit(self, found: list[Anomaly]) -> None:
        """Each anomaly as a record (source "detect") into the spool; its
        latency noted once it is durable."""
        if not found:
            return
        records = [anomaly_record(a, self.hostname, self.clock()) for a in found]
        for a in found:
            log.warning("anomaly: %s %s %s: %s", a.kind, a.app, a.pattern_id or "-", a.explanation)
        received = [a.received_ns for a in found]

        def durable(_seq: int) -> None:
            now = self.clock()
            self.latencies.extend(now - r for r in received)

        if self.outlet is not None:
            self.outlet.submit(Columns.of(records), durable)
        else:
            self.inner.submit(self.apply(Columns.of(records)), durable)

    def latency_ms(self, quantile: float) -> float | None:
        """A quantile of the latencies noted (record received -> anomaly durable), ms."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * quantile))] / 1e6

    # -- the Sink interface -------------------------------------------------------------
    def has_room(self) -> bool:
        return self.inner.has_room()

    async def wait_room(self) -> None:
        await self.inner.wait_room()

    async def write(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        while not self.inner.has_room():  # (wait first: a batch is mined once)
            await self.inner.wait_room()
        batch = self.apply(batch)
        await self.inner.write(batch, on_durable)
        self._detect(batch)

    def submit(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        batch = self.apply(batch)
        self.inner.submit(batch, on_durable)
        self._detect(batch)

    def write_nowait(self, batch: Batch, on_durable: OnDurable | None = None) -> bool:
        if not self.inner.has_room():  # refused as it came: mined when it is offered again
            return self.inner.write_nowait(batch, on_durable)
        batch = self.apply(batch)
        taken = self.inner.write_nowait(batch, on_durable)
        if taken:
            self._detect(batch)
        return taken

    def __getattr__(self, name: str) -> Any:  # flush(), stats, ... of the writer
        return getattr(self.inner, name)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"records": self.records, "patterns_created": self.created,
                               "apps": len(self.miner.apps()), "states_saved": self.saves}
        if self.detector is not None:
            out["anomalies"] = dict(self.detector.counts)
            out["anomaly_latency_p50_ms"] = self.latency_ms(0.5)
            out["anomaly_latency_p99_ms"] = self.latency_ms(0.99)
        return out

    def anomalies(self) -> dict[str, int]:
        """Anomalies said, by kind (metrics)."""
        return dict(self.detector.counts) if self.detector is not None else dict.fromkeys(KINDS, 0)


def patterns_status(agent: Any) -> dict[str, Any] | None:
    """``hostlog ctl status``'s ``patterns`` (None when mining is off)."""
    sink = getattr(agent, "patterns", None)
    return sink.status() if isinstance(sink, PatternsSink) else None


def open_patterns(config: Any, inner: Sink, errors: ErrorCounts,
                  keyring: Keyring | None = None) -> PatternsSink | None:
    """The agent's mining stage for ``config`` (a ``Config``) in front of
    ``inner``, its state loaded and its saves started; None with
    ``[patterns] enabled = false``."""
    section = config.patterns
    if not section.enabled:
        return None
    settings = Settings(similarity=section.similarity, max_clusters=section.max_patterns,
                        max_apps=section.max_apps)
    store = PatternState(config.agent.state_dir / "patterns", keyring)
    detector = None
    if section.anomalies:
        detector = Detector(DetectSettings(
            window=section.window, warmup=section.warmup, factor=section.factor,
            min_count=section.min_count, min_errors=section.min_errors, cooldown=section.cooldown,
            max_patterns=section.max_patterns, max_apps=section.max_apps))
    sink = PatternsSink(inner, store.load(settings), errors, store=store,
                        interval=section.checkpoint_interval, detector=detector,
                        hostname=config.agent.hostname)
    sink.start()
    return sink


#: Fields of an anomaly record (source "detect").
DETECT_FIELDS = ("DETECT_KIND", "DETECT_PATTERN_ID", "DETECT_PATTERN", "DETECT_WINDOW_START",
                 "DETECT_WINDOW_END", "DETECT_COUNT", "DETECT_BASELINE")


def anomaly_record(a: Anomaly, hostname: str, now_ns: int) -> Record:
    """The record an anomaly is stored as: source "detect", the app concerned,
    severity warning (err for an error burst), the explanation as its message."""
    what = a.template or f"err-or-worse records ({SEVERITY_NAMES[3]}..{SEVERITY_NAMES[0]})"
    fields: dict[str, Any] = {
        "DETECT_KIND": a.kind, "DETECT_WINDOW_START": str(a.window_start_ns // 1000),
        "DETECT_WINDOW_END": str(a.window_end_ns // 1000), "DETECT_COUNT": str(a.count),
        "DETECT_BASELINE": f"{a.baseline:g}"}
    if a.pattern_id:
        fields["DETECT_PATTERN_ID"] = a.pattern_id
        fields["DETECT_PATTERN"] = a.template
    return Record(ts=now_ns, msg=f"{a.kind.replace('_', ' ')} in {a.app or '(no app)'}: {what}: {a.explanation}",
                  host=hostname, source="detect", app=a.app, severity=3 if a.kind == "error_burst" else 4,
                  fields=fields)
