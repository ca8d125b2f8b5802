"""The engine and the store's error boundary: driver errors never leave this package untranslated.

    connection failures (any failure to open one)  -> DatabaseUnavailable (and the circuit opens)
    deadlock, serialization failure               -> ConcurrentModification
    data exceptions (SQLSTATE class 22: NUL, a    -> InvalidArgument naming no SQL or driver text
      string too long, a number out of range)        (the validation should have refused it)
    anything else (a bug)                          -> passes through (INTERNAL)

Every store call is bounded (CONNECT_TIMEOUT, COMMAND_TIMEOUT, POOL_TIMEOUT) below the usual
client deadline, and while the store is known to be unreachable calls fail at once
(scheduler/store/circuit.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from scheduler.domain.errors import (
    ConcurrentModification,
    DatabaseUnavailable,
    FieldViolation,
    InvalidArgument,
)
from scheduler.store.circuit import Circuit

log = logging.getLogger("jobsched.store")

# Bounds of every store call. Clients' deadlines are typically 10-30 s (the CLI's is 30 s), and
# a call must be answered UNAVAILABLE well within them so that a client fails over instead of
# timing out: with the old 5 s connect + 30 s statement timeouts a partition held calls 32 s.
# - connect: a TCP + TLS + auth handshake on a healthy network takes milliseconds; 3 s allows
#   for a loaded server and still leaves time for a retry elsewhere;
# - command (asyncpg's client-side timeout per statement): the slowest statements (a 5,000-job
#   submit, a 10,000-job RetryJobs) take well under a second on the test machine; 10 s is ten
#   times that and a third of the CLI's deadline;
# - pool: waiting for a pooled connection longer than 5 s means the pool is exhausted by
#   statements that are themselves stuck; the caller is better told UNAVAILABLE.
CONNECT_TIMEOUT = 3.0
COMMAND_TIMEOUT = 10.0
POOL_TIMEOUT = 5.0

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
    url: str,
    *,
    pool_size: int = 10,
    application_name: str = "jobsched",
    connect_timeout: float = CONNECT_TIMEOUT,
    command_timeout: float = COMMAND_TIMEOUT,
    pool_timeout: float = POOL_TIMEOUT,
) -> AsyncEngine:
    """The pool of store connections; the timeouts bound every call (see CONNECT_TIMEOUT)."""
    return create_async_engine(
        asyncpg_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        pool_recycle=600,
        connect_args={
            "timeout": connect_timeout,
            "command_timeout": command_timeout,
            "server_settings": {"application_name": application_name},
        },
    )


# SQLSTATEs that mean "this transaction lost to another one; running it again may work".
_CONFLICT_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure


# SQLSTATE class 22 (data exception): the value, not the database, is at fault.
_DATA_EXCEPTION_CLASS = "22"
_DATA_EXCEPTIONS = {
    "22001": "a text value is too long",
    "22003": "a number is out of range",
    "22007": "a date or time is not valid",
    "22008": "a date or time is out of range",
    "22021": "a text value holds a character the database cannot store",
    "22P05": "a text value holds a character the database cannot store (NUL?)",
}


def data_error(code: str) -> InvalidArgument:
    """What a client is told of a data exception: the kind, never the statement or driver text
    (the validation names the field; this is the backstop for what it missed)."""
    kind = _DATA_EXCEPTIONS.get(code, "a value cannot be stored")
    return InvalidArgument(
        [FieldViolation("request", f"{kind} (SQLSTATE {code})")],
        f"the job store refused a value of the request: {kind}",
    )


def sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


def _opener(frame: FrameType | None) -> str:
    """The statement label of a transaction: the qualified name of the function that opened it
    (`JobStore.submit`, `Dispatcher.dispatch_once`): a fixed set, one per call site, named like
    the store's functions, and free to find (no name to pass at 60-odd call sites)."""
    return "unknown" if frame is None else frame.f_code.co_qualname


class Database:
    """An engine plus the store's error boundary: connection failures (including any failure to
    open a connection) become DatabaseUnavailable, lost deadlocks and serialization failures
    become ConcurrentModification; everything else passes through."""

    def __init__(
        self,
        engine: AsyncEngine,
        circuit: Circuit | None = None,
        *,
        trial_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.engine = engine
        # While the store is known to be unreachable, calls fail at once; a background ping
        # every trial interval (each bounded by trial_timeout) closes it.
        self.circuit = circuit or Circuit()
        self.trial_timeout = trial_timeout
        self._trial: asyncio.Task[None] | None = None
        # time.monotonic() of the last time the store was found unreachable (any statement of
        # this replica, or `note_unavailable` from a connection outside the pool); None: never.
        # The lease rescue waits until the store has answered for a while after an outage.
        self.unavailable_at: float | None = None
        # Metrics (scheduler/telemetry/): callers waiting for a connection (handed out by the
        # pool or being opened), and, when set, the hook told how long each transaction or
        # single statement that succeeded took, named by the function that opened it.
        self.connecting = 0
        self.on_statement: Callable[[str, float], None] | None = None

    def note_unavailable(self) -> None:
        """Record that the store could not be reached (also called for connections outside the
        pool: the leader election's, the notifier's)."""
        self.unavailable_at = time.monotonic()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Database:
        return cls(create_engine(url, **kwargs))

    def _unreachable(self, exc: BaseException) -> DatabaseUnavailable:
        """Record a connection-level failure; the error to raise for it. A pool timeout (every
        connection busy) is overload, not a partition: it does not open the circuit."""
        self.note_unavailable()
        if not isinstance(exc, PoolTimeoutError) and not isinstance(
            getattr(exc, "orig", None), PoolTimeoutError
        ):
            self._open_circuit()
        # No driver text: it reaches logs through the exception chain, never clients.
        return DatabaseUnavailable("the job store is unreachable")

    @contextlib.asynccontextmanager
    async def _connection(
        self, *, past_circuit: bool = False, **options: Any
    ) -> AsyncIterator[AsyncConnection]:
        if self.circuit.is_open and not past_circuit:
            self.note_unavailable()
            raise DatabaseUnavailable(
                f"the job store is unreachable (since {self.circuit.open_for():.0f} s)"
            )
        conn = self.engine.connect()
        self.connecting += 1
        try:
            await conn.start()
        except Exception as exc:
            # Whatever stops a connection from opening (refused, shut down, database not
            # accepting connections, too many clients) means the store is unavailable.
            raise self._unreachable(exc) from exc
        finally:
            self.connecting -= 1
        try:
            if options:
                await conn.execution_options(**options)
            yield conn
        except Exception as exc:
            if is_connection_error(exc):
                raise self._unreachable(exc) from exc
            self.circuit.succeeded()  # the store answered, if only with an error
            code = sqlstate(exc)
            if code in _CONFLICT_SQLSTATES:
                raise ConcurrentModification("lost to a concurrent transaction") from exc
            if code is not None and code.startswith(_DATA_EXCEPTION_CLASS):
                log.warning(
                    "the job store refused a value",
                    extra={"fields": {"sqlstate": code, "error": str(exc).splitlines()[0]}},
                )
                raise data_error(code) from exc
            raise
        else:
            self.circuit.succeeded()
        finally:
            await conn.close()

    def _open_circuit(self) -> None:
        if self.circuit.failed() and (self._trial is None or self._trial.done()):
            # A context of its own: not the request id of the call that found the store down.
            self._trial = asyncio.get_running_loop().create_task(
                self._recover(), name="store-recovery", context=contextvars.Context()
            )

    async def _recover(self) -> None:
        """While the circuit is open: a ping every trial interval; the first answer closes it."""
        while self.circuit.is_open:
            await asyncio.sleep(self.circuit.trial_interval)
            try:
                async with asyncio.timeout(self.trial_timeout):
                    await self.ping()
            except TimeoutError:
                self.note_unavailable()
            except DatabaseUnavailable:
                pass  # recorded by the ping

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside one transaction, committed when the block ends without error."""
        observe = self.on_statement
        if observe is None:
            async with self._connection() as conn, conn.begin():
                yield conn
            return
        name = _opener(sys._getframe(2))
        async with self._connection() as conn:
            started = time.perf_counter()
            async with conn.begin():
                yield conn
            observe(name, time.perf_counter() - started)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection in autocommit mode, for single statements (no BEGIN/COMMIT): reads, and
        writes that are one statement (a promotion, a presence report)."""
        observe = self.on_statement
        if observe is None:
            async with self._connection(isolation_level="AUTOCOMMIT") as conn:
                yield conn
            return
        name = _opener(sys._getframe(2))
        async with self._connection(isolation_level="AUTOCOMMIT") as conn:
            started = time.perf_counter()
            yield conn
            observe(name, time.perf_counter() - started)

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless a trivial query answers (callers bound the wait).
        The ping goes past an open circuit, and its answer closes it: the health probe's way of
        noticing that the store is back."""
        try:
            async with self._connection(past_circuit=True, isolation_level="AUTOCOMMIT") as conn:
                await conn.execute(text("SELECT 1"))
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            raise self._unreachable(exc) from exc

    def mark_unreachable(self) -> None:
        """The store did not answer in time (a ping the caller gave up on): open the circuit."""
        self.note_unavailable()
        self._open_circuit()

    @property
    def dsn(self) -> str:
        """The libpq-style URL of this database, for connections outside the pool."""
        url = self.engine.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    async def dispose(self) -> None:
        if self._trial is not None:
            self._trial.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trial
        await self.engine.dispose()
