"""The ``[[source]]`` models: syslog, journald, file, forward (Fluent Forward) and nats (JetStream), and their
rate limit."""

from __future__ import annotations

import codecs
import math
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from hostlog.config.endpoints import INET_SCHEMES, UNIX_SCHEMES, Endpoint, parse_endpoint
from hostlog.config.fields import (
    AbsPath,
    Duration,
    LineSize,
    Name,
    PositiveDuration,
    Size,
    _at_least_size,
    _not_a_string,
    _Section,
    _url,
)


class RateLimit(_Section):
    """A token bucket: ``rate`` messages per second on average, bursts up to ``burst``."""

    rate: Annotated[float, Field(gt=0)]
    """Messages per second allowed on average."""
    burst: Annotated[int, Field(ge=1)] | None = None
    """Bucket size; None means one second's worth (ceil(rate))."""

    @model_validator(mode="after")
    def _default_burst(self) -> RateLimit:
        if self.burst is None:
            self.burst = max(1, math.ceil(self.rate))
        return self


class SyslogSource(_Section):
    """``[[source]] type = "syslog"``: a syslog receiver on one or more sockets."""

    type: Literal["syslog"] = "syslog"
    name: Name | None = None
    """Stable name (checkpoints, metrics); default "syslog-N", N counting syslog sources from 0."""
    listen: Annotated[
        list[Annotated[str, _url(INET_SCHEMES + UNIX_SCHEMES)]],
        _not_a_string("listen", 'a list of URLs, e.g. ["udp://127.0.0.1:5514"], not a string'),
        Field(min_length=1),
    ]
    """Sockets: udp://, tcp://, tls:// HOST:PORT; unix:///path (datagram), unix-stream:///path."""
    max_message: Annotated[Size, _at_least_size(480)] = 64 * 1024
    """Longer messages are cut and marked (RFC 5424 requires receivers to take 480 octets)."""
    rate_limit: RateLimit | None = None
    """Limit for the whole source; excess is dropped, counted and summarised."""
    per_host_rate_limit: RateLimit | None = None
    """Limit per sending host (as seen on the socket)."""
    app: str | None = None
    """App name for messages that carry none."""

    def endpoints(self) -> list[Endpoint]:
        """The ``listen`` URLs, parsed."""
        return [parse_endpoint(url) for url in self.listen]


_MATCH_RE = re.compile(r"[A-Z0-9_]+=.*", re.DOTALL)


def _check_match(value: str) -> str:
    if not _MATCH_RE.fullmatch(value):
        raise ValueError(
            f"invalid match {value!r}: expected FIELD=value with an upper-case journal field name, "
            'e.g. "_SYSTEMD_UNIT=nginx.service"'
        )
    return value


class JournaldSource(_Section):
    """``[[source]] type = "journald"``: the systemd journal."""

    type: Literal["journald"] = "journald"
    name: Name | None = None
    """Stable name (the cursor checkpoint is kept under it); default "journald-N"."""
    directory: AbsPath | None = None
    """Read the journal files in this directory instead of the system journal."""
    matches: Annotated[
        list[Annotated[str, AfterValidator(_check_match)]],
        _not_a_string("matches", 'a list of "FIELD=value" strings, e.g. ["_SYSTEMD_UNIT=nginx.service"]'),
    ] = Field(default_factory=list)
    """Journal matches: different fields must all match, several values of one field are alternatives."""
    start: Literal["now", "beginning"] = "now"
    """Where the first start reads from when there is no cursor checkpoint yet."""


def _check_glob(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path or glob, got {value!r}")
    return value


class FileSource(_Section):
    """``[[source]] type = "file"``: tail files matched by globs."""

    type: Literal["file"] = "file"
    name: Name | None = None
    """Stable name (file offsets are checkpointed under it); default "file-N"."""
    paths: Annotated[
        list[Annotated[str, AfterValidator(_check_glob)]],
        _not_a_string("paths", 'a list of absolute paths or globs, e.g. ["/var/log/nginx/*.log"], not a string'),
        Field(min_length=1),
    ]
    """Absolute paths or globs (``*``, ``?``, ``[...]``, ``**``), re-evaluated as directories change."""
    app: str | None = None
    """App name put on the records; default: the file's name."""
    start: Literal["end", "beginning"] = "end"
    """Where to start in a file seen for the first time."""
    max_line: LineSize = 64 * 1024
    """Longer lines are split and marked."""
    multiline_start: str | None = None
    """A regex; a line that does not match it is joined to the previous record."""
    encoding: str = "utf-8"
    """Encoding of the files; lines that do not decode are kept as bytes."""
    poll_interval: PositiveDuration = 1.0
    """Safety-net poll besides inotify."""
    flush_timeout: PositiveDuration = 5.0
    """A partial last line (no newline yet) or an open multiline record is emitted after this long without new data."""
    rotate_wait: Duration = 5.0
    """A rotated or deleted file is read until it has been quiet this long, then closed."""
    parse: str = "auto"
    """How a line is read: "auto" (its leading timestamp and level, or a JSON object),
    "none", "json", "syslog", or a regular expression with named groups."""

    @field_validator("parse")
    @classmethod
    def _parse(cls, value: str) -> str:
        from hostlog.collectors.files.parse import check_parse
        return check_parse(value)

    @field_validator("multiline_start")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"invalid regular expression {value!r}: {e}") from None
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value


class FluentSource(_Section):
    """``[[source]] type = "forward"``: a Fluent Forward input (Fluentd, Fluent Bit, the
    fluent-logger clients send to it)."""

    type: Literal["forward"] = "forward"
    name: Name | None = None
    """Stable name (metrics); default "forward-N"."""
    listen: Annotated[
        list[Annotated[str, _url(("tcp", "tls"))]],
        _not_a_string("listen", 'a list of URLs, e.g. ["tcp://127.0.0.1:24224"], not a string'),
        Field(min_length=1),
    ]
    """Sockets: tcp:// or tls:// HOST:PORT (tls needs [tls] cert and key)."""
    shared_key: Annotated[str, Field(min_length=1)] | None = None
    """If set, clients must pass the shared-key handshake (HELO/PING/PONG)."""
    users: dict[str, str] = Field(default_factory=dict)
    """With shared_key: user name -> password; clients must authenticate as one of them."""
    max_message: Annotated[Size, _at_least_size(1024)] = 64 * 1024 * 1024
    """The largest msgpack message taken from a client; a larger one closes its connection."""

    def endpoints(self) -> list[Endpoint]:
        """The ``listen`` URLs, parsed."""
        return [parse_endpoint(url, ("tcp", "tls")) for url in self.listen]

    @model_validator(mode="after")
    def _users(self) -> FluentSource:
        if self.users and self.shared_key is None:
            raise ValueError("users needs shared_key (the handshake carries both)")
        return self


_NATS_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,255}")
_NATS_FILTER_RE = re.compile(r"([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*))*(\.>)?|>")


class NatsSource(_Section):
    """``[[source]] type = "nats"``: a NATS JetStream stream that ``[[forward]] type = "nats"``
    agents publish to, consumed with a durable pull consumer (a central node)."""

    type: Literal["nats"] = "nats"
    name: Name | None = None
    """Stable name (its state file state/nats-NAME.json, metrics); default "nats-N"."""
    servers: Annotated[
        list[Annotated[str, _url(("nats", "tls"))]],
        _not_a_string("servers", 'a list of URLs, e.g. ["nats://nats-1:4222"], not a string'),
        Field(min_length=1),
    ]
    """NATS servers of one cluster: nats://HOST:PORT or tls://HOST:PORT (tls uses [tls])."""
    stream: str = "HOSTLOG"
    """The stream to consume (created when absent, with subjects ``subject``)."""
    durable: str = "hostlog"
    """The durable consumer's name: several central nodes with the same name share the work."""
    subject: str = "hostlog.>"
    """The consumer's filter subject (the forwarders' ``subject`` and ``.>``)."""

    def endpoints(self) -> list[Endpoint]:
        """The ``servers`` URLs, parsed."""
        return [parse_endpoint(url, ("nats", "tls")) for url in self.servers]

    @model_validator(mode="after")
    def _names(self) -> NatsSource:
        if not _NATS_NAME_RE.fullmatch(self.stream):
            raise ValueError(f"stream: a stream name takes letters, digits, - and _, not {self.stream!r}")
        if not _NATS_NAME_RE.fullmatch(self.durable):
            raise ValueError(f"durable: a consumer name takes letters, digits, - and _, not {self.durable!r}")
        if not _NATS_FILTER_RE.fullmatch(self.subject):
            raise ValueError(f"subject: not a NATS subject filter: {self.subject!r}")
        return self


Source = Annotated[SyslogSource | JournaldSource | FileSource | FluentSource | NatsSource,
                   Field(discriminator="type")]
