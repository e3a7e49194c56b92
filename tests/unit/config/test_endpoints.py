"""Tests for hostlog.config.endpoints: socket URLs in a file, and parse_endpoint."""

from __future__ import annotations

import pytest

from hostlog.config import Endpoint, parse_endpoint
from tests.support.config import only_problem


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("udp://127.0.0.1", "missing port"),
        ("tcp://127.0.0.1:70000", "port must be a number from 1 to 65535"),
        ("tcp://::1:5514", "IPv6 addresses in brackets"),
        ("http://127.0.0.1:80", "unsupported scheme 'http'"),
        ("unix://relative.sock", "absolute path"),
        ("udp://999.0.0.1:514", "not a valid IPv4 address"),
        ("127.0.0.1:514", "expected one of udp://"),
        ("unix:///" + "x" * 200, "limited to 107 bytes"),
    ],
)
def test_bad_listen_url(url: str, fragment: str) -> None:
    key, message = only_problem(
        f'[[source]]\ntype = "syslog"\nlisten = ["udp://127.0.0.1:5514", "{url}"]\n'
    )
    assert key == "source[0].listen[1]"
    assert fragment in message and url in message


def test_parse_endpoint() -> None:
    assert parse_endpoint("tcp://localhost:5514") == Endpoint("tcp", "localhost", 5514, None)
    assert parse_endpoint("tls://[2001:db8::1]:6514").host == "2001:db8::1"
    assert parse_endpoint("unix:///dev/log") == Endpoint("unix", None, None, "/dev/log")
    with pytest.raises(ValueError, match="unsupported scheme 'udp'"):
        parse_endpoint("udp://127.0.0.1:1", ("tcp", "tls"))
