"""The dashboard served in the caller's event loop, as a start/stop service: for `jobsched dev`
(next to the scheduler) and for the tests (port 0). `python -m dashboard` runs uvicorn itself."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from dashboard.app import create_app
from dashboard.flags import DashboardSettings


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The host process owns the signals (the scheduler stops both on SIGTERM).
        yield


class DashboardServer:
    def __init__(
        self,
        settings: DashboardSettings,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        **app: Any,
    ) -> None:
        self.settings = settings
        self.log_level = log_level
        self.host, self.port = host, port
        self.app = create_app(settings, **app)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> str:
        """Bind, serve, and return the URL once requests are answered."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: without it an answer's head and body, written apart,
        # met the client's delayed ACK and every request took 40 ms more (bench/dashboard_jobs).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level=self.log_level, lifespan="on", timeout_graceful_shutdown=2
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    await self._task  # its error
                    raise RuntimeError("the dashboard stopped while starting")
                await asyncio.sleep(0.01)
        return self.url

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None
