"""Tests for hostlog.config.loader: reading a config file or TOML text, and
what it says when it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostlog.config import ConfigError, load_config, parse_config
from tests.support.config import SYSLOG


def test_toml_syntax_error_reports_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[agent]\nhostname = "a"\nstate_dir = \n[spool]\n', path="agent.toml")
    error = info.value
    assert error.line == 3 and error.column is not None
    assert error.path == "agent.toml"
    assert str(error).startswith("agent.toml: invalid TOML at line 3, column")


def test_load_config_reads_file_and_labels_errors(tmp_path: Path) -> None:
    good = tmp_path / "agent.toml"
    good.write_text(SYSLOG)
    assert load_config(good).sources[0].name == "syslog-0"

    bad = tmp_path / "bad.toml"
    bad.write_text('[spool]\nmax_bytes = "lots"\n[agent]\nstate_dirr = "/x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0] == f"{bad}: agent.state_dirr: unknown key 'state_dirr' (did you mean 'state_dir'?)"
    assert lines[1].startswith(f"{bad}: spool.max_bytes: invalid size 'lots'")


def test_load_config_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.path == str(missing)
    assert info.value.problems == [("", "cannot read config file: No such file or directory")]


def test_load_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[agent]\nhostname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
