"""The JSON API the front end calls, under /api. Each route is one or two calls of the public
gRPC API with the session's credential; scheduler errors pass through `problems.from_error`.

    GET    /api/session                        who is signed in, what they may do, the CSRF token
    POST   /api/session                        sign in {api_key, tenant?}
    DELETE /api/session                        sign out
    POST   /api/session/tenant                 {tenant}: act for another tenant of the key
    GET    /api/jobs?state=&queue=&type=&label=k=v&cursor=&page_size=   one page, next_cursor
    POST   /api/jobs                           submit {type, queue?, priority?, payload?}
    GET    /api/jobs/{id}                      job, events, attempts, dependencies, log tail
    GET    /api/jobs/{id}/artifacts            the job's artifacts (ListJobArtifacts)
    GET    /api/jobs/{id}/artifacts/{name}     download one (GetArtifact, streamed through)
    POST   /api/jobs/{id}/cancel | /retry      the action; the job after it
    POST   /api/jobs/{id}/priority             {priority}
    DELETE /api/jobs/{id}
    GET    /api/queues                         queues with their statistics
    POST   /api/queues/{name}/pause | /resume
    GET    /api/schedules                      cron schedules with their next fire times
    POST   /api/schedules/{id}/pause | /resume | /trigger
    POST   /api/dead-letters/retry             {queue?, type?}: retry DEAD jobs in bulk
    GET    /api/overview                       active jobs per state, queues, cluster if allowed
    GET    /api/rates                          submits, finishes and failures over the last hour
    GET    /api/cluster                        replicas, leader, executors (admin keys)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dashboard import capabilities, serialize
from dashboard.flags import DashboardSettings
from dashboard.problems import from_error, problem
from dashboard.session import Session, Sessions, csrf_problem
from jobsched.async_client import AsyncClient
from jobsched.errors import JobschedError, UnauthenticatedError

ACTIVE = ("WAITING", "SCHEDULED", "QUEUED", "RUNNING")
TERMINAL = ("SUCCEEDED", "DEAD", "CANCELLED")
DEFAULT_PAGE = 100
MAX_PAGE = 500
LOG_TAIL = 200
MAX_BODY = 1 << 20  # a payload is at most 1 MiB at the scheduler too
# The overview's charts: the last hour in 5-minute buckets, counted from the keyset lists (the
# API has no statistics RPC for rates), at most RATE_PAGES pages of RATE_PAGE jobs from each of
# the history and the active list; a series that needed more says it is incomplete. One
# session's answer is kept RATE_TTL seconds.
RATE_WINDOW = timedelta(hours=1)
RATE_BUCKETS = 12
RATE_PAGE = 1000
RATE_PAGES = 10
RATE_TTL = 15.0

Handler = Callable[[Request, Session, AsyncClient], Awaitable[Response]]


def sessions_of(request: Request) -> Sessions:
    value: Sessions = request.app.state.sessions
    return value


def settings_of(request: Request) -> DashboardSettings:
    value: DashboardSettings = request.app.state.settings
    return value


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """The session, CSRF check and error translation every route shares."""

    async def route(request: Request) -> Response:
        session = await sessions_of(request).get(request)
        refused = csrf_problem(request, session)
        if refused is not None:
            return problem(403, refused, reason="CSRF_CHECK_FAILED")
        if session is None:
            return problem(401, "no session: load the dashboard first", reason="NO_SESSION")
        try:
            return await handler(request, session, session.client(settings_of(request)))
        except JobschedError as err:
            return from_error(err)

    return route


async def _body(request: Request) -> dict[str, Any] | Response:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return problem(413, f"the request body is over {MAX_BODY} bytes", reason="TOO_LARGE")
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return problem(400, "the request body is not JSON", reason="INVALID_ARGUMENT")
    if not isinstance(value, dict):
        return problem(400, "the request body must be a JSON object", reason="INVALID_ARGUMENT")
    return value


# -- session -------------------------------------------------------------------------------


def _session_view(session: Session, auth_required: bool) -> dict[str, Any]:
    return {
        "signed_in": session.token is not None,
        "auth_required": auth_required,
        "tenant": session.tenant,
        "permissions": sorted(session.permissions),
        "csrf_token": session.csrf,
    }


async def get_session(request: Request) -> Response:
    sessions = sessions_of(request)
    session = await sessions.get(request)
    fresh = session is None
    if session is None:
        session = await sessions.create()
    auth_required = False
    if session.token is None:
        try:
            session.permissions = await capabilities.permissions(
                session.client(settings_of(request))
            )
        except UnauthenticatedError:
            auth_required = True
            session.permissions = frozenset()
        except JobschedError as err:
            response: Response = from_error(err)
            if fresh:
                sessions.set_cookie(response, session)
            return response
    response = JSONResponse(_session_view(session, auth_required or session.token is not None))
    if fresh:
        sessions.set_cookie(response, session)
    return response


async def sign_in(request: Request) -> Response:
    sessions = sessions_of(request)
    session = await sessions.get(request)
    refused = csrf_problem(request, session)
    if refused is not None or session is None:
        return problem(403, refused or "no session", reason="CSRF_CHECK_FAILED")
    body = await _body(request)
    if isinstance(body, Response):
        return body
    key = str(body.get("api_key") or "").strip()
    tenant = str(body.get("tenant") or "").strip() or None
    if not key:
        return problem(
            400,
            "an API key is needed",
            reason="INVALID_ARGUMENT",
            field_violations=[{"field": "api_key", "description": "is required"}],
        )
    # A new session for the signed-in user (the old id may have been seen before sign-in).
    await sessions.end(session)
    fresh = await sessions.create()
    fresh.token, fresh.tenant = key, tenant
    try:
        fresh.permissions = await capabilities.permissions(fresh.client(settings_of(request)))
    except JobschedError as err:
        await sessions.end(fresh)
        anonymous = await sessions.create()
        response = from_error(err)
        sessions.set_cookie(response, anonymous)
        return response
    response = JSONResponse(_session_view(fresh, True))
    sessions.set_cookie(response, fresh)
    return response


async def switch_tenant(request: Request, session: Session, client: AsyncClient) -> Response:
    """The same key acting for another of its tenants: a new client, its permissions probed
    again (the scheduler refuses a tenant the key does not have, and nothing changes then)."""
    body = await _body(request)
    if isinstance(body, Response):
        return body
    tenant = str(body.get("tenant") or "").strip() or None
    trial = Session(id="", csrf="", token=session.token, tenant=tenant)
    try:
        permissions = await capabilities.permissions(trial.client(settings_of(request)))
    finally:
        await trial.close()
    await session.close()  # its client had the old tenant
    session.tenant, session.permissions = tenant, permissions
    return JSONResponse(_session_view(session, session.token is not None))


async def sign_out(request: Request) -> Response:
    sessions = sessions_of(request)
    session = await sessions.get(request)
    refused = csrf_problem(request, session)
    if refused is not None:
        return problem(403, refused, reason="CSRF_CHECK_FAILED")
    if session is not None:
        await sessions.end(session)
    response = Response(status_code=204)
    sessions.clear_cookie(response)
    return response


# -- jobs ----------------------------------------------------------------------------------


def _cursor(phase: str, token: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([phase, token]).encode()).decode()


def _read_cursor(value: str) -> tuple[str, str] | None:
    try:
        phase, token = json.loads(base64.urlsafe_b64decode(value.encode()))
    except (ValueError, binascii.Error, TypeError):
        return None
    if phase not in {"active", "history"} or not isinstance(token, str):
        return None
    return phase, token


def _labels(values: list[str]) -> list[tuple[str, str | None]] | Response:
    """`label=key=value` (the label has that value) or `label=key` (the job has the label),
    each `label` parameter one condition, all of them to hold."""
    wanted: list[tuple[str, str | None]] = []
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not key:
            return problem(
                400,
                f"{item!r} is not a label filter (key=value)",
                reason="INVALID_ARGUMENT",
                field_violations=[{"field": "label", "description": "must be key=value"}],
            )
        wanted.append((key, value if sep else None))
    return wanted


async def list_jobs(request: Request, session: Session, client: AsyncClient) -> Response:
    """Active jobs (oldest first), then finished ones (newest first), each through its keyset
    API; the cursor says which list and carries that list's page token."""
    query = request.query_params
    states = [s.strip().upper() for s in query.get("state", "").split(",") if s.strip()]
    unknown = [s for s in states if s not in ACTIVE + TERMINAL]
    if unknown:
        return problem(
            400,
            f"{unknown[0]!r} is not a job state",
            reason="INVALID_ARGUMENT",
            field_violations=[{"field": "state", "description": f"unknown state {unknown[0]}"}],
        )
    try:
        size = int(query.get("page_size", DEFAULT_PAGE))
    except ValueError:
        size = -1
    if size < 1:
        return problem(
            400,
            "page_size must be a positive number",
            reason="INVALID_ARGUMENT",
            field_violations=[{"field": "page_size", "description": "must be 1 or more"}],
        )
    size = min(size, MAX_PAGE)
    active = [s for s in states if s in ACTIVE]
    terminal = [s for s in states if s in TERMINAL]
    phases = [
        p for p, chosen in (("active", active), ("history", terminal)) if chosen or not states
    ]
    position = ("", "")
    if query.get("cursor"):
        read = _read_cursor(query["cursor"])
        if read is None or read[0] not in phases:
            return problem(
                400,
                "the cursor is not one this list gave",
                reason="INVALID_ARGUMENT",
                field_violations=[{"field": "cursor", "description": "is invalid"}],
            )
        position = read
    phase, token = position if position[0] else (phases[0], "")
    queue, job_type = query.get("queue") or None, query.get("type") or None
    labels = _labels(query.getlist("label"))
    if isinstance(labels, Response):
        return labels
    # The scheduler filters by label (ListActiveJobsRequest.labels, GetJobHistoryRequest.labels).
    wanted = [key if value is None else f"{key}={value}" for key, value in labels]
    if phase == "active":
        jobs, next_token = await client.raw.list_active_page(
            queue=queue,
            type=job_type,
            states=active,
            page_size=size,
            page_token=token,
            labels=wanted,
        )
    else:
        jobs, next_token = await client.raw.history_page(
            queue=queue,
            type=job_type,
            states=terminal,
            page_size=size,
            page_token=token,
            labels=wanted,
        )
    if next_token:
        token = next_token
    elif phase == "active" and "history" in phases:
        phase, token = "history", ""
    else:
        phase, token = "", ""
    cursor = _cursor(phase, token) if phase else ""
    return JSONResponse({"jobs": [serialize.job_row(j) for j in jobs], "next_cursor": cursor})


async def submit_job(request: Request, session: Session, client: AsyncClient) -> Response:
    body = await _body(request)
    if isinstance(body, Response):
        return body
    violations: list[dict[str, str]] = []
    spec: dict[str, Any] = {
        "type": str(body.get("type") or ""),
        "queue": str(body.get("queue") or ""),
    }
    priority = body.get("priority")
    if priority not in (None, ""):
        try:
            spec["priority"] = int(priority)
        except (TypeError, ValueError):
            violations.append({"field": "priority", "description": "must be a whole number"})
    payload = body.get("payload")
    if isinstance(payload, str) and payload.strip():
        try:
            json.loads(payload)
        except ValueError as exc:
            violations.append({"field": "payload", "description": f"is not JSON: {exc}"})
        spec["payload"] = payload.strip()
    elif payload not in (None, ""):
        spec["payload"] = json.dumps(payload, separators=(",", ":"))
    if violations:
        return problem(
            400, "the job is invalid", reason="INVALID_ARGUMENT", field_violations=violations
        )
    result = await client.raw.submit_job(spec)
    return JSONResponse({"job": serialize.job(result.job)}, status_code=201)


async def job_detail(request: Request, session: Session, client: AsyncClient) -> Response:
    job_id = request.path_params["id"]
    status = await client.raw.status(job_id, include_events=True)
    events = list(status.events)
    lines = [line async for line in client.raw.logs(job_id, status.job.attempt)]
    return JSONResponse(
        {
            "job": serialize.job(status.job),
            "events": [serialize.event(e) for e in events],
            "attempts": serialize.attempts(events),
            "dependencies": [
                {"id": d.id, "state": serialize.state_name(d.state)} for d in status.dependencies
            ],
            "logs": [
                {"attempt": line.attempt, "line": line.line_number, "text": line.line}
                for line in lines[-LOG_TAIL:]
            ],
        }
    )


async def job_artifacts(request: Request, session: Session, client: AsyncClient) -> Response:
    artifacts = await client.raw.list_artifacts(request.path_params["id"])
    return JSONResponse({"artifacts": [serialize.artifact(a) for a in artifacts]})


def _disposition(name: str) -> str:
    """An attachment (never shown inline: an artifact is whatever a handler uploaded), named
    as stored; the plain filename is an ASCII stand-in for old browsers."""
    base = name.rsplit("/", 1)[-1] or "artifact"
    plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in base)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(base, safe='')}"


async def download_artifact(request: Request, session: Session, client: AsyncClient) -> Response:
    """GetArtifact streamed to the browser chunk by chunk (nothing is held whole here), with
    the session's credential. The last chunk is sent only once the size and SHA-256 checked
    out: a download that does not match breaks off short of its Content-Length."""
    artifact, chunks = await client.raw.open_artifact(
        request.path_params["id"], request.path_params["name"]
    )

    async def body() -> AsyncIterator[bytes]:
        held: bytes | None = None
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                if held:
                    yield held
                held = chunk
        if held:
            yield held

    return StreamingResponse(
        body(),
        media_type=artifact.content_type or "application/octet-stream",
        headers={
            "content-length": str(artifact.size_bytes),
            "content-disposition": _disposition(artifact.name),
            "cache-control": "private, no-store",
            "x-artifact-sha256": artifact.sha256,
        },
    )


async def cancel_job(request: Request, session: Session, client: AsyncClient) -> Response:
    body = await _body(request)
    if isinstance(body, Response):
        return body
    job = await client.raw.cancel(request.path_params["id"], str(body.get("reason") or ""))
    return JSONResponse({"job": serialize.job(job)})


async def retry_job(request: Request, session: Session, client: AsyncClient) -> Response:
    job = await client.raw.retry(request.path_params["id"])
    return JSONResponse({"job": serialize.job(job)})


async def delete_job(request: Request, session: Session, client: AsyncClient) -> Response:
    await client.raw.delete(request.path_params["id"])
    return Response(status_code=204)


async def job_priority(request: Request, session: Session, client: AsyncClient) -> Response:
    body = await _body(request)
    if isinstance(body, Response):
        return body
    value = body.get("priority")
    if not isinstance(value, int) or isinstance(value, bool):
        return problem(
            400,
            "priority must be a whole number",
            reason="INVALID_ARGUMENT",
            field_violations=[{"field": "priority", "description": "must be a whole number"}],
        )
    job, changed = await client.raw.update_priority(request.path_params["id"], value)
    return JSONResponse({"job": serialize.job(job), "changed": changed})


# -- queues, overview, cluster -------------------------------------------------------------


async def list_queues(request: Request, session: Session, client: AsyncClient) -> Response:
    return JSONResponse({"queues": [serialize.queue(q) for q in await client.raw.queues()]})


async def pause_queue(request: Request, session: Session, client: AsyncClient) -> Response:
    queue = await client.raw.pause_queue(request.path_params["name"])
    return JSONResponse({"queue": serialize.queue(queue)})


async def resume_queue(request: Request, session: Session, client: AsyncClient) -> Response:
    queue = await client.raw.resume_queue(request.path_params["name"])
    return JSONResponse({"queue": serialize.queue(queue)})


async def list_schedules(request: Request, session: Session, client: AsyncClient) -> Response:
    schedules = [serialize.schedule(s) async for s in client.raw.list_schedules()]
    return JSONResponse({"schedules": schedules})


async def pause_schedule(request: Request, session: Session, client: AsyncClient) -> Response:
    schedule = await client.raw.pause_schedule(request.path_params["id"])
    return JSONResponse({"schedule": serialize.schedule(schedule)})


async def resume_schedule(request: Request, session: Session, client: AsyncClient) -> Response:
    schedule = await client.raw.resume_schedule(request.path_params["id"])
    return JSONResponse({"schedule": serialize.schedule(schedule)})


async def trigger_schedule(request: Request, session: Session, client: AsyncClient) -> Response:
    job, skipped = await client.raw.trigger_schedule(request.path_params["id"])
    return JSONResponse(
        {"job": serialize.job(job, full=False) if job is not None else None, "skipped": skipped}
    )


async def retry_dead_letters(request: Request, session: Session, client: AsyncClient) -> Response:
    """One RetryJobs call (up to the server's limit, 1,000) over the dead-letter queue, by queue
    and type; `more` says whether another call would retry more."""
    body = await _body(request)
    if isinstance(body, Response):
        return body
    retried, more = await client.raw.retry_many(
        queue=str(body.get("queue") or "") or None,
        type=str(body.get("type") or "") or None,
        states=["DEAD"],
    )
    return JSONResponse({"retried": retried, "more": more})


def _cluster(status: Any) -> dict[str, Any]:
    return {
        "leader_id": status.leader_id,
        "epoch": status.epoch,
        "leader_since": serialize.timestamp(status, "leader_since"),
        "replicas": [
            {
                "id": r.id,
                "address": r.address,
                "leader": r.leader,
                "started_at": serialize.timestamp(r, "start_time"),
                "last_seen": serialize.timestamp(r, "last_seen_time"),
                "executors": [
                    {
                        "name": e.name,
                        "capacity": e.capacity,
                        "running": e.running,
                        "job_types": list(e.job_types),
                        "queues": list(e.queues),
                    }
                    for e in r.executors
                ],
            }
            for r in status.replicas
        ],
    }


async def cluster(request: Request, session: Session, client: AsyncClient) -> Response:
    return JSONResponse(_cluster(await client.raw.cluster_status()))


async def overview(request: Request, session: Session, client: AsyncClient) -> Response:
    queues = [serialize.queue(q) for q in await client.raw.queues()]
    counts = dict.fromkeys(ACTIVE, 0)
    for queue in queues:
        for state, number in queue["jobs_by_state"].items():
            counts[state] = counts.get(state, 0) + number
    body: dict[str, Any] = {"jobs_by_state": counts, "queues": queues, "cluster": None}
    if capabilities.READ_CLUSTER in session.permissions:
        body["cluster"] = _cluster(await client.raw.cluster_status())
    return JSONResponse(body)


def _bucket(ts: Any, start: float, width: float) -> int | None:
    if not ts.seconds:
        return None
    at = int((ts.seconds + ts.nanos / 1e9 - start) // width)
    return at if 0 <= at < RATE_BUCKETS else None


async def _rates(client: AsyncClient, now: datetime) -> dict[str, Any]:
    begin = now - RATE_WINDOW
    start, width = begin.timestamp(), RATE_WINDOW.total_seconds() / RATE_BUCKETS
    submitted = [0] * RATE_BUCKETS
    finished = [0] * RATE_BUCKETS
    failed = [0] * RATE_BUCKETS
    history_complete = active_complete = False
    token = ""
    for _ in range(RATE_PAGES):
        jobs, token = await client.raw.history_page(
            finished_after=begin, page_size=RATE_PAGE, page_token=token
        )
        for job in jobs:
            done = _bucket(job.finish_time, start, width)
            if done is not None:
                finished[done] += 1
                if job.state == serialize.DEAD:
                    failed[done] += 1
            made = _bucket(job.create_time, start, width)
            if made is not None:
                submitted[made] += 1
        if not token:
            history_complete = True
            break
    token = ""
    for _ in range(RATE_PAGES):
        jobs, token = await client.raw.list_active_page(page_size=RATE_PAGE, page_token=token)
        for job in jobs:
            made = _bucket(job.create_time, start, width)
            if made is not None:
                submitted[made] += 1
        if not token:
            active_complete = True
            break
    return {
        "since": serialize.time_of(begin),
        "until": serialize.time_of(now),
        "bucket_seconds": width,
        "buckets": [
            {
                "start": serialize.time_of(begin + n * timedelta(seconds=width)),
                "submitted": submitted[n],
                "finished": finished[n],
                "failed": failed[n],
                "failure_rate": failed[n] / finished[n] if finished[n] else None,
            }
            for n in range(RATE_BUCKETS)
        ],
        # Submits count the jobs still active and those finished within the hour: complete only
        # when both lists were read to their ends.
        "submitted_complete": history_complete and active_complete,
        "finished_complete": history_complete,
    }


async def rates(request: Request, session: Session, client: AsyncClient) -> Response:
    cache: dict[str, tuple[float, dict[str, Any]]] = request.app.state.rates
    kept = cache.get(session.id)
    if kept is not None and time.monotonic() - kept[0] < RATE_TTL:
        return JSONResponse(kept[1])
    body = await _rates(client, datetime.now(UTC))
    if len(cache) >= 1000:
        cache.clear()
    cache[session.id] = (time.monotonic(), body)
    return JSONResponse(body)


ROUTES = [
    Route("/api/session", get_session, methods=["GET"]),
    Route("/api/session", sign_in, methods=["POST"]),
    Route("/api/session", sign_out, methods=["DELETE"]),
    Route("/api/session/tenant", endpoint(switch_tenant), methods=["POST"]),
    Route("/api/jobs", endpoint(list_jobs), methods=["GET"]),
    Route("/api/jobs", endpoint(submit_job), methods=["POST"]),
    Route("/api/jobs/{id}", endpoint(job_detail), methods=["GET"]),
    Route("/api/jobs/{id}", endpoint(delete_job), methods=["DELETE"]),
    Route("/api/jobs/{id}/artifacts", endpoint(job_artifacts), methods=["GET"]),
    Route("/api/jobs/{id}/artifacts/{name:path}", endpoint(download_artifact), methods=["GET"]),
    Route("/api/jobs/{id}/cancel", endpoint(cancel_job), methods=["POST"]),
    Route("/api/jobs/{id}/retry", endpoint(retry_job), methods=["POST"]),
    Route("/api/jobs/{id}/priority", endpoint(job_priority), methods=["POST"]),
    Route("/api/queues", endpoint(list_queues), methods=["GET"]),
    Route("/api/queues/{name}/pause", endpoint(pause_queue), methods=["POST"]),
    Route("/api/queues/{name}/resume", endpoint(resume_queue), methods=["POST"]),
    Route("/api/schedules", endpoint(list_schedules), methods=["GET"]),
    Route("/api/schedules/{id}/pause", endpoint(pause_schedule), methods=["POST"]),
    Route("/api/schedules/{id}/resume", endpoint(resume_schedule), methods=["POST"]),
    Route("/api/schedules/{id}/trigger", endpoint(trigger_schedule), methods=["POST"]),
    Route("/api/dead-letters/retry", endpoint(retry_dead_letters), methods=["POST"]),
    Route("/api/overview", endpoint(overview), methods=["GET"]),
    Route("/api/rates", endpoint(rates), methods=["GET"]),
    Route("/api/cluster", endpoint(cluster), methods=["GET"]),
]
