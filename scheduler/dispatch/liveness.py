"""Whether each executor runs what it was given: acknowledgements (an assignment not
acknowledged in time goes back to QUEUED) and heartbeats (a silent session gets credits again;
attempts missing from them fail; leases that run low are renewed; cancels requested meanwhile
are forwarded)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from scheduler.dispatch.messages import cancel_message
from scheduler.dispatch.outcomes import Outcomes
from scheduler.dispatch.reverts import RecentReverts
from scheduler.dispatch.sessions import ExecutorSession
from scheduler.dispatch.wakeups import WakeUps
from scheduler.dispatch.watchdog import forgotten
from scheduler.domain.errors import ConcurrentModification
from scheduler.domain.states import JobState
from scheduler.store.attempts import release_attempt, renew_leases
from scheduler.store.database import Database


class Liveness:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime],
        sessions: dict[str, ExecutorSession],
        outcomes: Outcomes,
        wakeups: WakeUps,
        *,
        lease: timedelta,
        lease_renew_within: timedelta | None,
        heartbeat_timeout: timedelta,
        max_releases: int,
    ) -> None:
        self.db = db
        self.clock = clock
        self.sessions = sessions
        self.outcomes = outcomes
        self.wakeups = wakeups
        self.lease = lease
        # A heartbeat renews the leases that end within this (None: every lease, every time).
        self.lease_renew_within = lease_renew_within
        # An acknowledged attempt missing from its executor's heartbeats this long is failed.
        self.heartbeat_timeout = heartbeat_timeout.total_seconds()
        self.max_releases = max_releases
        # Jobs each executor failed to acknowledge: claimed for others first.
        self.reverts = RecentReverts()
        self.heartbeats = 0  # executor heartbeats handled (for tests)

    def acknowledge(self, session: ExecutorSession, job_id: str, attempt: int) -> None:
        if session.running(job_id, attempt) is not None:
            session.unacked.pop(job_id, None)
        else:
            session.refuse("ack", job_id, attempt)

    async def revert_unacknowledged(self, now: datetime) -> int:
        """Assignments not acknowledged in time go back to QUEUED (attempt handed back)."""
        reverted = 0
        for session in list(self.sessions.values()):
            for job_id, deadline in list(session.unacked.items()):
                if deadline > now:
                    continue
                job = session.in_flight[job_id]
                guard = self.outcomes.guard(session, job_id, job.attempt)
                with contextlib.suppress(ConcurrentModification):
                    async with self.db.transaction() as conn:
                        released = await release_attempt(
                            conn,
                            guard,
                            now,
                            "assignment not acknowledged",
                            "scheduler",
                            max_releases=self.max_releases,
                        )
                    reverted += 1
                    if released.state is JobState.QUEUED:
                        # Offered to the others first (see scheduler/dispatch/reverts.py).
                        self.reverts.note(session.name, job_id, job.type, job.queue)
                self.outcomes.finished(session, job_id)
        return reverted

    async def heartbeat(
        self, session: ExecutorSession, running: Sequence[tuple[str, int]] = ()
    ) -> None:
        """The executor is alive (a silent session gets credits again) and runs `running`:
        fail the attempts it no longer runs (see watchdog.forgotten), renew the leases of its
        running attempts that run low (one statement), and forward the cancels requested
        meanwhile for any of them (through any replica)."""
        self.heartbeats += 1
        was_silent = session.silent
        session.heard_at = time.monotonic()
        if was_silent:
            self.wakeups.wake()  # it has credits again
        if not session.in_flight:
            session.missing.clear()
            return
        listed = {
            job_id for job_id, attempt in running if session.running(job_id, attempt) is not None
        }
        for job_id in forgotten(session, listed, session.heard_at, self.heartbeat_timeout):
            with contextlib.suppress(ConcurrentModification):
                await self.outcomes.fail_forgotten(session, job_id)
        if not session.in_flight:
            return
        async with self.db.transaction() as conn:
            cancelling = await renew_leases(
                conn,
                session.name,
                list(session.in_flight),
                self.lease,
                self.clock(),
                self.lease_renew_within,
            )
        for job_id, attempt in cancelling:
            if session.running(job_id, attempt) is not None:
                session.send(cancel_message(job_id, attempt, "cancelled"))
