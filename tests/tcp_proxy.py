"""A TCP proxy a test controls, to play network faults between the scheduler and PostgreSQL.

`black_hole()` stops forwarding in both directions without closing anything: bytes already
sent wait (TCP flow control holds the rest), new connections are accepted but hear nothing, as
when a partition drops packets and TCP retransmits. `restore()` delivers what waited, in order,
as a healed partition does."""

from __future__ import annotations

import asyncio
import contextlib

from tests.pg_upstream import PgUpstream


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the server of a PostgreSQL URL (start/stop service)."""

    def __init__(self, database_url: str) -> None:
        self.upstream = PgUpstream(database_url)
        self.port = 0
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def black_hole(self) -> None:
        self._open.clear()

    def restore(self) -> None:
        self._open.set()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        writers = [writer]
        try:
            await self._open.wait()  # a black hole answers no connection attempt
            up_reader, up_writer = await self.upstream.connect()
            writers.append(up_writer)
            await asyncio.gather(
                self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
            )
        finally:
            for each in writers:
                each.close()
            for each in writers:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await each.wait_closed()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._open.wait()
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.write_eof()
