"""The section models and the whole file's model, :class:`Config`.

The ``[[source]]`` models live in :mod:`hostlog.config.sources` and ``[[app]]``
in :mod:`hostlog.config.apps`; the rest, and the checks across sections, are here.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from hostlog.config.apps import App
from hostlog.config.endpoints import _UNIX_PATH_MAX, Endpoint, parse_endpoint, parse_host_port
from hostlog.config.errors import _problems
from hostlog.config.fields import (
    AbsPath,
    Duration,
    Name,
    PositiveDuration,
    Size,
    _at_least_size,
    _not_a_string,
    _Section,
    _url,
)
from hostlog.config.rules import Rule
from hostlog.config.sources import FluentSource, RateLimit, Source, SyslogSource
from hostlog.config.units import format_size
from hostlog.paths import default_state_dir

# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


class Agent(_Section):
    """``[agent]``: identity of this agent and where it keeps its state."""

    hostname: str = Field(default_factory=socket.gethostname)
    """Host name put on every record this agent originates."""
    state_dir: Path = Field(default_factory=default_state_dir)
    """Spool, checkpoints, cursors and agent id live here. A relative path is
    resolved against the current directory when the config is read."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Labels of this agent (``instance``, ``region``, ...), shown with every
    record of the live tail (``/api/v1/tail``); not stored in records."""

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not value or any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("must be a non-empty host name without spaces")
        return value

    @field_validator("state_dir", mode="before")
    @classmethod
    def _state_dir_not_empty(cls, value: Any) -> Any:
        # Path("") is ".", which would silently put the spool in the cwd.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: Path) -> Path:
        # abspath, not resolve(): keep symlinks as the operator wrote them.
        return Path(os.path.abspath(value))


class SpoolArchive(_Section):
    """``[spool.archive]``: the archive tier (docs/operations.md). Absent: no archive."""

    after: Duration = 7 * 86400.0
    """A sealed segment whose newest record is older than this is rewritten into the archive."""
    dir: AbsPath | None = None
    """Where archived segments go; None means <state_dir>/spool/archive."""
    keep: Duration = 365 * 86400.0
    """An archived segment whose newest record is older than this is deleted (once every
    forward destination has acknowledged it); 0 keeps them for ever."""
    compression: Annotated[int, Field(ge=1, le=22)] = 19
    """zstd level of archived frames (1 fastest .. 22 smallest)."""

    @model_validator(mode="after")
    def _keep(self) -> SpoolArchive:
        if self.keep and self.keep < self.after:
            raise _problems((("keep",), "must be 0 or at least archive.after"))
        return self


class Spool(_Section):
    """``[spool]``: the on-disk, encrypted store of accepted records."""

    max_bytes: Size = 10 * 1024**3
    """Retention: total size of all segments; the oldest sealed segments go first."""
    max_age: Duration = 30 * 86400.0
    """Retention: segments whose newest record is older than this go; 0 disables."""
    segment_bytes: Annotated[Size, _at_least_size(64 * 1024)] = 64 * 1024**2
    """The active segment is sealed and a new one started at this size."""
    fsync: Literal["batch", "always", "never"] = "batch"
    """batch: group commit every fsync_interval; always: sync every write; never: leave it to the OS."""
    fsync_interval: PositiveDuration = 0.05
    """Longest time an accepted record waits for its sync with fsync = "batch"."""
    on_full: Literal["block", "drop_oldest"] = "block"
    """At max_bytes with unacknowledged data: block writers, or drop the oldest segment (counted)."""
    max_pending: Annotated[int, Field(ge=100)] = 200_000
    """Records read and not yet written that the spool writer holds (memory); past this it
    pushes back on the sources (TCP, pipes and files slow down; UDP drops, counted)."""
    key_file: AbsPath | None = None
    """Master key file (created 0600 on first start); None means <state_dir>/spool.key."""
    compact: bool = True
    """Rewrite a segment sealed with small frames (a quiet host) with full frames, in the background."""
    seal_after: Duration = 0.0
    """Seal the active segment once it is this old (then compaction fills its frames); 0: a
    quarter of max_age, at most a day."""
    chunk: Literal["v1", "v2"] = "v1"
    """Layout of the chunks the writer encodes (docs/format.md); readers read both."""
    archive: SpoolArchive | None = None
    """``[spool.archive]``: the archive tier; None means no archive."""

    @model_validator(mode="after")
    def _sizes(self) -> Spool:
        if self.max_bytes < self.segment_bytes:
            raise _problems(
                (
                    ("max_bytes",),
                    f"must be at least segment_bytes ({format_size(self.segment_bytes)}), "
                    f"got {format_size(self.max_bytes)}",
                )
            )
        return self


_TARGET_SCHEMES: dict[str, tuple[str, ...]] = {
    "hostlog": ("tcp", "tls"), "syslog": ("tcp", "tls"), "fluent": ("tcp", "tls"), "otlp": ("http", "https"),
    "nats": ("nats", "tls")}
#: A NATS stream name, and a subject prefix (tokens without wildcards or spaces).
_NATS_STREAM_RE = re.compile(r"[A-Za-z0-9_-]{1,255}")
_NATS_SUBJECT_RE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


class Forward(_Section):
    """``[[forward]]``: a destination this agent ships its spool to."""

    name: Name
    """Unique name; the destination's acknowledged cursor is kept under it."""
    type: Literal["hostlog", "syslog", "fluent", "otlp", "nats"] = "hostlog"
    """What the targets speak: hostlog (the peer protocol, to a [receiver]), syslog
    (RFC 5424 with octet counting, to rsyslog or syslog-ng), fluent (Fluent Forward,
    to Fluentd or Fluent Bit), otlp (OTLP/HTTP logs), nats (NATS JetStream)."""
    targets: Annotated[
        list[Annotated[str, _url(("tcp", "tls", "http", "https", "nats"))]],
        _not_a_string("targets", 'a list of URLs, e.g. ["tls://central-1:7514"], not a string'),
        Field(min_length=1),
    ]
    """Peers: tcp://HOST:PORT or tls://HOST:PORT; for otlp, http(s)://HOST[:PORT][/PATH];
    for nats, nats://HOST:PORT or tls://HOST:PORT."""
    mode: Literal["failover", "replicate"] = "failover"
    """failover: one target at a time, in order; replicate: all targets at once."""
    min_acks: Annotated[int, Field(ge=1)] = 1
    """replicate: a chunk is acknowledged once this many targets have it durable."""
    window: Annotated[int, Field(ge=1)] = 64
    """Chunks in flight without an ack, per target."""
    ack_timeout: PositiveDuration = 60.0
    """Chunks in flight and no ack (or a peer that takes no data) for this long: the
    connection is given up and made again (a half-open link, acks lost on the way)."""
    token: str | None = None
    """Shared token presented to the receiver (instead of, or besides, a client certificate)."""
    shared_key: Annotated[str, Field(min_length=1)] | None = None
    """fluent: the shared key of the Fluent Forward handshake (HELO/PING/PONG)."""
    username: str | None = None
    """fluent: user for the handshake, with ``password``."""
    password: str | None = None
    """fluent: the user's password."""
    compress: bool = False
    """fluent: CompressedPackedForward (gzip) instead of PackedForward."""
    encoding: Literal["protobuf", "json"] = "protobuf"
    """otlp: the request body's encoding."""
    gzip: bool = True
    """otlp: gzip the request body."""
    headers: dict[str, str] = Field(default_factory=dict)
    """otlp: extra HTTP headers (an API key, a tenant)."""
    stream: str = "HOSTLOG"
    """nats: the JetStream stream (created when absent, with subjects ``<subject>.>``)."""
    subject: str = "hostlog"
    """nats: the subject prefix; the records of agent O go to ``<subject>.O``."""

    def endpoints(self) -> list[Endpoint]:
        """The ``targets`` URLs, parsed."""
        return [parse_endpoint(url, _TARGET_SCHEMES[self.type]) for url in self.targets]

    @model_validator(mode="after")
    def _schemes(self) -> Forward:
        schemes = _TARGET_SCHEMES[self.type]
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for i, url in enumerate(self.targets):
            try:
                parse_endpoint(url, schemes)
            except ValueError as exc:
                problems.append((("targets", i), f"type {self.type!r} takes {' or '.join(s + '://' for s in schemes)} "
                                                 f"targets: {exc}"))
        for key in ("shared_key", "username", "password"):
            if getattr(self, key) is not None and self.type != "fluent":
                problems.append(((key,), f'only for type = "fluent" (this one is {self.type!r})'))
        for key, default in (("stream", "HOSTLOG"), ("subject", "hostlog")):
            if getattr(self, key) != default and self.type != "nats":
                problems.append(((key,), f'only for type = "nats" (this one is {self.type!r})'))
        if not _NATS_STREAM_RE.fullmatch(self.stream):
            problems.append((("stream",), f"a stream name takes letters, digits, - and _, not {self.stream!r}"))
        if not _NATS_SUBJECT_RE.fullmatch(self.subject):
            problems.append((("subject",), "a subject prefix is tokens of letters, digits, - and _ "
                                           f"joined by dots (no wildcards), not {self.subject!r}"))
        if (self.username is None) != (self.password is None):
            problems.append((("password" if self.password is None else "username",),
                             "username and password are given together"))
        if problems:
            raise _problems(*problems)
        return self

    @model_validator(mode="after")
    def _acks(self) -> Forward:
        if self.min_acks > len(self.targets):
            raise _problems(
                (("min_acks",), f"must not exceed the number of targets ({len(self.targets)}), got {self.min_acks}")
            )
        if self.mode == "failover" and self.min_acks > 1:
            raise _problems((("min_acks",), 'min_acks above 1 needs mode = "replicate"'))
        return self


class Receiver(_Section):
    """``[receiver]``: accept records from other agents (makes this agent a central node)."""

    listen: Annotated[str, _url(("tcp", "tls"))]
    """tcp://HOST:PORT or tls://HOST:PORT."""
    token: Annotated[str, Field(min_length=1)] | None = None
    """If set, peers must present this token (besides their certificate, not instead)."""
    require_client_cert: bool = True
    """tls:// only: peers must show a certificate of ``[tls] ca`` with the clientAuth
    usage, checked before anything they send is read. Turn off only in so many words."""

    def endpoint(self) -> Endpoint:
        """The ``listen`` URL, parsed."""
        return parse_endpoint(self.listen, ("tcp", "tls"))


class Tls(_Section):
    """``[tls]``: certificates for every tls:// listener and target."""

    ca: AbsPath | None = None
    """CA bundle to verify peers; default: the system's trust store."""
    cert: AbsPath | None = None
    """This agent's certificate chain (PEM)."""
    key: AbsPath | None = None
    """Its private key (PEM)."""
    require_client_cert: bool = False
    """tls:// listeners demand a client certificate signed by ``ca``."""

    @model_validator(mode="after")
    def _pairs(self) -> Tls:
        if (self.cert is None) != (self.key is None):
            missing = "key" if self.key is None else "cert"
            raise _problems(((missing,), "cert and key must be given together"))
        if self.require_client_cert and self.ca is None:
            raise _problems((("ca",), "require_client_cert needs ca (the CA that signs client certificates)"))
        return self


def _check_unix_path(value: Path | None) -> Path | None:
    if value is not None and len(os.fsencode(value)) > _UNIX_PATH_MAX:
        raise ValueError(f"unix socket paths are limited to {_UNIX_PATH_MAX} bytes")
    return value


def _check_metrics(value: str | None) -> str | None:
    if value is not None:
        parse_host_port(value, what="metrics address")
    return value


class Control(_Section):
    """``[control]``: the local control socket (``hostlog ctl``) and metrics."""

    socket: Annotated[AbsPath | None, AfterValidator(_check_unix_path)] = None
    """Unix socket for ``hostlog ctl``. Default (filled in when the config is read):
    /run/hostlog/control.sock for root, else $XDG_RUNTIME_DIR/hostlog/control.sock,
    else <state_dir>/control.sock."""
    metrics: Annotated[str | None, AfterValidator(_check_metrics)] = None
    """HOST:PORT of the Prometheus endpoint; None: no metrics endpoint."""


HTTP_SCHEMES = ("http", "https", "unix")


def parse_http_listen(value: str) -> Endpoint:
    """One ``[http] listen`` entry: ``HOST:PORT`` (plain HTTP), ``http://HOST:PORT``,
    ``https://HOST:PORT`` (TLS with the ``[tls]`` certificate) or ``unix:///PATH``."""
    if "://" not in value:
        host, port = parse_host_port(value, what="HTTP address")
        return Endpoint("http", host, port, None)
    endpoint = parse_endpoint(value, HTTP_SCHEMES)
    if endpoint.scheme in ("http", "https") and endpoint.path not in (None, "/"):
        raise ValueError(f"invalid URL {value!r}: the server is served at /, not at a path")
    return endpoint._replace(path=None) if endpoint.scheme != "unix" else endpoint


def _check_http_listen(values: list[str]) -> list[str]:
    for value in values:
        parse_http_listen(value)
    return values


class Http(_Section):
    """``[http]``: the HTTP server (journal-gatewayd's /entries, /api/v1, live
    tail, the web viewer). Absent: no HTTP server."""

    listen: Annotated[list[str], Field(min_length=1), AfterValidator(_check_http_listen)]
    """``HOST:PORT`` or ``http://HOST:PORT``, ``https://HOST:PORT`` (needs ``[tls]``
    cert and key), ``unix:///PATH`` (0660; peers admitted by their credentials)."""
    ingest_rate_limit: RateLimit | None = None
    """``POST /api/v1/logs``: records per second each key may send (None: no limit)."""
    per_source_rate_limit: RateLimit | None = None
    """The same, for each value of the records' ``source`` across keys."""
    max_followers: Annotated[int, Field(ge=1)] = 256
    """Live tails and ``?follow`` readers served at once; more get 503."""
    follower_buffer: Annotated[int, Field(ge=16)] = 10_000
    """Records queued for one follower; a follower further behind is told what it missed."""

    def endpoints(self) -> list[Endpoint]:
        """The ``listen`` entries, parsed."""
        return [parse_http_listen(value) for value in self.listen]


def _at_least_one_second(value: float) -> float:
    if value < 1.0:
        raise ValueError("must be at least 1s")
    return value


ReportFormat = Literal["html", "json", "md"]


def _default_report_formats() -> list[ReportFormat]:
    return ["html", "json"]


class Report(_Section):
    """``[report]``: the agent writes ``hostlog report`` of each period into a
    directory (docs/report.md). Absent: no reports."""

    dir: AbsPath
    """Directory the reports are written to (created if missing)."""
    every: Annotated[Duration, AfterValidator(_at_least_one_second)] = 86400.0
    """Length of the period each report covers; one is written at each multiple
    of it since the epoch (UTC midnight for "1d"), covering the period before."""
    formats: Annotated[list[ReportFormat], Field(min_length=1)] = Field(default_factory=_default_report_formats)
    """Which renderings to write, each to its own file."""
    keep: Annotated[int, Field(ge=0)] = 30
    """Reports kept per format, the newest; older ones are removed. 0 keeps all."""
    top: Annotated[int, Field(ge=1)] = 10
    """Templates and apps shown in each table."""
    baseline: Duration = 7 * 86400.0
    """How far before the period a template counts as already seen (for "new templates")."""


class Patterns(_Section):
    """``[patterns]``: template mining at ingest (docs/patterns.md). Every record
    gets the fields ``PATTERN_ID`` and ``PATTERN``."""

    enabled: bool = True
    """Mine every record's message; false: records carry no pattern."""
    similarity: Annotated[float, Field(gt=0.0, le=1.0)] = 0.7
    """Least share of a message's tokens that must agree with a template."""
    max_patterns: Annotated[int, Field(ge=1, le=10_000_000)] = 1000
    """Templates kept per app; the least recently used goes."""
    max_apps: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    """Apps with templates; the least recently used app goes whole."""
    checkpoint_interval: PositiveDuration = 5.0
    """How often the miner's state is saved (when it changed); also at stop."""
    anomalies: bool = True
    """Say anomalies (new template, spike, stopped heartbeat, error burst) as records of source "detect"."""
    window: PositiveDuration = 60.0
    """Length of the windows counts are compared over."""
    warmup: Duration = 600.0
    """How long an app is watched before a template never seen is an anomaly."""
    factor: Annotated[float, Field(gt=1.0)] = 10.0
    """How many times its usual count a window makes a spike (or an error burst)."""
    min_count: Annotated[int, Field(ge=1)] = 20
    """Least count in a window for a spike."""
    min_errors: Annotated[int, Field(ge=1)] = 20
    """Least err-or-worse records of an app in a window for an error burst."""
    cooldown: Duration = 600.0
    """Least time between two anomalies of one kind, app and template."""


def _default_control_socket(state_dir: Path) -> Path:
    if os.geteuid() == 0:
        return Path("/run/hostlog/control.sock")
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        return Path(runtime) / "hostlog" / "control.sock"
    return state_dir / "control.sock"


def _array_of_tables(key: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if isinstance(value, dict):
            raise ValueError(f"write [[{key}]] (an array of tables), not [{key}]")
        return value

    return BeforeValidator(check)


class Config(_Section):
    """The whole file. TOML keys ``source``, ``app``, ``forward`` (arrays of tables)
    map to the attributes ``sources``, ``apps``, ``forwards``."""

    agent: Agent = Field(default_factory=Agent)
    """``[agent]``."""
    spool: Spool = Field(default_factory=Spool)
    """``[spool]``."""
    sources: Annotated[list[Source], _array_of_tables("source")] = Field(default_factory=list, alias="source")
    """``[[source]]`` entries, in file order; each has its ``name`` filled in."""
    apps: Annotated[list[App], _array_of_tables("app")] = Field(default_factory=list, alias="app")
    """``[[app]]`` entries."""
    forwards: Annotated[list[Forward], _array_of_tables("forward")] = Field(default_factory=list, alias="forward")
    """``[[forward]]`` entries."""
    rules: Annotated[list[Rule], _array_of_tables("rule")] = Field(default_factory=list, alias="rule")
    """``[[rule]]`` entries, applied in file order to every batch on its way to the spool."""
    receiver: Receiver | None = None
    """``[receiver]``; None: this agent accepts nothing from peers."""
    tls: Tls | None = None
    """``[tls]``; None: no certificates (tls:// targets verify with the system CAs)."""
    control: Control = Field(default_factory=Control)
    """``[control]``; ``control.socket`` is always set after validation."""
    http: Http | None = None
    """``[http]``; None: no HTTP server."""
    report: Report | None = None
    """``[report]``; None: the agent writes no reports."""
    patterns: Patterns = Field(default_factory=Patterns)
    """``[patterns]``: mining at ingest."""

    @property
    def spool_dir(self) -> Path:
        """``<state_dir>/spool``."""
        return self.agent.state_dir / "spool"

    def spool_key_file(self) -> Path:
        """``spool.key_file``, or ``<state_dir>/spool.key`` when unset."""
        return self.spool.key_file if self.spool.key_file is not None else self.agent.state_dir / "spool.key"

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        # Default names count per type, so adding a source of another type does
        # not rename (and orphan the checkpoints of) the existing ones.
        per_type: dict[str, int] = {}
        generated: set[int] = set()
        for i, source in enumerate(self.sources):
            index = per_type.get(source.type, 0)
            per_type[source.type] = index + 1
            if source.name is None:
                source.name = f"{source.type}-{index}"
                generated.add(i)
        problems += _duplicates("source", [s.name or "" for s in self.sources], generated)
        problems += _duplicates("app", [a.name for a in self.apps])
        problems += _duplicates("forward", [f.name for f in self.forwards])
        problems += _duplicates("rule", [r.name for r in self.rules])
        destinations = {f.name for f in self.forwards}
        for i, rule in enumerate(self.rules):
            for j, name in enumerate(rule.to or ()):
                if name not in destinations:
                    known = ", ".join(sorted(destinations)) or "none is configured"
                    problems.append((("rule", i, "to", j), f"no [[forward]] named {name!r} ({known})"))
        # A tls:// listener needs a certificate; a tls:// target can do with the system CAs.
        has_cert = self.tls is not None and self.tls.cert is not None
        for i, source in enumerate(self.sources):
            if isinstance(source, SyslogSource | FluentSource):
                for j, endpoint in enumerate(source.endpoints()):
                    if endpoint.scheme == "tls" and not has_cert:
                        problems.append(
                            (("source", i, "listen", j), "a tls:// listener needs [tls] with cert and key")
                        )
        if self.receiver is not None and self.receiver.endpoint().scheme == "tls":
            if not has_cert:
                problems.append((("receiver", "listen"), "a tls:// listener needs [tls] with cert and key"))
            elif self.receiver.require_client_cert and (self.tls is None or self.tls.ca is None):
                problems.append((("tls", "ca"), "a tls:// receiver demands client certificates of a CA: "
                                                "set [tls] ca (or, in so many words, [receiver] "
                                                "require_client_cert = false)"))
        if self.http is not None:
            for j, endpoint in enumerate(self.http.endpoints()):
                if endpoint.scheme == "https" and not has_cert:
                    problems.append((("http", "listen", j), "an https:// listener needs [tls] with cert and key"))
        if problems:
            raise _problems(*problems)
        if self.control.socket is None:
            self.control.socket = _default_control_socket(self.agent.state_dir)
        return self


def _duplicates(
    key: str, names: list[str], generated: Collection[int] = ()
) -> list[tuple[tuple[str | int, ...], str]]:
    """One problem per repeated name, naming the entry that had it first.

    ``generated`` holds the indexes whose name was given by default, so the
    message can say why an entry without ``name`` collides.
    """
    seen: dict[str, int] = {}
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, name in enumerate(names):
        if name not in seen:
            seen[name] = i
            continue
        first = seen[name]
        how = "also the default name of" if first in generated else "also used by"
        hint = "; set a different name" if first in generated or i in generated else ""
        problems.append(((key, i, "name"), f"duplicate {key} name {name!r} ({how} {key}[{first}]){hint}"))
    return problems
