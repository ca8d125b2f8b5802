"""The dashboard under test: a real DashboardServer (uvicorn on port 0) in front of a real
scheduler, an HTTP client that behaves like the front end (session first, CSRF header on every
mutating call), and an in-process executor whose handlers report progress."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx

from dashboard.flags import DashboardSettings
from dashboard.serving import DashboardServer
from executor.handlers import HandlerRegistry, JobContext, NonRetryableError
from executor.runner import Executor


class Viewer:
    """A browser, as far as the API can tell: a cookie jar and the session's CSRF token."""

    def __init__(self, url: str) -> None:
        self.http = httpx.AsyncClient(base_url=url, timeout=15)
        self.csrf = ""
        self.session: dict[str, Any] = {}

    async def open(self) -> dict[str, Any]:
        answer = await self.http.get("/api/session")
        assert answer.status_code == 200, answer.text
        self.session = answer.json()
        self.csrf = self.session["csrf_token"]
        return self.session

    async def sign_in(self, key: str, tenant: str | None = None) -> httpx.Response:
        answer = await self.post("/api/session", {"api_key": key, "tenant": tenant})
        if answer.status_code == 200:
            self.session = answer.json()
            self.csrf = self.session["csrf_token"]
        else:
            await self.open()
        return answer

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(path, params=params)

    async def post(self, path: str, body: Any = None) -> httpx.Response:
        return await self.http.post(path, json=body or {}, headers={"x-csrf-token": self.csrf})

    async def delete(self, path: str) -> httpx.Response:
        return await self.http.delete(path, headers={"x-csrf-token": self.csrf})

    async def events(self, path: str) -> AsyncGenerator[tuple[str, Any], None]:
        """The SSE stream at `path` as (event, data) pairs."""
        async with self.http.stream("GET", path, timeout=30) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            name, data = "message", ""
            async for line in answer.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and data:
                    yield name, json.loads(data)
                    name, data = "message", ""

    async def close(self) -> None:
        await self.http.aclose()


@contextlib.asynccontextmanager
async def dashboard_for(address: str, **app: Any) -> AsyncIterator[DashboardServer]:
    server = DashboardServer(DashboardSettings(schedulers=(address,)), **app)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def steps(ctx: JobContext) -> Any:
    """Reports 0..100 % in five steps, then succeeds."""
    for n in range(1, 6):
        ctx.progress(n * 20, step=f"step {n}", message=f"{n} of 5")
        ctx.log(f"line {n}")
        await asyncio.sleep(0.15)  # the job's own work, so that progress is seen moving
    return {"done": True}


async def forever(ctx: JobContext) -> Any:
    """Runs until cancelled."""
    ctx.progress(5, step="waiting")
    await asyncio.Event().wait()


async def fail(ctx: JobContext) -> Any:
    raise RuntimeError("it broke")


async def doomed(ctx: JobContext) -> Any:
    """Fails for good at once: DEAD after one attempt."""
    raise NonRetryableError("no hope")


# What the "artifacts" handler uploads: a report and 2.5 MiB of bytes (three chunks).
ARTIFACTS = {
    "report.json": (b'{"ok": true}', "application/json"),
    "out/data é.bin": (bytes(range(256)) * 10240, None),
}


async def artifacts(ctx: JobContext) -> Any:
    """Uploads ARTIFACTS, then succeeds."""
    for name, (data, content_type) in ARTIFACTS.items():
        await ctx.upload(name, data, content_type)
    return {"uploaded": len(ARTIFACTS)}


@contextlib.asynccontextmanager
async def executing(address: str, **kwargs: Any) -> AsyncIterator[Executor]:
    registry = HandlerRegistry(
        {
            "steps": steps,
            "forever": forever,
            "fail": fail,
            "doomed": doomed,
            "artifacts": artifacts,
        }
    )
    executor = Executor(
        [address], name="dash-e", capacity=4, registry=registry, progress_interval=0.05, **kwargs
    )
    await executor.start()
    try:
        await executor.wait_registered()
        yield executor
    finally:
        await executor.stop(grace=1.0)
