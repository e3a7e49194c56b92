"""The control socket: ``hostlog ctl`` talks to the running agent through it.

A unix stream socket (``[control] socket``), JSON lines both ways, specified
in docs/protocol.md ("Control socket"). One request line, one response line,
in order; a client may send several requests on one connection.

Who may connect: the socket is 0660 in a 0750 directory, and each connection
is checked again with SO_PEERCRED (the kernel's word on the peer's uid/gid, not
a claim the client makes): root, the agent's own uid, and members of the
socket's group are served; anyone else gets one error line and is hung up on.
The file modes keep strangers out; the credential check keeps them out when
an operator loosened the modes.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hostlog.errors import ControlError, HostlogError

log = logging.getLogger("hostlog.control")

__all__ = ["ControlError", "ControlServer", "Handler", "MAX_REQUEST", "peer_allowed", "supplementary_groups"]

#: handler(command, args) -> result; raise ControlError for a refusal the client should read.
Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

#: A request line longer than this is refused and the connection closed: a
#: request is a command and an app name, never anywhere near this.
MAX_REQUEST = 64 * 1024

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def supplementary_groups(pid: int) -> set[int]:
    """The peer's supplementary groups, from /proc (SO_PEERCRED gives only its gid)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return set()


def peer_allowed(uid: int, gid: int, groups: set[int], *, agent_uid: int, socket_gid: int) -> bool:
    """The permission rule: root, the agent's uid, or a member of the socket's group."""
    return uid == 0 or uid == agent_uid or gid == socket_gid or socket_gid in groups


class ControlServer:
    """Serve ``handler`` on a unix socket at ``path``."""

    def __init__(self, path: str | os.PathLike[str], handler: Handler) -> None:
        self.path = Path(path)
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._inode: tuple[int, int] | None = None  # (dev, ino) of our socket file

    async def start(self) -> None:
        """Create the directory (0750) if missing, take over a stale socket, listen (0660)."""
        directory = self.path.parent
        if not directory.is_dir():
            # Only a directory we create gets our mode; one set up by the
            # operator or systemd-tmpfiles keeps its own.
            directory.mkdir(parents=True, mode=0o750)
            os.chmod(directory, 0o750)  # mkdir's mode is cut by the umask
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise ControlError(f"{self.path} exists and is not a socket; not replacing it")
            if await self._live():
                raise ControlError(f"another agent is serving {self.path}")
            self.path.unlink()  # left by an agent that did not stop cleanly
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                       limit=MAX_REQUEST)
        os.chmod(self.path, 0o660)
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        log.info("control socket at %s", self.path)

    async def stop(self) -> None:
        """Stop listening, hang up on clients, remove the socket file."""
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._clients):
            writer.close()
        await self._server.wait_closed()
        self._server = None
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:  # never remove a successor's socket
                self.path.unlink()
        except FileNotFoundError:
            pass

    async def _live(self) -> bool:
        """Whether something accepts connections on the existing socket file."""
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.path)), 2.0)
        except (TimeoutError, OSError):
            return False
        writer.close()
        return True

    def _peer_check(self, writer: asyncio.StreamWriter) -> str | None:
        """None if the peer may use the socket, else the reason it may not."""
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          _UCRED.size))
            socket_gid = os.stat(self.path).st_gid
        except OSError as exc:
            return f"cannot check the peer's credentials: {exc}"
        if peer_allowed(uid, gid, supplementary_groups(pid) if uid and gid != socket_gid else set(),
                        agent_uid=os.geteuid(), socket_gid=socket_gid):
            return None
        return (f"permission denied: uid {uid} is not root, the agent's user (uid {os.geteuid()}) "
                f"or in the socket's group (gid {socket_gid})")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            refusal = self._peer_check(writer)
            if refusal is not None:
                log.warning("control: %s", refusal)
                await self._send(writer, {"ok": False, "error": refusal})
                return
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_REQUEST: the stream is out of step now
                    await self._send(writer, {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"})
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                await self._send(writer, await self._answer(line))
        except (ConnectionError, OSError) as exc:
            if getattr(exc, "errno", None) not in (errno.EPIPE, errno.ECONNRESET, None):
                log.warning("control connection failed: %s", exc)
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError as exc:
            return {"ok": False, "error": f"request is not JSON: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": 'request must be a JSON object with a string "command"'}
        args = request.get("args", {})
        if not isinstance(args, dict):
            return {"ok": False, "error": '"args" must be a JSON object'}
        try:
            result = await self.handler(request["command"], args)
        except HostlogError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not kill the socket: report it, keep serving
            log.exception("control command %r failed", request["command"])
            return {"ok": False, "error": f"internal error: {exc}"}
        return {"ok": True, "result": result}

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, response: dict[str, Any]) -> None:
        writer.write(json.dumps(response, separators=(",", ":")).encode() + b"\n")
        await writer.drain()
