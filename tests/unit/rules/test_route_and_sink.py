"""The rules in front of a real spool writer (RulesSink), and routing: what
each destination's chunk source sends of a spool that holds routed records."""

from __future__ import annotations

import asyncio
from pathlib import Path

import lz4.block

from hostlog.chunk import decode_columns, encode_columns
from hostlog.collectors.base import ErrorCounts
from hostlog.forward.sender import ChunkSource
from hostlog.record import Columns, Record
from hostlog.rules import ROUTE_FIELD
from hostlog.rules.route import for_destination, may_be_routed
from hostlog.rules.sink import RulesSink, rules_status
from hostlog.spool.keys import Keyring
from hostlog.spool.reader import SpoolReader
from hostlog.spool.spool import Spool
from hostlog.spool.writer import SpoolWriter
from tests.unit.rules.support import rec, rule


def stamped(records: list[Record]) -> list[Record]:
    for seq, r in enumerate(records, 1):
        r.origin, r.seq = "o" * 32, seq
    return records


def test_for_destination_leaves_out_what_is_routed_elsewhere_and_the_route() -> None:
    records = stamped([rec("all"), rec("c", fields={ROUTE_FIELD: "central"}),
                       rec("a", fields={ROUTE_FIELD: "archive", "k": "v"}),
                       rec("both", fields={ROUTE_FIELD: "archive central"})])
    chunk = encode_columns(Columns.of(records).columns)
    assert may_be_routed(chunk) and not may_be_routed(encode_columns(Columns.of([rec("x")]).columns))
    routed = for_destination(chunk, "central")
    assert routed is not None
    data, length, count = routed
    got = decode_columns(lz4.block.decompress(data, uncompressed_size=length)).records()
    assert count == 3 and [(r.msg, r.seq, r.fields) for r in got] == [("all", 1, {}), ("c", 2, {}), ("both", 4, {})]
    assert for_destination(encode_columns(Columns.of(stamped([rec("a", fields={ROUTE_FIELD: "x"})])).columns),
                           "central") is None


class Harness:
    """A spool, its writer, and the rules in front of it."""

    def __init__(self, tmp: Path, rules: list) -> None:
        self.spool = Spool.open(tmp / "spool", Keyring.load_or_create(tmp / "spool.key"))
        self.writer = SpoolWriter(self.spool, fsync="never", fsync_interval=0.01)
        self.errors = ErrorCounts()
        self.sink = RulesSink(self.writer, rules, self.errors, spool_dir=tmp / "spool")

    def reader(self) -> SpoolReader:
        return SpoolReader(self.spool.directory, self.spool.keyring)

    async def close(self) -> None:
        await self.writer.stop()
        self.spool.close()


def test_routed_records_reach_only_their_destinations(tmp_path: Path) -> None:
    async def main() -> dict[str, list[tuple[int, int, list[str]]]]:
        h = Harness(tmp_path, [rule(name="api", match={"identifier": "api"}, to=["central"])])
        h.writer.start()
        # three frames: mixed, only routed ones, none routed
        for batch in ([rec("a1", app="api"), rec("w1", app="web"), rec("a2", app="api")],
                      [rec("a3", app="api"), rec("a4", app="api")], [rec("w2", app="web")]):
            await h.sink.write(Columns.of(batch))
            await h.writer.flush()
        out = {}
        for dest in ("central", "archive"):
            source = ChunkSource(h.reader(), h.spool.agent_id, destination=dest)
            chunks, reached = source.read(0, 6, max_frames=16, max_bytes=1 << 20)
            assert reached == 6
            out[dest] = [(c.first, c.count, [r.msg for r in
                                             decode_columns(lz4.block.decompress(c.data, uncompressed_size=c.chunk_len))
                                             .records()]) for c, _ in chunks]
            for c, _ in chunks:
                inflated = lz4.block.decompress(c.data, uncompressed_size=c.chunk_len)
                assert ROUTE_FIELD.encode() not in inflated
                seqs = [r.seq for r in decode_columns(inflated).records()]
                # the chunk claims the seqs up to its frame's last (the ack covers what was left out)
                assert seqs == sorted(seqs) and seqs[-1] <= c.last and c.last - c.first + 1 == len(seqs)
        # without a destination (the NATS and other outputs ask with one): the frames as stored
        plain, _ = ChunkSource(h.reader(), h.spool.agent_id).read(0, 6, max_frames=16, max_bytes=1 << 20)
        assert [c.count for c, _ in plain] == [3, 2, 1]
        await h.close()
        return out

    out = asyncio.run(main())
    assert out["central"] == [(1, 3, ["a1", "w1", "a2"]), (4, 2, ["a3", "a4"]), (6, 1, ["w2"])]
    # archive: the first frame without a1 and a2 (its chunk ends at seq 3 still), the second not at all
    assert out["archive"] == [(3, 1, ["w1"]), (6, 1, ["w2"])]


def test_the_sink_passes_callbacks_on_and_keeps_counts_across_a_reload(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, [rule(name="drop-all", drop=True)])
        h.writer.start()
        durable: list[int] = []
        await h.sink.write(Columns.of([rec("x"), rec("y")]), durable.append)  # all dropped
        h.sink.submit(Columns.of([rec("z")]), durable.append)
        await h.writer.flush()
        assert len(durable) == 2, "a batch the rules dropped whole still reports durable"
        h.sink.use([rule(name="tag", set={"t": "1"})])  # a reload: the next batch meets the new rules
        assert h.sink.write_nowait(Columns.of([rec("kept")]))
        await h.writer.flush()
        held = [r for _, r in h.reader().records()]
        assert [(r.msg, r.fields) for r in held] == [("kept", {"t": "1"})]
        status = h.sink.status()
        assert status == [
            {"name": "tag", "matched": 1, "dropped": 0, "sampled_out": 0, "parsed": 0, "parse_errors": 0,
             "redacted": 0, "routed": 0, "errors": 0},
            {"name": "drop-all", "removed": True, "matched": 3, "dropped": 3, "sampled_out": 0, "parsed": 0,
             "parse_errors": 0, "redacted": 0, "routed": 0, "errors": 0}]
        assert h.sink.dropped() == {"drop-all": 3, "tag": 0}

        class Agent:
            rules = h.sink
        assert rules_status(Agent()) == status and rules_status(object()) == []
        await h.close()

    asyncio.run(main())


def test_a_rule_failure_is_reported_without_the_record(tmp_path: Path, caplog) -> None:
    async def main() -> None:
        h = Harness(tmp_path, [rule(name="p", parse="json")])
        h.writer.start()
        h.sink.engine.rules[0].parser = lambda text: (_ for _ in ()).throw(ValueError(f"bad {text}"))
        await h.sink.write(Columns.of([rec("the secret hunter2")]))
        await h.writer.flush()
        [held] = [r for _, r in h.reader().records()]
        assert held.fields == {"RULE_ERROR": "p"} and held.msg == "the secret hunter2"
        assert h.errors.counts == {("rules", "rule:p"): 1}
        await h.close()

    asyncio.run(main())
    assert "rule p: ValueError" in caplog.text and "hunter2" not in caplog.text
