"""TLS between agents: SSL contexts, the peer check after the handshake, and
certificates for sites without a PKI of their own (docs/tls.md).

Two halves:

* I/O with :mod:`ssl`: :func:`server_context` (a receiver: demands a client
  certificate from the ``[tls] ca``), :func:`client_context` (a forwarder:
  verifies the receiver and its host name), then :func:`check_peer` on the
  side that verified the peer, before a byte of the peer protocol is read.
* Certificates with :mod:`cryptography`, no I/O except :func:`write_pem` and
  :func:`load_ca`: :func:`make_ca`, :func:`issue`. ``hostlog tls`` and the
  tests use them.

Why a check after the handshake when OpenSSL verifies the chain: OpenSSL
checks a client certificate's purpose only when it *has* an
ExtendedKeyUsage extension; one without the extension passes as good for any
purpose. A receiver should take records only from certificates issued to be
clients, so :func:`check_certificate` refuses a client certificate without
``clientAuth``, whatever else verified.
"""

from __future__ import annotations

import datetime as dt
import errno
import ipaddress
import os
import ssl
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hostlog.errors import PeerRefusedError

__all__ = [
    "PrivateKey", "Role", "check_certificate", "check_peer", "client_context", "issue", "load_ca", "make_ca",
    "peer_name", "server_context", "validity", "write_pem",
]

PrivateKey = ec.EllipticCurvePrivateKey
"""The keys :func:`make_ca` and :func:`issue` make: EC P-256."""

Role = Literal["client", "server"]
"""What the *peer* is: ``"client"`` when we are the server checking a client."""

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
# A certificate's notBefore is set this far back: a peer whose clock is a
# little behind the issuer's accepts a certificate issued a moment ago.
BACKDATE = dt.timedelta(minutes=5)


# --- contexts -------------------------------------------------------------

def server_context(ca: Path | None, cert: Path, key: Path, *, require_client_cert: bool = True) -> ssl.SSLContext:
    """A TLS server context: this agent's ``cert``/``key``, clients verified
    against ``ca`` only (never the system's trust store: a public CA vouches
    for names, not for which agents may send records).

    ``require_client_cert``: a client without a certificate fails the
    handshake; otherwise (CERT_OPTIONAL) one that presents a certificate must
    still present a valid one, and :func:`check_peer` refuses the one without.
    ``ca`` None (only without ``require_client_cert``): no client certificate
    is asked for, none verified.
    TLS 1.2 at least; 1.3 is negotiated whenever the client has it.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.load_cert_chain(str(cert), str(key))
    if ca is None:
        if require_client_cert:
            raise ValueError("require_client_cert needs a CA to verify client certificates with")
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx.load_verify_locations(cafile=str(ca))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A TLS client context: the server verified against ``ca`` (or the
    system's trust store when ``ca`` is None) and its host name checked;
    ``cert``/``key`` presented when given (``key`` None: the key is in the
    ``cert`` file). TLS 1.2 at least."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=None if ca is None else str(ca))
    ctx.minimum_version = MINIMUM_VERSION
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert is not None:
        ctx.load_cert_chain(str(cert), None if key is None else str(key))
    elif key is not None:
        raise ValueError("a client key without its certificate")
    return ctx


# --- the peer check -------------------------------------------------------

def check_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket, *, role: Role) -> str:
    """After the handshake, on the side that verified the peer: refuse a peer
    certificate hostlog does not accept (:func:`check_certificate`), or none.

    ``role`` is what the peer is: ``"client"`` on a receiver checking a
    forwarder, ``"server"`` on a forwarder checking its receiver.
    Returns the peer's name for logs; raises :class:`PeerRefusedError`.
    With asyncio: ``check_peer(writer.get_extra_info("ssl_object"), role="client")``.
    """
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise PeerRefusedError(f"the {role} presented no certificate")
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise PeerRefusedError(f"the {role}'s certificate does not parse: {exc}") from exc
    return check_certificate(cert, role=role)


def check_certificate(cert: x509.Certificate, *, role: Role, now: dt.datetime | None = None) -> str:
    """The checks of :func:`check_peer` on a parsed certificate: within its
    validity period (OpenSSL checks that too), and its ExtendedKeyUsage:

    * a client (``role="client"``) needs the extension, with ``clientAuth``;
    * a server needs ``serverAuth`` if it has the extension (servers of public
      CAs have it; one without is what OpenSSL and every browser accept).

    Returns :func:`peer_name`; raises :class:`PeerRefusedError` saying why.
    """
    try:
        name = peer_name(cert)
        now = dt.datetime.now(dt.UTC) if now is None else now
        not_before, not_after = validity(cert)
        if now < not_before:
            raise PeerRefusedError(f"{role} {name}: certificate not valid before {not_before:%Y-%m-%d %H:%M:%S}Z")
        if now > not_after:
            raise PeerRefusedError(f"{role} {name}: certificate expired {not_after:%Y-%m-%d %H:%M:%S}Z")
        try:
            usages: x509.ExtendedKeyUsage | None = cert.extensions.get_extension_for_class(
                x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = None
    except ValueError as exc:  # a malformed or duplicated extension
        raise PeerRefusedError(f"the {role}'s certificate does not parse: {exc}") from exc
    if role == "client":
        if usages is None:
            raise PeerRefusedError(f"client {name}: certificate has no extended key usage; "
                                   "a client certificate needs clientAuth")
        if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
            raise PeerRefusedError(f"client {name}: certificate's extended key usage lacks clientAuth")
    elif usages is not None and ExtendedKeyUsageOID.SERVER_AUTH not in usages:
        raise PeerRefusedError(f"server {name}: certificate's extended key usage lacks serverAuth")
    return name


def peer_name(cert: x509.Certificate) -> str:
    """A certificate's name for logs: its subject CN, else its first
    subjectAltName, else its serial number. Whatever the peer put there, the
    answer is one printable line of at most 128 characters."""
    for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value
        text = value if isinstance(value, str) else value.decode("utf-8", "replace")
        if text:
            return _printable(text)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = None
    if names:
        return _printable(str(next(iter(names)).value))
    return f"serial {cert.serial_number:x}"


def _printable(text: str, limit: int = 128) -> str:
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def validity(cert: x509.Certificate) -> tuple[dt.datetime, dt.datetime]:
    """A certificate's notBefore and notAfter, aware datetimes in UTC."""
    try:
        return cert.not_valid_before_utc, cert.not_valid_after_utc
    except AttributeError:  # cryptography < 42: naive datetimes in UTC
        return (cert.not_valid_before.replace(tzinfo=dt.UTC),
                cert.not_valid_after.replace(tzinfo=dt.UTC))


# --- certificates ---------------------------------------------------------

def make_ca(common_name: str, *, days: int = 3650,
            not_before: dt.datetime | None = None) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed CA that signs agent certificates (and nothing below it:
    path length 0). ``not_before`` defaults to a few minutes ago."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _period(days, not_before)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca_cert: x509.Certificate, ca_key: CertificateIssuerPrivateKeyTypes, name: str, *,
          days: int = 825, server: bool = True, client: bool = True, sans: list[str] | None = None,
          not_before: dt.datetime | None = None) -> tuple[x509.Certificate, PrivateKey]:
    """A certificate for the agent ``name``, signed by the CA.

    Subject CN ``name``; subjectAltNames ``name`` and every one of ``sans``
    (an IP address becomes an IPAddress entry, anything else a DNS name).
    ExtendedKeyUsage serverAuth (``server``) and clientAuth (``client``): by
    default both, since an agent forwards (a client) and, as a central node,
    receives (a server). It never outlives the CA: the end of its validity is
    the CA's if that comes first.
    """
    if not (server or client):
        raise ValueError("a certificate for neither server nor client use")
    if not name:
        raise ValueError("a certificate needs a name")
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _period(days, not_before)
    end = min(end, validity(ca_cert)[1])
    usages = [oid for oid, wanted in ((ExtendedKeyUsageOID.SERVER_AUTH, server),
                                      (ExtendedKeyUsageOID.CLIENT_AUTH, client)) if wanted]
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            # ECDSA signatures in the handshake (ECDHE-ECDSA, TLS 1.3) are all the key does
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(_general_names([name, *(sans or [])])), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(aki, critical=False)
            .sign(ca_key, _signature_hash(ca_key)))
    return cert, key


def write_pem(cert: x509.Certificate, key: PrivateKeyTypes, cert_path: Path, key_path: Path) -> None:
    """Write the certificate (0644) and its unencrypted key (0600, PKCS#8).

    Never overwrites: an existing file (either one) raises
    :class:`FileExistsError` naming it, before anything is written; a key
    written for a certificate that then cannot be is removed again.
    """
    for path in (key_path, cert_path):
        if os.path.lexists(path):
            raise _exists(path)
    _create(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()), 0o600)
    try:
        _create(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise


def load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    """A CA certificate and its key from PEM files, as :func:`write_pem` left them.

    Raises OSError when a file cannot be read, ValueError (naming the file)
    when it is not what it should be: not a certificate, not a CA, not an
    unencrypted key that can sign, or not the key of that certificate.
    """
    data = cert_path.read_bytes()
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ValueError(f"{cert_path}: not a PEM certificate") from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ValueError(f"{cert_path}: not a CA certificate (no basicConstraints CA:TRUE)")
    data = key_path.read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError(f"{key_path}: the key is encrypted; hostlog tls needs it unencrypted") from None
    except ValueError:
        raise ValueError(f"{key_path}: not a PEM private key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, dsa.DSAPrivateKey,
                            ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        raise ValueError(f"{key_path}: a key of a type that cannot sign certificates")
    if key.public_key() != cert.public_key():
        raise ValueError(f"{key_path}: not the key of {cert_path}")
    return cert, key


def _period(days: int, not_before: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise ValueError(f"a certificate valid for {days} days")
    start = dt.datetime.now(dt.UTC) - BACKDATE if not_before is None else not_before
    return start, start + dt.timedelta(days=days)


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False,
               crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
                         crl_sign=crl_sign, encipher_only=False, decipher_only=False)


def _general_names(names: list[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses, each once, in the order given."""
    out: list[x509.GeneralName] = []
    for text in names:
        entry: x509.GeneralName
        try:
            entry = x509.IPAddress(ipaddress.ip_address(text))
        except ValueError:
            entry = x509.DNSName(text)
        if entry not in out:
            out.append(entry)
    return out


def _signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    # Ed25519 and Ed448 sign without a separate hash
    return None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()


def _exists(path: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "exists; not overwriting it", str(path))


def _create(path: Path, data: bytes, mode: int) -> None:
    """A new file holding ``data``, with ``mode`` from its creation on (O_EXCL:
    never one that exists, nor through a symlink), synced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except FileExistsError:
        raise _exists(path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # exactly this mode, whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
