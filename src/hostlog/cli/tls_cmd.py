"""``hostlog tls``: a CA and agent certificates for sites without a PKI (docs/tls.md)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from cryptography import x509

DEFAULT_DIR = Path("/etc/hostlog/tls")
DEFAULT_CA_NAME = "hostlog CA"
# NAME is a file name in DIR too: no path separators, no hidden files
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("tls", help="make a CA and agent certificates",
                       description="A private CA and certificates for tls:// forwarding between agents.")
    tls_sub = p.add_subparsers(dest="tls_command", metavar="ACTION", required=True)

    ca = tls_sub.add_parser("init-ca", help="make a CA: DIR/ca.pem and DIR/ca.key",
                            description="Make a self-signed CA in DIR (ca.pem, ca.key). Refuses to overwrite.")
    _add_dir(ca)
    ca.add_argument("--name", default=DEFAULT_CA_NAME, metavar="CN",
                    help=f"the CA's common name (default: {DEFAULT_CA_NAME!r})")
    ca.add_argument("--days", type=_days, default=3650, metavar="N", help="valid for N days (default: 3650)")

    issue = tls_sub.add_parser("issue", help="make a certificate for an agent: DIR/NAME.pem and DIR/NAME.key",
                               description="Make a certificate for NAME signed by DIR/ca.pem and DIR/ca.key, "
                                           "and print the [tls] lines for the agent's config.")
    issue.add_argument("name", metavar="NAME", help="the agent's host name: CN, first subjectAltName, file name")
    _add_dir(issue)
    issue.add_argument("--san", action="append", default=[], metavar="HOST_OR_IP",
                       help="another subjectAltName, a DNS name or an IP address (repeatable)")
    issue.add_argument("--days", type=_days, default=825, metavar="N", help="valid for N days (default: 825)")
    usage = issue.add_mutually_exclusive_group()
    usage.add_argument("--server-only", action="store_true",
                       help="serverAuth only: a receiver that never forwards")
    usage.add_argument("--client-only", action="store_true",
                       help="clientAuth only: an agent that only forwards")


def _add_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, metavar="DIR",
                   help=f"where the files are (default: {DEFAULT_DIR})")


def _days(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of days: {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"invalid number of days: {value!r} (at least 1)")
    return n


def run(args: argparse.Namespace) -> int:
    try:
        if args.tls_command == "init-ca":
            return init_ca(args.dir, args.name, args.days)
        return issue(args.dir, args.name, args.san, args.days,
                     server=not args.client_only, client=not args.server_only)
    except FileExistsError as exc:
        print(f"hostlog tls: {exc.filename} exists; not overwriting it", file=sys.stderr)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"hostlog tls: {where}{exc.strerror or exc}", file=sys.stderr)
    except ValueError as exc:
        print(f"hostlog tls: {exc}", file=sys.stderr)
    return 1


def init_ca(directory: Path, name: str, days: int) -> int:
    from hostlog.forward.tls import make_ca, write_pem

    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    cert, key = make_ca(name, days=days)
    directory.mkdir(parents=True, exist_ok=True)
    write_pem(cert, key, cert_path, key_path)
    print(f"wrote {cert_path} (CA {name!r}, valid until {_until(cert)}) and {key_path}")
    print(f"copy {cert_path} to every agent; keep {key_path} secret (offline once the agents have certificates)")
    return 0


def issue(directory: Path, name: str, sans: list[str], days: int, *, server: bool, client: bool) -> int:
    from hostlog.forward import tls

    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r}: a NAME is letters, digits, '.', '_' and '-', starting with a letter or digit")
    ca_path, ca_key_path = directory / "ca.pem", directory / "ca.key"
    if not ca_path.exists():
        raise ValueError(f"no CA in {directory}: {ca_path} does not exist "
                         f"(make one with: hostlog tls init-ca --dir {directory})")
    ca_cert, ca_key = tls.load_ca(ca_path, ca_key_path)
    cert, key = tls.issue(ca_cert, ca_key, name, days=days, server=server, client=client, sans=sans)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    tls.write_pem(cert, key, cert_path, key_path)
    usages = ", ".join(u for u, wanted in (("serverAuth", server), ("clientAuth", client)) if wanted)
    print(f"wrote {cert_path} ({usages}; valid until {_until(cert)}) and {key_path}", file=sys.stderr)
    print("[tls]")
    for option, path in (("ca", ca_path), ("cert", cert_path), ("key", key_path)):
        print(f"{option} = {json.dumps(str(path.absolute()))}")  # a JSON string is a TOML basic string
    return 0


def _until(cert: x509.Certificate) -> str:
    from hostlog.forward.tls import validity

    return f"{validity(cert)[1]:%Y-%m-%d}"
