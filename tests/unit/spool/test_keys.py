"""Tests for hostlog.spool.keys: the key file, the key ring and the keys
derived per segment."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.errors import KeyFileError
from hostlog.spool.keys import KEY_BYTES, Keyring, add_key, create_key_file, derive_segment_keys


def _line(key_id: int, key: bytes) -> str:
    return f"{key_id} {base64.b64encode(key).decode()}\n"


def test_a_new_key_file_is_0600_and_holds_one_key(tmp_path: Path) -> None:
    path = tmp_path / "state" / "spool.key"
    ring = Keyring.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ring.current_id == 1 and len(ring.current) == KEY_BYTES
    assert Keyring.load_or_create(path).current == ring.current  # loaded again, not replaced


def test_create_never_overwrites_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "spool.key"
    create_key_file(path)
    before = path.read_bytes()
    create_key_file(path)
    assert path.read_bytes() == before


def test_rotation_appends_a_key_and_keeps_the_old_ones(tmp_path: Path) -> None:
    path = tmp_path / "spool.key"
    first = Keyring.load_or_create(path).current
    assert add_key(path) == 2
    ring = Keyring.load(path)
    assert ring.current_id == 2 and ring.get(1) == first and ring.current != first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_last_key_of_the_file_is_the_current_one() -> None:
    a, b = b"a" * KEY_BYTES, b"b" * KEY_BYTES
    ring = Keyring.parse("# comment\n\n" + _line(7, a) + _line(3, b))
    assert ring.current_id == 3 and ring.get(7) == a


@pytest.mark.parametrize(("text", "says"), [
    ("", "holds no key"),
    ("1\n", "want 'KEY-ID BASE64-KEY'"),
    ("x " + base64.b64encode(b"k" * KEY_BYTES).decode() + "\n", "line 1"),
    ("0 " + base64.b64encode(b"k" * KEY_BYTES).decode() + "\n", "key id must be"),
    ("1 " + base64.b64encode(b"short").decode() + "\n", f"must be {KEY_BYTES} bytes"),
    ("1 not*base64\n", "line 1"),
])
def test_a_bad_key_file_is_named_with_its_line(text: str, says: str) -> None:
    with pytest.raises(KeyFileError) as info:
        Keyring.parse(text, Path("/etc/hostlog/spool.key"))
    assert says in str(info.value)


def test_a_missing_key_id_names_the_ids_the_file_has() -> None:
    ring = Keyring.parse(_line(1, b"a" * KEY_BYTES) + _line(2, b"b" * KEY_BYTES), Path("k"))
    with pytest.raises(KeyFileError, match=r"key id 9 is not in the key file k \(it has key ids: 1, 2\)"):
        ring.get(9)


def test_a_missing_key_file_is_said(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        Keyring.load(tmp_path / "nothing.key")


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=KEY_BYTES, max_size=KEY_BYTES), st.binary(min_size=16, max_size=16),
       st.binary(min_size=16, max_size=16))
def test_segment_keys_depend_on_master_and_salt(master: bytes, salt: bytes, other: bytes) -> None:
    keys = derive_segment_keys(master, salt)
    assert keys == derive_segment_keys(master, salt)
    assert len(keys.data_key) == 32 and len(keys.check) == 16 and len(keys.bloom_key) == 16
    assert len({keys.data_key, keys.check, keys.bloom_key}) == 3
    if other != salt:
        assert derive_segment_keys(master, other).data_key != keys.data_key
