"""The HTTP server inside the agent: listeners, keys, the audit trail, and the
routes of the modules beside this one.

* listeners: ``[http] listen`` (plain TCP, TLS with the ``[tls]`` certificate,
  unix sockets 0660 whose peers are admitted by ``SO_PEERCRED`` as on the
  control socket);
* :func:`authenticate`: who is asking (an API key as ``Authorization: Bearer
  KEY`` or as the password of basic auth; on a unix socket, the peer's uid) and
  whether the route's scope is theirs: 401 without a valid key, 403 without
  the scope; the page of the viewer and its files hold no data and need none;
* the audit trail: every request, allowed or not, becomes one record with
  ``source = "audit"`` (who, from where, what, which filter, how many records,
  the status) handed to the spool like any other record;
* the routes: ``gatewayd.py`` (journal-gatewayd's ``/entries``, ``/machine``,
  ``/fields``), ``api.py`` (``/api/v1/logs``), ``tail.py`` (``/api/v1/tail``),
  ``viewer.py`` (``/``). Each module has ``routes(ctx) -> list[Route]``.

Reading never slows ingest: a handler reads the spool in :meth:`HttpContext.read`,
on a small thread pool of its own, never on the event loop that the
collectors share; followers are served from one poller (``tail.py``) with a
bounded queue each.

aiohttp serves it (one library for REST, WebSocket, SSE, static files and unix
sockets, on uvloop); its runner is told not to take the agent's signals.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from aiohttp import web

from hostlog.agent.control import peer_allowed, supplementary_groups
from hostlog.config import Config, Endpoint
from hostlog.http.keys import KeyStore, KeyStoreError, grants, keys_path
from hostlog.http.look import AUDIT_APP, AUDIT_SOURCE  # (the followers leave these records out)
from hostlog.record import Columns, Record

log = logging.getLogger("hostlog.http")

__all__ = ["AUDIT_SOURCE", "CTX", "PRINCIPAL", "HttpContext", "HttpServer", "Principal", "Route",
           "authenticate", "audit_record", "note_records"]

T = TypeVar("T")

READ_THREADS = 2  # the spool readers of every request together; ingest keeps the rest
_UCRED = struct.Struct("3i")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    """One route: ``scope`` is what the caller's key must grant (``read``,
    ``ingest``, ``admin``), or None for a route that serves no data."""

    method: str
    path: str
    handler: Handler
    scope: str | None = "read"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: a key's name, or ``uid:N`` of a unix-socket peer."""

    name: str
    scopes: frozenset[str]
    how: str  # "key", "peer", or "anonymous" (no credentials; only public routes)


class RouteModule(Protocol):
    """A module of routes (gatewayd, api, tail, viewer)."""

    def routes(self, ctx: HttpContext) -> list[Route]: ...


class ServedAgent(Protocol):
    """What the server uses of the agent."""

    config: Config
    spool: Any  # hostlog.spool.spool.Spool
    context: Any  # hostlog.collectors.base.CollectorContext


@dataclass
class HttpContext:
    """What the route handlers share: the agent's identity and spool, the read
    threads, and the sink for audit and ingested records."""

    config: Config
    spool_dir: Path
    keyring: Any  # hostlog.spool.keys.Keyring
    agent_id: str
    hostname: str
    submit: Callable[[Columns], None]  # hand records to the spool writer (never waits)
    keys: KeyStore
    sink: Any = None  # hostlog.collectors.base.Sink: the agent's, for ingest that waits (keep())
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        READ_THREADS, thread_name_prefix="hostlog-http-read"))
    extras: dict[str, Any] = field(default_factory=dict)  # per-module state (tail's hub, quotas)
    counters: dict[str, int] = field(default_factory=dict)  # requests, refusals, ... (status, metrics)

    on_stop: list[Callable[[], None]] = field(default_factory=list)  # said by the modules, run at stop

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    async def keep(self, batch: Columns) -> None:
        """Hand ``batch`` to the spool writer and return once it is durable:
        waits while the writer's queue is full (backpressure, as a TCP source
        is slowed), then for the sync that makes it durable."""
        if self.sink is None:
            self.submit(batch)
            return
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def durable(seq: int) -> None:
            if not done.done():
                done.set_result(seq)

        await self.sink.write(batch, durable)
        await done

    def reader(self) -> Any:
        """A fresh :class:`hostlog.spool.reader.SpoolReader` over the agent's spool."""
        from hostlog.spool.reader import SpoolReader
        return SpoolReader(self.spool_dir, self.keyring)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` (spool reading, formatting) on the read threads."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    @property
    def machine_id(self) -> str:
        return _read_id("/etc/machine-id")

    @property
    def boot_id(self) -> str:
        return _read_id("/proc/sys/kernel/random/boot_id").replace("-", "")


def _read_id(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


CTX = web.AppKey("hostlog_ctx", HttpContext)
PRINCIPAL = web.RequestKey("hostlog_principal", Principal)
_RECORDS = web.RequestKey("hostlog_records", int)  # how many records the handler returned
_FILTER = web.RequestKey("hostlog_filter", str)


def note_records(request: web.Request, n: int) -> None:
    """Count ``n`` records as returned by this request (for its audit record)."""
    request[_RECORDS] = request.get(_RECORDS, 0) + n


def note_filter(request: web.Request, text: str) -> None:
    """What the request selected, in words, for its audit record (default: the query string)."""
    request[_FILTER] = text


# -- who is asking ---------------------------------------------------------------

def _peer_uid(request: web.Request) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of a unix-socket peer, None on TCP."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid, gid


def _presented_secret(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    kind, _, value = header.partition(" ")
    kind = kind.lower()
    if kind == "bearer":
        return value.strip() or None
    if kind == "basic":
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return password or user or None  # curl -u KEY: sends the key as the user
    return None


def authenticate(request: web.Request, keys: KeyStore, unix_paths: dict[str, int]) -> Principal | None:
    """The principal of a request, or None for bad credentials (401).

    On a unix socket the kernel's word on the peer decides (root, the agent's
    uid, or the socket's group: every scope; anyone else: none). Otherwise the
    key presented; no credentials at all: the anonymous principal, which
    only public routes admit."""
    peer = _peer_uid(request)
    if peer is not None:
        pid, uid, gid = peer
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        socket_gid = unix_paths.get(str(sockname), -1)
        allowed = peer_allowed(uid, gid, supplementary_groups(pid) if uid and gid != socket_gid else set(),
                               agent_uid=os.geteuid(), socket_gid=socket_gid)
        return Principal(f"uid:{uid}", frozenset({"admin"}) if allowed else frozenset(), "peer")
    secret = _presented_secret(request)
    if secret is None:
        if "Authorization" in request.headers:
            return None
        return Principal("-", frozenset(), "anonymous")
    key = keys.check(secret)
    if key is None:
        return None
    return Principal(key.name, key.scopes, "key")


# -- the audit trail -----------------------------------------------------------------

def audit_record(*, hostname: str, principal: str, remote: str, method: str, path: str,
                 filter_text: str, records: int, status: int, seconds: float) -> Record:
    """The record of one request."""
    severity = 6 if status < 400 else 4  # info; a refusal is a warning
    msg = (f"{method} {path} by {principal} from {remote}: {status}, {records} records"
           + (f" ({filter_text})" if filter_text else ""))
    return Record(ts=time.time_ns(), msg=msg, host=hostname, source=AUDIT_SOURCE, app=AUDIT_APP,
                  severity=severity,
                  fields={"AUDIT_PRINCIPAL": principal, "AUDIT_REMOTE": remote, "AUDIT_METHOD": method,
                          "AUDIT_ENDPOINT": path, "AUDIT_FILTER": filter_text,
                          "AUDIT_RECORDS": str(records), "AUDIT_STATUS": str(status),
                          "AUDIT_SECONDS": f"{seconds:.3f}"})


def _remote(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and peer:
        return f"{peer[0]}:{peer[1]}" if len(peer) >= 2 else str(peer[0])
    return "unix"


def _filter_text(request: web.Request) -> str:
    if _FILTER in request:
        return str(request[_FILTER])
    parts = [request.query_string] if request.query_string else []
    if "Range" in request.headers:
        parts.append(f"Range: {request.headers['Range']}")
    return " ".join(parts)[:1024]


# -- the server --------------------------------------------------------------------

class HttpServer:
    """Serves ``[http]`` for one agent."""

    def __init__(self, agent: ServedAgent, config: Config | None = None,
                 modules: Sequence[RouteModule] | None = None) -> None:
        config = config if config is not None else agent.config
        assert config.http is not None
        self.config = config
        self.endpoints: list[Endpoint] = config.http.endpoints()
        context = agent.context
        self.ctx = HttpContext(config=config, spool_dir=agent.spool.directory, keyring=agent.spool.keyring,
                               agent_id=agent.spool.agent_id, hostname=config.agent.hostname,
                               submit=context.sink.submit, sink=context.sink,
                               keys=KeyStore(keys_path(config.agent.state_dir)))
        self._scopes: dict[tuple[str, str], str | None] = {}
        self._unix_gids: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self.urls: list[str] = []  # what is listening (ctl status)
        self._modules = modules

    def application(self) -> web.Application:
        modules = self._modules
        if modules is None:
            from hostlog.http import api, gatewayd, tail, viewer
            modules = (gatewayd, api, tail, viewer)
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024**2)
        app[CTX] = self.ctx
        for module in modules:
            for route in module.routes(self.ctx):
                added = app.router.add_route(route.method, route.path, route.handler)
                canonical = added.resource.canonical if added.resource is not None else route.path
                self._scopes[(route.method, canonical)] = route.scope
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def start(self) -> None:
        app = self.application()
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        try:
            for endpoint in self.endpoints:
                await self._listen(runner, endpoint)
        except BaseException:
            await self.stop()
            raise

    async def _listen(self, runner: web.AppRunner, endpoint: Endpoint) -> None:
        if endpoint.scheme == "unix":
            assert endpoint.path is not None
            path = Path(endpoint.path)
            if not path.parent.is_dir():
                path.parent.mkdir(parents=True, mode=0o750)
            if path.is_socket():
                path.unlink()  # left by an agent that did not stop cleanly
            site: web.BaseSite = web.UnixSite(runner, str(path))
            await site.start()
            os.chmod(path, 0o660)
            self._unix_gids[str(path)] = os.stat(path).st_gid
            self.urls.append(f"unix://{path}")
        else:
            context = self._tls() if endpoint.scheme == "https" else None
            site = web.TCPSite(runner, endpoint.host, endpoint.port, ssl_context=context, reuse_address=True)
            await site.start()
            self.urls.append(endpoint.url)
        log.info("http: serving %s", self.urls[-1])

    def _tls(self) -> ssl.SSLContext:
        from hostlog.forward.tls import server_context
        tls = self.config.tls
        assert tls is not None and tls.cert is not None and tls.key is not None
        return server_context(tls.ca, tls.cert, tls.key, require_client_cert=tls.require_client_cert)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        for hook in self.ctx.on_stop:
            try:
                hook()
            except Exception:  # one module's hook must not keep the others from running
                log.exception("http: a stop hook failed")
        for path in self._unix_gids:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._unix_gids.clear()
        self.ctx.executor.shutdown(wait=False, cancel_futures=True)

    async def _on_shutdown(self, app: web.Application) -> None:
        hub = self.ctx.extras.get("tail_hub")
        if hub is not None:
            await hub.close()

    def status(self) -> dict[str, Any]:
        return {"listen": list(self.urls), **self.ctx.counters}

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        remote = _remote(request)  # now: a WebSocket's transport is gone when it ends
        route = request.match_info.route
        canonical = route.resource.canonical if route.resource is not None else request.path
        scope = self._scopes.get((request.method, canonical),
                                 self._scopes.get(("*", canonical), "read"))
        if request.method == "HEAD":
            scope = self._scopes.get(("GET", canonical), scope)
        status = 500
        principal: Principal | None = None
        try:
            try:
                principal = authenticate(request, self.ctx.keys, self._unix_gids)
            except KeyStoreError as exc:
                log.error("http: %s", exc)
                raise web.HTTPServiceUnavailable(text="the key file cannot be read; see the agent's log\n") \
                    from None
            if principal is None:
                self.ctx.count("unauthorized")
                raise web.HTTPUnauthorized(text="a valid API key is needed\n",
                                           headers={"WWW-Authenticate": 'Basic realm="hostlog"'})
            if scope is not None and not grants(principal.scopes, scope):
                if principal.how == "anonymous":
                    self.ctx.count("unauthorized")
                    raise web.HTTPUnauthorized(text="a valid API key is needed\n",
                                               headers={"WWW-Authenticate": 'Basic realm="hostlog"'})
                self.ctx.count("forbidden")
                raise web.HTTPForbidden(text=f"this key does not have the {scope!r} scope\n")
            request[PRINCIPAL] = principal
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except (ConnectionError, asyncio.CancelledError):
            status = 499  # the client went away
            raise
        finally:
            self.ctx.count("requests")
            if scope is not None or status >= 400:
                self._audit(request, principal, remote, status, time.monotonic() - started)

    def _audit(self, request: web.Request, principal: Principal | None, remote: str, status: int,
               seconds: float) -> None:
        record = audit_record(hostname=self.ctx.hostname,
                              principal="(bad key)" if principal is None else principal.name,
                              remote=remote, method=request.method, path=request.path,
                              filter_text=_filter_text(request), records=int(request.get(_RECORDS, 0)),
                              status=status, seconds=seconds)
        try:
            self.ctx.submit(Columns.of([record]))
        except Exception as exc:  # the spool refused: the agent is stopping; say so here too
            log.error("http: audit record not kept (%s): %s", exc, record.msg)
