"""sd_notify: tell systemd (Type=notify) that the agent is ready, alive, stopping.

systemd-python's ``systemd.daemon.notify`` when it is installed; otherwise the
same datagram written to ``$NOTIFY_SOCKET`` by hand (the protocol is one
datagram of ``KEY=VALUE`` lines, sd_notify(3)). Without ``$NOTIFY_SOCKET``
(not under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket

try:
    from systemd import daemon as _sd_daemon  # type: ignore[attr-defined]
except ImportError:  # systemd-python is optional outside the packages
    _sd_daemon = None


def notify(state: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if _sd_daemon is not None:
        try:
            return bool(_sd_daemon.notify(state))
        except OSError:
            return False  # systemd went away or the socket is not ours: never fatal
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec (sd_watchdog_enabled(3)), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None
