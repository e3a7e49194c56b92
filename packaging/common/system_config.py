"""Print the /etc/hostlog/agent.toml that the packages install.

It is `hostlog config default` with the settings of a system service made
explicit: state in /var/lib/hostlog, the control socket in /run/hostlog, and
syslog on the standard port 514 of the loopback address (the unit grants
CAP_NET_BIND_SERVICE for it) plus a unix datagram socket in /run/hostlog.
Every replacement must apply exactly once and the result must validate, so a
change of the default text breaks the package build instead of shipping a
config that silently lost a setting.

Run with the interpreter of the staged tree: python system_config.py > agent.toml
"""

from __future__ import annotations

import sys

from hostlog.config import DEFAULT_SYSLOG_LISTEN, default_config_toml, parse_config

SYSTEM_LISTEN = ("udp://127.0.0.1:514", "tcp://127.0.0.1:514", "unix:///run/hostlog/dev-log")


def listen_line(urls: tuple[str, ...]) -> str:
    return "listen = [" + ", ".join(f'"{u}"' for u in urls) + "]"


def replace_line(text: str, startswith: str, new: str) -> str:
    lines = text.split("\n")
    hits = [i for i, line in enumerate(lines) if line.startswith(startswith)]
    if len(hits) != 1:
        raise SystemExit(f"system_config: expected one line starting with {startswith!r}, found {len(hits)}")
    lines[hits[0]] = new
    return "\n".join(lines)


def system_config_toml() -> str:
    text = default_config_toml(journald=True)
    text = replace_line(text, "#state_dir = ", 'state_dir = "/var/lib/hostlog"')
    text = replace_line(
        text, "#key_file = ",
        '#key_file = "/var/lib/hostlog/spool.key" # default: <state_dir>/spool.key; a systemd credential spool.key wins',
    )
    text = replace_line(text, listen_line(DEFAULT_SYSLOG_LISTEN), listen_line(SYSTEM_LISTEN))
    text = replace_line(text, "#socket = ", 'socket = "/run/hostlog/control.sock"')
    config = parse_config(text, path="agent.toml")
    assert str(config.agent.state_dir) == "/var/lib/hostlog", config.agent.state_dir
    assert str(config.control.socket) == "/run/hostlog/control.sock", config.control.socket
    return text


if __name__ == "__main__":
    sys.stdout.write(system_config_toml())
