"""Server-Sent Events bridging WatchJob (`/api/jobs/{id}/events`) and WatchJobs
(`/api/events/jobs`) to browsers, one upstream stream per viewer with the viewer's credential.

A pump task drains the gRPC stream into the viewer's bounded buffer and never waits for the
browser, so a slow viewer cannot hold the scheduler's stream (nor slow anyone else). The buffer
keeps what matters when it fills: for a job, progress is collapsed to the latest value, log
lines beyond `max_lines` are dropped and counted (a `dropped` event says how many), and the
snapshot and state transitions (so the final state) are always delivered. For many jobs, the
latest change of each job replaces its earlier ones; past `max_jobs` jobs pending the buffer is
cleared and a `changes_dropped` event tells the page to list again.

Events: `snapshot`, `transition`, `progress`, `log`, `dropped`, `end` (WatchJob); `subscribed`,
`job`, `changes_dropped` (WatchJobs); `problem` when the upstream call fails. Each WatchJob
event carries its sequence number as the SSE id, so a reconnecting EventSource resumes after
it (Last-Event-ID) and misses no transition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dashboard import serialize
from dashboard.api import endpoint
from dashboard.session import Session
from jobsched.async_client import AsyncClient
from jobsched.errors import JobschedError
from jobsched.v1 import job_service_pb2

KEEPALIVE = 15.0
MAX_LINES = 500
MAX_JOBS = 1000

Item = tuple[str, dict[str, Any], int | None]  # (event name, data, sequence)


class JobBuffer:
    """A viewer's pending events of one job (see the module docstring)."""

    def __init__(self, max_lines: int = MAX_LINES) -> None:
        self.max_lines = max_lines
        self._items: deque[Item] = deque()
        self._lines = 0
        # The pending `dropped` event (its count grows while it waits), where lines were lost.
        self._dropped: dict[str, Any] | None = None
        self._closed = False
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, name: str, data: dict[str, Any], sequence: int | None = None) -> None:
        if name == "progress":
            # Only the latest progress is worth showing.
            for pending in [i for i in self._items if i[0] == "progress"]:
                self._items.remove(pending)
        elif name == "log":
            if self._lines >= self.max_lines:
                if self._dropped is None:
                    self._dropped = {"lines": 0}
                    self._items.append(("dropped", self._dropped, None))
                self._dropped["lines"] += 1
                self._ready.set()
                return
            self._lines += 1
        self._items.append((name, data, sequence))
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self, timeout: float) -> Item | None:  # noqa: ASYNC109
        """The next event; ("keepalive", ...) after `timeout` idle seconds; None once closed and
        drained."""
        while True:
            if self._items:
                item = self._items.popleft()
                if item[0] == "log":
                    self._lines -= 1
                elif item[1] is self._dropped:
                    self._dropped = None
                return item
            if self._closed:
                return None
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return ("keepalive", {}, None)


class JobsBuffer:
    """A viewer's pending changes of many jobs: the latest item per job."""

    def __init__(self, max_jobs: int = MAX_JOBS) -> None:
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._signals: deque[str] = deque()
        self._closed = False
        self._ready = asyncio.Event()

    def put_job(self, job: dict[str, Any]) -> None:
        self._jobs.pop(job["id"], None)
        self._jobs[job["id"]] = job
        if len(self._jobs) > self.max_jobs:
            self._jobs.clear()
            self.signal("changes_dropped")
        self._ready.set()

    def signal(self, name: str) -> None:
        if name == "changes_dropped":
            self._jobs.clear()
        self._signals.append(name)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self, timeout: float) -> Item | None:  # noqa: ASYNC109
        while True:
            if self._signals:
                return (self._signals.popleft(), {}, None)
            if self._jobs:
                _, job = self._jobs.popitem(last=False)
                return ("job", job, None)
            if self._closed:
                return None
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return ("keepalive", {}, None)


def _format(item: Item) -> str:
    name, data, sequence = item
    if name == "keepalive":
        return ": keepalive\n\n"
    head = f"id: {sequence}\n" if sequence is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _watch_item(item: job_service_pb2.WatchJobResponse) -> tuple[str, dict[str, Any]]:
    kind = item.WhichOneof("item")
    if kind == "snapshot":
        return "snapshot", serialize.job(item.snapshot)
    if kind == "event":
        return "transition", serialize.event(item.event)
    if kind == "progress":
        p = item.progress
        return "progress", {"percent": p.percent, "step": p.step, "message": p.message}
    return "log", {"attempt": item.log.attempt, "line": item.log.line_number, "text": item.log.line}


async def _stream(
    pump: asyncio.Task[None], buffer: JobBuffer | JobsBuffer, keepalive: float
) -> AsyncIterator[str]:
    try:
        yield ": connected\n\n"
        while True:
            item = await buffer.get(keepalive)
            if item is None:
                return
            yield _format(item)
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


def _headers() -> dict[str, str]:
    # No proxy buffering: events must reach the browser as they happen.
    return {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def watch_job(request: Request, session: Session, client: AsyncClient) -> Response:
    job_id = request.path_params["id"]
    try:
        after = int(request.headers.get("last-event-id", "0") or 0)
    except ValueError:
        after = 0
    buffer = JobBuffer(request.app.state.sse_max_lines)

    async def pump() -> None:
        try:
            async for item in client.raw.watch(job_id, after_sequence=after):
                name, data = _watch_item(item)
                buffer.put(name, data, item.sequence)
            buffer.put("end", {})
        except JobschedError as err:
            buffer.put("problem", {"message": err.message, "reason": err.reason})
        finally:
            buffer.close()

    task = asyncio.create_task(pump())
    return StreamingResponse(
        _stream(task, buffer, request.app.state.sse_keepalive),
        media_type="text/event-stream",
        headers=_headers(),
    )


async def watch_jobs(request: Request, session: Session, client: AsyncClient) -> Response:
    query = request.query_params
    states = [s.strip() for s in query.get("state", "").split(",") if s.strip()]
    buffer = JobsBuffer(request.app.state.sse_max_jobs)

    async def pump() -> None:
        try:
            async for item in client.raw.watch_jobs(
                queue=query.get("queue") or None, type=query.get("type") or None, states=states
            ):
                kind = item.WhichOneof("item")
                if kind == "job":
                    buffer.put_job(serialize.job_row(item.job))
                elif kind in ("subscribed", "changes_dropped"):
                    buffer.signal(kind)
        except JobschedError as err:
            buffer.signal("problem")
            del err
        except ValueError:  # an unknown state name
            buffer.signal("problem")
        finally:
            buffer.close()

    task = asyncio.create_task(pump())
    return StreamingResponse(
        _stream(task, buffer, request.app.state.sse_keepalive),
        media_type="text/event-stream",
        headers=_headers(),
    )


WATCH_JOB = endpoint(watch_job)
WATCH_JOBS = endpoint(watch_jobs)
