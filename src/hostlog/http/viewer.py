"""The web viewer (docs/viewer.md): ``GET /`` is one static page, ``GET
/static/NAME`` its script and style. They hold no data (scope None: no key
needed to load them); the page asks the API for records with the key the
user gives it (``/api/v1/logs`` for the last records, the SSE tail
``/api/v1/tail`` to follow).

The files are the package's own (``hostlog/http/static/``), read once when
the routes are made, through :mod:`importlib.resources` so that they are
found in a source tree, an installed wheel or a zip alike. No build step:
what is in that folder is what the browser runs.

Every answer carries a Content-Security-Policy that allows only the page's
own script and style and requests to its own origin: a record's text is put
on the page as text, and even a mistake there could not run a script.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from hostlog.http.server import HttpContext, Route

log = logging.getLogger("hostlog.http")
__all__ = ["ASSETS", "Asset", "asset_headers", "content_type", "load_assets", "routes"]

#: the files of the page; anything else under /static/ is 404
ASSETS = ("index.html", "viewer.js", "viewer.css")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the page: its bytes, type and entity tag."""

    name: str
    body: bytes
    content_type: str
    etag: str


def content_type(name: str) -> str:
    """The Content-Type of a file of the page, by its name's suffix."""
    dot = name.rfind(".")
    return _TYPES.get(name[dot:].lower() if dot >= 0 else "", "application/octet-stream")


def asset_headers(asset: Asset) -> dict[str, str]:
    """The headers of an answer with ``asset``: revalidated at every load (an
    upgraded agent serves its new page at once), never framed or sniffed."""
    return {
        "Content-Type": asset.content_type,
        "ETag": asset.etag,
        "Cache-Control": "no-cache",
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


def load_assets(package: str = "hostlog.http", folder: str = "static") -> dict[str, Asset]:
    """The files of :data:`ASSETS` from the package (OSError names a missing
    one)."""
    root = resources.files(package).joinpath(folder)
    out: dict[str, Asset] = {}
    for name in ASSETS:
        body = root.joinpath(name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        out[name] = Asset(name, body, content_type(name), etag)
    return out


def _answer(request: web.Request, asset: Asset) -> web.Response:
    headers = asset_headers(asset)
    match = request.headers.get("If-None-Match", "")
    if asset.etag in (tag.strip() for tag in match.split(",")):
        del headers["Content-Type"]
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers=headers)


def routes(ctx: HttpContext) -> list[Route]:
    """The page and its files. Files missing from the install are said in the
    log at start and by every answer of the viewer (500); the API goes on."""
    try:
        assets = load_assets()
        broken = ""
    except OSError as exc:
        assets = {}
        broken = f"the web viewer's files are missing from this install: {exc}"
        log.error("http: %s", broken)

    def missing() -> web.HTTPInternalServerError:
        return web.HTTPInternalServerError(text=broken + "\n")

    async def page(request: web.Request) -> web.Response:
        if broken:
            raise missing()
        return _answer(request, assets["index.html"])

    async def static(request: web.Request) -> web.Response:
        if broken:
            raise missing()
        asset = assets.get(request.match_info["name"])
        if asset is None or asset.name == "index.html":
            raise web.HTTPNotFound(text="no such file of the viewer\n")
        return _answer(request, asset)

    return [Route(method, path, handler, scope=None)
            for path, handler in (("/", page), ("/static/{name}", static)) for method in ("GET", "HEAD")]
