"""Server-Sent Events bridging WatchJob (`/api/jobs/{id}/events`) and WatchJobs
(`/api/events/jobs`) to browsers, with the viewer's credential: the viewers of one job on one
credential share one WatchJob stream (feeds.py); a resume (Last-Event-ID) and each WatchJobs
viewer get a stream of their own.

A pump task drains the gRPC stream into each viewer's bounded buffer (sse_buffers.py) and never
waits for a browser, so a slow viewer cannot hold the stream (nor slow anyone else). The buffer
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
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dashboard import serialize
from dashboard.api import endpoint
from dashboard.feeds import Feeds
from dashboard.session import Session
from dashboard.sse_buffers import MAX_JOBS, MAX_LINES, Item, JobBuffer, JobsBuffer, watch_item
from jobsched.async_client import AsyncClient
from jobsched.errors import JobschedError

KEEPALIVE = 15.0
__all__ = ["KEEPALIVE", "MAX_JOBS", "MAX_LINES", "WATCH_JOB", "WATCH_JOBS"]


def _format(item: Item) -> str:
    name, data, sequence = item
    if name == "keepalive":
        return ": keepalive\n\n"
    head = f"id: {sequence}\n" if sequence is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(
    buffer: JobBuffer | JobsBuffer, keepalive: float, done: Callable[[], Awaitable[None]]
) -> AsyncIterator[str]:
    try:
        yield ": connected\n\n"
        while True:
            item = await buffer.get(keepalive)
            if item is None:
                return
            yield _format(item)
    finally:
        await done()


def _cancelling(task: asyncio.Task[None]) -> Callable[[], Awaitable[None]]:
    async def done() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return done


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
    keepalive = request.app.state.sse_keepalive
    if after == 0:
        # A fresh viewer shares the job's stream with the others on the same credential.
        feeds: Feeds = request.app.state.feeds
        feed = feeds.join(session.token, session.tenant, job_id, buffer)
        return StreamingResponse(
            _stream(buffer, keepalive, lambda: feeds.leave(feed, buffer)),
            media_type="text/event-stream",
            headers=_headers(),
        )

    async def pump() -> None:  # a resume (Last-Event-ID): a stream of its own
        try:
            async for item in client.raw.watch(job_id, after_sequence=after):
                name, data = watch_item(item)
                buffer.put(name, data, item.sequence)
            buffer.put("end", {})
        except JobschedError as err:
            buffer.put("problem", {"message": err.message, "reason": err.reason})
        finally:
            buffer.close()

    task = asyncio.create_task(pump())
    return StreamingResponse(
        _stream(buffer, keepalive, _cancelling(task)),
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
        except (JobschedError, ValueError):  # ValueError: an unknown state name
            buffer.signal("problem")
        finally:
            buffer.close()

    task = asyncio.create_task(pump())
    return StreamingResponse(
        _stream(buffer, request.app.state.sse_keepalive, _cancelling(task)),
        media_type="text/event-stream",
        headers=_headers(),
    )


WATCH_JOB = endpoint(watch_job)
WATCH_JOBS = endpoint(watch_jobs)
