"""Register handling: executor names are unique among live sessions, and session tokens prove that
a reconnecting executor is the one a session belonged to.

A token is "<session id>.<mac>", mac = HMAC-SHA256(the cluster's `executor_session` secret,
name + "\\n" + session id), base64url without padding. Every replica loads the same secret
(cluster_secrets, migration 0010) once, so any replica can verify a token for a name without
storing tokens anywhere.

Register with a token that verifies for its name: the same executor reconnecting. It takes over
a session of that name on this replica (the old stream is closed) and re-attaches its in-flight
attempts. Without one, the name must be free: not held by a live session here (open and not
silent) nor listed in another live replica's presence row, else ALREADY_EXISTS
(EXECUTOR_NAME_TAKEN) and the first executor keeps its stream; a new session then re-attaches
nothing, and each in-flight attempt it names gets a CancelAssignment (another process must not
claim attempts by name alone)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.dispatch.messages import cancel_message
from scheduler.dispatch.sessions import ExecutorSession
from scheduler.domain.errors import ExecutorNameTaken
from scheduler.store.database import Database
from scheduler.store.executor_sessions import executor_live_elsewhere, load_session_secret

log = logging.getLogger("jobsched.dispatch")

NOT_REATTACHED = "not re-attached: no valid session token"


class SessionTokens:
    """Issue and verify session tokens with the cluster's secret (pure)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, name: str, session_id: str) -> str:
        digest = hmac.new(self._secret, f"{name}\n{session_id}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, name: str, session_id: str) -> str:
        return f"{session_id}.{self._mac(name, session_id)}"

    def verify(self, name: str, token: str) -> bool:
        """Whether `token` was issued to a session of `name` (by any replica)."""
        session_id, dot, mac = token.rpartition(".")
        if not dot or not session_id or not mac:
            return False
        return hmac.compare_digest(mac, self._mac(name, session_id))


class Registrar:
    """Admits registered sessions into the dispatcher (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        dispatcher: Dispatcher,
        replica_id: str,
        clock: Callable[[], datetime],
        *,
        live_within: timedelta = timedelta(seconds=15),
        has_peers: Callable[[], bool] = lambda: False,
    ) -> None:
        self.db = db
        self.dispatcher = dispatcher
        self.replica_id = replica_id
        self.clock = clock
        # A presence row seen within this is a live replica (3 presence intervals).
        self.live_within = live_within
        self.has_peers = has_peers
        self._tokens: SessionTokens | None = None
        self._loading = asyncio.Lock()

    async def tokens(self) -> SessionTokens:
        """The token signer, its secret read from the store at the first Register."""
        if self._tokens is None:
            async with self._loading:
                if self._tokens is None:
                    async with self.db.read() as conn:
                        self._tokens = SessionTokens(await load_session_secret(conn))
        return self._tokens

    async def admit(
        self, session: ExecutorSession, token: str, in_flight: Sequence[tuple[str, int]]
    ) -> str:
        """Admit `session` (raises ExecutorNameTaken); returns its new session token."""
        tokens = await self.tokens()
        resuming = bool(token) and tokens.verify(session.name, token)
        if not resuming:
            await self._check_name_free(session.name)
        if resuming:
            await self.dispatcher.reattach(session, list(in_flight))
        else:
            for job_id, attempt in in_flight:
                session.send(cancel_message(job_id, attempt, NOT_REATTACHED))
        previous = self.dispatcher.add(session)
        if previous is not None:
            # Taken over (or a silent one replaced): its attempts not re-attached by the new
            # stream wait the reconnect grace now, even if its call never returns (a frozen
            # peer with a full window).
            await self.dispatcher.remove(previous)
        return tokens.issue(session.name, session.session_id)

    async def _check_name_free(self, name: str) -> None:
        local = self.dispatcher.sessions.get(name)
        if local is not None and not local.closed and not local.silent:
            raise ExecutorNameTaken(name)
        if self.has_peers():
            async with self.db.read() as conn:
                live_since = self.clock() - self.live_within
                if await executor_live_elsewhere(conn, name, self.replica_id, live_since):
                    raise ExecutorNameTaken(name)
