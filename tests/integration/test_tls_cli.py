"""``hostlog tls init-ca`` and ``hostlog tls issue`` as an operator runs them:
the real CLI in a subprocess, its certificates checked by the openssl binary
and used for a real handshake."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from hostlog.forward.tls import check_peer, client_context, server_context
from tests.conftest import need

HOSTLOG = [sys.executable, "-m", "hostlog.cli.main"]
TIMEOUT = 30.0


def hostlog_tls(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HOSTLOG, "tls", *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT)


def openssl_verify(ca: Path, cert: Path, purpose: str) -> subprocess.CompletedProcess[str]:
    need(shutil.which("openssl") is not None, "the openssl binary")
    return subprocess.run(["openssl", "verify", "-purpose", purpose, "-CAfile", str(ca), str(cert)],
                          capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    """A CA made by ``hostlog tls init-ca`` in a directory it creates."""
    directory = tmp_path / "tls"
    res = hostlog_tls("init-ca", "--dir", directory, "--name", "Example Site CA", "--days", "30")
    assert res.returncode == 0, res.stderr
    assert f"wrote {directory / 'ca.pem'}" in res.stdout
    return directory


def test_issue_prints_the_tls_section_and_openssl_verifies_the_certificate(tls_dir: Path) -> None:
    res = hostlog_tls("issue", "web-1", "--dir", tls_dir, "--san", "127.0.0.1", "--san", "web-1.example.net")
    assert res.returncode == 0, res.stderr
    assert tomllib.loads(res.stdout) == {"tls": {"ca": str(tls_dir / "ca.pem"), "cert": str(tls_dir / "web-1.pem"),
                                                 "key": str(tls_dir / "web-1.key")}}
    assert res.stdout.splitlines()[0] == "[tls]" and len(res.stdout.splitlines()) == 4
    for purpose in ("sslserver", "sslclient"):
        check = openssl_verify(tls_dir / "ca.pem", tls_dir / "web-1.pem", purpose)
        assert check.returncode == 0 and check.stdout.strip() == f"{tls_dir / 'web-1.pem'}: OK", check
    cert = x509.load_pem_x509_certificate((tls_dir / "web-1.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((tls_dir / "ca.pem").read_bytes())
    assert ca.subject.rfc4514_string() == "CN=Example Site CA" and cert.issuer == ca.subject
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in sans] == ["web-1", "127.0.0.1", "web-1.example.net"]
    # 825 days by default, but never past the CA's 30
    assert cert.not_valid_after_utc == ca.not_valid_after_utc


def test_key_files_are_0600_and_certificates_0644(tls_dir: Path) -> None:
    assert hostlog_tls("issue", "web-1", "--dir", tls_dir).returncode == 0
    for name, mode in (("ca.key", 0o600), ("web-1.key", 0o600), ("ca.pem", 0o644), ("web-1.pem", 0o644)):
        assert stat.S_IMODE(os.stat(tls_dir / name).st_mode) == mode, name


@pytest.mark.parametrize(("flag", "usage", "refused"), [
    ("--server-only", ExtendedKeyUsageOID.SERVER_AUTH, "sslclient"),
    ("--client-only", ExtendedKeyUsageOID.CLIENT_AUTH, "sslserver"),
])
def test_one_use_certificates(tls_dir: Path, flag: str, usage: x509.ObjectIdentifier, refused: str) -> None:
    res = hostlog_tls("issue", "n-1", "--dir", tls_dir, flag, "--days", "7")
    assert res.returncode == 0, res.stderr
    cert = x509.load_pem_x509_certificate((tls_dir / "n-1.pem").read_bytes())
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [usage]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 7
    assert openssl_verify(tls_dir / "ca.pem", tls_dir / "n-1.pem", refused).returncode != 0


def test_certificates_it_issues_make_a_mutually_authenticated_connection(tls_dir: Path) -> None:
    assert hostlog_tls("issue", "central-1", "--dir", tls_dir, "--san", "127.0.0.1").returncode == 0
    assert hostlog_tls("issue", "edge-1", "--dir", tls_dir, "--client-only").returncode == 0
    d = tls_dir
    server_ctx = server_context(d / "ca.pem", d / "central-1.pem", d / "central-1.key")
    client_ctx = client_context(d / "ca.pem", d / "edge-1.pem", d / "edge-1.key")
    seen: dict[str, object] = {}

    def serve(listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(TIMEOUT)
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                seen["client"] = check_peer(tls, role="client")
                seen["read"] = tls.recv(100)
                tls.sendall(b"ok\n")
        except BaseException as exc:
            seen["error"] = exc

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        thread = threading.Thread(target=serve, args=(listener,), daemon=True)
        thread.start()
        with socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            server_name = check_peer(tls, role="server")
            tls.sendall(b"records\n")
            answer = tls.recv(100)
            version = tls.version()
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert "error" not in seen, seen
    assert (server_name, seen["client"], seen["read"], answer) == ("central-1", "edge-1", b"records\n", b"ok\n")
    assert version == "TLSv1.3"


def test_nothing_is_overwritten(tls_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in tls_dir.iterdir()}
    res = hostlog_tls("init-ca", "--dir", tls_dir)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.strip() in (f"hostlog tls: {tls_dir / 'ca.key'} exists; not overwriting it",
                                  f"hostlog tls: {tls_dir / 'ca.pem'} exists; not overwriting it")
    assert hostlog_tls("issue", "web-1", "--dir", tls_dir).returncode == 0
    cert = (tls_dir / "web-1.pem").read_bytes()
    res = hostlog_tls("issue", "web-1", "--dir", tls_dir)
    assert res.returncode == 1 and res.stdout == "" and "Traceback" not in res.stderr
    assert "web-1" in res.stderr and "not overwriting" in res.stderr
    assert (tls_dir / "web-1.pem").read_bytes() == cert
    assert all((tls_dir / name).read_bytes() == data for name, data in before.items())


def test_errors_are_one_line_and_exit_1(tmp_path: Path, tls_dir: Path) -> None:
    res = hostlog_tls("issue", "web-1", "--dir", tmp_path / "nothing")
    assert res.returncode == 1
    assert res.stderr.strip() == (f"hostlog tls: no CA in {tmp_path / 'nothing'}: {tmp_path / 'nothing' / 'ca.pem'} "
                                  f"does not exist (make one with: hostlog tls init-ca --dir {tmp_path / 'nothing'})")
    (tls_dir / "ca.key").chmod(0o600)
    (tls_dir / "ca.key").write_text("not a key\n")
    res = hostlog_tls("issue", "web-1", "--dir", tls_dir)
    assert res.returncode == 1 and res.stderr.strip() == f"hostlog tls: {tls_dir / 'ca.key'}: not a PEM private key"
    (tls_dir / "ca.key").unlink()
    res = hostlog_tls("issue", "web-1", "--dir", tls_dir)
    assert res.returncode == 1
    assert res.stderr.strip() == f"hostlog tls: {tls_dir / 'ca.key'}: No such file or directory"
    res = hostlog_tls("issue", "../web-1", "--dir", tls_dir)
    assert res.returncode == 1 and "a NAME is letters" in res.stderr
    assert not (tls_dir / "web-1.pem").exists() and not (tls_dir.parent / "web-1.pem").exists()


def test_an_unreadable_ca_key_is_an_error_not_a_traceback(tls_dir: Path) -> None:
    key = tls_dir / "ca.key"
    if os.geteuid() != 0:  # root reads a file whatever its mode
        key.chmod(0)
        res = hostlog_tls("issue", "web-1", "--dir", tls_dir)
        assert res.returncode == 1 and res.stderr.strip() == f"hostlog tls: {key}: Permission denied"
        key.chmod(0o600)
    key.unlink()
    key.mkdir()
    res = hostlog_tls("issue", "web-1", "--dir", tls_dir)
    assert res.returncode == 1 and res.stderr.strip() == f"hostlog tls: {key}: Is a directory"
    assert not (tls_dir / "web-1.pem").exists() and not (tls_dir / "web-1.key").exists()


def test_a_certificate_of_another_sites_ca_does_not_verify(tmp_path: Path, tls_dir: Path) -> None:
    other = tmp_path / "other"
    assert hostlog_tls("init-ca", "--dir", other).returncode == 0
    assert hostlog_tls("issue", "edge-9", "--dir", other).returncode == 0
    check = openssl_verify(tls_dir / "ca.pem", other / "edge-9.pem", "sslclient")
    assert check.returncode != 0 and "unable to get local issuer certificate" in check.stdout + check.stderr
