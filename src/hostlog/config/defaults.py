"""The built-in default configuration and the example config file."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hostlog.config.loader import _validate
from hostlog.config.schema import Config, Spool
from hostlog.config.units import format_duration, format_size
from hostlog.paths import builtin_state_dir

# --------------------------------------------------------------------------
# Built-in default
# --------------------------------------------------------------------------

JOURNAL_DIRS = ("/var/log/journal", "/run/log/journal")


def journal_readable(dirs: Iterable[str | os.PathLike[str]] = JOURNAL_DIRS) -> bool:
    """True when the journald collector can work here: ``systemd.journal``
    (systemd-python) imports and at least one journal file is readable.

    Journal directories are world-listable while the files in them are not
    (root:systemd-journal 0640), so the check looks at the files: the per-machine
    directory ``<dir>/<machine-id>/`` holds ``system.journal`` and ``user-UID.journal``.
    """
    try:
        import systemd.journal  # noqa: F401  (only whether it imports matters)
    except ImportError:
        return False
    for base in dirs:
        base = Path(base)
        try:
            candidates = list(base.glob("*.journal")) + list(base.glob("*/*.journal"))
        except OSError:
            continue
        if any(os.access(f, os.R_OK) for f in candidates):
            return True
    return False


DEFAULT_SYSLOG_LISTEN = ("udp://127.0.0.1:5514", "tcp://127.0.0.1:5514")


def default_config(*, journald: bool | None = None) -> Config:
    """The configuration ``hostlog agent`` runs without ``-c``.

    State in :func:`hostlog.paths.default_state_dir` unless ``HOSTLOG_STATE_DIR`` names another
    directory (then the control socket is ``<that dir>/control.sock`` too, so an
    instance started that way shares nothing with the user's usual agent). A
    syslog source "syslog" on 127.0.0.1:5514 (UDP and TCP), and a journald source
    "journald" when :func:`journal_readable` (``journald`` decides instead
    when given). No apps, no forwards, no metrics.
    """
    state_dir, override = builtin_state_dir()
    sources: list[dict[str, Any]] = [{"type": "syslog", "name": "syslog", "listen": list(DEFAULT_SYSLOG_LISTEN)}]
    if journal_readable() if journald is None else journald:
        sources.append({"type": "journald", "name": "journald"})
    config = _validate({"agent": {"state_dir": str(state_dir)}, "source": sources}, None)
    if override:
        # Set after validation: a long test directory must not make the default invalid.
        config.control.socket = state_dir / "control.sock"
    return config


def _commented(key: str, value: str, comment: str) -> str:
    """An optional-setting line with its comment aligned like the others."""
    line = f'#{key} = "{value}"'
    return f"{line:<37}# {comment}"


def default_config_toml(*, journald: bool = True) -> str:
    """An example config file, the one packages install as /etc/hostlog/agent.toml.

    Settings are those of :func:`default_config` (journald included unless
    ``journald=False``). Lines of the form ``#key = value`` / ``#[section]`` are
    optional settings that removing the ``#`` enables (systemd's convention); the
    file stays valid with all of them enabled.
    """
    spool = Spool()
    journald_block = (
        '\n[[source]]\ntype = "journald"\nname = "journald"\n#start = "now"                       # now | beginning\n'
        '#matches = ["_SYSTEMD_UNIT=nginx.service"]\n'
        if journald
        else ""
    )
    return f"""\
# hostlog agent configuration. Every key is described in docs/config.md;
# check a file with: hostlog config check FILE
# A line "#key = value" shows an optional setting (mostly its default):
# remove the "#" to use it. Paths must be absolute.

[agent]
#hostname = "web-1"                  # default: the machine's host name
#state_dir = "/var/lib/hostlog"      # default: /var/lib/hostlog for root, else $XDG_STATE_HOME/hostlog

[spool]
#max_bytes = "{format_size(spool.max_bytes)}"
#max_age = "{format_duration(spool.max_age)}"
#segment_bytes = "{format_size(spool.segment_bytes)}"
{_commented("fsync", spool.fsync, "batch | always | never")}
#fsync_interval = "{format_duration(spool.fsync_interval)}"
{_commented("on_full", spool.on_full, "block | drop_oldest")}
#key_file = "/etc/hostlog/spool.key" # default: <state_dir>/spool.key, created 0600 on first start

# Syslog over UDP and TCP. More listeners: "udp://[::1]:5514",
# "tls://0.0.0.0:6514" (needs [tls]), "unix:///run/hostlog/dev-log".
[[source]]
type = "syslog"
name = "syslog"
listen = [{", ".join(f'"{u}"' for u in DEFAULT_SYSLOG_LISTEN)}]
#max_message = "64KiB"
#rate_limit = {{ rate = 1000, burst = 5000 }}
{journald_block}
# Tail files.
#[[source]]
#type = "file"
#name = "nginx"
#paths = ["/var/log/nginx/*.log"]
#app = "nginx"
#start = "end"                       # end | beginning
#multiline_start = '^\\S'

# A supervised application: started, restarted, its stdout/stderr collected.
#[[app]]
#name = "web"
#command = ["python3", "-m", "http.server", "8080"]
#restart = "on-failure"              # always | on-failure | never
#stop_signal = "TERM"
#stop_timeout = "10s"

# Ship the spool to other agents.
#[[forward]]
#name = "central"
#targets = ["tls://central-1:7514", "tls://central-2:7514"]
#mode = "replicate"                  # failover | replicate
#min_acks = 2

# Accept records from other agents (a central node).
#[receiver]
#listen = "tls://0.0.0.0:7514"

#[tls]
#ca = "/etc/hostlog/tls/ca.pem"
#cert = "/etc/hostlog/tls/agent.pem"
#key = "/etc/hostlog/tls/agent.key"

[control]
#socket = "/run/hostlog/control.sock" # default for root; else $XDG_RUNTIME_DIR/hostlog/control.sock
#metrics = "127.0.0.1:9880"          # Prometheus endpoint; default: off
"""
