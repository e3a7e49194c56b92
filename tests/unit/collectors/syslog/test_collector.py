"""The syslog collector's parse steps (collectors/syslog/collector.py), without sockets.

The listeners themselves are tested end to end in tests/integration
(test_syslog_udp.py, test_syslog_backpressure.py) and tests/e2e. Here: what
a faster parse path leaves to a slower one is counted as the collector's
events (``slow_blocks``, ``slow_messages``) and each kind is logged once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from hostlog.collectors.base import CollectorContext
from hostlog.collectors.events import Counted
from hostlog.collectors.syslog import parse_batch as syslog_parse_batch
from hostlog.collectors.syslog.collector import SyslogCollector
from hostlog.collectors.syslog.framing import SyslogFramer
from hostlog.config import parse_config
from tests.conftest import need

LINES_3164 = [b"<13>Oct 11 22:14:%02d host app[%d]: message %d" % (i % 60, 100 + i, i)
              for i in range(40)]
LINES_5424 = [b"<13>1 2024-05-01T10:00:00Z h app %d - - line %d" % (i, i) for i in range(40)]


class ListSink:
    def __init__(self) -> None:
        self.batches: list = []

    def write_nowait(self, batch, on_durable=None) -> bool:
        self.batches.append(batch)
        return True


@pytest.fixture
def collector(tmp_path: Path) -> SyslogCollector:
    cfg = parse_config(f'[agent]\nstate_dir = "{tmp_path}/state"\n[[source]]\nname = "edge"\n'
                       f'type = "syslog"\nlisten = ["tcp://127.0.0.1:5514"]\n')
    ctx = CollectorContext(hostname="h", sink=ListSink(), checkpoints=SimpleNamespace())
    return SyslogCollector(cfg.sources[0], ctx)


def _read(collector: SyslogCollector, stream: bytes, framer: SyslogFramer | None = None) -> list:
    framer = framer or SyslogFramer()
    batch = collector.parse_stream(framer.feed_blocks(stream), framer, "192.0.2.1")
    assert batch is not None
    return batch.records()


def test_the_common_shape_takes_no_slow_path(collector) -> None:
    need(syslog_parse_batch._syslog5424 is not None,
         "hostlog.collectors.syslog._syslog5424 (the package built with a C compiler)")
    recs = _read(collector, b"".join(x + b"\n" for x in LINES_5424))
    assert [r.msg for r in recs] == [f"line {i}" for i in range(40)]
    counters = collector.context.counters
    assert (counters.get(("edge", Counted.SLOW_BLOCKS), 0),
            counters.get(("edge", Counted.SLOW_MESSAGES), 0)) == (0, 0)


def test_slow_paths_are_counted_and_each_kind_logged_once(collector, caplog) -> None:
    need(syslog_parse_batch._syslog5424 is not None,
         "hostlog.collectors.syslog._syslog5424 (the package built with a C compiler)")
    stream = b"".join(x + b"\n" for x in LINES_3164)
    framer = SyslogFramer()  # one connection
    with caplog.at_level(logging.INFO, logger="hostlog.syslog"):
        for _ in range(3):
            recs = _read(collector, stream, framer)
            assert [r.msg for r in recs] == [f"message {i}" for i in range(40)]
    counters = collector.context.counters
    # the first read decides the framing and gives frames; each later one gives a
    # block the compiled splitter leaves to the framer; every time the 40 frames
    # are left to the batch regexes
    assert counters[("edge", Counted.SLOW_BLOCKS)] == 2
    assert counters[("edge", Counted.SLOW_MESSAGES)] == 3 * 40
    said = [r.getMessage() for r in caplog.records if "syslog source edge" in r.getMessage()]
    assert len(said) == 2
    assert "event slow_messages" in said[0] and "batch regexes" in said[0]
    assert "event slow_blocks" in said[1] and "Python framer" in said[1]
