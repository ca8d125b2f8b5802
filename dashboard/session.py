"""Browser sessions: who is signed in, with which API key, kept server-side.

The browser holds only a signed, httpOnly, SameSite=Strict cookie naming its session
(`<session id>.<HMAC-SHA256(secret, session id)>`); the API key, the tenant and the scheduler
client of the session stay in this process's memory (a restart signs everyone out). Each
session also has a CSRF token: every mutating call must send it back in the X-CSRF-Token header
(a page of another origin cannot read it), and its Origin, when the browser sends one, must be
this server's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from dashboard.flags import DashboardSettings
from jobsched.async_client import AsyncClient

COOKIE = "jobsched_session"
CSRF_HEADER = "x-csrf-token"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# At most this many sessions are kept; the least recently used goes first.
MAX_SESSIONS = 10_000


@dataclass
class Session:
    id: str
    csrf: str
    token: str | None = None
    tenant: str | None = None
    # Permission names the key holds ("submit", "operate", ...); see capabilities.py.
    permissions: frozenset[str] = frozenset()
    last_used: float = field(default_factory=time.monotonic)
    _client: AsyncClient | None = None

    def client(self, settings: DashboardSettings) -> AsyncClient:
        """The scheduler client calling with this session's credential (made on first use)."""
        if self._client is None:
            self._client = AsyncClient(
                list(settings.schedulers),
                tenant=self.tenant or settings.tenant,
                timeout=settings.call_timeout,
                tls=settings.tls,
                token=self.token,
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


class Sessions:
    """The sessions of this process, by id; idle ones expire."""

    def __init__(
        self, settings: DashboardSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._secret = (settings.session_secret or secrets.token_hex(32)).encode()
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def _sign(self, session_id: str) -> str:
        mac = hmac.new(self._secret, session_id.encode(), hashlib.sha256).hexdigest()
        return f"{session_id}.{mac}"

    def _verify(self, cookie: str) -> str | None:
        session_id, _, _ = cookie.partition(".")
        if not session_id or not hmac.compare_digest(self._sign(session_id), cookie):
            return None
        return session_id

    async def expire(self) -> None:
        """Forget sessions idle longer than the settings allow (and the oldest beyond the cap)."""
        limit = self._clock() - self.settings.session_idle
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.last_used >= limit and len(self._sessions) <= MAX_SESSIONS:
                break
            del self._sessions[oldest.id]
            await oldest.close()

    async def get(self, request: Request) -> Session | None:
        """The request's live session, or None."""
        await self.expire()
        cookie = request.cookies.get(COOKIE, "")
        session_id = self._verify(cookie) if cookie else None
        session = self._sessions.get(session_id) if session_id else None
        if session is not None:
            session.last_used = self._clock()
            self._sessions.move_to_end(session.id)
        return session

    async def create(self) -> Session:
        await self.expire()
        session = Session(
            id=secrets.token_urlsafe(24), csrf=secrets.token_urlsafe(24), last_used=self._clock()
        )
        self._sessions[session.id] = session
        return session

    async def end(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        await session.close()

    async def close(self) -> None:
        while self._sessions:
            _, session = self._sessions.popitem()
            await session.close()

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self._sign(session.id),
            httponly=True,
            samesite="strict",
            secure=self.settings.secure_cookies,
            path="/",
        )

    @staticmethod
    def clear_cookie(response: Response) -> None:
        response.delete_cookie(COOKIE, path="/")


def csrf_problem(request: Request, session: Session | None) -> str | None:
    """Why a mutating request must be refused (None: it may go on)."""
    if request.method not in MUTATING:
        return None
    origin = request.headers.get("origin")
    if origin is not None:
        own = f"{request.url.scheme}://{request.url.netloc}"
        if origin != own:
            return f"origin {origin} is not this dashboard's ({own})"
    if session is None:
        return "no session: load the dashboard first"
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent, session.csrf):
        return f"missing or wrong {CSRF_HEADER} header"
    return None
