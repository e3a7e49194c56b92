"""The agent's TOML configuration: schema, defaults and validation.

The schema is declared with pydantic models, one class per TOML section, and
read with :mod:`tomllib`. Every problem in a file is reported with its TOML key
path (``source[1].listen[0]``, ``spool.max_bytes``) and a message that says what
is accepted, so ``hostlog config check FILE`` can explain a mistake without the
user reading code. Unknown keys are errors everywhere: a typo never passes
silently. The full reference is ``docs/config.md``; keep the two in step.

Public entry points: :func:`load_config`, :func:`parse_config`,
:func:`default_config`, :func:`default_config_toml`, :func:`parse_size`,
:func:`parse_duration` and :class:`ConfigError`.
"""

from __future__ import annotations

import codecs
import difflib
import ipaddress
import math
import os
import re
import signal
import socket
import tomllib
import types
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Collection, Iterable, Literal, NamedTuple, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hostlog.errors import HostlogError

__all__ = [
    "App",
    "Agent",
    "Config",
    "ConfigError",
    "Control",
    "Endpoint",
    "FileSource",
    "Forward",
    "JournaldSource",
    "RateLimit",
    "Receiver",
    "Source",
    "Spool",
    "SyslogSource",
    "Tls",
    "default_config",
    "default_config_toml",
    "default_state_dir",
    "format_duration",
    "format_size",
    "journal_readable",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_endpoint",
    "parse_host_port",
    "parse_size",
]

# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class ConfigError(HostlogError):
    """A configuration that cannot be used.

    ``problems`` holds one ``(key_path, message)`` pair per problem; the key path
    is written as in TOML (``source[1].listen[0]``) and is ``""`` for problems of
    the file as a whole (unreadable, not UTF-8, TOML syntax). ``line`` and
    ``column`` are set for TOML syntax errors when the parser reports them.
    """

    def __init__(
        self,
        problems: list[tuple[str, str]],
        *,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.path = path
        self.problems = list(problems)
        self.line = line
        self.column = column
        super().__init__(self.__str__())

    def __str__(self) -> str:
        lines = []
        for key, message in self.problems:
            parts = [p for p in (self.path, key) if p]
            parts.append(message)
            lines.append(": ".join(parts))
        return "\n".join(lines)


def _problems(*problems: tuple[tuple[str | int, ...], str]) -> PydanticCustomError:
    """Build the error that cross-key checks raise from model validators.

    A model validator can only fail as a whole, at the model's location; the key
    the problem is really about travels in the context as a location relative to
    the model, and :func:`_translate` splices it in.
    """
    summary = "; ".join(message for _, message in problems)
    return PydanticCustomError("hostlog_config", "{summary}", {"summary": summary, "problems": list(problems)})


# --------------------------------------------------------------------------
# Sizes and durations
# --------------------------------------------------------------------------

# Binary units are what people mean for buffers and files; the SI units are
# accepted because "10GB" is common and has one standard meaning (10**9).
_SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}
_SIZE_FORMS = (
    "a whole number of bytes, or a number with a unit: B, KiB, MiB, GiB, TiB (1024-based) "
    'or KB, MB, GB, TB (1000-based), e.g. "64MiB"'
)
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", re.ASCII)


def parse_size(value: str | int) -> int:
    """Return a size in bytes.

    Accepts a non-negative int (bytes) or a string: ``"100"`` / ``"100B"`` bytes,
    ``"512KiB"``, ``"64MiB"``, ``"10GiB"``, ``"1TiB"`` (powers of 1024) and
    ``"10KB"``, ``"10MB"``, ``"10GB"``, ``"1TB"`` (powers of 1000). Units are
    case-insensitive, a space may separate number and unit, and a decimal number
    (``"1.5GiB"``) is rounded down to whole bytes. A bare ``K``/``M``/``G`` is
    refused because it is ambiguous between the two.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"invalid size {value!r}: expected {_SIZE_FORMS}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value}: must not be negative")
        return value
    match = _SIZE_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid size {value!r}: expected {_SIZE_FORMS}")
    number, unit = match.groups()
    unit = unit.lower()
    if unit in ("k", "m", "g", "t"):
        upper = unit.upper()
        raise ValueError(
            f"invalid size {value!r}: the unit {unit!r} is ambiguous; "
            f"write {upper}iB (1024-based) or {upper}B (1000-based)"
        )
    if unit and unit not in _SIZE_UNITS:
        raise ValueError(f"invalid size {value!r}: unknown unit {unit!r}; expected {_SIZE_FORMS}")
    if not unit and "." in number:
        raise ValueError(f"invalid size {value!r}: a size without a unit is a whole number of bytes")
    return int(Fraction(Decimal(number)) * _SIZE_UNITS[unit or "b"])


def format_size(n: int) -> str:
    """Render a byte count in the largest binary unit that divides it exactly."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        factor = _SIZE_UNITS[unit.lower()]
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


# systemd.time(7) spellings; "m" is deliberately absent because it reads as
# minutes to some and as milliseconds/months to others. The error says so.
_DURATION_UNITS: dict[str, Fraction] = {}
for _names, _factor in (
    (("us", "usec", "µs"), Fraction(1, 10**6)),
    (("ms", "msec"), Fraction(1, 1000)),
    (("s", "sec", "secs", "second", "seconds"), Fraction(1)),
    (("min", "mins", "minute", "minutes"), Fraction(60)),
    (("h", "hr", "hour", "hours"), Fraction(3600)),
    (("d", "day", "days"), Fraction(86400)),
    (("w", "week", "weeks"), Fraction(7 * 86400)),
):
    for _name in _names:
        _DURATION_UNITS[_name] = _factor
_DURATION_FORMS = (
    'a number of seconds, or numbers with units us, ms, s, min, h, d, w, e.g. "50ms", "30s", '
    '"5min", "1h30min", "30d"'
)
_DURATION_TOKEN_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([^\d\s.]*)", re.ASCII)


def parse_duration(value: str | int | float) -> float:
    """Return a duration in seconds.

    Accepts a non-negative number (seconds) or a string: ``"30"`` (seconds),
    ``"50ms"``, ``"30s"``, ``"5min"``, ``"2h"``, ``"30d"``, and compounds whose
    parts add up: ``"1h30min"``, ``"1h 30min 10s"``. Units follow systemd.time(7):
    ``us``, ``ms``, ``s``, ``min``, ``h``, ``d``, ``w`` and their long spellings
    (``sec``, ``minutes``, ``hours``, ...). ``"m"`` is refused as ambiguous.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"invalid duration {value!r}: expected {_DURATION_FORMS}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"invalid duration {value!r}: must be a finite, non-negative number of seconds")
        return float(value)
    text = value.strip()
    if not text:
        raise ValueError(f"invalid duration {value!r}: expected {_DURATION_FORMS}")
    total = Fraction(0)
    pos = 0
    tokens = 0
    unitless = False
    while pos < len(text):
        match = _DURATION_TOKEN_RE.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"invalid duration {value!r}: expected {_DURATION_FORMS}")
        number, unit = match.groups()
        pos = match.end()
        tokens += 1
        key = unit.lower()
        if unit == "":
            unitless = True
            factor = Fraction(1)
        elif key == "m":
            raise ValueError(f"invalid duration {value!r}: write 'min' for minutes or 'ms' for milliseconds")
        elif key in _DURATION_UNITS:
            factor = _DURATION_UNITS[key]
        else:
            raise ValueError(f"invalid duration {value!r}: unknown unit {unit!r}; expected {_DURATION_FORMS}")
        total += Fraction(Decimal(number)) * factor
    if unitless and tokens > 1:
        raise ValueError(f"invalid duration {value!r}: in a compound duration every number needs a unit")
    return float(total)


def format_duration(seconds: float) -> str:
    """Render seconds in the largest unit that holds them as a whole number."""
    for unit, factor in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1), ("ms", 0.001)):
        count = round(seconds / factor)
        if count and math.isclose(count * factor, seconds, rel_tol=1e-12, abs_tol=0.0):
            return f"{count}{unit}"
    return f"{seconds!r}s"


# --------------------------------------------------------------------------
# Endpoints (URLs of sockets)
# --------------------------------------------------------------------------

INET_SCHEMES = ("udp", "tcp", "tls")
UNIX_SCHEMES = ("unix", "unix-stream")
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_UNIX_PATH_MAX = 107
_URL_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)
_HOSTPORT_RE = re.compile(r"(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^\[\]/]*?))(?::(?P<port>[^:/\[\]]*))?(?P<rest>/.*)?")
_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class Endpoint(NamedTuple):
    """One parsed socket URL.

    ``host`` is bare (``"::1"``, not ``"[::1]"``) as :func:`socket.bind` wants it;
    ``host`` and ``port`` are None for unix sockets, ``path`` is None otherwise.
    ``scheme`` is one of udp, tcp, tls, unix (datagram), unix-stream.
    """

    scheme: str
    host: str | None
    port: int | None
    path: str | None

    @property
    def url(self) -> str:
        if self.path is not None:
            return f"{self.scheme}://{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


def _host_port_problem(text: str, example: str) -> tuple[str, int] | str:
    """Split HOST:PORT; return (host, port), or a reason why not (no exception,
    so each caller words the error with what the user actually wrote)."""
    match = _HOSTPORT_RE.fullmatch(text)
    if match is None:
        return f"expected HOST:PORT, e.g. {example}"
    if match["rest"]:
        return f"unexpected path {match['rest']!r}"
    if match["v6"] is not None:
        host = match["v6"]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} in brackets is not an IPv6 address"
    else:
        host = match["host"]
        if not host:
            return f"missing host, e.g. {example} (0.0.0.0 or [::] means all addresses)"
        if ":" in host:
            return f"write IPv6 addresses in brackets, e.g. [::1]:{example.rpartition(':')[2]}"
        labels = host.rstrip(".").split(".")
        if all(label.isdigit() for label in labels):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                return f"{host!r} is not a valid IPv4 address"
        elif len(host) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
            return f"{host!r} is not a valid host name or IP address"
    port = match["port"]
    if not port:
        return f"missing port, e.g. {example}"
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        return "the port must be a number from 1 to 65535"
    return host, int(port)


def parse_host_port(value: str, *, what: str = "address") -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[V6ADDR]:PORT`` for IPv6) into ``(host, port)``."""
    result = _host_port_problem(value, "127.0.0.1:9880")
    if isinstance(result, str):
        raise ValueError(f"invalid {what} {value!r}: {result}")
    return result


def parse_endpoint(url: str, schemes: Iterable[str] = INET_SCHEMES + UNIX_SCHEMES) -> Endpoint:
    """Parse a socket URL, accepting only ``schemes``; ValueError says what is wrong.

    Forms: ``udp://HOST:PORT``, ``tcp://HOST:PORT``, ``tls://HOST:PORT`` (IPv6 as
    ``[::1]:PORT``), ``unix:///absolute/path`` (datagram) and
    ``unix-stream:///absolute/path``.
    """
    schemes = tuple(schemes)
    expected = ", ".join(f"{s}://" for s in schemes)
    match = _URL_RE.fullmatch(url)
    if match is None:
        raise ValueError(f"invalid URL {url!r}: expected one of {expected}, e.g. {_example_url(schemes[0])}")
    scheme, rest = match[1].lower(), match[2]
    if scheme not in schemes:
        raise ValueError(f"invalid URL {url!r}: unsupported scheme {scheme!r} (expected one of {expected})")
    if scheme in UNIX_SCHEMES:
        if not rest.startswith("/") or rest == "/":
            raise ValueError(
                f"invalid URL {url!r}: a unix socket URL takes an absolute path, e.g. {_example_url(scheme)}"
            )
        if "\0" in rest:
            raise ValueError(f"invalid URL {url!r}: NUL byte in path")
        if len(os.fsencode(rest)) > _UNIX_PATH_MAX:
            raise ValueError(f"invalid URL {url!r}: unix socket paths are limited to {_UNIX_PATH_MAX} bytes")
        return Endpoint(scheme, None, None, rest)
    result = _host_port_problem(rest, _example_url(scheme))
    if isinstance(result, str):
        raise ValueError(f"invalid URL {url!r}: {result}")
    return Endpoint(scheme, result[0], result[1], None)


def _example_url(scheme: str) -> str:
    if scheme in UNIX_SCHEMES:
        return f"{scheme}:///run/hostlog/dev-log"
    return f"{scheme}://127.0.0.1:{7514 if scheme == 'tls' else 5514}"


# --------------------------------------------------------------------------
# Reusable field types and checks
# --------------------------------------------------------------------------


def _absolute_path(value: Path) -> Path:
    # systemd's rule: a path in a config file is absolute; resolving it against
    # the file's directory or the cwd silently changes meaning when either moves.
    if not value.is_absolute():
        raise ValueError(f"must be an absolute path, got {str(value)!r}")
    return value


def _not_a_string(key: str, hint: str) -> BeforeValidator:
    """Refuse a string where a list is expected, with a message that shows the list form."""

    def check(value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(f"{key} must be {hint}")
        return value

    return BeforeValidator(check)


def _at_least_size(minimum: int) -> AfterValidator:
    def check(value: int) -> int:
        if value < minimum:
            raise ValueError(f"must be at least {format_size(minimum)} ({minimum} bytes), got {value} bytes")
        return value

    return AfterValidator(check)


def _positive_duration(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def _check_name(value: str) -> str:
    # Names become file names (checkpoints, cursors) and metric labels.
    if not _NAME_RE.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"invalid name {value!r}: use letters, digits, '_', '.' and '-' only")
    return value


Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive_duration)]
AbsPath = Annotated[Path, AfterValidator(_absolute_path)]
Name = Annotated[str, AfterValidator(_check_name)]
LineSize = Annotated[int, BeforeValidator(parse_size), _at_least_size(1)]


def _url(schemes: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        parse_endpoint(value, schemes)
        return value

    return AfterValidator(check)


class _Section(BaseModel):
    # extra="forbid": an unknown key is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


def default_state_dir() -> Path:
    """The state directory when none is configured: /var/lib/hostlog for root,
    else ``$XDG_STATE_HOME/hostlog`` (``~/.local/state/hostlog`` when unset)."""
    if os.geteuid() == 0:
        return Path("/var/lib/hostlog")
    xdg = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec says to ignore a relative value.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "hostlog"


class Agent(_Section):
    """``[agent]``: identity of this agent and where it keeps its state."""

    hostname: str = Field(default_factory=socket.gethostname)
    """Host name put on every record this agent originates."""
    state_dir: Path = Field(default_factory=default_state_dir)
    """Spool, checkpoints, cursors and agent id live here. A relative path is
    resolved against the current directory when the config is read."""

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
    key_file: AbsPath | None = None
    """Master key file (created 0600 on first start); None means <state_dir>/spool.key."""

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


Source = Annotated[Union[SyslogSource, JournaldSource, FileSource], Field(discriminator="type")]


def _signal_name(value: Any) -> str:
    """Normalise "TERM", "SIGTERM", "term" or 15 to the name "SIGTERM"."""
    if isinstance(value, bool):
        raise ValueError(f"invalid signal {value!r}")
    if isinstance(value, int):
        try:
            return signal.Signals(value).name
        except ValueError:
            raise ValueError(f"invalid signal number {value}") from None
    if isinstance(value, str):
        name = value.strip().upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        if name in signal.Signals.__members__:
            return signal.Signals[name].name
    raise ValueError(f'unknown signal {value!r}: expected a name like "TERM", "SIGINT" or "HUP"')


class App(_Section):
    """``[[app]]``: an application the agent starts, supervises and collects stdout/stderr from."""

    name: Name
    """Unique name; also the ``app`` of its records and the argument of ``hostlog ctl``."""
    command: Annotated[
        list[str],
        _not_a_string("command", 'a list of arguments (argv), e.g. ["python3", "-m", "http.server"]'),
        Field(min_length=1),
    ]
    """argv; command[0] is looked up in PATH. No shell is involved."""
    cwd: AbsPath | None = None
    """Working directory; default: the agent's."""
    env: dict[str, str] = Field(default_factory=dict)
    """Variables added to (or overriding) the agent's environment."""
    user: str | None = None
    """Run as this user (name or numeric id); only when the agent runs as root."""
    group: str | None = None
    """Run with this group (name or numeric id); default: the user's primary group."""
    restart: Literal["always", "on-failure", "never"] = "on-failure"
    """Restart after any exit, after a non-zero exit or signal, or never."""
    backoff_initial: Duration = 1.0
    """Delay before the first restart; it doubles after each quick failure."""
    backoff_max: Duration = 60.0
    """Upper bound of the restart delay."""
    backoff_reset: PositiveDuration = 60.0
    """A run at least this long counts as healthy: the delay and failure count reset."""
    start_retries: Annotated[int, Field(ge=0)] = 5
    """Give up after this many consecutive quick failures; 0 never gives up."""
    stop_signal: Annotated[str, BeforeValidator(_signal_name)] = "SIGTERM"
    """Signal sent to the app's process group to stop it, stored as e.g. "SIGTERM"."""
    stop_timeout: PositiveDuration = 10.0
    """Then the group gets SIGKILL."""
    autostart: bool = True
    """Start with the agent; otherwise only by ``hostlog ctl start``."""
    max_line: LineSize = 64 * 1024
    """Longer output lines are split and marked."""

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if not value[0]:
            raise ValueError("command[0] (the program) must not be empty")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not key or "=" in key or "\0" in key or "\0" in val:
                raise ValueError(f"invalid environment variable {key!r}: names need no '=' and no NUL")
        return value

    @model_validator(mode="after")
    def _backoff(self) -> App:
        if self.backoff_max < self.backoff_initial:
            raise _problems(
                (
                    ("backoff_max",),
                    f"must be at least backoff_initial ({format_duration(self.backoff_initial)}), "
                    f"got {format_duration(self.backoff_max)}",
                )
            )
        return self


class Forward(_Section):
    """``[[forward]]``: a destination this agent ships its spool to."""

    name: Name
    """Unique name; the destination's acknowledged cursor is kept under it."""
    targets: Annotated[
        list[Annotated[str, _url(("tcp", "tls"))]],
        _not_a_string("targets", 'a list of URLs, e.g. ["tls://central-1:7514"], not a string'),
        Field(min_length=1),
    ]
    """Peers: tcp://HOST:PORT or tls://HOST:PORT."""
    mode: Literal["failover", "replicate"] = "failover"
    """failover: one target at a time, in order; replicate: all targets at once."""
    min_acks: Annotated[int, Field(ge=1)] = 1
    """replicate: a chunk is acknowledged once this many targets have it durable."""
    window: Annotated[int, Field(ge=1)] = 64
    """Chunks in flight without an ack, per target."""
    token: str | None = None
    """Shared token presented to the receiver (instead of, or besides, a client certificate)."""

    def endpoints(self) -> list[Endpoint]:
        """The ``targets`` URLs, parsed."""
        return [parse_endpoint(url, ("tcp", "tls")) for url in self.targets]

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
    """If set, peers must present this token."""

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
    receiver: Receiver | None = None
    """``[receiver]``; None: this agent accepts nothing from peers."""
    tls: Tls | None = None
    """``[tls]``; None: no certificates (tls:// targets verify with the system CAs)."""
    control: Control = Field(default_factory=Control)
    """``[control]``; ``control.socket`` is always set after validation."""

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
        problems += _duplicates("source", [s.name for s in self.sources], generated)
        problems += _duplicates("app", [a.name for a in self.apps])
        problems += _duplicates("forward", [f.name for f in self.forwards])
        # A tls:// listener needs a certificate; a tls:// target can do with the system CAs.
        has_cert = self.tls is not None and self.tls.cert is not None
        for i, source in enumerate(self.sources):
            if isinstance(source, SyslogSource):
                for j, endpoint in enumerate(source.endpoints()):
                    if endpoint.scheme == "tls" and not has_cert:
                        problems.append(
                            (("source", i, "listen", j), "a tls:// listener needs [tls] with cert and key")
                        )
        if self.receiver is not None and self.receiver.endpoint().scheme == "tls" and not has_cert:
            problems.append((("receiver", "listen"), "a tls:// listener needs [tls] with cert and key"))
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


# --------------------------------------------------------------------------
# Turning pydantic's errors into TOML key paths and plain messages
# --------------------------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional so the walk sees the model/list/dict/union inside."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
            continue
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _union_members(tp: Any) -> dict[str, type[BaseModel]]:
    """Tag -> model for a discriminated union of models (empty for anything else)."""
    if get_origin(tp) not in (Union, types.UnionType):
        return {}
    members: dict[str, type[BaseModel]] = {}
    for arg in get_args(tp):
        if isinstance(arg, type) and issubclass(arg, BaseModel) and "type" in arg.model_fields:
            for tag in get_args(arg.model_fields["type"].annotation):
                members[tag] = arg
    return members


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _walk(loc: tuple[str | int, ...]) -> tuple[str, Any]:
    """Render a pydantic location as a TOML key path; also return the type reached.

    Locations use the TOML names (aliases), so ``source`` stays ``source``.
    pydantic inserts the tag of a discriminated union (``("source", 0, "syslog",
    "listen")``); it is not a key the user wrote, so it is dropped.
    """
    path = ""
    tp: Any = Config
    for elem in loc:
        tp = _unwrap(tp) if tp is not None else None
        members = _union_members(tp) if tp is not None else {}
        if isinstance(elem, str) and elem in members:
            tp = members[elem]
            continue
        if isinstance(elem, int):
            path += f"[{elem}]"
            tp = get_args(tp)[0] if tp is not None and get_origin(tp) is list else None
            continue
        if elem == "[key]":  # pydantic marks a bad dict key this way; the key is already in the path
            continue
        path += ("." if path else "") + _key(str(elem))
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for n, f in tp.model_fields.items() if (f.alias or n) == elem), None)
            tp = field.annotation if field is not None else None
        elif tp is not None and get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            tp = None
    return path, tp


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__} ({value})"


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean (true or false)",
    "bool_parsing": "a boolean (true or false)",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "path_type": "a path string",
}


def _message(err: Any, parent_type: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        message = f"unknown key {key!r}"
        if isinstance(parent_type, type) and issubclass(parent_type, BaseModel):
            names = [f.alias or n for n, f in parent_type.model_fields.items()]
            close = difflib.get_close_matches(key, names, n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        return message
    if kind == "missing":
        return "missing required key"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return f"expected {ctx['expected']}, got {_toml_type(value)}"
    if kind in ("model_type", "model_attributes_type") and isinstance(value, list) and isinstance(err["loc"][-1], str):
        key = err["loc"][-1]
        return f"expected a table, got an array; write [{key}], not [[{key}]]"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_toml_type(value)}"
    if kind == "too_short":
        minimum = ctx.get("min_length", 1)
        return "must not be empty" if minimum == 1 else f"must have at least {minimum} items"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}, got {value!r}"
    return str(err["msg"])


def _translate(error: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "hostlog_config":
            for rel, message in err["ctx"]["problems"]:
                problems.append((_walk(loc + tuple(rel))[0], message))
            continue
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            section = next((str(e) for e in reversed(loc) if isinstance(e, str)), "source")
            tags = ", ".join(_union_members(_unwrap(_walk(loc)[1])))
            path = _walk(loc)[0] + ".type"
            if kind == "union_tag_invalid":
                problems.append((path, f"unknown {section} type {err['ctx']['tag']!r} (expected one of: {tags})"))
            else:
                problems.append((path, f"missing required key (one of: {tags})"))
            continue
        parent = _unwrap(_walk(loc[:-1])[1]) if loc else None
        problems.append((_walk(loc)[0], _message(err, parent)))
    return problems


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

_TOML_POS_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def parse_config(text: str, *, path: str | None = None) -> Config:
    """Parse and validate TOML text; ``path`` only labels the error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        match = _TOML_POS_RE.search(message)
        line = column = None
        if match:
            line, column = int(match[1]), int(match[2])
            message = f"invalid TOML at line {line}, column {column}: {message[: match.start()]}"
        else:
            message = f"invalid TOML: {message}"
        raise ConfigError([("", message)], path=path, line=line, column=column) from None
    return _validate(data, path)


def _validate(data: dict[str, Any], path: str | None) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_translate(e), path=path) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; ConfigError says what is wrong and where."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except OSError as e:
        raise ConfigError([("", f"cannot read config file: {e.strerror or e}")], path=name) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([("", f"not UTF-8 text (byte {e.start})")], path=name) from None
    return parse_config(text, path=name)


# --------------------------------------------------------------------------
# Built-in default
# --------------------------------------------------------------------------

JOURNAL_DIRS = ("/var/log/journal", "/run/log/journal")


def journal_readable(dirs: Iterable[str | os.PathLike[str]] = JOURNAL_DIRS) -> bool:
    """True when the journald collector can work here: ``systemd.journal``
    (systemd-python) imports and at least one journal file is readable.

    Journal directories are world-listable while the files in them are not
    (root:systemd-journal 0640), so the check looks at the files: the per-machine
    directory ``<dir>/<machine-id>/`` holds ``system.journal`` and ``user-UID.journal``.
    """
    try:
        import systemd.journal  # noqa: F401  (only whether it imports matters)
    except ImportError:
        return False
    for base in dirs:
        base = Path(base)
        try:
            candidates = list(base.glob("*.journal")) + list(base.glob("*/*.journal"))
        except OSError:
            continue
        if any(os.access(f, os.R_OK) for f in candidates):
            return True
    return False


DEFAULT_SYSLOG_LISTEN = ("udp://127.0.0.1:5514", "tcp://127.0.0.1:5514")


def default_config() -> Config:
    """The configuration ``hostlog agent`` runs without ``-c``.

    State in :func:`default_state_dir` unless ``HOSTLOG_STATE_DIR`` names another
    directory (then the control socket is ``<that dir>/control.sock`` too, so an
    instance started that way shares nothing with the user's usual agent). A
    syslog source "syslog" on 127.0.0.1:5514 (UDP and TCP), and a journald source
    "journald" when :func:`journal_readable`. No apps, no forwards, no metrics.
    """
    override = os.environ.get("HOSTLOG_STATE_DIR", "")
    state_dir = Path(os.path.abspath(override)) if override else default_state_dir()
    sources: list[dict[str, Any]] = [{"type": "syslog", "name": "syslog", "listen": list(DEFAULT_SYSLOG_LISTEN)}]
    if journal_readable():
        sources.append({"type": "journald", "name": "journald"})
    config = _validate({"agent": {"state_dir": str(state_dir)}, "source": sources}, None)
    if override:
        # Set after validation: a long test directory must not make the default invalid.
        config.control.socket = state_dir / "control.sock"
    return config


def _commented(key: str, value: str, comment: str) -> str:
    """An optional-setting line with its comment aligned like the others."""
    line = f'#{key} = "{value}"'
    return f"{line:<37}# {comment}"


def default_config_toml(*, journald: bool = True) -> str:
    """An example config file, the one packages install as /etc/hostlog/agent.toml.

    Settings are those of :func:`default_config` (journald included unless
    ``journald=False``). Lines of the form ``#key = value`` / ``#[section]`` are
    optional settings that removing the ``#`` enables (systemd's convention); the
    file stays valid with all of them enabled.
    """
    spool = Spool()
    journald_block = (
        '\n[[source]]\ntype = "journald"\nname = "journald"\n#start = "now"                       # now | beginning\n'
        '#matches = ["_SYSTEMD_UNIT=nginx.service"]\n'
        if journald
        else ""
    )
    return f"""\
# hostlog agent configuration. Every key is described in docs/config.md;
# check a file with: hostlog config check FILE
# A line "#key = value" shows an optional setting (mostly its default):
# remove the "#" to use it. Paths must be absolute.

[agent]
#hostname = "web-1"                  # default: the machine's host name
#state_dir = "/var/lib/hostlog"      # default: /var/lib/hostlog for root, else $XDG_STATE_HOME/hostlog

[spool]
#max_bytes = "{format_size(spool.max_bytes)}"
#max_age = "{format_duration(spool.max_age)}"
#segment_bytes = "{format_size(spool.segment_bytes)}"
{_commented("fsync", spool.fsync, "batch | always | never")}
#fsync_interval = "{format_duration(spool.fsync_interval)}"
{_commented("on_full", spool.on_full, "block | drop_oldest")}
#key_file = "/etc/hostlog/spool.key" # default: <state_dir>/spool.key, created 0600 on first start

# Syslog over UDP and TCP. More listeners: "udp://[::1]:5514",
# "tls://0.0.0.0:6514" (needs [tls]), "unix:///run/hostlog/dev-log".
[[source]]
type = "syslog"
name = "syslog"
listen = [{", ".join(f'"{u}"' for u in DEFAULT_SYSLOG_LISTEN)}]
#max_message = "64KiB"
#rate_limit = {{ rate = 1000, burst = 5000 }}
{journald_block}
# Tail files.
#[[source]]
#type = "file"
#name = "nginx"
#paths = ["/var/log/nginx/*.log"]
#app = "nginx"
#start = "end"                       # end | beginning
#multiline_start = '^\\S'

# A supervised application: started, restarted, its stdout/stderr collected.
#[[app]]
#name = "web"
#command = ["python3", "-m", "http.server", "8080"]
#restart = "on-failure"              # always | on-failure | never
#stop_signal = "TERM"
#stop_timeout = "10s"

# Ship the spool to other agents.
#[[forward]]
#name = "central"
#targets = ["tls://central-1:7514", "tls://central-2:7514"]
#mode = "replicate"                  # failover | replicate
#min_acks = 2

# Accept records from other agents (a central node).
#[receiver]
#listen = "tls://0.0.0.0:7514"

#[tls]
#ca = "/etc/hostlog/tls/ca.pem"
#cert = "/etc/hostlog/tls/agent.pem"
#key = "/etc/hostlog/tls/agent.key"

[control]
#socket = "/run/hostlog/control.sock" # default for root; else $XDG_RUNTIME_DIR/hostlog/control.sock
#metrics = "127.0.0.1:9880"          # Prometheus endpoint; default: off
"""
