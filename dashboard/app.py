"""The dashboard's ASGI application: the JSON API, the event streams and the front end's static
files, with security headers on every answer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashboard import api, sse
from dashboard.feeds import Feeds
from dashboard.flags import DashboardSettings
from dashboard.session import Sessions

# `make dashboard` puts the Next.js static export here (and the wheel ships it).
STATIC = Path(__file__).parent / "static"

# Next.js's static export bootstraps with inline scripts, hence 'unsafe-inline' for scripts;
# everything else comes from this origin only, and no other site may frame the dashboard.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
        "'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'self'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}

NOT_BUILT = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>jobsched dashboard</title></head><body><main><h1>The front end is not built</h1>
<p>Run <code>make dashboard</code> in the jobsched checkout (or install a jobsched wheel, which
ships it); the JSON API under <code>/api</code> works without it.</p></main></body></html>"""


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


async def _not_built(request: Request) -> Response:
    return HTMLResponse(NOT_BUILT, status_code=503)


def create_app(
    settings: DashboardSettings,
    *,
    static: Path = STATIC,
    sse_keepalive: float = sse.KEEPALIVE,
    sse_max_lines: int = sse.MAX_LINES,
    sse_max_jobs: int = sse.MAX_JOBS,
) -> Starlette:
    sessions = Sessions(settings)
    feeds = Feeds(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await feeds.close()
            await sessions.close()

    routes: list[Route | Mount] = [
        *api.ROUTES,
        Route("/api/jobs/{id}/events", sse.WATCH_JOB, methods=["GET"]),
        Route("/api/events/jobs", sse.WATCH_JOBS, methods=["GET"]),
    ]
    if (static / "index.html").is_file():
        routes.append(Mount("/", StaticFiles(directory=static, html=True)))
    else:
        routes.append(Route("/{path:path}", _not_built))
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)], lifespan=lifespan)
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.feeds = feeds
    app.state.rates = {}  # session id -> (when, the /api/rates answer); see api.rates
    app.state.sse_keepalive = sse_keepalive
    app.state.sse_max_lines = sse_max_lines
    app.state.sse_max_jobs = sse_max_jobs
    return app
