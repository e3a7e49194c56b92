"""The HTTP server's own part: who may ask (keys, scopes, unix peers), and the
audit record each request leaves, against a real server on a real spool."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web

from hostlog.http.keys import KeyStore, keys_path
from hostlog.http.server import CTX, PRINCIPAL, HttpContext, Route, note_records
from tests.conftest import need
from tests.support.http import ServedSpool
from tests.support.pki import make_test_pki


async def _whoami(request: web.Request) -> web.Response:
    note_records(request, 3)
    principal = request[PRINCIPAL]
    return web.json_response({"name": principal.name, "how": principal.how,
                              "hostname": request.app[CTX].hostname})


async def _ingest(request: web.Request) -> web.Response:
    return web.Response(text="taken\n")


async def _page(request: web.Request) -> web.Response:
    return web.Response(text="<html>no data here</html>", content_type="text/html")


def _routes(ctx: HttpContext) -> list[Route]:
    return [Route("GET", "/whoami", _whoami), Route("POST", "/ingest", _ingest, scope="ingest"),
            Route("GET", "/", _page, scope=None)]


MODULE = SimpleNamespace(routes=_routes)


def run(coro):
    return asyncio.run(coro)


async def _get(url: str, **kw) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url, **kw) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


def test_keys_and_scopes_decide_who_is_served(tmp_path: Path) -> None:
    async def main() -> None:
        async with ServedSpool(tmp_path, modules=[MODULE]) as served:
            store = KeyStore(keys_path(tmp_path))
            reader = store.create("ops", ["read"])
            ingester = store.create("shipper", ["ingest"])
            admin = store.create("root-key", ["admin"])
            url = served.url

            status, _, headers = await _get(url + "/whoami")
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
            assert (await _get(url + "/whoami", headers={"Authorization": "Bearer hlk_wrong"}))[0] == 401
            assert (await _get(url + "/whoami", headers={"Authorization": "Token " + reader}))[0] == 401

            status, body, _ = await _get(url + "/whoami", headers={"Authorization": "Bearer " + reader})
            assert status == 200 and '"name": "ops"' in body and '"test-host"' in body
            # the password of basic auth (a URL with credentials), or the user with no password (curl -u KEY:)
            for user_pass in (f"anyone:{reader}", f"{reader}:"):
                basic = base64.b64encode(user_pass.encode()).decode()
                assert (await _get(url + "/whoami", headers={"Authorization": "Basic " + basic}))[0] == 200

            # a read key may not ingest; an ingest key may not read; admin may do both
            async with aiohttp.ClientSession() as session:
                async def post(key: str) -> int:
                    async with session.post(url + "/ingest", data=b"{}",
                                            headers={"Authorization": "Bearer " + key}) as resp:
                        return resp.status
                assert await post(reader) == 403
                assert await post(ingester) == 200
                assert await post(admin) == 200
            assert (await _get(url + "/whoami", headers={"Authorization": "Bearer " + ingester}))[0] == 403
            assert (await _get(url + "/whoami", headers={"Authorization": "Bearer " + admin}))[0] == 200

            # the page holds no data: served without a key
            assert (await _get(url + "/"))[0] == 200

            # revoked: refused at the next request, no reload
            store.revoke("ops")
            assert (await _get(url + "/whoami", headers={"Authorization": "Bearer " + reader}))[0] == 401
            assert served.server is not None
            counters = served.server.status()
            assert counters["unauthorized"] >= 4 and counters["forbidden"] == 2

    run(main())


def test_every_request_leaves_an_audit_record_without_the_key(tmp_path: Path) -> None:
    async def main() -> list:
        async with ServedSpool(tmp_path, modules=[MODULE]) as served:
            secret = KeyStore(keys_path(tmp_path)).create("ops", ["read"])
            await _get(served.url + "/whoami?unit=nginx&priority=err",
                       headers={"Authorization": "Bearer " + secret})
            await _get(served.url + "/whoami", headers={"Authorization": "Bearer hlk_not-a-key"})
            await _get(served.url + "/")  # public: no audit record for a page without data
            await served.flush()
            return served.stored("audit")

    audit = run(main())
    assert len(audit) == 2, [r.msg for r in audit]
    ok, refused = audit
    assert ok.fields["AUDIT_PRINCIPAL"] == "ops" and ok.fields["AUDIT_STATUS"] == "200"
    assert ok.fields["AUDIT_ENDPOINT"] == "/whoami" and ok.fields["AUDIT_RECORDS"] == "3"
    assert ok.fields["AUDIT_FILTER"] == "unit=nginx&priority=err"
    assert ok.fields["AUDIT_REMOTE"].startswith("127.0.0.1:") and ok.app == "hostlog-http"
    assert refused.fields["AUDIT_STATUS"] == "401" and refused.severity == 4
    for record in audit:
        assert "hlk_" not in record.msg and all("hlk_" not in str(v) for v in record.fields.values())


# the system's: the stranger's uid may not read the virtualenv's interpreter
SYSTEM_PYTHON = "/usr/bin/python3"
_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"GET /whoami HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.split(b"\\r\\n", 1)[0].decode())
"""


def test_the_unix_socket_admits_by_peer_credentials(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "root (the test connects as another uid)")
    # a directory a stranger may enter (the test's own is private to root)
    public = Path(tempfile.mkdtemp(prefix="hostlog-http-"))
    os.chmod(public, 0o755)

    async def main() -> tuple[str, str]:
        async with ServedSpool(tmp_path, modules=[MODULE], unix_path=public / "http.sock") as served:
            path = str(served.unix_path)
            assert os.stat(path).st_mode & 0o777 == 0o660
            mine = await asyncio.to_thread(subprocess.run, [SYSTEM_PYTHON, "-c", _CLIENT, path],
                                           capture_output=True, text=True, timeout=20)
            # a stranger: the file mode keeps them out; loosened, the credential check still does
            os.chmod(path, 0o666)
            theirs = await asyncio.to_thread(subprocess.run, [SYSTEM_PYTHON, "-c", _CLIENT, path],
                                             capture_output=True, text=True, timeout=20, user=65534,
                                             group=65534, extra_groups=[])
            return mine.stdout.strip(), theirs.stdout.strip() + theirs.stderr

    try:
        mine, theirs = run(main())
    finally:
        shutil.rmtree(public, ignore_errors=True)
    assert mine == "HTTP/1.1 200 OK"
    assert theirs.startswith("HTTP/1.1 403"), theirs


def test_https_with_the_tls_certificates_and_client_certificates_when_asked(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path / "pki")
    tls = (f'[tls]\nca = "{pki["ca"]}"\ncert = "{pki["server"]}"\nkey = "{pki["server_key"]}"\n'
           "require_client_cert = true\n")

    async def main() -> None:
        async with ServedSpool(tmp_path / "agent", extra_config=tls, unix=False, modules=[MODULE],
                               scheme="https") as served:
            secret = KeyStore(keys_path(tmp_path / "agent")).create("ops", ["read"])
            auth = {"Authorization": "Bearer " + secret}
            with_cert = ssl.create_default_context(cafile=str(pki["ca"]))
            with_cert.load_cert_chain(pki["client"], pki["client_key"])
            status, body, _ = await _get(served.url + "/whoami", headers=auth, ssl=with_cert)
            assert status == 200 and '"ops"' in body
            # no client certificate: refused in the handshake, before any request is read
            without = ssl.create_default_context(cafile=str(pki["ca"]))
            with pytest.raises(aiohttp.ClientError):
                await _get(served.url + "/whoami", headers=auth, ssl=without)
            # plain HTTP to the TLS port: no answer served
            with pytest.raises(aiohttp.ClientError):
                await _get(served.url.replace("https://", "http://") + "/whoami", headers=auth)

    (tmp_path / "agent").mkdir()
    run(main())
