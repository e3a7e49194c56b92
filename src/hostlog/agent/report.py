"""``[report]``: the agent writes ``hostlog report`` of each period into a directory.

At each multiple of ``every`` since the epoch (UTC midnight with ``"1d"``)
the report of the period that just ended is made by a child process,
``python -m hostlog.agent.report`` (its own interpreter: mining the
templates of a day and its baseline is seconds to minutes of CPU, which
must not hold the agent's GIL while it ingests; it runs at a lower
priority, nice 10), that reads the agent's spool with the agent's key and
writes each rendering in ``formats`` with an atomic replace as
``hostlog-report-<end, UTC>.<ext>``; then all but the ``keep`` newest of
each format are removed. A report that fails is logged and counted (the
agent's error counts, source ``report``) and the next period is tried at
its time; nothing here stops the agent. At the agent's stop a report still
being made is ended (SIGTERM, then SIGKILL), by its PID.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("hostlog.agent")

__all__ = ["ReportWriter", "attach", "file_name", "next_end", "prune", "write_report"]

EXTENSIONS = {"html": "html", "json": "json", "md": "md"}
#: A report holds record text (templates, examples, anomalies) in the clear:
#: readable by the agent's user and group only.
REPORT_MODE = 0o640
_NAME = re.compile(r"hostlog-report-(\d{8}T\d{6}Z)\.(html|json|md)")


def next_end(now_ns: int, every_ns: int) -> int:
    """The first multiple of ``every_ns`` after ``now_ns``."""
    return (now_ns // every_ns + 1) * every_ns


def file_name(end_ns: int, fmt: str) -> str:
    stamp = dt.datetime.fromtimestamp(end_ns // 10**9, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"hostlog-report-{stamp}.{EXTENSIONS[fmt]}"


def write_report(reader: Any, settings: Any, end_ns: int, *, now_ns: int | None = None) -> list[Path]:
    """Build the report of ``[end_ns - every, end_ns)`` and write each format;
    returns the files written."""
    from hostlog.query import report, report_html, report_text
    from hostlog.query.filters import Query
    from hostlog.spool.state import atomic_write

    every_ns = round(settings.every * 1e9)
    query = Query(since_ns=end_ns - every_ns, until_ns=end_ns - 1)
    built = report.build(reader, query, now_ns=time.time_ns() if now_ns is None else now_ns,
                         baseline_ns=round(settings.baseline * 1e9), top=settings.top)
    for damage in built.damage:
        log.warning("report: damaged data: %s", damage)
    directory = Path(settings.dir)
    directory.mkdir(mode=0o750, parents=True, exist_ok=True)
    written = []
    for fmt in settings.formats:
        if fmt == "json":
            text = report_text.render_json(built)
        elif fmt == "html":
            text = report_html.render_html(built, top=settings.top)
        else:
            text = report_text.render_markdown(built, top=settings.top)
        path = directory / file_name(end_ns, fmt)
        atomic_write(path, text.encode(), mode=REPORT_MODE)
        written.append(path)
    prune(directory, settings.keep)
    return written


def prune(directory: Path, keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest reports of each format (0: keep all)."""
    if keep <= 0:
        return []
    by_format: dict[str, list[tuple[str, Path]]] = {}
    for path in directory.iterdir():
        m = _NAME.fullmatch(path.name)
        if m:
            by_format.setdefault(m.group(2), []).append((m.group(1), path))
    removed = []
    for found in by_format.values():
        found.sort()
        for _, path in found[:-keep]:
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass  # removed by someone else meanwhile: what we wanted
    return removed


class ReportWriter:
    """The task that has a report made at the end of each period."""

    def __init__(self, settings: Any, spool_dir: Path, key_file: Path | None, errors: Any = None) -> None:
        self.settings = settings
        self.spool_dir = spool_dir
        self.key_file = key_file
        self.errors = errors  # hostlog.collectors.base.ErrorCounts, or None
        self.written = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None
        self._child: asyncio.subprocess.Process | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="report")
        log.info("report: every %gs into %s (%s)", self.settings.every, self.settings.dir,
                 ", ".join(self.settings.formats))

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def command(self, end_ns: int) -> list[str]:
        args = [sys.executable, "-m", "hostlog.agent.report", "--spool", str(self.spool_dir), "--end",
                str(end_ns), "--settings", json.dumps(self.settings.model_dump(mode="json"))]
        if self.key_file is not None:
            args += ["--key-file", str(self.key_file)]
        return args

    async def _run(self) -> None:
        every_ns = round(self.settings.every * 1e9)
        while True:
            end = next_end(time.time_ns(), every_ns)
            await asyncio.sleep(max(0.0, (end - time.time_ns()) / 1e9))
            while time.time_ns() < end:  # the clock said a little early
                await asyncio.sleep(0.01)
            try:
                await self._make(end)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reported and counted; the next period is tried
                self.failed += 1
                log.error("report of the period ending %s not written: %s", _stamp(end), exc)
                if self.errors is not None:
                    self.errors.report("report", "write", exc)
                continue
            self.written += 1

    async def _make(self, end_ns: int) -> None:
        child = await asyncio.create_subprocess_exec(
            *self.command(end_ns), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        self._child = child
        try:
            try:
                os.setpriority(os.PRIO_PROCESS, child.pid, NICE)
            except OSError:  # (it may have ended already): it runs at the agent's priority
                pass
            out, err = await child.communicate()
        finally:
            self._child = None
            if child.returncode is None:  # cancelled: the agent stops
                await _end(child)
        for line in err.decode("utf-8", "replace").splitlines():
            log.warning("report: %s", line)
        if child.returncode != 0:
            raise RuntimeError(f"the report process exited with {child.returncode}")
        log.info("report written: %s", out.decode("utf-8", "replace").strip().replace("\n", ", "))


NICE = 10  # the report process's priority: below the agent's
STOP_WAIT_S = 5.0


async def _end(child: asyncio.subprocess.Process) -> None:
    """End a report process by its PID: SIGTERM, then SIGKILL after a while."""
    try:
        child.terminate()
    except ProcessLookupError:
        return
    try:
        await asyncio.wait_for(asyncio.shield(child.wait()), STOP_WAIT_S)
    except (TimeoutError, asyncio.CancelledError):
        try:
            child.kill()
        except ProcessLookupError:
            return
        await child.wait()


def _stamp(end_ns: int) -> str:
    return file_name(end_ns, "md")[len("hostlog-report-"):-len(".md")]


def attach(agent: Any, settings: Any) -> ReportWriter | None:
    """A started report writer for ``settings`` (a config's ``[report]``) over
    the agent's spool, or None when it is None."""
    if settings is None or agent.spool is None:
        return None
    spool = agent.spool
    writer = ReportWriter(settings, Path(spool.directory), getattr(spool, "key_file", None),
                          getattr(agent, "errors", None))
    writer.start()
    return writer


def main(argv: list[str] | None = None) -> int:
    """The report process: ``--spool DIR [--key-file FILE] --end NS --settings JSON``."""
    import argparse

    from hostlog.config.schema import Report
    from hostlog.errors import HostlogError
    from hostlog.spool.reader import SpoolReader

    p = argparse.ArgumentParser(prog="python -m hostlog.agent.report")
    p.add_argument("--spool", required=True)
    p.add_argument("--key-file")
    p.add_argument("--end", type=int, required=True)
    p.add_argument("--settings", required=True)
    args = p.parse_args(argv)
    settings = Report.model_validate(json.loads(args.settings))
    try:
        reader = SpoolReader.open(args.spool, args.key_file)
        written = write_report(reader, settings, args.end)
    except (HostlogError, OSError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
