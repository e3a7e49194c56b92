"""Seed inputs of the fuzz harnesses.

Built in: the shapes of input behind past syslog CVEs (malformed octet
counts, PRI values, timestamps, tags and SD elements), valid messages of
every kind each door takes (so the fuzzer starts inside the formats, not at
their first byte), and the regression seeds of crashes found here
(``regressions/<harness>/``). From the shared corpora (``tests.conftest.CORPORA``):
the syslog framing and parsing cases and the Fluent Forward client
transcripts.

The syslog framing and batch harnesses read a 3-byte prefix first (max_message
and the size of the pieces the stream is fed in, see harnesses._pieces):
their seeds carry :data:`PREFIX` (max_message 1025, pieces of 17 bytes).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import lz4.block
import msgpack

from hostlog.chunk import encode_chunk
from hostlog.collectors.syslog.parse import parse_message
from hostlog.config.defaults import default_config_toml
from hostlog.forward.protocol import Ack, Chunk, Connection, Hello, Role, Welcome
from hostlog.spool.frame import seal_frame
from tests.fuzz.harnesses import KEY, RECEIVED_NS, SALT

HERE = Path(__file__).resolve().parent
REGRESSIONS = HERE / "regressions"
PREFIX = b"\x00\x04\x10"

#: Messages that took syslog daemons down, by the CVE whose shape they carry.
CVE_MESSAGES: dict[str, list[bytes]] = {
    # rsyslog imptcp, octet-counted framing: a count past what the daemon's
    # integer or buffer holds crashed it (CVE-2018-16881)
    "CVE-2018-16881": [b"2147483648 <13>1 - - - - - - x\n", b"4294967296 <13>1 - - - - - - x",
                       b"99999999999999999999999 <13>", b"00000000000000000000017 <13>1 - - - - - - x",
                       b"0 <13>1 - - - - - -", b"1 <", b"18446744073709551616 x"],
    # rsyslog octet-counted framing heap overflow: the digits of the count
    # were copied into a fixed buffer without a bound (CVE-2022-24903)
    "CVE-2022-24903": [b"1" * 300 + b" <13>1 - - - - - - overflow", b"9" * 40, b"0" * 1000 + b"5 hello",
                       b"12 " + b"3" * 12 + b"45 <13>", b"10 <13>1 - - -10 <13>1 - - -"],
    # syslog-ng timestamp parsing read past the end of a truncated or
    # over-long timestamp (CVE-2024-47619; also CVE-2022-38725, RFC 3164)
    "CVE-2024-47619": [b"<13>1 2024-10-", b"<13>1 2024-10-10T10:10:10.", b"<13>1 2024-10-10T10:10:10+",
                       b"<13>1 2024-10-10T10:10:10+05:", b"<13>1 2024-10-10T10:10:10." + b"9" * 64 + b"Z h a - - -",
                       b"<13>1 2024-10-10T10:10:10.123456-23:59 h a p m - x", b"<13>1 9999-99-99T99:99:99Z - - - - -",
                       b"<13>Oct", b"<13>Oct 1", b"<13>Oct 11 22:14", b"<13>Oct 11 22:14:1",
                       b"<13>Feb 30 25:61:61 host x",
                       b"<13>2024-10-10T10:10:10Z host app: x", b"<13>2024-10-10T"],
    # rsyslog PRI and legacy-parser overflows: PRI past 191 or past an int
    # (CVE-2014-3634, CVE-2014-3683), a TAG longer than its buffer (CVE-2011-3200),
    # the AIX and Cisco name parsers (CVE-2019-17041, CVE-2019-17042)
    "rsyslog-pri-tag": [b"<192>1 - - - - - - x", b"<999999999999>x", b"<-1>x", b"<>x", b"<13",
                        b"<0000013>1 - - - - - -", b"<13>Oct 11 22:14:15 host " + b"T" * 500 + b": x",
                        b"<13>Oct 11 22:14:15 host tag[" + b"9" * 50 + b"]: x",
                        b"<13>Oct 11 22:14:15 Message forwarded from " + b"h" * 300 + b": x",
                        b"<13>Oct 11 22:14:15 host " + b":" * 200, b"<187>58: %LINK-3-UPDOWN: " + b"A" * 300],
    # SD elements: unterminated, escapes at the end, over-long SD-IDs and
    # PARAM-NAMEs, many params (sysklogd, rsyslog's and syslog-ng's SD parsers)
    "SD-elements": [b"<13>1 - - - - - [id", b"<13>1 - - - - - [id a=\"", b"<13>1 - - - - - [id a=\"\\",
                    b"<13>1 - - - - - [id a=\"\\\"]",
                    b"<13>1 - - - - - [id a=\"b\"][", b"<13>1 - - - - - [[]]", b"<13>1 - - - - - []",
                    b"<13>1 - - - - - [" + b"i" * 300 + b" a=\"b\"] x",
                    b"<13>1 - - - - - [id " + b"p" * 300 + b"=\"b\"] x",
                    b"<13>1 - - - - - [id " + b"a=\"b\" " * 500 + b"] x",
                    b"<13>1 - - - - - [id a=\"" + b"\\]" * 300 + b"\"] x",
                    b"<13>1 - - - - - [id@32473 a=\"b\"][id@32473 a=\"c\"] dup",
                    b"<13>1 - - - - - [id a=b] x", b"<13>1 - - - - - [id a=\"b\"x] x",
                    b"<13>1 - - - - - [id\x00 a=\"b\"] x",
                    b"<13>1 - - - - - [id a=\"\xff\xfe\"] x"],
    # sysklogd: a message with NULs and control bytes, and one of nothing but them
    "sysklogd": [b"<13>\x00\x00\x00", b"<13>1 - - - - - - a\x00b\x00c", b"\x00" * 64, b"\r\n" * 32, b"<13>\x1b[2J\x07"],
}

VALID_SYSLOG = [
    b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xef\xbb\xbf'su root' failed",
    b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
    b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
    b"[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] An application event",
    b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
    b"<13>Dec  3 16:00:00 host app[123]: hello",
    b"<14>1 2026-12-03T10:00:00Z web-1 gen - - - FWD:syslog:1",
]


def _octet(msg: bytes) -> bytes:
    return str(len(msg)).encode() + b" " + msg


def syslog_messages() -> list[bytes]:
    return [m for ms in CVE_MESSAGES.values() for m in ms] + VALID_SYSLOG


def syslog_streams() -> list[bytes]:
    """Whole streams: octet-counted, LF-framed, and the CVE shapes among valid frames."""
    out = [b"".join(_octet(m) for m in VALID_SYSLOG), b"\n".join(VALID_SYSLOG) + b"\n",
           b"\r\n".join(VALID_SYSLOG) + b"\r\n", b"\x00".join(VALID_SYSLOG) + b"\x00"]
    for shapes in CVE_MESSAGES.values():
        for m in shapes:
            out.append(_octet(VALID_SYSLOG[0]) + m + _octet(VALID_SYSLOG[1]))
            out.append(VALID_SYSLOG[0] + b"\n" + m + b"\n" + VALID_SYSLOG[1] + b"\n")
    return out


def corpora_syslog(corpora: Path) -> tuple[list[bytes], list[bytes]]:
    """(streams, messages) of the shared corpora's syslog cases."""
    streams, messages = [], []
    for line in (corpora / "syslog" / "go-syslog-framing.jsonl").read_text().splitlines():
        streams.append(base64.b64decode(json.loads(line)["stream_b64"]))
    for name in ("go-syslog-parse.jsonl", "easypost-parse.jsonl", "rfc-examples.jsonl"):
        for line in (corpora / "syslog" / name).read_text().splitlines():
            case = json.loads(line)
            if case.get("input_b64") is not None:
                messages.append(base64.b64decode(case["input_b64"]))
            elif isinstance(case.get("input"), str):
                messages.append(case["input"].encode())
    return streams, messages


def corpora_fluent(corpora: Path) -> list[bytes]:
    out = []
    for path in sorted((corpora / "fluent-forward" / "transcripts").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            out.append(base64.b64decode(json.loads(line)["client_to_server_b64"]))
    return out


def _records() -> list[object]:
    return [parse_message(m, received_ns=RECEIVED_NS, default_host="seed") for m in VALID_SYSLOG]


def chunks() -> list[bytes]:
    recs = _records()
    return [encode_chunk(recs, version=1), encode_chunk(recs, version=2),  # type: ignore[arg-type]
            encode_chunk(recs[:1], version=1), encode_chunk(recs[:1], version=2)]  # type: ignore[arg-type]


def peer_transcripts() -> list[bytes]:
    """What a client sends a receiver: hello, then chunks (real LZ4 chunks)."""
    agent = "0123456789abcdef0123456789abcdef"
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    hello = client.send(Hello(agent=agent, host="edge", token="t"))
    server.receive_data(hello)
    server.events()
    client.receive_data(server.send(Welcome(agent="f" * 32, held=0)))
    client.events()
    frames = []
    seq = 1
    for chunk in chunks():
        data = lz4.block.compress(chunk, store_size=False)
        frames.append(client.send(Chunk(agent, seq, 6 if len(chunk) > 200 else 1, len(chunk), data)))
        seq += 6
    server.send(Ack(agent, 1))
    return [hello, hello + b"".join(frames), hello + frames[0], hello + frames[0][:-3],
            struct.pack(">I", 0xFFFFFFFF) + b"x", struct.pack(">I", 0)]


def fluent_messages() -> list[bytes]:
    t = 1_700_000_000
    ext = msgpack.ExtType(0, struct.pack(">II", t, 123))
    entries = msgpack.packb([t, {"message": "a"}]) + msgpack.packb([ext, {"message": "b"}])
    import gzip
    return [msgpack.packb(["tag", t, {"message": "hello"}]),
            msgpack.packb(["tag", ext, {"message": "hello"}, {"chunk": "abc"}]),
            msgpack.packb(["tag", [[t, {"a": 1}], [ext, {"b": 2}]], {"chunk": "p"}]),
            msgpack.packb(["tag", entries]),
            msgpack.packb(["tag", gzip.compress(entries), {"compressed": "gzip", "size": 2}]),
            msgpack.packb(["PING", "client", "salt", "0" * 128, "", ""]),
            msgpack.packb(["tag", msgpack.ExtType(0, b"\x00" * 7), {}])]


def frames() -> list[bytes]:
    out = []
    for i, chunk in enumerate(chunks()):
        out.append(seal_frame(chunk, key=KEY, key_id=1, salt=SALT, offset=0, first_seq=1 + i, count=6,
                              ts_min=RECEIVED_NS, ts_max=RECEIVED_NS, severity_mask=0xFF, app_bloom=1,
                              zstd_level=3 if i % 2 else None))
        out.append(b"\x00" + struct.pack("<I", len(chunk)) + lz4.block.compress(chunk, store_size=False))
    return out


def configs() -> list[bytes]:
    return [default_config_toml().encode(), default_config_toml(journald=False).encode(),
            b"[agent]\nstate_dir = \"/x\"\n[[forward]]\nname = \"c\"\ntargets = [\"tls://h:1\"]\n"
            b"mode = \"replicate\"\n",
            b"[spool]\nmax_bytes = \"10GiB\"\nfsync = \"batch\"\nfsync_interval = \"50ms\"\n",
            b"[[source]]\ntype = \"syslog\"\nname = \"s\"\nlisten = [\"tcp://127.0.0.1:5514\"]\n",
            b"[[source]]\ntype = \"file\"\nname = \"f\"\npaths = [\"/var/log/*.log\"]\n",
            b"[[rule]]\nmatch = \"app == 'x'\"\nset = { a = \"b\" }\n", b"a = [" * 50]


def regressions(name: str) -> list[bytes]:
    directory = REGRESSIONS / name
    return [p.read_bytes() for p in sorted(directory.iterdir())] if directory.is_dir() else []


def seeds(name: str, corpora: Path | None) -> Iterator[bytes]:
    """Every seed of harness ``name`` (the corpora's too when ``corpora`` is given)."""
    streams, messages = corpora_syslog(corpora) if corpora is not None else ([], [])
    if name == "syslog_framing":
        yield from (PREFIX + s for s in syslog_streams() + streams)
        yield from (b"\x00\x00\x01" + s for s in syslog_streams()[:4])  # max_message 1, byte by byte
    elif name == "syslog_parse":
        yield from syslog_messages() + messages
    elif name == "syslog_parse_batch":
        yield from (PREFIX + s for s in syslog_streams() + streams)
        yield from (PREFIX + m for m in syslog_messages() + messages)
    elif name == "fluent_forward":
        yield from (b"\x00\x04\x10" + m for m in fluent_messages())
        yield from (b"\x00\x04\x10" + m for m in (corpora_fluent(corpora) if corpora is not None else []))
    elif name == "peer_protocol":
        yield from (b"\x00\x04\x10" + t for t in peer_transcripts())
    elif name == "chunk_codec":
        yield from chunks()
    elif name == "chunk_lz4":
        yield from (struct.pack("<I", len(c)) + lz4.block.compress(c, store_size=False) for c in chunks())
    elif name == "frame_codec":
        yield from frames()
    elif name == "config_loader":
        yield from configs()
    else:
        raise KeyError(name)
    yield from regressions(name)
