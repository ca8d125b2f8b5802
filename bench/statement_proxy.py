"""A PostgreSQL wire-protocol proxy that counts the statements its clients send.

pg_stat_statements is not loaded on the benchmark's server (it needs shared_preload_libraries and
a restart) and pg_stat_database only counts transactions, with a flush delay of up to 10 s. So to
know what an idle scheduler replica sends, it is pointed at this proxy: every frontend message is
forwarded unchanged, and on the way every statement executed is counted with its text:

- a simple Query ('Q') counts once (asyncpg sends BEGIN / COMMIT this way);
- an extended-protocol Execute ('E') counts the statement of the portal it runs (Parse gives a
  prepared statement's text, Bind ties a portal to it), so cached prepared statements count too.

Transactions are counted as BEGIN blocks plus statements executed outside one (autocommit).
SSL and GSS encryption requests are refused by the proxy itself (the client then goes on in
plain text), so the stream can be read; a cancel request is forwarded as is.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import struct
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
_TRANSACTION_STARTS = ("BEGIN", "START TRANSACTION")
_TRANSACTION_ENDS = ("COMMIT", "ROLLBACK", "END", "ABORT")


def _cstring(body: bytes, start: int = 0) -> tuple[str, int]:
    end = body.index(b"\0", start)
    return body[start:end].decode(errors="replace"), end + 1


def normalise(statement: str) -> str:
    """One line, single spaces: what the breakdown shows."""
    return " ".join(statement.split())


@dataclass
class StatementCounts:
    statements: int = 0
    transactions: int = 0
    by_text: collections.Counter[str] = field(default_factory=collections.Counter)

    def reset(self) -> None:
        self.statements = self.transactions = 0
        self.by_text.clear()

    def top(self, count: int) -> list[tuple[str, int]]:
        return self.by_text.most_common(count)


class _Session:
    """The statement bookkeeping of one client connection."""

    def __init__(self, counts: StatementCounts) -> None:
        self.counts = counts
        self.prepared: dict[str, str] = {}
        self.portals: dict[str, str] = {}
        self.in_transaction = False

    def executed(self, statement: str) -> None:
        text = normalise(statement)
        if not text:
            return
        self.counts.statements += 1
        self.counts.by_text[text] += 1
        head = text.upper()
        if head.startswith(_TRANSACTION_STARTS):
            self.in_transaction = True
            self.counts.transactions += 1
        elif head.startswith(_TRANSACTION_ENDS):
            self.in_transaction = False
        elif not self.in_transaction:
            self.counts.transactions += 1  # autocommit

    def message(self, kind: bytes, body: bytes) -> None:
        if kind == b"Q":
            self.executed(_cstring(body)[0])
        elif kind == b"P":
            name, offset = _cstring(body)
            self.prepared[name] = _cstring(body, offset)[0]
        elif kind == b"B":
            portal, offset = _cstring(body)
            self.portals[portal] = self.prepared.get(_cstring(body, offset)[0], "?")
        elif kind == b"E":
            self.executed(self.portals.get(_cstring(body)[0], "?"))


class StatementProxy:
    """Listens where a PostgreSQL client can reach it and forwards to `upstream_url`'s server."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream = make_url(upstream_url)
        self.counts = StatementCounts()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def _upstream_socket(self) -> str | None:
        """The upstream's Unix socket path, when its URL names a socket directory."""
        host = self.upstream.query.get("host")
        if isinstance(host, str) and host.startswith("/"):
            return f"{host}/.s.PGSQL.{self.upstream.port or 5432}"
        return None

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        socket_path = self._upstream_socket
        if socket_path is not None:
            return await asyncio.open_unix_connection(socket_path)
        return await asyncio.open_connection(
            self.upstream.host or "127.0.0.1", self.upstream.port or 5432
        )

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Serve; yields the database URL that reaches the upstream database through the proxy."""
        with tempfile.TemporaryDirectory(prefix="jobsched-bench-proxy-") as tmp:
            if self._upstream_socket is not None:
                port = self.upstream.port or 5432
                self._server = await asyncio.start_unix_server(
                    self._client, path=str(Path(tmp) / f".s.PGSQL.{port}")
                )
                url = self.upstream.update_query_dict({"host": tmp})
            else:
                self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
                port = self._server.sockets[0].getsockname()[1]
                url = self.upstream.set(host="127.0.0.1", port=port)
            try:
                yield url.render_as_string(hide_password=False)
            finally:
                self._server.close()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            startup = await self._startup(reader, writer)
            if startup is None:
                return
            upstream_reader, upstream_writer = await self._open_upstream()
            upstream_writer.write(startup)
            back = asyncio.create_task(self._copy(upstream_reader, writer))
            try:
                await self._forward(reader, upstream_writer, _Session(self.counts))
            finally:
                back.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await back
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    async def _startup(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """The startup packet to forward; encryption requests are answered 'N' here."""
        while True:
            header = await reader.readexactly(8)
            length, code = struct.unpack("!ii", header)
            rest = await reader.readexactly(length - 8)
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                writer.write(b"N")
                await writer.drain()
                continue
            return header + rest

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: _Session
    ) -> None:
        while True:
            header = await reader.readexactly(5)
            kind, length = header[:1], struct.unpack("!i", header[1:])[0]
            body = await reader.readexactly(length - 4)
            session.message(kind, body)
            writer.write(header + body)
            await writer.drain()
            if kind == b"X":
                return

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
