"""Tests for hostlog.config: schema, defaults, sizes/durations and error reporting."""

from __future__ import annotations

import os
import re
import sys
import types
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hostlog.config as config_module
from hostlog.config import (
    App,
    ConfigError,
    Endpoint,
    FileSource,
    JournaldSource,
    SyslogSource,
    default_config,
    default_config_toml,
    format_duration,
    format_size,
    journal_readable,
    load_config,
    parse_config,
    parse_duration,
    parse_endpoint,
    parse_size,
)

# The example of DESIGN.md ("Configuration (TOML)"), verbatim.
DESIGN_EXAMPLE = """\
[agent]
hostname = "web-1"                 # default: the machine's host name
state_dir = "/var/lib/hostlog"     # spool, checkpoints, cursors, agent id

[spool]
max_bytes = "10GiB"
max_age = "30d"
segment_bytes = "64MiB"
fsync = "batch"                    # batch | always | never
fsync_interval = "50ms"
on_full = "block"                  # block | drop_oldest
key_file = "/etc/hostlog/spool.key"   # created 0600 on first start if missing

[[source]]
type = "syslog"
listen = ["udp://127.0.0.1:5514", "tcp://127.0.0.1:5514", "unix:///run/hostlog/dev-log"]

[[source]]
type = "journald"                  # directory = "..." reads journal files instead

[[source]]
type = "file"
paths = ["/var/log/nginx/*.log"]
app = "nginx"

[[app]]                            # a supervised application
name = "web"
command = ["python3", "-m", "http.server", "8080"]
restart = "on-failure"             # always | on-failure | never

[[forward]]
name = "central"
targets = ["tls://central-1:7514", "tls://central-2:7514"]
mode = "replicate"                 # failover | replicate
min_acks = 2

[receiver]                         # makes this agent a central node
listen = "tls://0.0.0.0:7514"

[tls]
ca = "/etc/hostlog/tls/ca.pem"
cert = "/etc/hostlog/tls/agent.pem"
key = "/etc/hostlog/tls/agent.key"

[control]
socket = "/run/hostlog/control.sock"
metrics = "127.0.0.1:9880"
"""

GiB = 1024**3
MiB = 1024**2
KiB = 1024


def problems_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.problems


def only_problem(text: str) -> tuple[str, str]:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


SYSLOG = '[[source]]\ntype = "syslog"\nlisten = ["udp://127.0.0.1:5514"]\n'


# --------------------------------------------------------------------------
# The documented example and the defaults
# --------------------------------------------------------------------------


def test_design_example_parses() -> None:
    config = parse_config(DESIGN_EXAMPLE)
    assert config.agent.hostname == "web-1"
    assert config.agent.state_dir == Path("/var/lib/hostlog")
    assert config.spool_dir == Path("/var/lib/hostlog/spool")
    assert config.spool.max_bytes == 10 * GiB
    assert config.spool.max_age == 30 * 86400
    assert config.spool.segment_bytes == 64 * MiB
    assert config.spool.fsync == "batch"
    assert config.spool.fsync_interval == 0.05
    assert config.spool.on_full == "block"
    assert config.spool_key_file() == Path("/etc/hostlog/spool.key")

    syslog, journald, files = config.sources
    assert isinstance(syslog, SyslogSource)
    assert isinstance(journald, JournaldSource)
    assert isinstance(files, FileSource)
    # Default names count per type.
    assert [s.name for s in config.sources] == ["syslog-0", "journald-0", "file-0"]
    assert syslog.endpoints() == [
        Endpoint("udp", "127.0.0.1", 5514, None),
        Endpoint("tcp", "127.0.0.1", 5514, None),
        Endpoint("unix", None, None, "/run/hostlog/dev-log"),
    ]
    assert journald.start == "now" and journald.directory is None and journald.matches == []
    assert files.paths == ["/var/log/nginx/*.log"] and files.app == "nginx"

    (app,) = config.apps
    assert app.name == "web"
    assert app.command == ["python3", "-m", "http.server", "8080"]
    assert app.restart == "on-failure"

    (forward,) = config.forwards
    assert forward.mode == "replicate" and forward.min_acks == 2
    assert [e.host for e in forward.endpoints()] == ["central-1", "central-2"]

    assert config.receiver is not None
    assert config.receiver.endpoint() == Endpoint("tls", "0.0.0.0", 7514, None)
    assert config.tls is not None and config.tls.cert == Path("/etc/hostlog/tls/agent.pem")
    assert config.tls.require_client_cert is False
    assert config.control.socket == Path("/run/hostlog/control.sock")
    assert config.control.metrics == "127.0.0.1:9880"


def test_empty_file_gives_documented_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    config = parse_config("")
    assert config.agent.state_dir == tmp_path / "state" / "hostlog"
    assert config.agent.hostname  # the machine's host name
    spool = config.spool
    assert (spool.max_bytes, spool.max_age, spool.segment_bytes) == (10 * GiB, 30 * 86400, 64 * MiB)
    assert (spool.fsync, spool.fsync_interval, spool.on_full, spool.key_file) == ("batch", 0.05, "block", None)
    assert config.spool_key_file() == tmp_path / "state" / "hostlog" / "spool.key"
    assert config.sources == [] and config.apps == [] and config.forwards == []
    assert config.receiver is None and config.tls is None
    assert config.control.socket == tmp_path / "run" / "hostlog" / "control.sock"
    assert config.control.metrics is None


def test_section_defaults() -> None:
    config = parse_config(
        SYSLOG
        + '[[source]]\ntype = "file"\npaths = ["/var/log/*.log"]\n'
        + '[[app]]\nname = "a"\ncommand = ["true"]\n'
        + '[[forward]]\nname = "f"\ntargets = ["tcp://127.0.0.1:7514"]\n'
        + '[receiver]\nlisten = "tcp://127.0.0.1:7514"\n'
    )
    syslog, files = config.sources
    assert isinstance(syslog, SyslogSource) and isinstance(files, FileSource)
    assert syslog.max_message == 64 * KiB and syslog.rate_limit is None and syslog.app is None
    assert (files.start, files.max_line, files.encoding, files.poll_interval) == ("end", 64 * KiB, "utf-8", 1.0)
    assert files.multiline_start is None
    app = config.apps[0]
    assert (app.restart, app.backoff_initial, app.backoff_max, app.backoff_reset) == ("on-failure", 1, 60, 60)
    assert (app.start_retries, app.stop_signal, app.stop_timeout) == (5, "SIGTERM", 10)
    assert (app.autostart, app.max_line, app.env) == (True, 64 * KiB, {})
    assert (app.cwd, app.user, app.group) == (None, None, None)
    forward = config.forwards[0]
    assert (forward.mode, forward.min_acks, forward.window, forward.token) == ("failover", 1, 64, None)
    assert config.receiver is not None and config.receiver.token is None


def test_explicit_names_and_rate_limits() -> None:
    config = parse_config(
        '[[source]]\ntype = "syslog"\nname = "edge"\nlisten = ["udp://[::1]:514"]\n'
        "rate_limit = { rate = 2.5 }\nper_host_rate_limit = { rate = 10, burst = 50 }\n"
        '[[source]]\ntype = "syslog"\nlisten = ["unix-stream:///run/x.sock"]\n'
    )
    edge, other = config.sources
    assert edge.name == "edge" and other.name == "syslog-1"
    assert isinstance(edge, SyslogSource) and isinstance(other, SyslogSource)
    assert edge.endpoints() == [Endpoint("udp", "::1", 514, None)]
    assert edge.endpoints()[0].url == "udp://[::1]:514"
    assert edge.rate_limit is not None and (edge.rate_limit.rate, edge.rate_limit.burst) == (2.5, 3)
    assert edge.per_host_rate_limit is not None and edge.per_host_rate_limit.burst == 50
    assert other.endpoints() == [Endpoint("unix-stream", None, None, "/run/x.sock")]


@pytest.mark.parametrize(
    ("given", "stored"), [("TERM", "SIGTERM"), ("SIGINT", "SIGINT"), ("hup", "SIGHUP"), (9, "SIGKILL")]
)
def test_stop_signal_is_normalised(given: object, stored: str) -> None:
    text = '[[app]]\nname = "a"\ncommand = ["true"]\nstop_signal = ' + (
        f'"{given}"' if isinstance(given, str) else str(given)
    )
    assert parse_config(text).apps[0].stop_signal == stored


def test_relative_state_dir_resolves_against_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse_config('[agent]\nstate_dir = "state"\n')
    assert config.agent.state_dir == tmp_path / "state"
    assert config.spool_dir == tmp_path / "state" / "spool"


def test_control_socket_default_without_runtime_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    config = parse_config(f'[agent]\nstate_dir = "{tmp_path}"\n')
    assert config.control.socket == tmp_path / "control.sock"


def test_root_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("XDG_STATE_HOME", "/elsewhere")
    config = parse_config("")
    assert config.agent.state_dir == Path("/var/lib/hostlog")
    assert config.control.socket == Path("/run/hostlog/control.sock")


# --------------------------------------------------------------------------
# Built-in default config
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Errors: key paths and messages
# --------------------------------------------------------------------------


def test_unknown_key_suggests_the_close_one() -> None:
    assert only_problem('[spool]\nmax_byte = "1GiB"\n') == (
        "spool.max_byte",
        "unknown key 'max_byte' (did you mean 'max_bytes'?)",
    )


def test_unknown_key_in_a_source_and_at_top_level() -> None:
    key, message = only_problem(SYSLOG + 'lisen = ["udp://127.0.0.1:1"]\n')
    assert key == "source[0].lisen"
    assert message == "unknown key 'lisen' (did you mean 'listen'?)"
    # The TOML name is "source"; the attribute name is not accepted in a file.
    assert only_problem("[[sources]]\ntype = 'syslog'\n") == (
        "sources",
        "unknown key 'sources' (did you mean 'source'?)",
    )


def test_bad_size() -> None:
    key, message = only_problem('[spool]\nmax_bytes = "10 gigs"\n')
    assert key == "spool.max_bytes"
    assert "invalid size '10 gigs'" in message and "KiB, MiB, GiB" in message


def test_size_below_minimum() -> None:
    key, message = only_problem('[spool]\nsegment_bytes = "1KiB"\n')
    assert key == "spool.segment_bytes"
    assert "at least 64KiB" in message


def test_max_bytes_below_segment_bytes() -> None:
    key, message = only_problem('[spool]\nmax_bytes = "1MiB"\n')
    assert key == "spool.max_bytes"
    assert "segment_bytes" in message


def test_bad_duration() -> None:
    key, message = only_problem(
        '[[app]]\nname = "a"\ncommand = ["true"]\nbackoff_initial = "5m"\n'
    )
    assert key == "app[0].backoff_initial"
    assert "'min' for minutes" in message
    key, message = only_problem('[spool]\nfsync_interval = "soon"\n')
    assert key == "spool.fsync_interval"
    assert "ms, s, min, h, d" in message


def test_bad_literal() -> None:
    key, message = only_problem('[spool]\nfsync = "sometimes"\n')
    assert key == "spool.fsync"
    assert message == "expected 'batch', 'always' or 'never', got a string ('sometimes')"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("udp://127.0.0.1", "missing port"),
        ("tcp://127.0.0.1:70000", "port must be a number from 1 to 65535"),
        ("tcp://::1:5514", "IPv6 addresses in brackets"),
        ("http://127.0.0.1:80", "unsupported scheme 'http'"),
        ("unix://relative.sock", "absolute path"),
        ("udp://999.0.0.1:514", "not a valid IPv4 address"),
        ("127.0.0.1:514", "expected one of udp://"),
        ("unix:///" + "x" * 200, "limited to 107 bytes"),
    ],
)
def test_bad_listen_url(url: str, fragment: str) -> None:
    key, message = only_problem(
        f'[[source]]\ntype = "syslog"\nlisten = ["udp://127.0.0.1:5514", "{url}"]\n'
    )
    assert key == "source[0].listen[1]"
    assert fragment in message and url in message


def test_listen_as_string_says_so() -> None:
    key, message = only_problem('[[source]]\ntype = "syslog"\nlisten = "udp://127.0.0.1:5514"\n')
    assert key == "source[0].listen"
    assert "must be a list of URLs" in message


def test_forward_target_scheme() -> None:
    key, message = only_problem('[[forward]]\nname = "f"\ntargets = ["udp://127.0.0.1:7514"]\n')
    assert key == "forward[0].targets[0]"
    assert "unsupported scheme 'udp'" in message


def test_command_as_string() -> None:
    key, message = only_problem('[[app]]\nname = "web"\ncommand = "python3 -m http.server"\n')
    assert key == "app[0].command"
    assert message == 'command must be a list of arguments (argv), e.g. ["python3", "-m", "http.server"]'


def test_duplicate_names() -> None:
    text = (
        '[[app]]\nname = "web"\ncommand = ["a"]\n'
        '[[app]]\nname = "db"\ncommand = ["b"]\n'
        '[[app]]\nname = "web"\ncommand = ["c"]\n'
    )
    assert only_problem(text) == ("app[2].name", "duplicate app name 'web' (also used by app[0])")


def test_duplicate_with_a_default_source_name() -> None:
    text = SYSLOG + '[[source]]\ntype = "syslog"\nname = "syslog-0"\nlisten = ["udp://127.0.0.1:5515"]\n'
    key, message = only_problem(text)
    assert key == "source[1].name"
    assert "duplicate source name 'syslog-0'" in message and "default name of source[0]" in message


def test_unknown_source_type() -> None:
    text = SYSLOG + '[[source]]\ntype = "journald"\n[[source]]\ntype = "sylog"\n'
    assert only_problem(text) == (
        "source[2].type",
        "unknown source type 'sylog' (expected one of: syslog, journald, file)",
    )


def test_missing_source_type() -> None:
    key, message = only_problem('[[source]]\nlisten = ["udp://127.0.0.1:1"]\n')
    assert key == "source[0].type"
    assert "missing" in message and "syslog, journald, file" in message


def test_missing_required_key() -> None:
    assert only_problem('[[app]]\nname = "web"\n') == ("app[0].command", "missing required key")


def test_section_written_as_table_instead_of_array() -> None:
    key, message = only_problem('[source]\ntype = "syslog"\n')
    assert key == "source"
    assert "[[source]]" in message


def test_wrong_value_type_names_the_toml_type() -> None:
    assert only_problem('[[app]]\nname = "a"\ncommand = ["a"]\nenv = { PORT = 8080 }\n') == (
        "app[0].env.PORT",
        "expected a string, got an integer (8080)",
    )


def test_relative_paths_are_refused() -> None:
    key, message = only_problem('[spool]\nkey_file = "spool.key"\n')
    assert key == "spool.key_file"
    assert "must be an absolute path" in message
    key, message = only_problem('[[source]]\ntype = "file"\npaths = ["logs/*.log"]\n')
    assert key == "source[0].paths[0]"
    assert "absolute" in message


def test_file_source_checks() -> None:
    problems = dict(
        problems_of('[[source]]\ntype = "file"\npaths = ["/a"]\nmultiline_start = "("\nencoding = "nope"\n')
    )
    assert "invalid regular expression" in problems["source[0].multiline_start"]
    assert "unknown encoding 'nope'" in problems["source[0].encoding"]


def test_min_acks_bounds() -> None:
    text = '[[forward]]\nname = "c"\ntargets = ["tcp://a:1", "tcp://b:1"]\nmode = "replicate"\nmin_acks = 3\n'
    key, message = only_problem(text)
    assert key == "forward[0].min_acks"
    assert "number of targets (2)" in message
    key, message = only_problem(text.replace('mode = "replicate"\n', "").replace("3", "2"))
    assert key == "forward[0].min_acks" and "replicate" in message


def test_tls_listener_needs_certificates() -> None:
    text = '[[source]]\ntype = "syslog"\nlisten = ["udp://127.0.0.1:514", "tls://0.0.0.0:6514"]\n'
    assert only_problem(text) == ("source[0].listen[1]", "a tls:// listener needs [tls] with cert and key")
    assert only_problem('[tls]\ncert = "/etc/c.pem"\n') == ("tls.key", "cert and key must be given together")


def test_bad_metrics_address() -> None:
    key, message = only_problem('[control]\nmetrics = "localhost"\n')
    assert key == "control.metrics"
    assert "missing port" in message


def test_bad_signal() -> None:
    key, message = only_problem('[[app]]\nname = "a"\ncommand = ["a"]\nstop_signal = "TERMINATE"\n')
    assert key == "app[0].stop_signal"
    assert "unknown signal 'TERMINATE'" in message


def test_all_problems_are_reported_at_once() -> None:
    problems = problems_of('[spool]\nmax_bytes = "x"\nfsync = "no"\n[agent]\nhostnme = "a"\n')
    assert [key for key, _ in problems] == ["agent.hostnme", "spool.max_bytes", "spool.fsync"]


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


# --------------------------------------------------------------------------
# Sizes, durations, endpoints
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100B", 100),
        ("100", 100),
        (100, 100),
        ("512KiB", 512 * KiB),
        ("64MiB", 64 * MiB),
        ("10GiB", 10 * GiB),
        ("1TiB", 1024**4),
        ("10 GiB", 10 * GiB),
        ("64mib", 64 * MiB),
        ("1.5GiB", 3 * GiB // 2),
        ("10KB", 10_000),
        ("2GB", 2 * 10**9),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "10Gi", "10 G", "-1", -1, "1.5", "1e3KiB", True, 1.5, "10GiB5"])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)  # type: ignore[arg-type]


def test_parse_size_refuses_ambiguous_unit() -> None:
    with pytest.raises(ValueError, match="ambiguous; write MiB"):
        parse_size("64M")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50ms", 0.05),
        ("30s", 30),
        ("5min", 300),
        ("2h", 7200),
        ("30d", 30 * 86400),
        ("1w", 7 * 86400),
        ("250us", 0.00025),
        ("30", 30),
        (30, 30),
        (0.5, 0.5),
        ("1h30min", 5400),
        ("1h 30min 10s", 5410),
        ("1.5h", 5400),
        ("2 hours", 7200),
    ],
)
def test_parse_duration(text: str | float, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5m", "1h30", "soon", "-1s", -1, "1x", True, float("nan"), "1h-5min"])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)  # type: ignore[arg-type]


SIZE_FACTORS = {
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "KB": 1000,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
}


@given(
    st.integers(min_value=0, max_value=10**9),
    st.sampled_from(sorted(SIZE_FACTORS)),
    st.sampled_from(["", " "]),
    st.booleans(),
)
def test_size_round_trip(n: int, unit: str, space: str, lower: bool) -> None:
    text = f"{n}{space}{unit.lower() if lower else unit}"
    assert parse_size(text) == n * SIZE_FACTORS[unit]


@given(st.integers(min_value=0, max_value=2**62))
def test_format_size_round_trip(n: int) -> None:
    assert parse_size(format_size(n)) == n
    assert parse_size(n) == n == parse_size(str(n))


# (numerator, denominator) of each unit in seconds, written out independently of the module.
DURATION_FACTORS = {
    "us": (1, 10**6),
    "ms": (1, 1000),
    "s": (1, 1),
    "min": (60, 1),
    "h": (3600, 1),
    "d": (86400, 1),
    "w": (604800, 1),
}


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(sorted(DURATION_FACTORS)))
def test_duration_round_trip(n: int, unit: str) -> None:
    num, den = DURATION_FACTORS[unit]
    assert parse_duration(f"{n}{unit}") == n * num / den


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(DURATION_FACTORS))),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from(["", " "]),
)
def test_compound_duration_adds_up(parts: list[tuple[int, str]], sep: str) -> None:
    text = sep.join(f"{n}{unit}" for n, unit in parts)
    expected = sum(Fraction(n * DURATION_FACTORS[u][0], DURATION_FACTORS[u][1]) for n, u in parts)
    assert parse_duration(text) == float(expected)


@given(st.integers(min_value=1, max_value=10**7), st.sampled_from(["ms", "s", "min", "h", "d"]))
def test_format_duration_round_trip(n: int, unit: str) -> None:
    seconds = parse_duration(f"{n}{unit}")
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.text(max_size=20))
def test_parsers_fail_only_with_value_error(text: str) -> None:
    for parse in (parse_size, parse_duration):
        try:
            result = parse(text)
        except ValueError:
            continue
        assert result >= 0


def test_parse_endpoint() -> None:
    assert parse_endpoint("tcp://localhost:5514") == Endpoint("tcp", "localhost", 5514, None)
    assert parse_endpoint("tls://[2001:db8::1]:6514").host == "2001:db8::1"
    assert parse_endpoint("unix:///dev/log") == Endpoint("unix", None, None, "/dev/log")
    with pytest.raises(ValueError, match="unsupported scheme 'udp'"):
        parse_endpoint("udp://127.0.0.1:1", ("tcp", "tls"))


def test_docs_list_every_key() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "config.md").read_text()
    models = [
        config_module.Agent,
        config_module.Spool,
        config_module.RateLimit,
        SyslogSource,
        JournaldSource,
        FileSource,
        App,
        config_module.Forward,
        config_module.Receiver,
        config_module.Tls,
        config_module.Control,
    ]
    for model in models:
        for name, field in model.model_fields.items():
            if name != "type":
                assert f"| `{field.alias or name}` |" in doc, f"{model.__name__}.{name} is not in docs/config.md"
    for section in ("agent", "spool", "source", "app", "forward", "receiver", "tls", "control"):
        assert f"`[{section}]`" in doc or f"`[[{section}]]`" in doc


def test_models_can_be_built_in_python() -> None:
    app = App(name="web", command=["true"], stop_signal="INT")
    assert app.stop_signal == "SIGINT"
    config = config_module.Config(source=[SyslogSource(listen=["udp://127.0.0.1:1"])], app=[app])
    assert config.sources[0].name == "syslog-0" and config.apps == [app]
