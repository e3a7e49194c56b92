"""The file collector on real files: appends, rotations, restarts, checkpoints."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

import hostlog.collectors.files.collector as files_mod
from hostlog.collectors.files.collector import FileCollector
from hostlog.config import FileSource
from hostlog.record import Record
from tests.conftest import need
from tests.integration.helpers import SpoolHarness, wait_until


class Tail:
    """A FileCollector on a real spool, stopped as the agent stops it."""

    def __init__(self, tmp: Path, **config: Any) -> None:
        self.harness = SpoolHarness(tmp / "state")
        config.setdefault("name", "logs")
        config.setdefault("start", "beginning")
        config.setdefault("rotate_wait", 0.2)
        self.config = FileSource(**config)
        self.collector: FileCollector | None = None

    async def __aenter__(self) -> Tail:
        self.collector = FileCollector(self.config, self.harness.open())
        await self.collector.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.collector is not None
        await self.collector.stop()
        await self.harness.close()

    def records(self) -> list[Record]:
        return self.harness.records("file")

    def msgs(self) -> list[Any]:
        return [r.msg for r in self.records()]

    async def wait(self, n: int, timeout: float = 15.0) -> list[Any]:
        await wait_until(lambda: len(self.records()) >= n, timeout, what=f"{n} records")
        return self.msgs()

    def checkpoint(self) -> Any:
        return self.harness.checkpoints.load("logs")


def append(path: Path, text: str | bytes) -> None:
    with open(path, "ab") as f:
        f.write(text.encode() if isinstance(text, str) else text)


def lines(start: int, stop: int) -> str:
    return "".join(f"line {i}\n" for i in range(start, stop))


def numbers(start: int, stop: int) -> list[str]:
    return [f"line {i}" for i in range(start, stop)]


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    d = tmp_path / "log"
    d.mkdir()
    return d


# -- reading -------------------------------------------------------------------------------

def test_start_beginning_reads_what_is_there_and_start_end_only_what_comes(
        tmp_path: Path, logdir: Path) -> None:
    (logdir / "a.log").write_text(lines(0, 3))

    async def run(start: str, sub: str) -> list[Any]:
        async with Tail(tmp_path / sub, paths=[str(logdir / "*.log")], start=start) as tail:
            append(logdir / "a.log", lines(3, 5))
            await tail.wait(2)
            await asyncio.sleep(0.2)
            return tail.msgs()

    assert asyncio.run(run("beginning", "b")) == numbers(0, 5)
    assert asyncio.run(run("end", "e")) == numbers(3, 5)


def test_records_carry_path_app_host_and_the_time_they_were_read(tmp_path: Path, logdir: Path) -> None:
    async def run() -> list[Record]:
        async with Tail(tmp_path, paths=[str(logdir / "*.log")]) as tail:
            (logdir / "web.log").write_text("hello\n")
            (logdir / "db.log").write_text("world\n")
            await tail.wait(2)
            return tail.records()

    t0 = time.time_ns()
    by_msg = {r.msg: r for r in asyncio.run(run())}
    web, db = by_msg["hello"], by_msg["world"]
    assert (web.source, web.app, web.host, web.fields) == ("file", "web.log", "test-host",
                                                           {"path": str(logdir / "web.log")})
    assert db.app == "db.log"
    assert t0 <= web.ts <= time.time_ns()
    named = asyncio.run(_one_with_app(tmp_path / "named", logdir))
    assert named.app == "nginx"


async def _one_with_app(tmp: Path, logdir: Path) -> Record:
    async with Tail(tmp, paths=[str(logdir / "web.log")], app="nginx") as tail:
        await tail.wait(1)
        return tail.records()[0]


def test_inotify_brings_new_lines_and_new_files_without_the_poll(tmp_path: Path, logdir: Path) -> None:
    need(files_mod.Inotify is not None, "asyncinotify (a dependency of the file collector)")

    async def run() -> tuple[list[Any], float]:
        # an hour between polls: only inotify can deliver within the test
        async with Tail(tmp_path, paths=[str(logdir / "*.log")], poll_interval=3600) as tail:
            t0 = time.monotonic()
            append(logdir / "a.log", lines(0, 2))      # a new file
            await tail.wait(2)
            append(logdir / "a.log", lines(2, 4))      # lines appended
            await tail.wait(4)
            sub = logdir / "b.log"
            sub.write_text(lines(4, 5))
            await tail.wait(5)
            return tail.msgs(), time.monotonic() - t0

    msgs, took = asyncio.run(run())
    assert sorted(msgs) == sorted(numbers(0, 5))
    assert took < 10


def test_the_poll_alone_still_finds_lines_and_files(tmp_path: Path, logdir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files_mod, "Inotify", None)  # as where inotify is unavailable

    async def run() -> list[Any]:
        async with Tail(tmp_path, paths=[str(logdir / "*.log")], poll_interval=0.1) as tail:
            assert tail.collector is not None and tail.collector._inotify is None
            append(logdir / "a.log", lines(0, 2))
            await tail.wait(2)
            append(logdir / "a.log", lines(2, 3))
            return await tail.wait(3)

    assert asyncio.run(run()) == numbers(0, 3)


def test_a_glob_with_a_wildcard_directory_finds_files_in_new_directories(
        tmp_path: Path, logdir: Path) -> None:
    need(files_mod.Inotify is not None, "asyncinotify (a dependency of the file collector)")

    async def run() -> list[Any]:
        async with Tail(tmp_path, paths=[str(logdir / "*" / "app.log")], poll_interval=3600) as tail:
            (logdir / "svc1").mkdir()
            append(logdir / "svc1" / "app.log", "from svc1\n")
            await tail.wait(1)
            (logdir / "svc2").mkdir()
            append(logdir / "svc2" / "app.log", "from svc2\n")
            return await tail.wait(2)

    assert sorted(asyncio.run(run())) == ["from svc1", "from svc2"]


def test_a_partial_line_waits_for_its_newline_and_is_flushed_after_the_timeout(
        tmp_path: Path, logdir: Path) -> None:
    log = logdir / "a.log"

    async def run() -> tuple[list[Record], float]:
        async with Tail(tmp_path, paths=[str(log)], flush_timeout=1.0) as tail:
            append(log, "first ha")
            await asyncio.sleep(0.3)           # less than flush_timeout: still held
            append(log, "lf\n")
            await tail.wait(1)
            t0 = time.monotonic()
            append(log, "no newline yet")
            await tail.wait(2)                 # comes only through the flush
            waited = time.monotonic() - t0
            append(log, " and the rest\nnext\n")
            await tail.wait(4)
            return tail.records(), waited

    records, waited = asyncio.run(run())
    assert [r.msg for r in records] == ["first half", "no newline yet", " and the rest", "next"]
    assert waited >= 0.9
    assert [r.fields.get("partial") for r in records] == [None, "true", "true", None]


def test_long_lines_are_cut_and_marked(tmp_path: Path, logdir: Path) -> None:
    log = logdir / "a.log"
    log.write_text("x" * 250 + "\nshort\n")

    async def run() -> list[Record]:
        async with Tail(tmp_path, paths=[str(log)], max_line=100) as tail:
            await tail.wait(4)
            return tail.records()

    records = asyncio.run(run())
    assert [r.msg for r in records] == ["x" * 100, "x" * 100, "x" * 50, "short"]
    assert [r.fields.get("truncated") for r in records] == ["true", "true", "true", None]


def test_continuation_lines_are_joined_to_their_first_line(tmp_path: Path, logdir: Path) -> None:
    log = logdir / "app.log"
    log.write_text("2024-05-01 ERROR boom\nTraceback:\n  File x\nValueError\n"
                   "2024-05-01 INFO fine\n2024-05-01 INFO last\n  tail\n")

    async def run() -> list[Any]:
        async with Tail(tmp_path, paths=[str(log)], multiline_start=r"^\d{4}-",
                        flush_timeout=0.3) as tail:
            return await tail.wait(3)  # the last record comes with the flush

    assert asyncio.run(run()) == ["2024-05-01 ERROR boom\nTraceback:\n  File x\nValueError",
                                  "2024-05-01 INFO fine", "2024-05-01 INFO last\n  tail"]


def test_lines_that_do_not_decode_are_kept_as_bytes(tmp_path: Path, logdir: Path) -> None:
    (logdir / "u.log").write_bytes("ünï\n".encode() + b"bad \xff\xfe\n")
    (logdir / "l.log").write_bytes(b"caf\xe9\n")

    async def run(pattern: str, n: int, sub: str, **kw: Any) -> list[Any]:
        async with Tail(tmp_path / sub, paths=[str(logdir / pattern)], **kw) as tail:
            return await tail.wait(n)

    assert asyncio.run(run("u.log", 2, "u")) == ["ünï", b"bad \xff\xfe"]
    assert asyncio.run(run("l.log", 1, "l", encoding="latin-1")) == ["café"]


# -- rotation --------------------------------------------------------------------------------

def test_rename_rotation_reads_the_old_file_to_its_end_and_the_new_one_from_its_start(
        tmp_path: Path, logdir: Path) -> None:
    log = logdir / "app.log"

    async def run() -> list[Any]:
        async with Tail(tmp_path, paths=[str(log)], rotate_wait=1.0) as tail:
            with open(log, "a") as writer:
                writer.write(lines(0, 10))
                writer.flush()
                await tail.wait(10)
                os.rename(log, logdir / "app.log.1")
                # the writer has not reopened yet: these land in the renamed file
                writer.write(lines(10, 20))
                writer.flush()
                await tail.wait(20)
            log.write_text(lines(20, 30))
            await tail.wait(30)
            await wait_until(lambda: len(tail.collector.files) == 1, what="the old file let go")
            return tail.msgs()

    assert sorted(asyncio.run(run())) == sorted(numbers(0, 30))


def test_copytruncate_starts_over_from_the_beginning(tmp_path: Path, logdir: Path) -> None:
    log = logdir / "app.log"
    log.write_text(lines(0, 10))

    async def run() -> list[Any]:
        async with Tail(tmp_path, paths=[str(log)]) as tail:
            await tail.wait(10)
            shutil.copy(log, logdir / "app.log.1")
            with open(log, "r+") as f:
                f.truncate(0)
            append(log, lines(10, 12))
            await tail.wait(12)
            append(log, lines(12, 13))
            await tail.wait(13)
            await asyncio.sleep(0.2)
            return tail.msgs()

    assert asyncio.run(run()) == numbers(0, 13)


def test_a_file_truncated_and_refilled_past_the_old_offset_is_read_from_zero(
        tmp_path: Path, logdir: Path) -> None:
    log = logdir / "app.log"
    log.write_text(lines(0, 5))

    async def first() -> None:
        async with Tail(tmp_path, paths=[str(log)]) as tail:
            await tail.wait(5)

    asyncio.run(first())
    # while the agent is down: truncated, then longer than before (same inode)
    log.write_text("".join(f"other {i}\n" for i in range(20)))

    async def second() -> list[Any]:
        async with Tail(tmp_path, paths=[str(log)]) as tail:
            await tail.wait(25)
            await asyncio.sleep(0.2)
            return tail.msgs()

    assert asyncio.run(second()) == numbers(0, 5) + [f"other {i}" for i in range(20)]


def test_a_file_truncated_and_refilled_between_two_looks_is_read_from_zero(
        tmp_path: Path, logdir: Path) -> None:
    log = logdir / "app.log"
    log.write_text(lines(0, 5))

    async def run() -> list[Any]:
        async with Tail(tmp_path, paths=[str(log)]) as tail:
            await tail.wait(5)
            await wait_until(lambda: tail.collector._working is None, what="an idle collector")
            # no await in between: no pass can see the file empty, only longer
            # than before with other first bytes
            log.write_text("".join(f"other {i}\n" for i in range(20)))
            await tail.wait(25)
            await asyncio.sleep(0.2)
            return tail.msgs()

    assert asyncio.run(run()) == numbers(0, 5) + [f"other {i}" for i in range(20)]


def test_delete_and_recreate(tmp_path: Path, logdir: Path) -> None:
    log = logdir / "app.log"

    async def run() -> list[Any]:
        async with Tail(tmp_path, paths=[str(log)]) as tail:
            with open(log, "a") as writer:
                writer.write(lines(0, 5))
                writer.flush()
                await tail.wait(5)
                os.unlink(log)
                writer.write(lines(5, 7))  # into the deleted file, through its descriptor
                writer.flush()
                await tail.wait(7)
            append(log, lines(7, 9))
            await tail.wait(9)
            await asyncio.sleep(0.3)
            return tail.msgs()

    assert sorted(asyncio.run(run())) == sorted(numbers(0, 9))


def test_a_file_replaced_by_another_at_the_same_path(tmp_path: Path, logdir: Path) -> None:
    log = logdir / "app.log"
    log.write_text(lines(0, 3))

    async def run() -> list[Any]:
        async with Tail(tmp_path, paths=[str(log)]) as tail:
            await tail.wait(3)
            other = logdir / ".app.log.new"
            other.write_text(lines(3, 6))
            os.replace(other, log)
            await tail.wait(6)
            append(log, lines(6, 7))
            await tail.wait(7)
            await asyncio.sleep(0.3)
            return tail.msgs()

    assert asyncio.run(run()) == numbers(0, 7)


# -- checkpoints and restarts --------------------------------------------------------------------

def test_a_restart_resumes_where_the_checkpoint_is(tmp_path: Path, logdir: Path) -> None:
    log = logdir / "app.log"
    log.write_text(lines(0, 10))

    async def run(n: int) -> list[Any]:
        async with Tail(tmp_path, paths=[str(log)], start="end") as tail:
            await tail.wait(n)
            await asyncio.sleep(0.2)
            return tail.msgs()

    async def first() -> list[Any]:
        async with Tail(tmp_path, paths=[str(log)], start="end") as tail:
            append(log, lines(10, 15))
            return await tail.wait(5)

    assert asyncio.run(first()) == numbers(10, 15)
    append(log, lines(15, 20) + "partial")  # while stopped; the partial line is not read yet
    assert asyncio.run(run(10)) == numbers(10, 20)
    append(log, " line\n")
    # `start = "end"` applies on the first start only: this is a resume
    assert asyncio.run(run(11)) == numbers(10, 20) + ["partial line"]


def test_a_file_renamed_while_stopped_is_read_to_its_end_and_the_new_one_from_zero(
        tmp_path: Path, logdir: Path) -> None:
    log = logdir / "app.log"

    async def first() -> None:
        async with Tail(tmp_path, paths=[str(log)], start="end") as tail:
            append(log, lines(0, 5))
            await tail.wait(5)

    asyncio.run(first())
    append(log, lines(5, 8))                    # not read before the rotation
    os.rename(log, logdir / "app.log.1")
    log.write_text(lines(8, 10))                # new since the last run: read from 0

    async def second() -> list[Any]:
        async with Tail(tmp_path, paths=[str(log)], start="end") as tail:
            await tail.wait(10)
            await asyncio.sleep(0.3)
            return tail.msgs()

    assert sorted(asyncio.run(second())) == sorted(numbers(0, 10))


def test_a_checkpoint_for_a_reused_inode_with_other_content_is_not_trusted(
        tmp_path: Path, logdir: Path) -> None:
    log = logdir / "app.log"
    log.write_text(lines(0, 20))
    st = os.stat(log)
    # what a checkpoint says after the old file was deleted and this one got its inode
    Tail(tmp_path, paths=[str(log)]).harness.save_checkpoint("logs", {"version": 1, "files": [
        {"path": str(log), "dev": st.st_dev, "ino": st.st_ino, "fp_len": 12,
         "fp": files_mod.fingerprint(b"other conten"), "offset": 50}]})

    async def run() -> list[Any]:
        async with Tail(tmp_path, paths=[str(log)], start="end") as tail:
            await tail.wait(20)
            await asyncio.sleep(0.2)
            return tail.msgs()

    assert asyncio.run(run()) == numbers(0, 20)


def test_offsets_are_saved_only_once_the_records_are_durable(tmp_path: Path, logdir: Path) -> None:
    log = logdir / "app.log"
    log.write_text(lines(0, 100))

    async def run() -> tuple[Any, Any]:
        tail = Tail(tmp_path, paths=[str(log)])
        tail.harness.fsync_interval = 3600  # no group commit until the writer stops
        async with tail:
            assert tail.collector is not None
            tail.collector.stop_wait = 0.1  # durability will not come before the writer stops
            await wait_until(lambda: tail.harness.writer.accepted_seq >= 100, what="100 accepted")
            await asyncio.sleep(0.2)
            before = tail.checkpoint()
        return before, tail.checkpoint()

    before, after = asyncio.run(run())
    assert before is None
    assert [(f["path"], f["offset"]) for f in after["files"]] == [(str(log), log.stat().st_size)]


def test_a_source_restarted_while_the_writer_runs_repeats_nothing(tmp_path: Path, logdir: Path) -> None:
    """As a config reload does: stop, start again at once, the same spool writer.
    stop() waits for its last batches to be durable, so the position is saved."""
    log = logdir / "app.log"
    log.write_text(lines(0, 200))

    async def run() -> list[Any]:
        harness = SpoolHarness(tmp_path / "state", fsync_interval=0.5)
        context = harness.open()
        config = FileSource(name="logs", paths=[str(log)], start="beginning")
        first = FileCollector(config, context)
        await first.start()
        await wait_until(lambda: harness.writer.accepted_seq >= 200, what="200 accepted")
        await first.stop()
        append(log, lines(200, 210))
        second = FileCollector(config, context)
        await second.start()
        await wait_until(lambda: harness.writer.accepted_seq >= 210, what="210 accepted")
        await asyncio.sleep(0.3)
        await second.stop()
        await harness.close()
        return [r.msg for r in harness.records("file")]

    assert asyncio.run(run()) == numbers(0, 210)
