"""The NATS JetStream output's message headers, its Msg-Id and the resume
mark read back from a stored message; the config keys of both sides."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hostlog.collectors.nats.collector import chunk_of
from hostlog.config import ConfigError, Forward, parse_config
from hostlog.config.sources import NatsSource
from hostlog.errors import ChunkError
from hostlog.forward.nats_out import held_from_headers, message_headers, parse_msg_id, subject_for
from hostlog.forward.protocol import Chunk

ORIGIN = "0123456789abcdef0123456789abcdef"


class FakeMsg:
    def __init__(self, headers: dict[str, str] | None, data: bytes = b"x") -> None:
        self.headers = headers
        self.data = data


def test_headers_carry_the_chunk_and_the_msg_id() -> None:
    chunk = Chunk(origin=ORIGIN, first=101, count=50, chunk_len=4096, data=b"lz4")
    headers = message_headers(chunk, prev=100)
    assert headers == {"Nats-Msg-Id": f"{ORIGIN}:101-150", "Hostlog-Origin": ORIGIN, "Hostlog-First": "101",
                       "Hostlog-Count": "50", "Hostlog-Chunk-Len": "4096", "Hostlog-Prev": "100"}
    assert subject_for("hostlog", ORIGIN) == f"hostlog.{ORIGIN}"
    # the input rebuilds the same chunk from them
    assert chunk_of(FakeMsg(headers, b"lz4")) == chunk  # type: ignore[arg-type]


def test_msg_id_parsing() -> None:
    assert parse_msg_id(f"{ORIGIN}:1-1") == (ORIGIN, 1, 1)
    assert parse_msg_id(f"{ORIGIN}:7-9") == (ORIGIN, 7, 9)
    for bad in ("", "x", f"{ORIGIN}:9-7", f"{ORIGIN}:0-3", f"{ORIGIN}:1", ":1-2", f"{ORIGIN}:a-b"):
        assert parse_msg_id(bad) is None, bad


def test_the_resume_mark_comes_from_the_last_message_headers() -> None:
    chunk = Chunk(origin=ORIGIN, first=11, count=10, chunk_len=1, data=b"")
    assert held_from_headers(message_headers(chunk, 10), ORIGIN) == 20
    # only a Msg-Id (another client's copy of the message): still understood
    assert held_from_headers({"Nats-Msg-Id": f"{ORIGIN}:11-20"}, ORIGIN) == 20
    # someone else's message on the subject, or none: no mark
    assert held_from_headers({"Nats-Msg-Id": "other:1-5"}, ORIGIN) is None
    assert held_from_headers({"Hostlog-Origin": ORIGIN, "Hostlog-First": "x", "Hostlog-Count": "2"}, ORIGIN) is None
    assert held_from_headers(None, ORIGIN) is None
    assert held_from_headers({}, ORIGIN) is None


@pytest.mark.parametrize("headers", [
    None,
    {"Hostlog-First": "1", "Hostlog-Count": "1", "Hostlog-Chunk-Len": "1"},
    {"Hostlog-Origin": ORIGIN, "Hostlog-First": "0", "Hostlog-Count": "1", "Hostlog-Chunk-Len": "1"},
    {"Hostlog-Origin": ORIGIN, "Hostlog-First": "1", "Hostlog-Count": "-1", "Hostlog-Chunk-Len": "1"},
    {"Hostlog-Origin": ORIGIN, "Hostlog-First": "1", "Hostlog-Count": "1"},
])
def test_a_message_without_its_chunk_headers_is_refused(headers: dict[str, str] | None) -> None:
    with pytest.raises(ChunkError):
        chunk_of(FakeMsg(headers))  # type: ignore[arg-type]


def test_forward_nats_config() -> None:
    config = parse_config('[[forward]]\nname = "js"\ntype = "nats"\n'
                          'targets = ["nats://nats-1:4222", "tls://nats-2:4222"]\n')
    forward = config.forwards[0]
    assert (forward.stream, forward.subject) == ("HOSTLOG", "hostlog")
    assert [ep.url for ep in forward.endpoints()] == ["nats://nats-1:4222", "tls://nats-2:4222"]
    with pytest.raises(ValidationError):
        Forward(name="js", type="nats", targets=["tcp://nats-1:4222"])
    with pytest.raises(ValidationError):
        Forward(name="js", type="hostlog", targets=["tcp://c:7514"], stream="OTHER")
    with pytest.raises(ValidationError):
        Forward(name="js", type="nats", targets=["nats://n:4222"], subject="logs.>")
    with pytest.raises(ConfigError):
        parse_config('[[forward]]\nname = "js"\ntype = "hostlog"\ntargets = ["nats://nats-1:4222"]\n')


def test_source_nats_config() -> None:
    config = parse_config('[[source]]\ntype = "nats"\nname = "js-in"\nservers = ["nats://nats-1:4222"]\n')
    source = config.sources[0]
    assert isinstance(source, NatsSource)
    assert (source.stream, source.durable, source.subject) == ("HOSTLOG", "hostlog", "hostlog.>")
    unnamed = parse_config('[[source]]\ntype = "nats"\nservers = ["nats://n:4222"]\n').sources[0]
    assert unnamed.name == "nats-0"
    for bad in ('servers = "nats://n:4222"', 'servers = ["tcp://n:4222"]',
                'servers = ["nats://n:4222"]\ndurable = "a.b"', 'servers = ["nats://n:4222"]\nsubject = "a b"'):
        with pytest.raises(ConfigError):
            parse_config(f'[[source]]\ntype = "nats"\n{bad}\n')
