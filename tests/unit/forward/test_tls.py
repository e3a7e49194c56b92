"""TLS between agents: real handshakes on loopback with the contexts of
hostlog.forward.tls, the peer check after them, and the certificates its
CA functions make."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hostlog.errors import PeerRefusedError
from hostlog.forward.tls import (
    Role,
    check_certificate,
    check_peer,
    client_context,
    issue,
    load_ca,
    make_ca,
    peer_name,
    server_context,
    write_pem,
)
from tests.support.pki import CLIENT_NAME, SERVER_NAME, make_test_pki

TIMEOUT = 10.0
RECORDS = b"records\n"  # what a client sends right after its handshake


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def receiver(pki: dict[str, Path], **kwargs: bool) -> ssl.SSLContext:
    return server_context(pki["ca"], pki["server"], pki["server_key"], **kwargs)


def forwarder(pki: dict[str, Path], cert: str | None) -> ssl.SSLContext:
    if cert is None:
        return client_context(pki["ca"], None, None)
    return client_context(pki["ca"], pki[cert], pki[f"{cert}_key"])


# --- a receiver on a thread: one connection, handled as hostlog's receiver does ---

@dataclass
class ServerSaw:
    handshake_error: ssl.SSLError | None = None
    refused: str | None = None   # check_peer's reason
    name: str | None = None      # check_peer's answer
    version: str | None = None
    read: bytes | None = None    # application data the server read; None: it read none
    crash: BaseException | None = None


@dataclass
class ClientSaw:
    error: OSError | None = None
    answer: bytes | None = None
    server_name: str | None = None
    version: str | None = None
    events: list[str] = field(default_factory=list)


def _serve_one(listener: socket.socket, ctx: ssl.SSLContext, saw: ServerSaw) -> None:
    try:
        conn, _ = listener.accept()
        conn.settimeout(TIMEOUT)
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
        except ssl.SSLError as exc:
            saw.handshake_error = exc
            conn.close()
            return
        with tls:
            saw.version = tls.version()
            try:
                saw.name = check_peer(tls, role="client")
            except PeerRefusedError as exc:
                saw.refused = str(exc)
                return  # refused before any record is read
            saw.read = tls.recv(len(RECORDS))
            tls.sendall(b"ok\n")
    except BaseException as exc:  # reported by exchange()
        saw.crash = exc


def exchange(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
             server_hostname: str = SERVER_NAME) -> tuple[ServerSaw, ClientSaw]:
    """One connection on 127.0.0.1: the client handshakes, sends RECORDS and
    reads the answer; the server handshakes, checks the client, reads."""
    server, client = ServerSaw(), ClientSaw()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        thread = threading.Thread(target=_serve_one, args=(listener, server_ctx, server), daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as raw, \
                    client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                client.events.append("handshake")
                client.version = tls.version()
                client.server_name = check_peer(tls, role="server")
                tls.sendall(RECORDS)
                client.answer = tls.recv(100)
        except OSError as exc:  # SSLError, a reset, a broken pipe
            client.error = exc
        thread.join(TIMEOUT)
    assert not thread.is_alive(), "the server thread did not finish"
    if server.crash is not None:
        raise server.crash
    return server, client


def _verify_message(error: BaseException | None) -> str:
    assert isinstance(error, ssl.SSLCertVerificationError), repr(error)
    return str(error.verify_message)


# --- handshakes -----------------------------------------------------------

def test_a_good_client_is_accepted_and_named_over_tls_1_3(pki: dict[str, Path]) -> None:
    server, client = exchange(receiver(pki), forwarder(pki, "client"))
    assert client.error is None and client.answer == b"ok\n"
    assert server.name == CLIENT_NAME and server.refused is None
    assert server.read == RECORDS
    assert server.version == client.version == "TLSv1.3"
    assert client.server_name == SERVER_NAME


def test_a_tls_1_2_client_is_accepted(pki: dict[str, Path]) -> None:
    ctx = forwarder(pki, "client")
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    server, client = exchange(receiver(pki), ctx)
    assert client.answer == b"ok\n" and server.version == "TLSv1.2" and server.name == CLIENT_NAME


def test_a_client_without_a_certificate_fails_the_handshake(pki: dict[str, Path]) -> None:
    server, client = exchange(receiver(pki), forwarder(pki, None))
    assert server.handshake_error is not None
    assert server.handshake_error.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    assert server.read is None and server.name is None
    assert client.answer in (None, b"")  # the client never gets an answer


def test_without_require_client_cert_check_peer_refuses_a_client_without_one(pki: dict[str, Path]) -> None:
    server, client = exchange(receiver(pki, require_client_cert=False), forwarder(pki, None))
    assert server.handshake_error is None
    assert server.refused == "the client presented no certificate"
    assert server.read is None
    assert client.answer in (None, b"")


@pytest.mark.parametrize(("cert", "why"), [
    ("expired", "certificate has expired"),
    ("other_ca", "unable to get local issuer certificate"),
    # its EKU has no clientAuth: OpenSSL's purpose check refuses it
    ("server_only", "unsuitable certificate purpose"),
])
def test_a_bad_client_certificate_fails_the_handshake(pki: dict[str, Path], cert: str, why: str) -> None:
    server, client = exchange(receiver(pki), forwarder(pki, cert))
    assert _verify_message(server.handshake_error) == why
    assert server.read is None and server.name is None and server.refused is None
    assert client.answer in (None, b"")


def test_a_client_certificate_without_eku_passes_openssl_and_is_refused_by_check_peer(
        pki: dict[str, Path]) -> None:
    server, client = exchange(receiver(pki), forwarder(pki, "no_eku"))
    assert server.handshake_error is None  # OpenSSL: no EKU extension, good for any purpose
    assert server.refused == ("client no-eku-1: certificate has no extended key usage; "
                              "a client certificate needs clientAuth")
    assert server.read is None
    assert client.answer in (None, b"")


def test_a_tls_1_1_client_is_refused_by_the_server(pki: dict[str, Path]) -> None:
    ctx = forwarder(pki, "client")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1 and TLSv1_1
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # what OpenSSL 3 needs to offer TLS < 1.2 at all
    server, client = exchange(receiver(pki), ctx)
    assert server.handshake_error is not None and server.handshake_error.reason == "UNSUPPORTED_PROTOCOL"
    assert isinstance(client.error, ssl.SSLError) and client.error.reason == "TLSV1_ALERT_PROTOCOL_VERSION"
    assert server.read is None and client.events == []


@pytest.mark.parametrize("hostname", [SERVER_NAME, "127.0.0.1", "::1"])
def test_the_client_accepts_the_server_under_each_of_its_names(pki: dict[str, Path], hostname: str) -> None:
    server, client = exchange(receiver(pki), forwarder(pki, "client"), server_hostname=hostname)
    assert client.answer == b"ok\n" and client.server_name == SERVER_NAME


@pytest.mark.parametrize("hostname", ["central.example", "127.0.0.2", "edge-1"])
def test_the_client_refuses_a_server_whose_certificate_is_for_another_name(
        pki: dict[str, Path], hostname: str) -> None:
    server, client = exchange(receiver(pki), forwarder(pki, "client"), server_hostname=hostname)
    assert _verify_message(client.error) in (f"Hostname mismatch, certificate is not valid for '{hostname}'.",
                                             f"IP address mismatch, certificate is not valid for '{hostname}'.")
    assert client.events == [] and server.read is None


def test_the_client_without_ca_uses_the_system_store_which_does_not_know_the_test_ca(
        pki: dict[str, Path]) -> None:
    server, client = exchange(receiver(pki), client_context(None, pki["client"], pki["client_key"]))
    # the server sends its chain up to the CA (OpenSSL builds it from the verify store)
    assert _verify_message(client.error) in ("self-signed certificate in certificate chain",
                                             "unable to get local issuer certificate")
    assert client.events == [] and server.read is None


def test_the_client_refuses_a_server_with_a_client_only_certificate(pki: dict[str, Path], tmp_path: Path) -> None:
    ca_cert, ca_key = load_ca(pki["ca"], pki["ca_key"])
    write_pem(*issue(ca_cert, ca_key, SERVER_NAME, server=False), tmp_path / "s.pem", tmp_path / "s.key")
    ctx = server_context(pki["ca"], tmp_path / "s.pem", tmp_path / "s.key")
    server, client = exchange(ctx, forwarder(pki, "client"))
    assert _verify_message(client.error) == "unsuitable certificate purpose"
    assert server.read is None


def test_the_server_trusts_its_ca_only(pki: dict[str, Path]) -> None:
    ctx = receiver(pki)
    assert ctx.cert_store_stats()["x509_ca"] == 1
    (only,) = ctx.get_ca_certs(binary_form=True)
    assert only == x509.load_pem_x509_certificate(pki["ca"].read_bytes()).public_bytes(serialization.Encoding.DER)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.verify_mode == ssl.CERT_REQUIRED
    assert receiver(pki, require_client_cert=False).verify_mode == ssl.CERT_OPTIONAL
    no_ca = server_context(None, pki["server"], pki["server_key"], require_client_cert=False)
    assert no_ca.verify_mode == ssl.CERT_NONE and no_ca.cert_store_stats()["x509_ca"] == 0
    with pytest.raises(ValueError, match="needs a CA"):
        server_context(None, pki["server"], pki["server_key"])


def test_a_server_without_ca_asks_for_no_client_certificate(pki: dict[str, Path]) -> None:
    ctx = server_context(None, pki["server"], pki["server_key"], require_client_cert=False)
    server, client = exchange(ctx, forwarder(pki, "client"))
    assert server.refused == "the client presented no certificate"  # it was never asked for one
    assert server.read is None


def test_client_context_settings(pki: dict[str, Path]) -> None:
    ctx = forwarder(pki, "client")
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ValueError, match="without its certificate"):
        client_context(pki["ca"], None, pki["client_key"])


# --- the same with asyncio, as the receiver runs: check_peer on an SSLObject ---

async def _asyncio_exchange(pki: dict[str, Path], cert: str) -> tuple[list[str], list[bytes], bytes]:
    outcomes: list[str] = []
    reads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            name = check_peer(writer.get_extra_info("ssl_object"), role="client")
        except PeerRefusedError as exc:
            outcomes.append(f"refused: {exc}")
            writer.close()  # before any record is read
            return
        outcomes.append(f"accepted: {name}")
        reads.append(await reader.readexactly(len(RECORDS)))
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=receiver(pki), ssl_handshake_timeout=TIMEOUT)
    try:
        async with asyncio.timeout(TIMEOUT):
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=forwarder(pki, cert),
                                                           server_hostname=SERVER_NAME)
            writer.write(RECORDS)
            try:
                answer = await reader.read(100)
            except (ssl.SSLError, ConnectionError):
                answer = b""
            writer.close()
    finally:
        server.close()
        await server.wait_closed()
    return outcomes, reads, answer


@pytest.mark.parametrize(("cert", "outcome", "answer"), [
    ("client", f"accepted: {CLIENT_NAME}", b"ok\n"),
    ("no_eku", "refused: client no-eku-1: certificate has no extended key usage; "
               "a client certificate needs clientAuth", b""),
])
def test_asyncio_receiver_checks_the_peer(pki: dict[str, Path], cert: str, outcome: str, answer: bytes) -> None:
    outcomes, reads, got = asyncio.run(_asyncio_exchange(pki, cert))
    assert outcomes == [outcome] and got == answer
    assert reads == ([RECORDS] if answer else [])


def test_asyncio_receiver_never_sees_a_client_that_fails_the_handshake(pki: dict[str, Path]) -> None:
    outcomes, reads, got = asyncio.run(_asyncio_exchange(pki, "expired"))
    assert outcomes == [] and reads == [] and got == b""


# --- check_certificate: what OpenSSL checks before it, and what it does not ---

def _load(pki: dict[str, Path], name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pki[name].read_bytes())


def test_check_certificate_refuses_outside_the_validity_period(pki: dict[str, Path]) -> None:
    expired = _load(pki, "expired")
    with pytest.raises(PeerRefusedError, match=r"^client expired-1: certificate expired \d{4}-"):
        check_certificate(expired, role="client")
    good = _load(pki, "client")
    early = good.not_valid_before_utc - dt.timedelta(seconds=1)
    with pytest.raises(PeerRefusedError, match="not valid before"):
        check_certificate(good, role="client", now=early)
    assert check_certificate(good, role="client", now=good.not_valid_before_utc) == CLIENT_NAME


@pytest.mark.parametrize(("cert", "role", "refusal"), [
    ("client", "client", None),
    ("client", "server", None),
    ("server", "server", None),
    ("no_eku", "client", "has no extended key usage"),
    ("no_eku", "server", None),  # a server without EKU is what every TLS client accepts
    ("server_only", "client", "lacks clientAuth"),
    ("server_only", "server", None),
])
def test_check_certificate_extended_key_usage(pki: dict[str, Path], cert: str, role: Role,
                                              refusal: str | None) -> None:
    c = _load(pki, cert)
    if refusal is None:
        assert check_certificate(c, role=role) == peer_name(c)
    else:
        with pytest.raises(PeerRefusedError, match=refusal):
            check_certificate(c, role=role)


def test_check_certificate_refuses_a_server_whose_eku_lacks_server_auth(pki: dict[str, Path]) -> None:
    ca_cert, ca_key = load_ca(pki["ca"], pki["ca_key"])
    cert, _ = issue(ca_cert, ca_key, "forwarder-1", server=False)
    refusal = "^server forwarder-1: certificate's extended key usage lacks serverAuth$"
    with pytest.raises(PeerRefusedError, match=refusal):
        check_certificate(cert, role="server")


def _bare(subject: x509.Name, sans: list[x509.GeneralName]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(0x1234).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_peer_name_is_the_cn_else_the_first_san_else_the_serial() -> None:
    cn = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x"), x509.NameAttribute(NameOID.COMMON_NAME, "a")])
    assert peer_name(_bare(cn, [x509.DNSName("b")])) == "a"
    org = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")])
    assert peer_name(_bare(org, [x509.IPAddress(ipaddress.ip_address("192.0.2.7")), x509.DNSName("b")])) == "192.0.2.7"
    assert peer_name(_bare(org, [])) == "serial 1234"
    # a name is one printable line of at most 128 characters, whatever the peer put in it
    sneaky = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web-1\nreceiver: accepted x")])
    assert peer_name(_bare(sneaky, [])) == "web-1\\x0areceiver: accepted x"
    long = peer_name(_bare(org, [x509.DNSName("a" * 300)]))
    assert long == "a" * 125 + "..."


# --- the certificates make_ca and issue make --------------------------------

E = TypeVar("E", bound=x509.ExtensionType)


def _ext(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


def test_make_ca_makes_a_p256_ca_that_signs_certificates_only() -> None:
    ca, key = make_ca("Example CA", days=10)
    assert isinstance(key.curve, ec.SECP256R1)
    assert ca.subject == ca.issuer and ca.subject.rfc4514_string() == "CN=Example CA"
    ca.verify_directly_issued_by(ca)
    assert ca.signature_hash_algorithm is not None and ca.signature_hash_algorithm.name == "sha256"
    bc = _ext(ca, x509.BasicConstraints)
    assert bc.critical and bc.value == x509.BasicConstraints(ca=True, path_length=0)
    ku = _ext(ca, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not (ku.value.key_encipherment or ku.value.key_agreement or ku.value.data_encipherment)
    ski = _ext(ca, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    assert _ext(ca, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == dt.timedelta(days=10)
    assert ca.not_valid_before_utc < dt.datetime.now(dt.UTC)


def test_issue_makes_a_leaf_for_tls_clients_and_servers() -> None:
    ca, ca_key = make_ca("Example CA")
    cert, key = issue(ca, ca_key, "web-1", sans=["web-1.example.net", "10.0.0.5", "2001:db8::5", "web-1"])
    assert isinstance(key.curve, ec.SECP256R1) and cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "CN=web-1" and cert.issuer == ca.subject
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha256"
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert not (ku.value.key_cert_sign or ku.value.crl_sign or ku.value.key_encipherment or ku.value.key_agreement)
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH,
                                                             ExtendedKeyUsageOID.CLIENT_AUTH]
    assert list(_ext(cert, x509.SubjectAlternativeName).value) == [
        x509.DNSName("web-1"), x509.DNSName("web-1.example.net"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.5")), x509.IPAddress(ipaddress.ip_address("2001:db8::5"))]
    assert _ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(ca, x509.SubjectKeyIdentifier).value.digest
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=825)


@pytest.mark.parametrize(("server", "client", "usages"), [
    (True, False, [ExtendedKeyUsageOID.SERVER_AUTH]),
    (False, True, [ExtendedKeyUsageOID.CLIENT_AUTH]),
])
def test_issue_for_one_use(server: bool, client: bool, usages: list[x509.ObjectIdentifier]) -> None:
    ca, ca_key = make_ca("Example CA")
    cert, _ = issue(ca, ca_key, "n", server=server, client=client)
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == usages


def test_issue_names_an_ip_address_as_one_and_never_outlives_its_ca() -> None:
    ca, ca_key = make_ca("Example CA", days=30)
    cert, _ = issue(ca, ca_key, "192.0.2.7", days=825)
    assert list(_ext(cert, x509.SubjectAlternativeName).value) == [x509.IPAddress(ipaddress.ip_address("192.0.2.7"))]
    assert cert.not_valid_after_utc == ca.not_valid_after_utc


@pytest.mark.parametrize("call", [
    lambda ca, key: issue(ca, key, "n", server=False, client=False),
    lambda ca, key: issue(ca, key, "n", days=0),
    lambda ca, key: issue(ca, key, ""),
])
def test_issue_refuses_nonsense(call: Callable[[x509.Certificate, ec.EllipticCurvePrivateKey], object]) -> None:
    ca, ca_key = make_ca("Example CA")
    with pytest.raises(ValueError):
        call(ca, ca_key)


# --- files ----------------------------------------------------------------

def test_write_pem_modes_and_contents(tmp_path: Path) -> None:
    ca, key = make_ca("Example CA")
    write_pem(ca, key, tmp_path / "ca.pem", tmp_path / "ca.key")
    assert stat.S_IMODE(os.stat(tmp_path / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "ca.pem").st_mode) == 0o644
    cert2, key2 = load_ca(tmp_path / "ca.pem", tmp_path / "ca.key")
    assert cert2 == ca and key2.public_key() == key.public_key()


def test_write_pem_never_overwrites_and_writes_nothing_then(tmp_path: Path) -> None:
    ca, key = make_ca("Example CA")
    (tmp_path / "ca.pem").write_text("mine")
    with pytest.raises(FileExistsError) as raised:
        write_pem(ca, key, tmp_path / "ca.pem", tmp_path / "ca.key")
    assert raised.value.filename == str(tmp_path / "ca.pem")
    assert not (tmp_path / "ca.key").exists() and (tmp_path / "ca.pem").read_text() == "mine"
    (tmp_path / "ca.pem").unlink()
    (tmp_path / "ca.key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError, match="ca.key"):
        write_pem(ca, key, tmp_path / "ca.pem", tmp_path / "ca.key")
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "ca.pem").exists()


def test_load_ca_refuses_what_is_not_a_usable_ca(pki: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not the key of"):
        load_ca(pki["ca"], pki["client_key"])
    with pytest.raises(ValueError, match="not a CA certificate"):
        load_ca(pki["client"], pki["client_key"])
    with pytest.raises(ValueError, match="not a PEM certificate"):
        load_ca(pki["ca_key"], pki["ca_key"])
    ca, key = load_ca(pki["ca"], pki["ca_key"])
    locked = tmp_path / "locked.key"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(ValueError, match="encrypted"):
        load_ca(pki["ca"], locked)
    with pytest.raises(FileNotFoundError):
        load_ca(pki["ca"], tmp_path / "missing.key")
