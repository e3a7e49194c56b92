"""An HTTP server of the agent's, in this process, over a real spool: what the
server's own tests and the route modules' tests run against."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostlog.config import Config, parse_config
from hostlog.http.server import HttpServer
from hostlog.record import Columns, Record
from tests.agentproc import free_port
from tests.integration.helpers import SpoolHarness


@dataclass
class FakeAgent:
    """What the server uses of the agent: its config, spool and collector context."""

    config: Config
    spool: Any
    context: Any


class ServedSpool:
    """A real spool with its writer, and an :class:`HttpServer` over it on a
    free loopback port (and a unix socket under ``directory``)."""

    def __init__(self, directory: Path, extra_config: str = "", unix: bool = True,
                 modules: list[Any] | None = None, unix_path: Path | None = None,
                 scheme: str = "http") -> None:
        self.directory = directory
        self.port = free_port()
        self.unix_path = unix_path or directory / "http.sock"
        self.scheme = scheme
        listen = [f'"{scheme}://127.0.0.1:{self.port}"'] + ([f'"unix://{self.unix_path}"'] if unix else [])
        self.config = parse_config(f'[agent]\nstate_dir = "{directory}"\nhostname = "test-host"\n'
                                   f'[http]\nlisten = [{", ".join(listen)}]\n{extra_config}')
        self.harness = SpoolHarness(directory)
        self.server: HttpServer | None = None
        self.modules = modules

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ServedSpool:
        context = self.harness.open()
        agent = FakeAgent(self.config, self.harness.spool, context)
        self.server = HttpServer(agent, modules=self.modules)
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.server is not None:
            await self.server.stop()
        await self.harness.close()

    async def write(self, records: list[Record]) -> None:
        """Records into the spool, durable when this returns."""
        assert self.harness.writer is not None and self.harness.context is not None
        await self.harness.context.sink.write(Columns.of(records))  # counted, as a collector's are
        await asyncio.wait_for(self.harness.writer.flush(), 10)

    async def flush(self) -> None:
        """Everything handed to the writer so far (audit records too) is durable."""
        assert self.harness.writer is not None
        await asyncio.wait_for(self.harness.writer.flush(), 10)

    def stored(self, source: str | None = None) -> list[Record]:
        return self.harness.records(source)
