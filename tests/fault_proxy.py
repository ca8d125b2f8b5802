"""A loopback TCP proxy that plays the faults of a network link (issue 20's fault proxy), for an
executor's stream to a scheduler or any other TCP link a test routes through it:

- `pass_through()`: forwards both ways (the start state);
- `black_hole()`: forwards nothing and closes nothing (bytes wait in the proxy), as when a
  partition drops packets and TCP retransmits; `pass_through()` delivers what waited, in order;
- `reset()`: aborts every open connection (RST), new ones are accepted;
- `delay(seconds)`: each chunk is forwarded `seconds` after it arrived, in order (a slow link);
- `close_when_idle(seconds)`: a connection that carried nothing either way for `seconds` is
  closed, as some load balancers and NAT gateways do.

`connections` counts the connections accepted, so a test can tell a reconnect happened. The
target is a "host:port", or (`to_postgres`) a PostgreSQL URL's server, its Unix socket included
(the embedded server's `?host=/dir`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from tests.pg_upstream import PgUpstream

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class FaultProxy:
    """Forwards 127.0.0.1:<port> to `target` ("host:port"); a start/stop service."""

    def __init__(self, target: str | Callable[[], Awaitable[Streams]]) -> None:
        if isinstance(target, str):
            host, _, port = target.rpartition(":")
            self._connect: Callable[[], Awaitable[Streams]] = lambda: asyncio.open_connection(
                host, int(port)
            )
        else:
            self._connect = target
        self.port = 0
        self.connections = 0
        self._open = asyncio.Event()
        self._open.set()
        self._delay = 0.0
        self._idle: float | None = None
        self._server: asyncio.Server | None = None
        self._links: dict[asyncio.Task[None], list[asyncio.StreamWriter]] = {}

    @classmethod
    def to_postgres(cls, database_url: str) -> FaultProxy:
        """A proxy in front of the server of `database_url` (`tests.pg_upstream.through` gives
        the URL through it)."""
        return cls(PgUpstream(database_url).connect)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.address

    def pass_through(self) -> None:
        self._delay, self._idle = 0.0, None
        self._open.set()

    def black_hole(self) -> None:
        self._open.clear()

    def delay(self, seconds: float) -> None:
        self._delay = seconds

    def close_when_idle(self, seconds: float) -> None:
        self._idle = seconds

    def reset(self) -> None:
        for writers in self._links.values():
            for writer in writers:
                writer.transport.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset()
        for task in list(self._links):
            task.cancel()
        for task in list(self._links):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        writers = [writer]
        self._links[task] = writers
        self.connections += 1
        try:
            up_reader, up_writer = await self._connect()
            writers.append(up_writer)
            last = [time.monotonic()]
            pumps = [
                asyncio.create_task(self._pump(reader, up_writer, last)),
                asyncio.create_task(self._pump(up_reader, writer, last)),
            ]
            watch = asyncio.create_task(self._watch_idle(last))
            try:
                await asyncio.wait([*pumps, watch], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for running in (*pumps, watch):
                    running.cancel()
                await asyncio.gather(*pumps, watch, return_exceptions=True)
        except OSError:
            pass
        finally:
            for each in writers:
                each.transport.abort()
            self._links.pop(task, None)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, last: list[float]
    ) -> None:
        """Read as bytes come (timestamped), forward each chunk once it is due, in order."""
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await reader.read(65536):
                    last[0] = time.monotonic()
                    chunks.put_nowait((last[0], data))
            chunks.put_nowait((0.0, b""))

        reading = asyncio.create_task(read())
        try:
            with contextlib.suppress(OSError):
                while True:
                    arrived, data = await chunks.get()
                    if not data:
                        return
                    await self._open.wait()
                    wait = arrived + self._delay - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await self._open.wait()
                    writer.write(data)
                    await writer.drain()
                    last[0] = time.monotonic()
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading

    async def _watch_idle(self, last: list[float]) -> None:
        """Returns (ending the connection) once it has been idle longer than the setting."""
        while True:
            idle = self._idle
            if idle is not None and time.monotonic() - last[0] > idle:
                return
            await asyncio.sleep(0.02 if idle is None else min(idle / 4, 0.05))
