"""The metrics port of the scheduler and the executor (start/stop service): GET /metrics
(Prometheus text format), /healthz (the process is alive: 200 while it serves) and, where the
server has a readiness (`ready`; the scheduler: the store answers, as the gRPC health service
says), /readyz: 200 while ready, 503 with `unready` as the body otherwise.

A small HTTP/1.0-style server on the event loop (one request per connection, then close), not
prometheus_client's threaded one: it stops with its server, and a scrape reads the server's
state on the loop that owns it. Requests are bounded (8 KiB of head, 10 s to send it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger("jobsched.telemetry")

MAX_HEAD_BYTES = 8192
READ_TIMEOUT = 10.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS[503] = "Service Unavailable"


class MetricsServer:
    def __init__(
        self,
        listen: str,
        exposition: Callable[[], bytes],
        ready: Callable[[], bool] | None = None,
        unready: str = "not ready",
    ) -> None:
        self.listen = listen
        self.exposition = exposition
        self.ready = ready
        self.unready = unready.encode() + b"\n"
        self.paths = b"/metrics, /healthz" + (b", /readyz" if ready is not None else b"")
        self.address = ""  # host:port, known after start()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        self._server = await asyncio.start_server(
            self._serve, host, int(port), limit=MAX_HEAD_BYTES
        )
        bound = self._server.sockets[0].getsockname()
        self.address = f"{self.listen.rpartition(':')[0]}:{bound[1]}"
        log.info(
            "metrics listening",
            extra={"fields": {"event": "metrics.listening", "address": self.address}},
        )
        return self.address

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            status, content_type, body, head_only = await self._answer(reader)
            reason = _REASONS.get(status, "")
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if not head_only:
                writer.write(body)
            await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or never sent a whole request
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._handlers.discard(task)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes, bool]:
        text = "text/plain; charset=utf-8"
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return 400, text, b"request head too large\n", False
        if len(head) > MAX_HEAD_BYTES:
            return 400, text, b"request head too large\n", False
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3:
            return 400, text, b"bad request line\n", False
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, text, b"only GET and HEAD\n", False
        head_only = method == b"HEAD"
        if target == b"/metrics":
            return 200, CONTENT_TYPE_LATEST, self.exposition(), head_only
        if target == b"/healthz":
            return 200, text, b"ok\n", head_only
        if target == b"/readyz" and self.ready is not None:
            if self.ready():
                return 200, text, b"ready\n", head_only
            return 503, text, self.unready, head_only
        return 404, text, b"not found: " + self.paths + b"\n", head_only
