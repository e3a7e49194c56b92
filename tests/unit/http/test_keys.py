"""API keys: what `hostlog key` writes and what the server checks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.http.keys import KeyStore, KeyStoreError, grants, keys_path


def test_a_created_key_is_known_by_its_secret_only_and_stored_as_a_hash(tmp_path: Path) -> None:
    store = KeyStore(keys_path(tmp_path))
    secret = store.create("ops", ["read", "ingest"])
    assert secret.startswith("hlk_") and len(secret) > 40
    key = store.check(secret)
    assert key is not None and key.name == "ops" and key.scopes == {"read", "ingest"}
    text = keys_path(tmp_path).read_text()
    assert secret not in text and secret[4:] not in text
    assert stat.S_IMODE(os.stat(keys_path(tmp_path)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keys_path(tmp_path).parent).st_mode) == 0o700
    assert store.check(secret + "x") is None and store.check("") is None


def test_revoked_keys_are_refused_and_names_are_unique_among_live_keys(tmp_path: Path) -> None:
    store = KeyStore(keys_path(tmp_path))
    first = store.create("ops", ["read"])
    with pytest.raises(KeyStoreError, match="exists"):
        store.create("ops", ["read"])
    other = KeyStore(keys_path(tmp_path))  # the server's copy, read before the revocation
    assert other.check(first) is not None
    store.revoke("ops")
    assert other.check(first) is None  # the file changed: read again
    second = store.create("ops", ["admin"])  # the name is free again
    assert other.check(second) is not None and other.check(first) is None
    with pytest.raises(KeyStoreError, match="no live key"):
        store.revoke("nobody")


@pytest.mark.parametrize("name, scopes, problem", [
    ("", ["read"], "invalid key name"), ("a b", ["read"], "invalid key name"),
    ("../x", ["read"], "invalid key name"), ("ok", ["write"], "invalid scope write"),
    ("ok", [], "invalid scope"),
])
def test_bad_names_and_scopes_are_refused_by_name(tmp_path: Path, name, scopes, problem) -> None:
    with pytest.raises(KeyStoreError, match=problem):
        KeyStore(keys_path(tmp_path)).create(name, scopes)


def test_a_damaged_key_file_admits_nobody_and_says_so(tmp_path: Path) -> None:
    store = KeyStore(keys_path(tmp_path))
    secret = store.create("ops", ["read"])
    keys_path(tmp_path).write_text("{not json")
    with pytest.raises(KeyStoreError, match="cannot read the key file"):
        store.check(secret)
    keys_path(tmp_path).write_text(json.dumps({"format": 99, "keys": []}))
    with pytest.raises(KeyStoreError, match="format 99"):
        store.check(secret)


def test_admin_grants_every_scope() -> None:
    assert grants(frozenset({"admin"}), "ingest") and grants(frozenset({"read"}), "read")
    assert not grants(frozenset({"read"}), "ingest") and not grants(frozenset(), "read")


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=80))
def test_no_other_text_is_taken_for_a_key(tmp_path_factory, guess: str) -> None:
    directory = tmp_path_factory.mktemp("keys")
    store = KeyStore(keys_path(directory))
    secret = store.create("ops", ["read"])
    assert (store.check(guess) is not None) == (guess == secret)


def test_the_command_prints_the_secret_once_as_its_last_line(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nstate_dir = "{tmp_path}/state"\n')
    cli = [sys.executable, "-m", "hostlog.cli.main", "key"]
    made = subprocess.run(cli + ["create", "ops", "--scope", "read", "-c", str(config)],
                          capture_output=True, text=True, timeout=30, check=True)
    secret = made.stdout.strip().splitlines()[-1]
    assert KeyStore(keys_path(tmp_path / "state")).check(secret) is not None
    listed = subprocess.run(cli + ["list", "-c", str(config)], capture_output=True, text=True,
                            timeout=30, check=True).stdout
    assert "ops" in listed and "read" in listed and secret not in listed
    again = subprocess.run(cli + ["create", "ops", "--scope", "read", "-c", str(config)],
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "exists" in again.stderr
    subprocess.run(cli + ["revoke", "ops", "-c", str(config)], timeout=30, check=True, capture_output=True)
    assert KeyStore(keys_path(tmp_path / "state")).check(secret) is None
