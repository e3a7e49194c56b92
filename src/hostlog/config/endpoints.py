"""Endpoints: socket URLs (udp://, tcp://, tls://, unix://, unix-stream://) and HOST:PORT."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from typing import NamedTuple

# --------------------------------------------------------------------------
# Endpoints (URLs of sockets)
# --------------------------------------------------------------------------

INET_SCHEMES = ("udp", "tcp", "tls")
UNIX_SCHEMES = ("unix", "unix-stream")
#: ``http://HOST[:PORT][/PATH]`` (an OTLP collector, say); the port defaults to 80 / 443
HTTP_SCHEMES = ("http", "https")
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
        if self.scheme in HTTP_SCHEMES:
            host = f"[{self.host}]" if self.host and ":" in self.host else self.host
            return f"{self.scheme}://{host}:{self.port}{self.path or ''}"
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
    path = None
    if scheme in HTTP_SCHEMES:
        rest, slash, tail = rest.partition("/")
        path = slash + tail if slash and tail else None
        if not re.search(r":\d*$", rest):  # no port: the scheme's
            rest += ":443" if scheme == "https" else ":80"
    result = _host_port_problem(rest, _example_url(scheme))
    if isinstance(result, str):
        raise ValueError(f"invalid URL {url!r}: {result}")
    return Endpoint(scheme, result[0], result[1], path)


def _example_url(scheme: str) -> str:
    if scheme in HTTP_SCHEMES:
        return f"{scheme}://127.0.0.1:4318"
    if scheme in UNIX_SCHEMES:
        return f"{scheme}:///run/hostlog/dev-log"
    if scheme == "nats":
        return "nats://127.0.0.1:4222"
    return f"{scheme}://127.0.0.1:{7514 if scheme == 'tls' else 5514}"
