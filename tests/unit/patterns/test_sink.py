"""The mining stage (PatternsSink) and its state file (PatternState)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostlog.collectors.base import ErrorCounts
from hostlog.patterns import Miner, Settings
from hostlog.patterns.sink import PatternsSink, PatternState
from hostlog.record import Batch, Columns, OnDurable, Record
from hostlog.spool.keys import Keyring


class Collect:
    """A sink that keeps what it is given (the writer's place)."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def has_room(self) -> bool:
        return True

    async def wait_room(self) -> None:
        return None

    async def write(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        self.batches.append(batch)

    def submit(self, batch: Batch, on_durable: OnDurable | None = None) -> None:
        self.batches.append(batch)

    def write_nowait(self, batch: Batch, on_durable: OnDurable | None = None) -> bool:
        self.batches.append(batch)
        return True


def rec(msg: str | bytes, app: str = "a", source: str = "syslog", fields: dict[str, Any] | None = None) -> Record:
    return Record(ts=1, msg=msg, app=app, source=source, fields=fields or {})


def test_every_row_gets_its_pattern_and_shared_dicts_are_not_changed() -> None:
    shared: dict[str, Any] = {"k": "v"}
    batch = Columns.of([rec(f"user {u} logged in", fields=shared) for u in ("ann", "bob")]
                       + [rec("disk 3 full", app="b"), rec(b"bad \xff bytes 7")])
    batch.fields = [shared, shared, shared, {}]
    batch.fields_pool = [shared, {}]
    out = Collect()
    sink = PatternsSink(out, Miner())
    sink.submit(batch)
    got = out.batches[0]
    assert shared == {"k": "v"}
    f = got.fields
    assert f[0]["PATTERN_ID"] == f[1]["PATTERN_ID"] != f[2]["PATTERN_ID"]
    assert f[0]["PATTERN"] == "user ann logged in" and f[1]["PATTERN"] == "user <*> logged in"
    assert f[2]["PATTERN"] == "disk <NUM> full" and f[2]["k"] == "v"
    assert f[3]["PATTERN"] == "bad \ufffd bytes <NUM>"
    assert all(any(row is d for d in got.fields_pool or []) for row in f)
    assert sink.status()["records"] == 4 and sink.status()["patterns_created"] == 3


def test_a_mined_record_keeps_its_pattern_and_a_file_line_is_mined_without_its_header() -> None:
    out = Collect()
    sink = PatternsSink(out, Miner())
    sink.submit(Columns.of([
        rec("x", fields={"PATTERN_ID": "00112233445566aa", "PATTERN": "from a peer"}),
        rec("2015-10-18 18:01:47,978 INFO [main] worker 12 started", source="file"),
        rec("2015-10-18 18:01:48,003 INFO [main] worker 13 started", source="file"),
    ]))
    f = out.batches[0].fields
    assert f[0] == {"PATTERN_ID": "00112233445566aa", "PATTERN": "from a peer"}
    assert f[1]["PATTERN"] == f[2]["PATTERN"] == "worker <NUM> started"


def test_a_failing_miner_stores_the_batch_as_it_came() -> None:
    class Broken(Miner):
        def add_many(self, app: str, messages: Any) -> Any:
            raise RuntimeError("boom")

    out, errors = Collect(), ErrorCounts()
    PatternsSink(out, Broken(), errors).submit(Columns.of([rec("m")]))
    assert out.batches[0].fields == [{}] and errors.counts == {("patterns", "miner"): 1}


def test_the_state_is_saved_and_loaded_and_a_damaged_one_is_set_aside(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = PatternState(tmp_path / "patterns")
    assert store.load(Settings()).apps() == [] and store.problem is None

    async def run() -> PatternsSink:
        sink = PatternsSink(Collect(), store.load(Settings()), store=store, interval=0.05)
        sink.start()
        sink.submit(Columns.of([rec("user ann logged in"), rec("user bob logged in")]))
        for _ in range(100):
            if sink.saves:
                break
            await asyncio.sleep(0.02)
        await sink.stop()
        return sink

    sink = asyncio.run(run())
    assert sink.saves == 1  # saved once by the timer; nothing changed since, so not again at stop
    again = store.load(Settings())
    assert again.patterns("a") == sink.miner.patterns("a")
    assert again.add("a", "user cid logged in").pattern_id == next(iter(sink.miner.patterns("a")))

    for damage in (lambda d: d[: len(d) // 2], lambda d: d[:-1] + bytes([d[-1] ^ 1]), lambda d: b""):
        store.path.write_bytes(damage(store.path.read_bytes()) if store.path.exists() else b"x")
        with caplog.at_level(logging.ERROR, logger="hostlog.patterns"):
            miner = store.load(Settings())
        assert miner.apps() == [] and store.problem is not None and "damaged" in store.problem
        assert "mining starts afresh" in caplog.text
        assert not store.path.exists() and store.path.with_name("miner.state.damaged").exists()
        store.save(sink.miner.to_bytes())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", ""]), st.text(max_size=40)), min_size=1, max_size=40))
def test_ids_are_those_of_the_miner_run_alone(rows: list[tuple[str, str]]) -> None:
    out = Collect()
    PatternsSink(out, Miner()).submit(Columns.of([rec(m, app=a) for a, m in rows]))
    got = [(f["PATTERN_ID"], f["PATTERN"]) for f in out.batches[0].fields]
    alone = Miner()
    by_app: dict[str, list[int]] = {}
    for i, (a, _) in enumerate(rows):
        by_app.setdefault(a, []).append(i)
    want: list[tuple[str, str]] = [("", "")] * len(rows)
    for a, idx in by_app.items():
        for i, m in zip(idx, alone.add_many(a, [rows[i][1] for i in idx])):
            want[i] = (m.pattern_id, m.template)
    assert got == want


def test_a_sealed_state_holds_no_record_text_and_opens_only_with_its_key(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keyring = Keyring({1: b"k" * 32}, 1)
    store = PatternState(tmp_path / "patterns", keyring)
    miner = Miner()
    miner.add_many("appsecret", ["user marker-secret-1 logged in", "user marker-secret-2 logged in"])
    store.save(miner.to_bytes())
    data = store.path.read_bytes()
    assert b"appsecret" not in data and b"marker-secret" not in data and b"logged" not in data
    assert store.load(Settings()).patterns("appsecret") == miner.patterns("appsecret")
    # a rotated key ring still opens it (older keys stay for reading)
    assert PatternState(store.directory, Keyring({1: b"k" * 32, 2: b"n" * 32}, 2)).load(
        Settings()).patterns("appsecret") == miner.patterns("appsecret")
    for other in (Keyring({1: b"x" * 32}, 1), Keyring({3: b"k" * 32}, 3)):
        store.save(miner.to_bytes())
        with caplog.at_level(logging.ERROR, logger="hostlog.patterns"):
            again = PatternState(store.directory, other).load(Settings())
        assert again.apps() == [] and "mining starts afresh" in caplog.text
        assert store.path.with_name("miner.state.damaged").exists()
