"""A CA and certificates for TLS tests, good and bad, made with hostlog.forward.tls."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from hostlog.forward.tls import PrivateKey, issue, make_ca, write_pem

SERVER_NAME = "localhost"
CLIENT_NAME = "edge-1"


def make_test_pki(directory: Path) -> dict[str, Path]:
    """Certificates in ``directory`` (made if needed; its files must not exist yet).

    Every entry is a PEM path; each certificate ``X`` has its key at ``X_key``:

    ``ca``             the CA the servers and clients trust
    ``server``         ``localhost`` (SANs localhost, 127.0.0.1, ::1), serverAuth + clientAuth
    ``client``         ``edge-1``, an edge agent: clientAuth + serverAuth
    ``expired``        a client certificate whose validity ended days ago
    ``other_ca``       a client certificate signed by a different CA
    ``no_eku``         a client certificate without an ExtendedKeyUsage extension
                       (OpenSSL takes it for any purpose; hostlog does not)
    ``server_only``    a client certificate with serverAuth alone
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_cert, ca_key = make_ca("hostlog test CA", days=30, not_before=now - dt.timedelta(days=20))
    other_cert, other_key = make_ca("hostlog test CA", days=30, not_before=now - dt.timedelta(days=20))
    paths: dict[str, Path] = {}

    def keep(stem: str, cert: x509.Certificate, key: PrivateKey) -> None:
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        write_pem(cert, key, cert_path, key_path)
        paths[stem], paths[f"{stem}_key"] = cert_path, key_path

    keep("ca", ca_cert, ca_key)
    keep("server", *issue(ca_cert, ca_key, SERVER_NAME, days=2, sans=["127.0.0.1", "::1"]))
    keep("client", *issue(ca_cert, ca_key, CLIENT_NAME, days=2, sans=["127.0.0.1"]))
    keep("expired", *issue(ca_cert, ca_key, "expired-1", days=1, not_before=now - dt.timedelta(days=10)))
    # same subject as the real CA: only the signature tells them apart
    keep("other_ca", *issue(other_cert, other_key, "intruder-1", days=2))
    keep("no_eku", *without_eku(*issue(ca_cert, ca_key, "no-eku-1", days=2), ca_key))
    keep("server_only", *issue(ca_cert, ca_key, "server-only-1", days=2, client=False))
    return paths


def without_eku(cert: x509.Certificate, key: PrivateKey, ca_key: PrivateKey) -> tuple[x509.Certificate, PrivateKey]:
    """``cert`` signed again by ``ca_key`` with every extension but ExtendedKeyUsage."""
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(cert.not_valid_before_utc).not_valid_after(cert.not_valid_after_utc))
    for extension in cert.extensions:
        if not isinstance(extension.value, x509.ExtendedKeyUsage):
            builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(ca_key, hashes.SHA256()), key
