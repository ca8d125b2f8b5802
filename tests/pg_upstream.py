"""Where a PostgreSQL URL's server listens, for the test proxies: a TCP host and port, or the
Unix socket of a socket directory (the embedded server's `?host=/dir`), and the URL of the same
database through a proxy on 127.0.0.1."""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import make_url


class PgUpstream:
    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        query_host = url.query.get("host")
        if isinstance(query_host, tuple):
            query_host = query_host[0]
        host = url.host or query_host or "127.0.0.1"
        self.port = url.port or 5432
        self.socket = f"{host}/.s.PGSQL.{self.port}" if host.startswith("/") else None
        self.host = host

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.socket is not None:
            return await asyncio.open_unix_connection(self.socket)
        return await asyncio.open_connection(self.host, self.port)


def through(database_url: str, port: int) -> str:
    """`database_url` (same server, user and database) through a proxy on 127.0.0.1:`port`."""
    url = make_url(database_url)
    query = {key: value for key, value in url.query.items() if key != "host"}
    return url.set(host="127.0.0.1", port=port, query=query).render_as_string(hide_password=False)
