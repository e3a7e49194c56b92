"""The spool key as a systemd credential: $CREDENTIALS_DIRECTORY/spool.key."""

import os

from hostlog.agent.credentials import credential_key_file
from hostlog.spool.keys import Keyring, create_key_file


def test_none_without_credentials_directory():
    assert credential_key_file({}) is None
    assert credential_key_file({"CREDENTIALS_DIRECTORY": ""}) is None


def test_none_for_a_relative_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "creds").mkdir()
    create_key_file(tmp_path / "creds" / "spool.key")
    assert credential_key_file({"CREDENTIALS_DIRECTORY": "creds"}) is None


def test_none_when_the_credential_is_not_passed(tmp_path):
    (tmp_path / "other.key").write_text("x")
    assert credential_key_file({"CREDENTIALS_DIRECTORY": str(tmp_path)}) is None
    assert credential_key_file({"CREDENTIALS_DIRECTORY": str(tmp_path / "missing")}) is None


def test_none_when_spool_key_is_not_a_regular_file(tmp_path):
    (tmp_path / "spool.key").mkdir()
    assert credential_key_file({"CREDENTIALS_DIRECTORY": str(tmp_path)}) is None


def test_the_credential_file_when_present(tmp_path):
    key = tmp_path / "spool.key"
    create_key_file(key)
    os.chmod(key, 0o400)  # as systemd leaves it: read-only, owner only
    found = credential_key_file({"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert found == key
    ring = Keyring.load(found)
    assert ring.current_id == 1 and len(ring.current) == 32


def test_reads_the_process_environment_by_default(tmp_path, monkeypatch):
    create_key_file(tmp_path / "spool.key")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert credential_key_file() == tmp_path / "spool.key"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert credential_key_file() is None


def test_another_credential_name(tmp_path):
    create_key_file(tmp_path / "hostlog-spool.key")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert credential_key_file(env) is None
    assert credential_key_file(env, name="hostlog-spool.key") == tmp_path / "hostlog-spool.key"
