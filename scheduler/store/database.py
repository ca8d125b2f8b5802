"""The engine and the store's error boundary: driver errors never leave this package untranslated."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from scheduler.domain.errors import ConcurrentModification, DatabaseUnavailable

_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable; includes socket.gaierror
    TimeoutError,
    PoolTimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.InterfaceError,
    socket.gaierror,
)


def asyncpg_url(url: str) -> str:
    """Accept the usual postgres:// and postgresql:// spellings; always use the asyncpg driver."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, InterfaceError | OperationalError):
        orig = exc.orig
        cause = getattr(orig, "__cause__", None) or orig
        return isinstance(cause, _CONNECTION_ERRORS) or isinstance(orig, _CONNECTION_ERRORS)
    if isinstance(exc, DBAPIError):
        cause = getattr(exc.orig, "__cause__", None)
        return isinstance(cause, _CONNECTION_ERRORS)
    return isinstance(exc, _CONNECTION_ERRORS)


def create_engine(
    url: str, *, pool_size: int = 10, application_name: str = "jobsched"
) -> AsyncEngine:
    return create_async_engine(
        asyncpg_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=10,
        pool_recycle=600,
        connect_args={
            "timeout": 5,
            "command_timeout": 30,
            "server_settings": {"application_name": application_name},
        },
    )


# SQLSTATEs that mean "this transaction lost to another one; running it again may work".
_CONFLICT_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure


def sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


class Database:
    """An engine plus the store's error boundary: connection failures (including any failure to
    open a connection) become DatabaseUnavailable, lost deadlocks and serialization failures
    become ConcurrentModification; everything else passes through."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # time.monotonic() of the last time the store was found unreachable (any statement of
        # this replica, or `note_unavailable` from a connection outside the pool); None: never.
        # The lease rescue waits until the store has answered for a while after an outage.
        self.unavailable_at: float | None = None

    def note_unavailable(self) -> None:
        """Record that the store could not be reached (also called for connections outside the
        pool: the leader election's, the notifier's)."""
        self.unavailable_at = time.monotonic()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Database:
        return cls(create_engine(url, **kwargs))

    @contextlib.asynccontextmanager
    async def _connection(self, **options: Any) -> AsyncIterator[AsyncConnection]:
        conn = self.engine.connect()
        try:
            await conn.start()
        except Exception as exc:
            # Whatever stops a connection from opening (refused, shut down, database not
            # accepting connections, too many clients) means the store is unavailable.
            self.note_unavailable()
            raise DatabaseUnavailable(f"the job store is unreachable: {exc}") from exc
        try:
            if options:
                await conn.execution_options(**options)
            yield conn
        except Exception as exc:
            if is_connection_error(exc):
                self.note_unavailable()
                raise DatabaseUnavailable(f"the job store is unreachable: {exc}") from exc
            if sqlstate(exc) in _CONFLICT_SQLSTATES:
                raise ConcurrentModification(f"lost to a concurrent transaction: {exc}") from exc
            raise
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside one transaction, committed when the block ends without error."""
        async with self._connection() as conn, conn.begin():
            yield conn

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection in autocommit mode, for single statements (no BEGIN/COMMIT): reads, and
        writes that are one statement (a promotion, a presence report)."""
        async with self._connection(isolation_level="AUTOCOMMIT") as conn:
            yield conn

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless a trivial query answers (callers bound the wait)."""
        try:
            async with self.read() as conn:
                await conn.execute(text("SELECT 1"))
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            raise DatabaseUnavailable(f"the job store is unreachable: {exc}") from exc

    @property
    def dsn(self) -> str:
        """The libpq-style URL of this database, for connections outside the pool."""
        url = self.engine.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    async def dispose(self) -> None:
        await self.engine.dispose()
