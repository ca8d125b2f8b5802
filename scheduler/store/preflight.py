"""One connection attempt before the scheduler serves: a wrong password, a missing role or a
missing database never gets better by waiting, so the process says so in one line and exits,
instead of serving with every statement (and its notify connection) failing."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy.engine import make_url

from scheduler.store.database import CONNECT_TIMEOUT

# Errors that retrying cannot fix (SQLSTATE classes 28 and 3D).
_PERMANENT: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.InvalidPasswordError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # no such role, pg_hba refused
    asyncpg.exceptions.InvalidCatalogNameError,  # no such database
)


def where(url: str) -> str:
    """ "HOST:PORT/DB as USER" of a URL, for messages (never the password)."""
    parsed = make_url(url)
    socket_dir = parsed.query.get("host")
    host = parsed.host or (socket_dir if isinstance(socket_dir, str) else "localhost")
    port = parsed.port or 5432
    return f"{host}:{port}/{parsed.database or ''} as {parsed.username or ''}"


async def connection_problem(
    url: str, connect_timeout: float = CONNECT_TIMEOUT
) -> tuple[str, bool] | None:
    """None if a connection opens; else (one line saying why not, whether it is permanent).
    A refused or timed-out connection is not permanent: the server may be starting."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = await asyncpg.connect(dsn, timeout=connect_timeout)
    except _PERMANENT as exc:
        return f"cannot connect to PostgreSQL at {where(url)}: {_reason(exc)}", True
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return f"cannot connect to PostgreSQL at {where(url)}: {_reason(exc)}", False
    await conn.close()
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "no answer (timed out)"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, asyncpg.exceptions.InvalidPasswordError):
        return "password authentication failed"
    return text
