"""A TCP proxy in front of PostgreSQL that a fault test can cut and restore: while cut, every
connection through it is closed and new ones are refused (the port is not listening), as when
the database host becomes unreachable; restored, it forwards again on the same port."""

from __future__ import annotations

import asyncio
import contextlib

from tests.pg_upstream import PgUpstream, through


class CuttableProxy:
    def __init__(self, target_url: str) -> None:
        self.upstream = PgUpstream(target_url)
        self.url = target_url
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    def proxied(self, url: str) -> str:
        """`url` (same server) through the proxy."""
        return through(url, self.port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and close the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def restore(self) -> None:
        await self.start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self.upstream.connect()
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer, up_writer))

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._links.discard(writer)
        self._links.discard(up_writer)
