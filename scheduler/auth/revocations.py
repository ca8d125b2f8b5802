"""Ends executor streams whose API key stopped working, or whose JWT expired (a start/stop
service).

A credential is checked when a call starts; an executor's Connect stream lasts for hours, and
it must not go on receiving its tenants' jobs after its key was revoked or expired. Every
`interval` seconds (the verified-key cache's lifetime, 5 s: the same bound as for new calls),
and at once when a key is revoked on this replica (`wake`), one statement asks which of the
keys of the open sessions are no longer usable, and sessions opened with a JWT or a client
certificate are ended once it expires (exp and the leeway, notAfter; no query); those sessions
end UNAUTHENTICATED, and their
attempts take the lost-stream path (the executor's reconnect is refused, so they are released or
failed after the reconnect grace). Watch streams are read-only and end by themselves (or by
the maximum connection age); they are not swept."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime

from scheduler.dispatch.sessions import ExecutorSession
from scheduler.domain.errors import JobschedError, Unauthenticated
from scheduler.store.api_keys import ApiKeyStore

log = logging.getLogger("jobsched.auth")


class RevokedKeySweeper:
    def __init__(
        self,
        sessions: Callable[[], Collection[ExecutorSession]],
        remove: Callable[[ExecutorSession], Awaitable[None]],
        store: ApiKeyStore,
        clock: Callable[[], datetime],
        interval: float,
    ) -> None:
        self.sessions = sessions
        self.remove = remove
        self.store = store
        self.clock = clock
        self.interval = interval
        self.ended = 0  # sessions ended (for tests)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="revoked-key-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.check()
            except JobschedError as exc:  # the store is unavailable: try again next time
                log.warning(
                    "cannot check the executors' keys",
                    extra={"fields": {"event": "auth.sweep_failed", "error": exc.message}},
                )

    async def check(self) -> int:
        """End the open sessions whose key is revoked or expired, or whose credential (a JWT)
        has expired; how many were ended."""
        ended = await self._end_expired_credentials(self.clock())
        open_sessions = [s for s in self.sessions() if not s.closed and s.key_id is not None]
        if not open_sessions:
            self.ended += ended
            return ended
        ids = sorted({s.key_id for s in open_sessions if s.key_id is not None})
        unusable = await self.store.unusable(ids, self.clock())
        for session in open_sessions:
            if session.key_id in unusable and not session.closed:
                revoked = unusable[session.key_id]
                log.warning(
                    "executor key no longer valid: stream ended",
                    extra={
                        "fields": {
                            "event": "auth.executor_key_unusable",
                            "executor": session.name,
                            "key_id": session.key_id,
                        }
                    },
                )
                session.end(
                    Unauthenticated("CREDENTIAL_REVOKED", "the API key was revoked")
                    if revoked
                    else Unauthenticated("CREDENTIAL_EXPIRED", "the API key has expired")
                )
                await self.remove(session)
                ended += 1
        self.ended += ended
        return ended

    async def _end_expired_credentials(self, now: datetime) -> int:
        """End the sessions whose credential said when it expires, and has (a JWT): nothing
        to ask the store."""
        expired = [
            s
            for s in self.sessions()
            if not s.closed
            and s.credential_expires_at is not None
            and s.credential_expires_at <= now
        ]
        for session in expired:
            log.warning(
                "executor credential expired: stream ended",
                extra={
                    "fields": {
                        "event": "auth.executor_credential_expired",
                        "executor": session.name,
                    }
                },
            )
            session.end(Unauthenticated("CREDENTIAL_EXPIRED", "the credential has expired"))
            await self.remove(session)
        return len(expired)
