"""``hostlog logs --url URL``: the logs of a remote agent, over its HTTP
server (docs/tail.md).

Follows by default: the last N records (``-n``, 10), then live, over the
WebSocket of ``/api/v1/tail``; when the connection drops it reconnects (with
a growing pause, up to :data:`BACKOFF_MAX_S`) and resumes after the last
record it printed, so nothing is shown twice or left out. A ``dropped``
notice from the server (this client fell behind) is said on stderr.
``--no-tail`` prints the last N from ``/api/v1/logs`` and exits.

``-o short`` prints what ``hostlog query -o short`` prints for the same
record (the record is rebuilt from its JSON object and given to the same
formatter, priority colours on a terminal included); ``-o json`` the
objects as the server sends them, one a line.

``--url``: ``http://HOST:PORT``, ``https://HOST:PORT`` (``--ca FILE`` for a
private CA) or ``unix:///PATH`` (the agent's unix socket: the kernel says who
is asking, no key needed). The key: ``--key`` or ``$HOSTLOG_KEY``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from hostlog.record import Record

TAIL_PATH = "/api/v1/tail"
LOGS_PATH = "/api/v1/logs"
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
#: a connection that lasted this long starts the next pause from the first again
STEADY_S = 10.0
HEARTBEAT_S = 30.0
#: what --level takes beside journalctl's names and numbers
LEVEL_ALIASES = {"warn": "warning", "error": "err", "critical": "crit", "information": "info"}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("logs", help="read and follow the logs of a remote agent over HTTP",
                       description="Show the last records of an agent's HTTP server, then follow "
                                   "them live (reconnecting and resuming where it stopped).")
    p.add_argument("--url", required=True, metavar="URL",
                   help="the agent's HTTP server: http://HOST:PORT, https://HOST:PORT, unix:///PATH")
    p.add_argument("--key", metavar="KEY", help="API key with the read scope (default: $HOSTLOG_KEY)")
    p.add_argument("--ca", metavar="FILE", help="CA certificate(s) to verify an https server with")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-f", "--follow", dest="follow", action="store_true", default=True,
                      help="keep printing new records (the default)")
    mode.add_argument("--no-tail", dest="follow", action="store_false",
                      help="print the last N records and exit")
    p.add_argument("-n", "--lines", type=_count, default=10, metavar="N",
                   help="the last N records first (default 10)")
    p.add_argument("-p", "--level", metavar="LEVEL",
                   help="this level or more important (emerg .. debug, warn, error; or FROM..TO)")
    p.add_argument("-u", "--unit", action="append", default=[], metavar="APP",
                   help="an app or systemd unit (globs allowed; repeatable)")
    p.add_argument("--host", action="append", default=[], help="records of this host (repeatable)")
    p.add_argument("--source", action="append", default=[],
                   help="records of this source: syslog, journald, file, process, api, ... (repeatable)")
    p.add_argument("-g", "--grep", metavar="REGEX", help="messages matching (as hostlog query -g)")
    p.add_argument("-o", "--output", choices=("short", "json"), default="short",
                   help="short (as hostlog query prints) or json (the server's objects)")
    p.add_argument("--utc", action="store_true", help="times in UTC (short)")


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of lines: {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"invalid number of lines: {value!r}")
    return n


# -- what to ask (pure) ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Target:
    """Where the server is: the base URL of requests, and a unix socket to reach it by."""

    base: str  # scheme://host[:port][/prefix], no trailing slash
    unix_path: str | None = None

    @property
    def tls(self) -> bool:
        return self.base.startswith("https://")


def parse_url(url: str) -> Target:
    """``--url``: http(s)://HOST:PORT[/PREFIX], unix:///PATH, or HOST:PORT (http)."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme == "unix":
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not path.startswith("/"):
            raise ValueError(f"--url {url!r}: a unix socket is unix:///ABSOLUTE/PATH")
        return Target("http://localhost", path)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--url {url!r}: http://HOST:PORT, https://HOST:PORT or unix:///PATH")
    if parts.query or parts.fragment:
        raise ValueError(f"--url {url!r}: no query or fragment, please (the filters are options)")
    return Target(f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}")


def level_param(level: str) -> str:
    """--level as the server's ``priority`` (journalctl's words), with the usual aliases."""
    def one(word: str) -> str:
        return LEVEL_ALIASES.get(word.strip().lower(), word.strip())
    if ".." in level:
        low, _, high = level.partition("..")
        return f"{one(low)}..{one(high)}"
    return one(level)


def filter_params(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The filters of the command line as query parameters."""
    out: list[tuple[str, str]] = []
    out += [("unit", u) for u in args.unit]
    out += [("host", h) for h in args.host]
    out += [("source", s) for s in args.source]
    if args.level:
        out.append(("priority", level_param(args.level)))
    if args.grep:
        out.append(("grep", args.grep))
    return out


def tail_params(filters: list[tuple[str, str]], cursor: str | None, lines: int) -> list[tuple[str, str]]:
    """A tail request: resume after ``cursor``, or (none yet) the last ``lines`` first."""
    if cursor is not None:
        return [*filters, ("cursor", cursor)]
    return [*filters, ("n", str(lines))] if lines else list(filters)


def _value(value: Any) -> Any:
    if isinstance(value, dict) and "base64" in value:
        return base64.b64decode(value["base64"])
    if isinstance(value, list):
        return [_value(v) for v in value]
    return value


def record_from_json(obj: dict[str, Any]) -> Record:
    """The Record behind a record's JSON object (hostlog.http.records.record_json),
    as far as what ``-o short`` prints goes."""
    fields = obj.get("fields") or {}
    pid = obj.get("pid")
    return Record(ts=int(obj["ts_ns"]), msg=_value(obj.get("message", "")), host=str(obj.get("host", "")),
                  source=str(obj.get("source", "")), app=str(obj.get("identifier") or ""),
                  pid=int(pid) if pid is not None else None, severity=int(obj.get("priority", 6)),
                  fields={str(k): _value(v) for k, v in fields.items()})


def dropped_text(obj: dict[str, Any]) -> str:
    """The notice of a ``dropped`` message, for stderr."""
    count = obj.get("dropped")
    about = "" if obj.get("exact", True) else "up to "
    return (f"-- {about}{count} records not shown: this client fell behind "
            f"(from {obj.get('first_cursor')} to {obj.get('last_cursor')}) --")


class LinePrinter:
    """Bytes of one record's object for ``-o``."""

    def __init__(self, output: str, *, color: bool = False, grep: str | None = None, utc: bool = False) -> None:
        self.output = output
        self._format: Callable[[Record], bytes] | None = None
        if output == "short":
            from hostlog.query.output import Formatter
            formatter = Formatter("short", utc=utc, color=color)
            self._format = formatter.format
            if color and grep:
                from hostlog.cli.query_cmd import _highlighting
                from hostlog.query.filters import compile_grep
                self._format = _highlighting(formatter, compile_grep(grep))

    def line(self, obj: dict[str, Any], text: str | None = None) -> bytes:
        if self._format is None:
            return (text if text is not None else json.dumps(obj, ensure_ascii=False)).encode() + b"\n"
        return self._format(record_from_json(obj))


# -- talking to the server ---------------------------------------------------------------

class Refused(Exception):
    """An answer no retry changes (400, 401, 403, 404, ...)."""


def _headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _ssl(target: Target, ca: str | None) -> ssl.SSLContext | None:
    if not target.tls:
        return None
    context = ssl.create_default_context(cafile=ca)
    return context


def _session(target: Target, ca: str | None) -> Any:
    import aiohttp
    connector: aiohttp.BaseConnector
    if target.unix_path is not None:
        connector = aiohttp.UnixConnector(path=target.unix_path)
    else:
        connector = aiohttp.TCPConnector(ssl=_ssl(target, ca) or True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None, connect=10,
                                                                                    sock_connect=10))


def _refusal(status: int, text: str) -> str:
    text = text.strip()
    if status == 401:
        return f"401: {text or 'a valid API key is needed'} (--key or HOSTLOG_KEY)"
    return f"{status}: {text}" if text else f"HTTP {status}"


async def print_last(args: argparse.Namespace, out: BinaryIO, printer: LinePrinter) -> int:
    """--no-tail: the last N records, oldest first."""
    target = parse_url(args.url)
    params = [*filter_params(args), ("n", str(args.lines))]
    async with _session(target, args.ca) as session:
        async with session.get(target.base + LOGS_PATH, params=params, headers={
                **_headers(_key(args)), "Accept": "application/x-ndjson"}) as resp:
            if resp.status != 200:
                raise Refused(_refusal(resp.status, await resp.text()))
            async for raw in resp.content:
                text = raw.decode("utf-8").rstrip("\n")
                if text:
                    out.write(printer.line(json.loads(text), text))
    out.flush()
    return 0


async def follow(args: argparse.Namespace, out: BinaryIO, printer: LinePrinter, *,
                 say: Callable[[str], None], max_connections: int | None = None) -> int:
    """Follow over the WebSocket: reconnect with a growing pause, resume after
    the last record printed. ``max_connections``: give up after that many (tests)."""
    import aiohttp

    target = parse_url(args.url)
    filters = filter_params(args)
    key = _key(args)
    cursor: str | None = None
    pause = BACKOFF_FIRST_S
    connections = 0
    async with _session(target, args.ca) as session:
        while max_connections is None or connections < max_connections:
            connections += 1
            params = tail_params(filters, cursor, args.lines)
            started = asyncio.get_running_loop().time()
            reason = "closed by the server"
            try:
                async with session.ws_connect(target.base + TAIL_PATH, params=params, headers=_headers(key),
                                              heartbeat=HEARTBEAT_S, autoping=True,
                                              max_msg_size=64 << 20) as ws:
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue
                        obj = json.loads(msg.data)
                        if "dropped" in obj:
                            say(dropped_text(obj))
                            continue
                        out.write(printer.line(obj, msg.data))
                        out.flush()
                        cursor = obj.get("cursor", cursor)
                    if ws.close_code not in (None, 1000, 1001):
                        reason = f"closed with code {ws.close_code}"
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status not in (429, 500, 502, 503, 504):
                    # the server's words (which parameter, which scope): a plain GET shows them
                    async with session.get(target.base + TAIL_PATH, params=params,
                                           headers=_headers(key)) as resp:
                        text = await resp.text() if resp.status == exc.status else ""
                    raise Refused(_refusal(exc.status, text)) from None
                reason = f"{exc.status} {exc.message}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
            if asyncio.get_running_loop().time() - started >= STEADY_S:
                pause = BACKOFF_FIRST_S
            if max_connections is not None and connections >= max_connections:
                break
            wait = pause * random.uniform(0.8, 1.2)
            say(f"-- connection lost ({reason}); reconnecting in {wait:.1f}s --")
            await asyncio.sleep(wait)
            pause = min(BACKOFF_MAX_S, pause * 2)
    return 0


def _key(args: argparse.Namespace) -> str | None:
    return args.key or os.environ.get("HOSTLOG_KEY") or None


def run(args: argparse.Namespace) -> int:
    try:
        parse_url(args.url)
    except ValueError as exc:
        print(f"hostlog logs: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    printer = LinePrinter(args.output, color=out.isatty(), grep=args.grep, utc=args.utc)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    import aiohttp
    try:
        if not args.follow:
            return asyncio.run(print_last(args, out, printer))
        return asyncio.run(follow(args, out, printer, say=say))
    except Refused as exc:
        print(f"hostlog logs: {exc}", file=sys.stderr)
        return 1
    except (OSError, aiohttp.ClientError) as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        print(f"hostlog logs: {args.url}: {exc}", file=sys.stderr)
        return 1
