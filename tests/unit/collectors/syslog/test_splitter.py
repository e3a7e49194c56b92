"""The compiled RFC 5424 splitter reads what it takes exactly as parse_message does;
its datagram read (recvmmsg) gives what the Python read gives.

``_syslog5424.split`` takes the common RFC 5424 shape straight into columns
and leaves every other frame (its index in ``redo``) to the Python parser.
These tests hold both halves to ``parse_message``: which frames it takes, and
that a batch read through it (``parse_columns``) gives the same records,
field order and chunk bytes, also for every frame one edit away from a good
one (the edge of what it accepts).
"""

from __future__ import annotations

import calendar
import select
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.chunk import encode_chunk, encode_columns
from hostlog.collectors.syslog import datagram as syslog_datagram
from hostlog.collectors.syslog import parse_batch as syslog_parse_batch
from hostlog.collectors.syslog.datagram import (
    SO_RXQ_OVFL,
    by_sender,
    kernel_drops,
    recv_datagrams_py,
)
from hostlog.collectors.syslog.framing import OctetBlock, SyslogFramer, TruncatedFrame
from hostlog.collectors.syslog.parse import parse_message
from hostlog.collectors.syslog.parse_batch import parse_block, parse_columns
from tests.conftest import need
from tests.unit.collectors.syslog.test_parse_batch import LINES_5424, line_5424

RECEIVED_NS = calendar.timegm((2024, 6, 20, 12, 0, 0)) * 10**9
GOOD = b"<13>1 2024-05-01T10:00:00.250Z web-1 nginx 42 req - GET /index.html 200"


@pytest.fixture(scope="module")
def split():
    need(syslog_parse_batch._syslog5424 is not None,
         "hostlog.collectors.syslog._syslog5424 (the package built with a C compiler)")
    return syslog_parse_batch._syslog5424.split


def assert_columns_match(raws: list[bytes], peer: str | None = "192.0.2.1") -> None:
    kw = dict(received_ns=RECEIVED_NS, default_host="relay", peer=peer)
    want = [parse_message(raw, **kw) for raw in raws]
    columns = parse_columns(raws, **kw)
    got = columns.records()
    assert got == want
    assert [list(r.fields) for r in got] == [list(r.fields) for r in want]
    assert encode_columns(columns.columns) == encode_chunk(want)
    if columns.fields_pool is not None:  # (the Record path knows none)
        assert_pool_and_size(columns)


def assert_pool_and_size(columns) -> None:
    """What the parser tells the spool: the fields dicts, the text's bound."""
    pool = {id(f) for f in columns.fields_pool}
    assert all(id(f) in pool for f in columns.columns[8])
    assert columns.text_bytes() >= sum(map(len, columns.columns[7]))


def assert_block_matches(block: bytes, max_message: int = 65536,
                         peer: str | None = "192.0.2.1") -> bool:
    """parse_block reads a block as the framer's split_block and parse_message
    read it, or leaves it (None); returns whether it read it."""
    kw = dict(received_ns=RECEIVED_NS, default_host="relay", peer=peer)
    columns = parse_block(block, max_message=max_message, **kw)
    if columns is None:
        return False
    want = [parse_message(f, **kw) for f in SyslogFramer(max_message).split_block(block)]
    got = columns.records()
    assert got == want
    assert [list(r.fields) for r in got] == [list(r.fields) for r in want]
    if want:
        assert encode_columns(columns.columns) == encode_chunk(want)
    assert_pool_and_size(columns)
    return True


TAKEN = [
    GOOD,
    b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed",
    b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time",
    b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
    b"[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] "
    b"\xef\xbb\xbfAn application event log entry...",
    b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
    b"[exampleSDID@32473 iut=\"3\"][examplePriority@32473 class=\"high\"]",
    b"<13>1 2024-05-01T10:00:00.5-00:30 - - - - -",
    b"<13>1 - h a 1 - - nil timestamp",
    b"<0>1 2024-02-29T23:59:59+14:00 h a 0 - - leap day, pid zero",
    b"<191>1 1900-01-01T00:00:00+14:00 h a 2147483647 - - oldest year, biggest pid",
    b"<13>1 2190-12-31T23:59:59.999999-12:00 h a 1 - - newest year",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - [x@1 a=\"q\\\"\\]\\\\\" a=\"2\"] escapes, repeats",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - [x@1 a=\"\xc3\xa9\\\xc3\xa9\"] utf-8 in SD",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - [x][x] duplicate SD-ID (Python says so)",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - caf\xc3\xa9 \xe2\x82\xac",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - trailing cr\r",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - datagram trailers\r\n\x00",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - nul\x00inside",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - -",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - ",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - \xef\xbb\xbf\xef\xbb\xbftwo BOMs",
    b"<13>1 2024-05-01T10:00:00Z " + b"h" * 255 + b" " + b"a" * 48 + b" 1 " + b"m" * 32
    + b" - longest tokens",
]

LEFT = [
    b"<13>2 2024-05-01T10:00:00Z h a 1 - - version 2",
    b"<192>1 2024-05-01T10:00:00Z h a 1 - - bad pri",
    b"<013>1 2024-05-01T10:00:00Z h a 1 - - leading zero pri",
    b"<13>1 2024-02-30T10:00:00Z h a 1 - - no such day",
    b"<13>1 2023-02-29T10:00:00Z h a 1 - - no leap day",
    b"<13>1 2024-05-01T24:00:00Z h a 1 - - no such hour",
    b"<13>1 2024-05-01T10:00:60Z h a 1 - - leap second",
    b"<13>1 2024-05-01T10:00:00+24:00 h a 1 - - no such offset",
    b"<13>1 2024-05-01T10:00:00.1234567Z h a 1 - - seven digits",
    b"<13>1 2024-05-01T10:00:00.Z h a 1 - - no digits",
    b"<13>1 2024-05-01T10:00:00z h a 1 - - lower-case z",
    b"<13>1 1899-12-31T23:59:59Z h a 1 - - before 1900",
    b"<13>1 2191-01-01T00:00:00Z h a 1 - - after 2190",
    b"<13>1 0024-05-01T10:00:00Z h a 1 - - year 24",
    b"<13>1 2024-05-01T10:00:00+02:00 h app proc-7 m1 - odd procid",
    b"<13>1 2024-05-01T10:00:00Z h a 0123 - - leading zero pid",
    b"<13>1 2024-05-01T10:00:00Z h a 2147483648 - - pid too big",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - -x no SP after SD",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - [x a=\"]\"] bare ] in a value",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - [x a=\"open",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - [" + b"n" * 33 + b"] long SD-ID",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - - \xff not utf-8",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - [x a=\"\xff\"] not utf-8 in SD",
    b"<13>1 2024-05-01T10:00:00Z " + b"h" * 256 + b" a 1 - - host too long",
    b"<13>1 2024-05-01T10:00:00Z h " + b"a" * 49 + b" 1 - - app too long",
    b"<13>1 2024-05-01T10:00:00Z h a 1 " + b"m" * 33 + b" - msgid too long",
    b"<13>1 2024-05-01T10:00:00Z h a 1 -",
    b"<13>1 2024-05-01T10:00:00Z h a 1 - ",
    b"<13>Jun 19 10:00:00 myhost app[12]: rfc 3164",
    b"",
    b"<13>",
]


def test_what_it_takes_and_what_it_leaves(split) -> None:
    ts, *_, redo = split(TAKEN + LEFT, RECEIVED_NS, "relay")
    assert redo == list(range(len(TAKEN), len(TAKEN) + len(LEFT)))
    assert ts[0] == calendar.timegm((2024, 5, 1, 10, 0, 0)) * 10**9 + 250_000_000


def test_taken_lines_read_as_parse_message_reads_them() -> None:
    for line in TAKEN:
        assert_columns_match([GOOD] * 8 + [line])


def test_left_lines_read_as_parse_message_reads_them() -> None:
    for line in LEFT + LINES_5424:
        assert_columns_match([GOOD] * 8 + [line])


def test_a_cut_frame_is_left_to_python_and_marked(split) -> None:
    cut = TruncatedFrame(GOOD[:30])
    *_, redo = split([GOOD, cut, GOOD], RECEIVED_NS, "relay")
    assert redo == [1]
    raws = [GOOD] * 8 + [cut]
    assert_columns_match(raws)
    assert parse_columns(raws, received_ns=RECEIVED_NS).records()[-1].fields["truncated"] == "true"


def test_a_batch_of_rfc3164_goes_to_the_python_batch_path() -> None:
    raws = [b"<13>Jun 19 10:00:00 myhost app[12]: msg %d" % i for i in range(20)]
    assert syslog_parse_batch._parse_columns(raws, RECEIVED_NS, "relay", None) is None
    assert_columns_match(raws)


def test_rows_share_one_fields_dict_per_msgid_and_sd_but_records_own_theirs() -> None:
    columns = parse_columns([GOOD] * 10, received_ns=RECEIVED_NS, peer="p")
    fields = columns.columns[8]
    assert all(f is fields[0] for f in fields)
    records = columns.records()
    records[0].fields["x"] = "y"
    assert "x" not in records[1].fields and "x" not in fields[0]


def test_not_bytes_and_not_a_list(split) -> None:
    *_, redo = split([bytearray(GOOD), memoryview(GOOD), GOOD], RECEIVED_NS, "relay")
    assert redo == [0, 1]
    with pytest.raises(TypeError):
        split(42, RECEIVED_NS, "relay")


def test_a_block_of_lines_reads_as_the_framer_and_parse_message_read_it(split) -> None:
    lines = [line for line in TAKEN + LEFT + LINES_5424 if not {10, 0} & set(line)]
    for sep in (b"\n", b"\r\n", b"\n\n\r\n"):
        assert assert_block_matches(sep.join([GOOD] * len(lines) + lines) + sep)
    assert assert_block_matches(b"\n\r\n")  # no line at all: no rows


def test_a_block_the_framer_must_cut_or_split_is_left_to_it(split) -> None:
    block = GOOD + b"\n<13>Jun 19 10:00:00 myhost app[12]: rfc 3164 inside\n" + GOOD + b"\n"
    assert assert_block_matches(block)
    assert assert_block_matches(block, max_message=len(GOOD))
    for left, max_message in ((block, len(GOOD) - 1),  # a line to cut
                              (block.replace(b"inside", b"\x00"), 65536),  # NUL: a trailer
                              (block[len(GOOD) + 1:], 65536)):  # RFC 3164 first
        assert parse_block(left, received_ns=RECEIVED_NS, max_message=max_message) is None


def counted(frames: list[bytes]) -> OctetBlock:
    return OctetBlock(b"".join(b"%d %s" % (len(f), f) for f in frames))


def test_an_octet_counted_block_reads_as_the_framer_and_parse_message_read_it(split) -> None:
    frames = [f for f in TAKEN + LEFT + LINES_5424 if f]  # LF and NUL are content here
    assert assert_block_matches(counted([GOOD] * len(frames) + frames))
    block = counted([GOOD, GOOD + b"x" * 100, GOOD])
    assert parse_block(block, received_ns=RECEIVED_NS, max_message=len(GOOD) + 99) is None
    assert parse_block(block[:-1], received_ns=RECEIVED_NS) is None  # not whole frames


# --- properties -------------------------------------------------------------


@st.composite
def one_edit_away(draw) -> bytes:
    """A frame one byte edit from a valid one: the edge of what split() takes."""
    line = bytearray(draw(st.sampled_from(TAKEN)))
    at = draw(st.integers(0, len(line)))
    byte = draw(st.sampled_from(b" -:.[]\"\\=<>Z+0159T\xef\xbb\xbf\xc3\xff\r\n\x00az"))
    kind = draw(st.sampled_from(["insert", "replace", "delete"]))
    if kind == "insert" or at == len(line):
        line.insert(at, byte)
    elif kind == "replace":
        line[at] = byte
    else:
        del line[at]
    return bytes(line)


@settings(max_examples=1500, deadline=None)
@given(one_edit_away())
def test_one_edit_from_a_good_frame_reads_as_parse_message(line: bytes) -> None:
    assert_columns_match([GOOD] * 8 + [line])


@settings(max_examples=300, deadline=None)
@given(st.lists(line_5424(), min_size=8, max_size=40), st.sampled_from([None, "p"]))
def test_rfc5424_batches_read_as_parse_message(raws: list[bytes], peer: str | None) -> None:
    assert_columns_match([GOOD] * len(raws) + raws, peer)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=20))
def test_any_bytes_never_raise(split, raws: list[bytes]) -> None:
    columns = split(raws, RECEIVED_NS, "relay")
    assert all(len(column) == len(raws) for column in columns[:-1])
    assert_columns_match([GOOD] * (len(raws) + 8) + raws)


_SEPARATORS = st.sampled_from([b"\n", b"\r\n", b"\n\n", b"\r\r\n"])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.one_of(line_5424(), one_edit_away()), _SEPARATORS), max_size=30),
       st.integers(8, 300))
def test_blocks_read_as_the_framer_and_parse_message_read_them(lines, max_message) -> None:
    block = b"".join(GOOD + b"\n" + line + sep for line, sep in lines)
    read = assert_block_matches(block, max_message)
    if not read:  # only when the framer has more to do than split, or split() little
        frames = SyslogFramer(max_message).split_block(block)
        *_, redo = syslog_parse_batch._syslog5424.split(frames, RECEIVED_NS, "relay")
        assert (b"\x00" in block or any(type(f) is TruncatedFrame for f in frames)
                or len(redo) * 2 > len(frames))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 100))
def test_any_block_never_raises(block: bytes, max_message: int) -> None:
    assert_block_matches(GOOD + b"\n" + block + b"\n", max_message)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(line_5424(), one_edit_away()).filter(bool), max_size=30))
def test_octet_counted_blocks_read_as_the_framer_and_parse_message_read_them(frames) -> None:
    assert assert_block_matches(counted([f for frame in frames for f in (GOOD, frame)]))


# --- recv_datagrams: the datagram listeners' read (real sockets, loopback) -------------

@pytest.fixture(scope="module")
def recv():
    need(syslog_datagram._syslog5424 is not None,
         "hostlog.collectors.syslog._syslog5424 (the package built with a C compiler)")
    return syslog_datagram._syslog5424.recv_datagrams


def listener(family: int = socket.AF_INET, host: str = "127.0.0.1",
             rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((host, 0))
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    return sock


def sender(host: str = "127.0.0.1", family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


def read_all(read, sock: socket.socket, want: int) -> tuple[list, int]:
    """Call read() until `want` datagrams came (bounded: 200 tries, 1 s each):
    every group, merged per sender, and the last drop counter seen."""
    groups, total, drops = [], 0, -1
    for _ in range(200):
        if total >= want:
            break
        select.select([sock], [], [], 1.0)
        got = read()
        if got is None:
            continue
        more, count, d = got
        assert count == sum(g[2] for g in more)
        groups += more
        total += count
        drops = max(drops, d)
    assert total == want
    return by_sender(groups), drops


def frames_of(block: bytes) -> list[bytes]:
    return SyslogFramer(max(1, len(block))).split_block(OctetBlock(block))


def test_recv_datagrams_reads_every_datagram_by_sender_in_order(recv) -> None:
    rx = listener()
    a, b = sender("127.0.0.1"), sender("127.0.0.2")
    scratch = bytearray(64 * 512)
    with rx, a, b:
        assert recv(rx.fileno(), scratch, 512) is None  # nothing waiting
        sent: dict[str, list[bytes]] = {"127.0.0.1": [], "127.0.0.2": []}
        for i in range(150):  # more than one call's 64 slots
            s, peer = (a, "127.0.0.1") if i % 3 else (b, "127.0.0.2")
            data = b"<13>1 - h app - - - message %d" % i + b"x" * (i % 7)
            s.sendto(data, rx.getsockname())
            sent[peer].append(data)
        groups, drops = read_all(lambda: recv(rx.fileno(), scratch, 512), rx, 150)
    assert [g[0] for g in groups] == ["127.0.0.2", "127.0.0.1"]  # (the first came from .2)
    for peer, block, count, truncated in groups:
        assert frames_of(block) == sent[peer]
        assert count == len(sent[peer])
        assert truncated == []
    assert drops == -1  # nothing dropped: the kernel attached no counter


def test_recv_datagrams_cuts_at_the_slot_and_keeps_empty_datagrams(recv) -> None:
    rx, tx = listener(), sender()
    with rx, tx:
        for data in (b"", b"y" * 100, b"ok", b"z" * 50):
            tx.sendto(data, rx.getsockname())
        ((peer, block, count, truncated),), _ = read_all(
            lambda: recv(rx.fileno(), bytearray(8 * 50), 50), rx, 4)
    assert peer == "127.0.0.1" and count == 4
    assert block.startswith(b"0 50 yyy")
    assert frames_of(block) == [b"", b"y" * 50, b"ok", b"z" * 50]
    assert truncated == [1]  # the one longer than the slot, not the one that fills it


def test_recv_datagrams_ipv6_and_unix_peers(recv, tmp_path) -> None:
    need(socket.has_ipv6 and Path("/proc/net/if_inet6").exists(), "IPv6 on the loopback")
    rx6, tx6 = listener(socket.AF_INET6, "::1"), sender("::1", socket.AF_INET6)
    with rx6, tx6:
        tx6.sendto(b"six", rx6.getsockname())
        ((peer, block, _, _),), _ = read_all(lambda: recv(rx6.fileno(), bytearray(4096), 1024),
                                             rx6, 1)
    assert (peer, block) == ("::1", b"3 six")
    path = str(tmp_path / "dev-log")
    rxu = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    txu = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with rxu, txu:
        rxu.bind(path)
        rxu.setblocking(False)
        rxu.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)  # accepted on unix sockets too
        txu.sendto(b"<13>local", path)
        ((peer, block, _, _),), _ = read_all(lambda: recv(rxu.fileno(), bytearray(4096), 1024),
                                             rxu, 1)
    assert (peer, block) == (None, b"9 <13>local")


@pytest.mark.parametrize("path", ["compiled", "python"])
def test_recv_datagrams_reports_the_kernel_drop_counter(recv, path) -> None:
    """A small receive buffer, nothing read while 300 datagrams come: the
    kernel drops most; the next datagram queued carries the socket's drop
    count (SO_RXQ_OVFL), the same one SO_MEMINFO reads."""
    rx, tx = listener(rcvbuf=4096), sender()
    if path == "python":
        def recv(fd, scratch, slot):
            return recv_datagrams_py(rx, slot, len(scratch) // slot)
    with rx, tx:
        for i in range(300):  # (under the loopback's backlog of 1000: drops happen at the socket)
            tx.sendto(b"<13>1 - h app - - - flood %d " % i + b"f" * 100, rx.getsockname())
        dropped = kernel_drops(rx)
        assert dropped is not None and 0 < dropped < 300
        queued = 300 - dropped
        _, first = read_all(lambda: recv(rx.fileno(), bytearray(64 * 256), 256), rx, queued)
        tx.sendto(b"after", rx.getsockname())
        (group,), last = read_all(lambda: recv(rx.fileno(), bytearray(64 * 256), 256), rx, 1)
    assert first < dropped  # queued before the drops: the counter they carry is older
    assert last == dropped
    assert group[1] == b"5 after"


DATAGRAMS = st.lists(st.tuples(st.sampled_from([0, 1]),
                               st.one_of(line_5424(), st.binary(max_size=200))),
                     max_size=40)


@pytest.fixture(scope="module")
def sockets():
    socks = [listener(), listener(), sender("127.0.0.1"), sender("127.0.0.2")]
    yield socks
    for s in socks:
        s.close()


@settings(max_examples=150, deadline=None)
@given(DATAGRAMS, st.sampled_from([3, 64]), st.sampled_from([64, 128, 1024]))
def test_compiled_and_python_reads_give_the_same(recv, sockets, datagrams, slots, slot) -> None:
    """The same datagrams to two sockets, one read by recvmmsg in C, the
    other by recvmsg in Python: the same groups, blocks, counts and cuts."""
    rx_c, rx_py, tx0, tx1 = sockets
    for rx in (rx_c, rx_py):
        for who, data in datagrams:
            (tx0, tx1)[who].sendto(data, rx.getsockname())
    scratch = bytearray(slots * slot)
    got_c, _ = read_all(lambda: recv(rx_c.fileno(), scratch, slot), rx_c, len(datagrams))
    got_py, _ = read_all(lambda: recv_datagrams_py(rx_py, slot, slots), rx_py, len(datagrams))
    assert got_c == got_py
    for peer, block, _count, truncated in got_c:
        want = [d for who, d in datagrams if ("127.0.0.1", "127.0.0.2")[who] == peer]
        assert frames_of(block) == [d[:slot] for d in want]
        assert truncated == [i for i, d in enumerate(want) if len(d) > slot]
