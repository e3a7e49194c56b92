"""API keys of the HTTP server: created, listed and revoked by ``hostlog key``,
checked by the server on every request.

A key is a random secret shown once, when it is created; the agent keeps only
its SHA-256 (a key is 256 random bits, so a plain hash is as strong as a slow
one, and checking it costs microseconds). The store is one JSON file,
``<state_dir>/http/keys.json`` (0600 in a 0700 directory), written whole to a
temporary file and renamed, so a reader never sees half of it. The server
reads it again whenever it changes on disk: a key created or revoked takes
effect with the next request, without a reload.

Scopes: ``read`` (every GET), ``ingest`` (``POST /api/v1/logs``), ``admin``
(everything). Comparison is constant-time (:func:`hmac.compare_digest` over
every stored hash, not a dict lookup that stops early).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SCOPES", "Key", "KeyStoreError", "KeyStore", "grants", "keys_path"]

SCOPES = ("read", "ingest", "admin")
#: what a secret starts with: tells a reader of a config or a shell history what it is
SECRET_PREFIX = "hlk_"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FORMAT = 1


class KeyStoreError(ValueError):
    """A key command that cannot be done (a bad name, a name taken, no such key)."""


def keys_path(state_dir: Path) -> Path:
    """Where the agent whose state is in ``state_dir`` keeps its keys."""
    return state_dir / "http" / "keys.json"


def grants(scopes: frozenset[str], wanted: str) -> bool:
    """Whether a key with ``scopes`` may do what needs ``wanted``."""
    return wanted in scopes or "admin" in scopes


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    scopes: frozenset[str]
    digest: str  # sha256 hex of the secret
    created: float  # seconds since the epoch
    revoked: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "scopes": sorted(self.scopes), "sha256": self.digest,
                "created": self.created, "revoked": self.revoked}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Key:
        return cls(str(data["name"]), frozenset(str(s) for s in data["scopes"]), str(data["sha256"]),
                   float(data["created"]), None if data.get("revoked") is None else float(data["revoked"]))


class KeyStore:
    """The keys in ``path``; :meth:`check` re-reads the file when it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: list[Key] = []
        self._stamp: tuple[int, int, int] | None = None  # (ino, size, mtime_ns) last read

    # -- read side (the server) -------------------------------------------------
    def keys(self) -> list[Key]:
        """Every key, revoked ones included, as the file holds them now."""
        self._refresh()
        return list(self._keys)

    def check(self, secret: str) -> Key | None:
        """The live key whose secret this is, or None. Every stored digest is
        compared, in constant time each, whether or not one matched."""
        self._refresh()
        digest = _digest(secret)
        found: Key | None = None
        for key in self._keys:
            if hmac.compare_digest(key.digest, digest) and key.revoked is None:
                found = key
        return found

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._keys, self._stamp = [], None
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        self._keys = self._load()
        self._stamp = stamp

    def _load(self) -> list[Key]:
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") != _FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {_FORMAT}")
            return [Key.from_json(k) for k in data["keys"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # a damaged key file admits nobody, rather than everybody
            raise KeyStoreError(f"{self.path}: cannot read the key file: {exc}") from None

    # -- write side (``hostlog key``) ----------------------------------------------
    def create(self, name: str, scopes: list[str]) -> str:
        """A new key; returns its secret (the only time it is known)."""
        if not _NAME_RE.fullmatch(name):
            raise KeyStoreError(f"invalid key name {name!r}: letters, digits, '.', '_' and '-', "
                            "up to 64, starting with a letter or digit")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise KeyStoreError(f"invalid scope {', '.join(unknown) or '(none)'}: one or more of "
                            f"{', '.join(SCOPES)}")
        keys = self._load()
        if any(k.name == name and k.revoked is None for k in keys):
            raise KeyStoreError(f"a key named {name!r} exists; revoke it first or choose another name")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        keys = [k for k in keys if k.name != name]  # a revoked key of that name gives way
        keys.append(Key(name, frozenset(scopes), _digest(secret), time.time()))
        self._save(keys)
        return secret

    def revoke(self, name: str) -> Key:
        keys = self._load()
        for i, key in enumerate(keys):
            if key.name == name and key.revoked is None:
                keys[i] = Key(key.name, key.scopes, key.digest, key.created, time.time())
                self._save(keys)
                return keys[i]
        raise KeyStoreError(f"no live key named {name!r}")

    def _save(self, keys: list[Key]) -> None:
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = directory / f".{self.path.name}.{os.getpid()}.tmp"
        data = json.dumps({"format": _FORMAT, "keys": [k.as_json() for k in keys]}, indent=1)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
