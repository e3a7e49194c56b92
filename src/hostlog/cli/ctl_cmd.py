"""``hostlog ctl``: talk to the running agent over its control socket.

    hostlog ctl [-c FILE | --socket PATH] status [APP...]
    hostlog ctl [-c FILE | --socket PATH] start|stop|restart APP
    hostlog ctl [-c FILE | --socket PATH] reload

The socket is the one ``[control] socket`` of ``-c FILE`` names, or
``--socket PATH``, else the built-in default's. Plain blocking socket code:
one request, one response (protocol in docs/protocol.md, "Control socket").
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run", "request", "format_status", "AgentNotRunning"]


class AgentNotRunning(Exception):
    pass


def add_parser(sub: Any) -> argparse.ArgumentParser:
    ctl = sub.add_parser("ctl", help="control the running agent (apps, reload, status)",
                         description="Control the running agent through its control socket.")
    where = ctl.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", metavar="FILE",
                       help="the agent's config file (its [control] socket)")
    where.add_argument("--socket", metavar="PATH", help="the control socket")
    ctl.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                     help="how long to wait for the agent's answer (default: 120)")
    ctl.add_argument("--json", action="store_true", help="print the agent's answer as JSON")
    actions = ctl.add_subparsers(dest="ctl_command", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="the agent and its apps: state, pid, uptime, CPU, RSS")
    status.add_argument("apps", nargs="*", metavar="APP", help="only these apps")
    for name, text in (("start", "start an app"), ("stop", "stop an app (its whole process group)"),
                       ("restart", "stop, then start an app")):
        actions.add_parser(name, help=text).add_argument("app", metavar="APP")
    actions.add_parser("reload", help="re-read the config: apps added, removed, changed")
    return ctl


def socket_path(args: argparse.Namespace) -> Path:
    from hostlog.config import ConfigError, default_config, load_config

    if args.socket:
        return Path(args.socket)
    if not args.config:
        socket_file = default_config().control.socket
    else:
        try:
            socket_file = load_config(args.config).control.socket
        except ConfigError:
            # A file being edited may not validate, yet its agent runs with the
            # previous one: an explicit [control] socket still names the socket.
            socket_file = _raw_socket(args.config)
            if socket_file is None:
                raise
    assert socket_file is not None  # always filled in by validation
    return socket_file


def _raw_socket(config_file: str) -> Path | None:
    import tomllib

    try:
        with open(config_file, "rb") as f:
            value = tomllib.load(f).get("control", {}).get("socket")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(value) if isinstance(value, str) and value.startswith("/") else None


def request(path: Path, command: str, args: dict[str, Any] | None = None,
            timeout: float = 120.0) -> dict[str, Any]:
    """Send one request, return the agent's response object."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            what = "no control socket" if isinstance(exc, FileNotFoundError) else "nothing listens on the socket"
            raise AgentNotRunning(f"hostlog agent is not running ({what} at {path})") from None
        line = json.dumps({"command": command, "args": args or {}}).encode() + b"\n"
        try:
            sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it read the request: its one line says why, read it
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    if not data:
        raise AgentNotRunning(f"the agent closed the connection on {path} without an answer")
    return json.loads(data)


def run(args: argparse.Namespace) -> int:
    path = socket_path(args)  # a ConfigError goes to main(), which prints it
    try:
        command = args.ctl_command
        params = {"app": args.app} if command in ("start", "stop", "restart") else {}
        if command == "status" and args.apps:
            params = {"apps": args.apps}
        response = request(path, command, params, timeout=args.timeout)
    except AgentNotRunning as exc:
        print(exc, file=sys.stderr)
        return 1
    except PermissionError:
        print(f"hostlog ctl: permission denied on {path} (root, the agent's user and the "
              "socket's group may use it)", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"hostlog ctl: no answer from the agent within {args.timeout:g}s", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"hostlog ctl: {exc}", file=sys.stderr)
        return 1
    if not response.get("ok"):
        print(f"hostlog ctl: {response.get('error', 'the agent refused')}", file=sys.stderr)
        return 1
    result = response.get("result", {})
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif command == "status":
        sys.stdout.write(format_status(result))
    elif command == "reload":
        changes = ", ".join(f"{k}: {' '.join(v)}" for k, v in result.items() if isinstance(v, list) and v)
        print(f"reloaded ({changes or 'no app changes'})")
    else:
        app = result
        detail = f"pid {app['pid']}" if app.get("pid") else app.get("info", "")
        print(f"{app['name']}: {app['state']}" + (f" ({detail})" if detail else ""))
    return 0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    text = f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days} days, {text}" if days else text


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.1f} TiB"


def format_status(result: dict[str, Any]) -> str:
    """The agent line, then one line per app, like supervisorctl status."""
    agent = result.get("agent", {})
    lines = [f"hostlog {agent.get('version', '?')}  pid {agent.get('pid', '?')}  "
             f"uptime {_duration(agent.get('uptime'))}  records in {agent.get('records_in', 0)} / "
             f"out {agent.get('records_out', 0)}  spool {_size(agent.get('spool_bytes'))}"]
    spool = agent.get("spool") or {}
    if spool.get("full"):
        lines.append(f"spool FULL ({spool['full']}) for {spool.get('full_for', 0):.1f} s: writes wait "
                     f"(on_full = {spool.get('on_full')}; blocked {spool.get('blocked_s', 0):.1f} s "
                     f"in all, {spool.get('dropped_for_room', 0)} records dropped to make room)")
    lines += _forward_lines(result)
    from hostlog.cli.rules_cmd import status_lines
    lines += status_lines(result.get("rules", []))
    http = result.get("http")
    if http:
        counts = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in sorted(http.items())
                           if name != "listen" and isinstance(n, int))
        lines.append(f"http {', '.join(http.get('listen', [])) or '(not listening)'}"
                     + (f": {counts}" if counts else ""))
    apps = result.get("apps", [])
    if not apps:
        lines.append("no apps")
        return "\n".join(lines) + "\n"
    rows = [("NAME", "STATE", "PID", "UPTIME", "RESTARTS", "CPU%", "RSS", "INFO")]
    for a in apps:
        cpu = "-" if a.get("cpu_percent") is None else f"{a['cpu_percent']:.1f}"
        info = a.get("info", "") if a.get("state") != "RUNNING" else ""
        rows.append((a["name"], a["state"], str(a.get("pid") or "-"), _duration(a.get("uptime")),
                     str(a.get("restarts", 0)), cpu, _size(a.get("rss")), info))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _forward_lines(result: dict[str, Any]) -> list[str]:
    """One line per forward link (destination, or replica of one), one for the receiver, one per
    NATS input."""
    lines = []
    for dest in result.get("forward", []):
        for link in dest.get("links", []):
            state = f"connected to {link['target']}" if link.get("connected") else "disconnected"
            line = (f"forward {link['name']} ({dest['mode']}): {state}, acked {link['acked_seq']}, "
                    f"lag {link['lag_records']} records / {link['lag_seconds']:.1f}s, "
                    f"{link['in_flight']} chunks in flight")
            extra = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(link.get("output", {}).items()) if v)
            if extra:
                line += f", {extra}"
            if not link.get("connected") and link.get("last_error"):
                line += f" ({link['last_error']})"
            lines.append(line)
        if dest.get("mode") == "replicate":
            lines.append(f"forward {dest['name']}: delivered to {dest['min_acks']} targets up to seq "
                         f"{dest['delivered_seq']}")
    receiver = result.get("receiver")
    if receiver:
        peers = receiver.get("peers", [])
        connected = sum(1 for p in peers if p.get("connected"))
        lines.append(f"receiver {receiver['listen']}: {connected} of {len(peers)} peers connected, "
                     f"{receiver['records']} records stored, {receiver['duplicates']} duplicates "
                     f"dropped, {receiver['refused']} peers refused")
    lines += [_nats_line(i) for i in result.get("inputs", []) if i.get("type") == "nats"]
    return lines


def _nats_line(source: dict[str, Any]) -> str:
    """One line for a ``[[source]] type = "nats"``: the connection, the consumer, the counts."""
    state = f"connected to {source['server']}" if source.get("connected") else "disconnected"
    line = (f"source {source['name']} (nats): {state}, stream {source['stream']} consumer "
            f"{source['durable']}, {source.get('acked', 0)} messages acked, {source.get('records', 0)} "
            f"records stored, {source.get('duplicates', 0)} duplicates dropped")
    consumer = source.get("consumer")
    if consumer:
        line += f", pending {consumer.get('pending', 0)} (ack pending {consumer.get('ack_pending', 0)})"
    counts = [(source.get("awaiting_durability", 0), "awaiting durability"),
              (source.get("held_back", 0), "held back"), (source.get("redeliveries", 0), "redeliveries"),
              (source.get("bad_messages", 0), "bad messages"), (source.get("errors", 0), "errors")]
    extra = ", ".join(f"{n} {what}" for n, what in counts if n)
    if extra:
        line += f", {extra}"
    if source.get("last_error"):  # (cleared by the next fetch that works)
        line += f" ({source['last_error']})"
    return line
