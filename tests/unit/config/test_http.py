"""``[http]`` and ``[agent] tags``: what the HTTP server is configured with."""

from __future__ import annotations

import pytest

from hostlog.config import Endpoint, parse_config
from tests.support.config import only_problem


def test_absent_means_no_server() -> None:
    assert parse_config("").http is None


def test_listeners_of_every_kind_are_parsed() -> None:
    config = parse_config('[http]\nlisten = ["127.0.0.1:19532", "http://[::1]:8080", "https://0.0.0.0:443",'
                          ' "unix:///run/hostlog/http.sock"]\n'
                          '[tls]\ncert = "/etc/hostlog/tls/a.pem"\nkey = "/etc/hostlog/tls/a.key"\n')
    assert config.http is not None
    assert config.http.endpoints() == [Endpoint("http", "127.0.0.1", 19532, None),
                                       Endpoint("http", "::1", 8080, None),
                                       Endpoint("https", "0.0.0.0", 443, None),
                                       Endpoint("unix", None, None, "/run/hostlog/http.sock")]
    assert config.http.max_followers == 256 and config.http.follower_buffer == 10_000


@pytest.mark.parametrize("text, where, problem", [
    ('[http]\nlisten = ["https://127.0.0.1:1"]\n', "http.listen[0]", "an https:// listener needs [tls]"),
    ('[http]\nlisten = ["127.0.0.1"]\n', "http.listen", "missing port"),
    ('[http]\nlisten = ["tcp://127.0.0.1:1"]\n', "http.listen", "unsupported scheme 'tcp'"),
    ('[http]\nlisten = ["http://127.0.0.1:1/logs"]\n', "http.listen", "not at a path"),
    ('[http]\nlisten = []\n', "http.listen", "must not be empty"),
    ('[http]\nlisten = ["127.0.0.1:1"]\nmax_followers = 0\n', "http.max_followers", "must be >= 1, got 0"),
    ('[http]\nlisten = ["127.0.0.1:1"]\nlisen = 1\n', "http.lisen", "did you mean 'listen'"),
    ('[http]\nlisten = ["127.0.0.1:1"]\ningest_rate_limit = { rate = 0 }\n', "http.ingest_rate_limit.rate",
     "must be > 0"),
])
def test_a_bad_http_section_names_the_key(text: str, where: str, problem: str) -> None:
    key, message = only_problem(text)
    assert key == where and problem in message, (key, message)


def test_agent_tags_are_labels() -> None:
    config = parse_config('[agent]\ntags = { instance = "i-1", region = "eu-west" }\n')
    assert config.agent.tags == {"instance": "i-1", "region": "eu-west"}
    assert only_problem('[agent]\ntags = { instance = 3 }\n')[0] == "agent.tags.instance"
