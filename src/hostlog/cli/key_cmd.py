"""``hostlog key``: API keys of the HTTP server (docs/http.md, "Keys").

``create NAME --scope read`` prints the secret once, as its last line; the agent
keeps only its hash, under its state dir. The running agent sees a new or
revoked key at the next request: no reload needed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from hostlog.http.keys import SCOPES, KeyStore, KeyStoreError, keys_path


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("key", help="API keys of the HTTP server",
                       description="Create, list and revoke the API keys of the agent's HTTP server.")
    key_sub = p.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    create = key_sub.add_parser("create", help="make a key; prints its secret once, as the last line")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--scope", action="append", choices=SCOPES, required=True,
                        help="what the key may do (repeatable): read, ingest, admin")
    _add_config(create)
    listing = key_sub.add_parser("list", help="the keys: name, scopes, created, revoked")
    _add_config(listing)
    revoke = key_sub.add_parser("revoke", help="revoke a key (effective at the next request)")
    revoke.add_argument("name", metavar="NAME")
    _add_config(revoke)


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE",
                   help="the agent's config file (its [agent] state_dir); default: the built-in default")


def store(args: argparse.Namespace) -> KeyStore:
    from hostlog.config import default_config, load_config
    config = load_config(Path(args.config)) if args.config else default_config()
    return KeyStore(keys_path(config.agent.state_dir))


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(args: argparse.Namespace) -> int:
    keys = store(args)
    try:
        if args.key_command == "create":
            secret = keys.create(args.name, list(dict.fromkeys(args.scope)))
            print(f"key {args.name!r} created, scopes {', '.join(sorted(set(args.scope)))}; "
                  "its secret is shown this once:", file=sys.stderr)
            print(secret)
            return 0
        if args.key_command == "list":
            rows = keys.keys()
            print(f"{'NAME':<24} {'SCOPES':<20} {'CREATED':<21} REVOKED")
            for key in rows:
                print(f"{key.name:<24} {','.join(sorted(key.scopes)):<20} {_when(key.created):<21} "
                      f"{_when(key.revoked)}")
            return 0
        if args.key_command == "revoke":
            keys.revoke(args.name)
            print(f"key {args.name!r} revoked")
            return 0
    except KeyStoreError as exc:
        print(f"hostlog key: {exc}", file=sys.stderr)
        return 1
    return 2
