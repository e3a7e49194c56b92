"""Reading a datagram socket (UDP, unix ``/dev/log`` style) in batches.

A datagram sender cannot be slowed down: what the agent does not read in
time, the kernel drops when the socket's receive buffer is full. So the read
must cost as little per datagram as it can, and what is dropped must be
counted. :class:`DatagramReceiver` does both:

* The socket is non-blocking and read from the event loop's reader callback
  (``loop.add_reader``), up to :data:`RECV_BUDGET` datagrams per wake-up, each
  call taking up to :data:`RECV_SLOTS` datagrams: ``recvmmsg(2)`` in the
  compiled helper (``_syslog5424.recv_datagrams``), or ``sock.recvmsg`` in a
  loop (:func:`recv_datagrams_py`) where the helper is not built. Both give
  the same thing: per sender, the datagrams as one block of RFC 6587
  octet-counted frames (``LEN SP DATAGRAM``), the form the compiled RFC 5424
  splitter reads in place (``parse_block`` of an ``OctetBlock``), so there is
  no Python object and no Python call per datagram.
* Kernel drops: with ``SO_RXQ_OVFL`` set, each datagram carries the socket's
  cumulative drop counter as it stood when that datagram was queued; drops
  after the last queued datagram show up only with the next one, so the
  counter is also read directly (``SO_MEMINFO``) once a second and when the
  listener stops. Both read the same counter: its increases are the drops.

The collector (``SyslogCollector.deliver_datagrams``) parses the blocks and
hands them to the sink; this module only reads and counts.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from hostlog.collectors.events import Counted

if TYPE_CHECKING:
    from hostlog.collectors.base import CollectorContext

try:  # the compiled helper (setup.py builds it; without a compiler: recvmsg in Python)
    from hostlog.collectors.syslog import _syslog5424 as _syslog5424
except ImportError:  # pragma: no cover - tested where the extension is built
    _syslog5424 = None

log = logging.getLogger("hostlog.syslog")

#: One datagram sender's datagrams: (peer, octet-counted block, how many
#: datagrams it holds, the indexes of those cut at the slot size). peer is
#: the sender's IP address, or None for a unix socket's sender.
Group = tuple["str | None", bytes, int, "list[int]"]
#: What one receive call returns: (groups by sender, datagrams read, the
#: socket's drop counter on the last datagram that carried one, or -1).
Received = tuple["list[Group]", int, int]

#: Datagrams one receive call reads at most (the scratch buffer has a slot
#: of max_message bytes for each; its pages are only touched as datagrams
#: fill them).
RECV_SLOTS = 64
#: Datagrams read in one wake-up, then parsed and handed on as one batch:
#: big enough that a batch's fixed costs vanish per datagram, small enough
#: that the loop turns often.
RECV_BUDGET = 1024
#: At most this much scratch buffer per socket (fewer slots for big ones).
SCRATCH_MAX = 4 << 20
#: Linux's socket option numbers, where the socket module does not name them.
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)
_MEMINFO_DROPS = 8  # SK_MEMINFO_DROPS: index of the drop counter in SO_MEMINFO's u32 array
_U32 = 1 << 32
_OVFL_SPACE = socket.CMSG_SPACE(4)
_U32_STRUCT = struct.Struct("=I")


def recv_datagrams_py(sock: socket.socket, slot: int, max_count: int) -> Received | None:
    """``_syslog5424.recv_datagrams`` in Python: the same result, from up to
    ``max_count`` ``recvmsg`` calls; None when nothing was waiting."""
    by_peer: dict[str | None, tuple[list[bytes], list[int]]] = {}
    count, drops = 0, -1
    while count < max_count:
        try:
            data, ancillary, flags, addr = sock.recvmsg(slot, _OVFL_SPACE)
        except (BlockingIOError, InterruptedError):
            break
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                drops = _U32_STRUCT.unpack_from(value)[0]
        # socket.recvfrom's (host, port, ...) for IP; a path or None for unix
        peer = addr[0] if isinstance(addr, tuple) and addr else None
        frames, truncated = by_peer.setdefault(peer, ([], []))
        if flags & socket.MSG_TRUNC:
            truncated.append(len(frames))
        frames.append(b"%d %b" % (len(data), data))
        count += 1
    if not count:
        return None
    groups = [(peer, b"".join(frames), len(frames), truncated)
              for peer, (frames, truncated) in by_peer.items()]
    return groups, count, drops


def by_sender(groups: list[Group]) -> list[Group]:
    """The groups of several receive calls as one per sender, each sender's
    datagrams in order (octet-counted blocks concatenate)."""
    if len(groups) < 2:
        return groups
    merged: dict[str | None, tuple[list[bytes], list[int], list[int]]] = {}
    for peer, block, count, truncated in groups:
        entry = merged.get(peer)
        if entry is None:
            merged[peer] = ([block], [count], list(truncated))
        else:
            blocks, counts, cut = entry
            before = sum(counts)
            cut.extend(before + i for i in truncated)
            blocks.append(block)
            counts.append(count)
    return [(peer, b"".join(blocks), sum(counts), cut)
            for peer, (blocks, counts, cut) in merged.items()]


def kernel_drops(sock: socket.socket) -> int | None:
    """The socket's cumulative drop counter (u32) as it is now, or None where
    the kernel does not tell (``SO_MEMINFO``, Linux 4.6 and later)."""
    try:
        info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (_MEMINFO_DROPS + 1))
    except OSError:
        return None
    if len(info) < 4 * (_MEMINFO_DROPS + 1):
        return None
    return int(struct.unpack_from("=I", info, 4 * _MEMINFO_DROPS)[0])


class DatagramReceiver:
    """One bound datagram socket, read in batches on the event loop.

    ``deliver(groups, receiver)`` gets what one wake-up read (see
    :data:`Group`). It contains and reports its own errors (a parse error,
    a sink that failed); anything else it raises is a bug that would lose
    what was read, so it is reported as fatal (the agent stops) and the
    socket is read no more.
    Kernel drops are counted as ``<source>.dropped`` as soon as they are
    seen, and kept in :attr:`unreported` for the collector's notice.
    """

    def __init__(self, sock: socket.socket, label: str, source: str, max_message: int,
                 context: CollectorContext,
                 deliver: Callable[[list[Group], DatagramReceiver], None], *,
                 compiled: bool = True) -> None:
        self.sock = sock
        self.label = label
        self.source = source
        self.context = context
        self.deliver = deliver
        # a datagram longer than this is cut by the kernel (and marked truncated)
        self.slot = max(1, min(max_message, SCRATCH_MAX))
        self.slots = max(1, min(RECV_SLOTS, SCRATCH_MAX // self.slot))
        self.compiled = compiled and _syslog5424 is not None
        # anonymous memory: untouched pages cost nothing, so small datagrams
        # keep only the first page of each slot resident
        self.scratch = mmap.mmap(-1, self.slots * self.slot) if self.compiled else None
        self.drops_seen = 0  # the socket's drop counter as last seen (u32)
        self.dropped = 0  # kernel drops counted so far
        self.unreported = 0  # kernel drops not yet said in a notice
        self.reading = False
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        except OSError as exc:  # not on this kernel: SO_MEMINFO still counts drops
            log.warning("%s: SO_RXQ_OVFL not available (%s)", label, exc)
        now = kernel_drops(sock)
        if now is not None:
            self.drops_seen = now

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self.on_readable)
        self.reading = True

    def pause(self) -> None:
        """Read no more (the agent is stopping with a failure, or the
        listener stops)."""
        if self.reading:
            self.reading = False
            asyncio.get_running_loop().remove_reader(self.sock.fileno())

    def receive(self, budget: int = RECV_BUDGET) -> tuple[list[Group], int]:
        """What the socket holds now, up to ``budget`` datagrams: (groups, count)."""
        groups: list[Group] = []
        total = 0
        fd = self.sock.fileno()
        while total < budget:
            if self.compiled:
                got = _syslog5424.recv_datagrams(fd, self.scratch, self.slot)
            else:
                got = recv_datagrams_py(self.sock, self.slot, self.slots)
            if got is None:
                break
            more, count, drops = got
            groups += more
            total += count
            if drops >= 0:
                self.saw_drop_counter(drops)
            if count < self.slots:
                break  # the queue was emptied: spare the call that says so
        return groups, total

    def on_readable(self) -> None:
        try:
            groups, _ = self.receive()
        except OSError as exc:  # e.g. a pending socket error: reported, and the next read goes on
            self.context.error(self.source, "receive", exc)
            return
        if not groups:
            return
        try:
            self.deliver(groups, self)
        except Exception as exc:
            self.context.error(self.source, "deliver", exc, fatal=True)
            self.pause()

    def saw_drop_counter(self, value: int) -> None:
        """The socket's drop counter read as ``value`` (a u32 that wraps):
        count what it grew by since it was last seen. A value older than
        the last one (a datagram queued before the last direct read) is no
        news and is ignored."""
        grown = (value - self.drops_seen) % _U32
        if grown == 0 or grown >= _U32 // 2:
            return
        self.drops_seen = value
        self.dropped += grown
        self.unreported += grown
        self.context.count(self.source, Counted.DROPPED, grown)

    def poll_drops(self) -> None:
        """Read the drop counter directly (drops after the last datagram queued)."""
        now = kernel_drops(self.sock)
        if now is not None:
            self.saw_drop_counter(now)

    def close(self) -> None:
        self.pause()
        self.sock.close()
        if self.scratch is not None:
            self.scratch.close()
            self.scratch = None
