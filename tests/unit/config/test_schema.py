"""Tests for hostlog.config.schema: the whole file's model (Config), its sections
(agent, spool, forward, receiver, tls, control) and the checks across them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hostlog.config as config_module
from hostlog.config import App, Endpoint, FileSource, JournaldSource, SyslogSource, parse_config
from hostlog.config.rules import Rule
from tests.support.config import SYSLOG, GiB, KiB, MiB, only_problem

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


def test_max_bytes_below_segment_bytes() -> None:
    key, message = only_problem('[spool]\nmax_bytes = "1MiB"\n')
    assert key == "spool.max_bytes"
    assert "segment_bytes" in message


def test_forward_target_scheme() -> None:
    key, message = only_problem('[[forward]]\nname = "f"\ntargets = ["udp://127.0.0.1:7514"]\n')
    assert key == "forward[0].targets[0]"
    assert "unsupported scheme 'udp'" in message


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


def test_section_written_as_table_instead_of_array() -> None:
    key, message = only_problem('[source]\ntype = "syslog"\n')
    assert key == "source"
    assert "[[source]]" in message


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


def test_docs_list_every_key() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "config.md").read_text()
    models = [
        config_module.Agent,
        config_module.Spool,
        config_module.SpoolArchive,
        config_module.RateLimit,
        SyslogSource,
        JournaldSource,
        FileSource,
        App,
        config_module.Forward,
        config_module.Receiver,
        config_module.Tls,
        config_module.Control,
        config_module.Http,
        config_module.Patterns,
        Rule,
    ]
    for model in models:
        for name, field in model.model_fields.items():
            if name != "type":
                assert f"| `{field.alias or name}` |" in doc, f"{model.__name__}.{name} is not in docs/config.md"
    for section in ("agent", "spool", "source", "app", "forward", "rule", "receiver", "tls", "control", "http"):
        assert f"`[{section}]`" in doc or f"`[[{section}]]`" in doc


def test_models_can_be_built_in_python() -> None:
    app = App(name="web", command=["true"], stop_signal="INT")
    assert app.stop_signal == "SIGINT"
    config = config_module.Config(source=[SyslogSource(listen=["udp://127.0.0.1:1"])], app=[app])
    assert config.sources[0].name == "syslog-0" and config.apps == [app]


def test_a_tls_receiver_demands_client_certificates_by_default() -> None:
    tls = '[tls]\ncert = "/etc/c.pem"\nkey = "/etc/c.key"\n'
    receiver = '[receiver]\nlisten = "tls://0.0.0.0:7514"\n'
    key, message = only_problem(receiver + tls)
    assert key == "tls.ca" and "require_client_cert = false" in message
    config = parse_config(receiver + tls + 'ca = "/etc/ca.pem"\n')
    assert config.receiver is not None and config.receiver.require_client_cert is True
    # turned off in so many words, a token instead
    config = parse_config(receiver.replace("\n", '\nrequire_client_cert = false\ntoken = "t"\n', 1) + tls)
    assert config.receiver is not None and not config.receiver.require_client_cert


def test_forward_types_take_their_own_targets_and_keys() -> None:
    key, message = only_problem('[[forward]]\nname = "o"\ntype = "otlp"\ntargets = ["tcp://c:4318"]\n')
    assert key == "forward[0].targets[0]" and "http://" in message
    config = parse_config('[[forward]]\nname = "o"\ntype = "otlp"\ntargets = ["https://c/otlp/v1/logs"]\n')
    assert config.forwards[0].endpoints() == [Endpoint("https", "c", 443, "/otlp/v1/logs")]
    key, message = only_problem('[[forward]]\nname = "h"\ntargets = ["tcp://c:1"]\nshared_key = "k"\n')
    assert key == "forward[0].shared_key" and "fluent" in message
    key, _ = only_problem('[[forward]]\nname = "f"\ntype = "fluent"\ntargets = ["tcp://c:1"]\nusername = "u"\n')
    assert key == "forward[0].password"


def test_a_fluent_forward_source() -> None:
    config = parse_config('[[source]]\ntype = "forward"\nlisten = ["tcp://127.0.0.1:24224"]\nshared_key = "k"\n'
                          'users = { alice = "pw" }\n')
    source = config.sources[0]
    assert (source.name, source.type, source.users) == ("forward-0", "forward", {"alice": "pw"})
    key, message = only_problem('[[source]]\ntype = "forward"\nlisten = ["tcp://127.0.0.1:24224"]\n'
                                'users = { alice = "pw" }\n')
    assert key.startswith("source[0]") and "shared_key" in message
