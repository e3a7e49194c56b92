"""Spool keys: the master key file and the per-segment keys derived from it.

The key file is text, one key per line, ``KEY-ID BASE64(32 bytes)``; the last
line is the key that new segments use, earlier lines stay for reading old
segments (rotation = append a line). It is created 0600 on first start.

Each segment derives its own keys with HKDF-SHA256 from the master key and the
segment's random salt, so no two segments ever share an AES-GCM key and a
frame moved to another segment cannot authenticate there.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hostlog.errors import KeyFileError
from hostlog.spool.state import fsync_dir

KEY_BYTES = 32
_HKDF_INFO = b"hostlog spool segment v1"
_HEADER = (
    "# hostlog spool keys: one 'KEY-ID BASE64-KEY' per line.\n"
    "# The last line is the key new segments are written with; keep the older\n"
    "# lines as long as segments written with them exist.\n"
)


@dataclass(frozen=True, slots=True)
class SegmentKeys:
    """What HKDF gives one segment: the AES-256-GCM key, a check value stored
    in the segment header (so a wrong master key is named as such, not as
    "every frame is damaged"), and the key of the per-frame app filter."""

    data_key: bytes
    check: bytes
    bloom_key: bytes


def derive_segment_keys(master: bytes, salt: bytes) -> SegmentKeys:
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=_HKDF_INFO).derive(master)
    return SegmentKeys(data_key=okm[:32], check=okm[32:48], bloom_key=okm[48:64])


class Keyring:
    """The master keys of one key file, by key id."""

    def __init__(self, keys: dict[int, bytes], current_id: int, path: Path | None = None) -> None:
        if current_id not in keys:
            raise KeyFileError(f"current key id {current_id} is not in the key ring")
        self.keys = keys
        self.current_id = current_id
        self.path = path

    @property
    def current(self) -> bytes:
        return self.keys[self.current_id]

    def get(self, key_id: int) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            have = ", ".join(str(k) for k in sorted(self.keys)) or "none"
            where = f" {self.path}" if self.path else ""
            raise KeyFileError(
                f"key id {key_id} is not in the key file{where} (it has key ids: {have})"
            ) from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring:
        path = Path(path)
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise KeyFileError(f"key file {path} does not exist") from None
        except PermissionError:
            raise KeyFileError(f"key file {path} is not readable by this user") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"key file {path} cannot be read: {exc}") from exc
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: Path | None = None) -> Keyring:
        keys: dict[int, bytes] = {}
        current = None
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            try:
                if len(parts) != 2:
                    raise ValueError("want 'KEY-ID BASE64-KEY'")
                key_id = int(parts[0])
                if not 0 < key_id < 2**32:
                    raise ValueError("key id must be 1..4294967295")
                key = base64.b64decode(parts[1], validate=True)
                if len(key) != KEY_BYTES:
                    raise ValueError(f"key must be {KEY_BYTES} bytes, is {len(key)}")
            except ValueError as exc:
                raise KeyFileError(f"key file {path or '<text>'} line {lineno}: {exc}") from None
            keys[key_id] = key
            current = key_id
        if current is None:
            raise KeyFileError(f"key file {path or '<text>'} holds no key")
        return cls(keys, current, path)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Keyring:
        """Load the key file, creating it (0600, key id 1) if it does not exist."""
        path = Path(path)
        if not path.exists():
            create_key_file(path)
        return cls.load(path)


def create_key_file(path: Path, key_id: int = 1) -> None:
    """Write a new key file with one random key; never overwrite one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = f"{key_id} {base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process created it first: use that one
    try:
        os.write(fd, (_HEADER + line).encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def add_key(path: Path) -> int:
    """Rotate: append a new key to the key file; returns its id."""
    ring = Keyring.load(path)
    new_id = max(ring.keys) + 1
    line = f"{new_id} {base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}\n"
    from hostlog.spool.state import atomic_write

    atomic_write(path, (path.read_text() + line).encode("ascii"), mode=0o600)
    return new_id
