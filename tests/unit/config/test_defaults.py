"""Tests for hostlog.config.defaults: the built-in default configuration and
the example config file."""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import pytest

from hostlog.config import SyslogSource, default_config, default_config_toml, journal_readable, parse_config


def test_default_config_uses_xdg_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("HOSTLOG_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    config = default_config(journald=False)
    assert config.agent.state_dir == tmp_path / "xdg" / "hostlog"
    assert [(s.type, s.name) for s in config.sources] == [("syslog", "syslog")]
    syslog = config.sources[0]
    assert isinstance(syslog, SyslogSource)
    assert syslog.listen == ["udp://127.0.0.1:5514", "tcp://127.0.0.1:5514"]
    assert config.apps == [] and config.forwards == [] and config.control.metrics is None


def test_default_config_without_xdg_uses_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("HOSTLOG_STATE_DIR", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_config().agent.state_dir == tmp_path / ".local" / "state" / "hostlog"


def test_default_config_state_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOSTLOG_STATE_DIR", str(tmp_path / "s"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    config = default_config()
    assert config.agent.state_dir == tmp_path / "s"
    assert config.spool_dir == tmp_path / "s" / "spool"
    # An instance with its own state dir shares no control socket with the usual agent.
    assert config.control.socket == tmp_path / "s" / "control.sock"


def test_default_config_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("HOSTLOG_STATE_DIR", raising=False)
    assert default_config().agent.state_dir == Path("/var/lib/hostlog")


def test_default_config_adds_journald_when_readable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOSTLOG_STATE_DIR", str(tmp_path))
    config = default_config(journald=True)
    assert [(s.type, s.name) for s in config.sources] == [("syslog", "syslog"), ("journald", "journald")]


def test_journal_readable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    machine = journal_dir / "0123456789abcdef"
    machine.mkdir(parents=True)
    fake = types.ModuleType("systemd.journal")
    monkeypatch.setitem(sys.modules, "systemd", types.ModuleType("systemd"))
    monkeypatch.setitem(sys.modules, "systemd.journal", fake)
    assert journal_readable([journal_dir]) is False  # no journal file
    (machine / "system.journal").write_bytes(b"")
    assert journal_readable([tmp_path / "missing", journal_dir]) is True
    monkeypatch.setitem(sys.modules, "systemd.journal", None)  # makes the import fail
    assert journal_readable([journal_dir]) is False


def test_default_config_toml_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    text = default_config_toml()
    config = parse_config(text)
    assert [(s.type, s.name) for s in config.sources] == [("syslog", "syslog"), ("journald", "journald")]
    default = default_config()
    assert config.spool == default.spool
    assert config.sources[0] == default.sources[0]
    without = parse_config(default_config_toml(journald=False))
    assert [s.type for s in without.sources] == ["syslog"]


def test_default_config_toml_examples_are_valid() -> None:
    # Every "#key = value" / "#[section]" line is an example meant to be enabled
    # by removing the "#": with all of them enabled the file must still be valid.
    enabled = re.sub(r"(?m)^#(?=[\[A-Za-z])", "", default_config_toml())
    config = parse_config(enabled)
    assert [s.type for s in config.sources] == ["syslog", "journald", "file"]
    assert [a.name for a in config.apps] == ["web"]
    assert [f.name for f in config.forwards] == ["central"]
    assert config.receiver is not None and config.tls is not None
    assert config.control.metrics == "127.0.0.1:9880"
