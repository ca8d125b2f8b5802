"""Executor liveness from heartbeats (a start/stop service).

A session silent for two heartbeat intervals gets no assignments (`ExecutorSession.silent`,
checked by its credits: no timer needed). The watchdog ends a session silent for
`heartbeat_timeout` with UNAVAILABLE and hands its attempts to the lost-stream path (reconnect
grace, then failed or released): a frozen executor (SIGSTOP, a hung host) keeps its TCP
connection and its stream open, and HTTP/2 keepalive alone took about 90 s to notice.

One task for all sessions: it sleeps until the earliest moment a session can time out (the
oldest heartbeat + the timeout; a new session or a heartbeat only moves that later), then ends
what is due. A thousand sessions cost one scan of them per wake-up, not a task each.

`forgotten` is the other use of heartbeats: an acknowledged attempt that the executor's
heartbeats leave out for the timeout (and at least two heartbeats in a row) is no longer run by
it; the dispatcher fails it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection

from scheduler.dispatch.sessions import ExecutorSession
from scheduler.domain.errors import Unavailable

log = logging.getLogger("jobsched.dispatch")

MIN_MISSED_HEARTBEATS = 2  # a single heartbeat built before an attempt started proves nothing


def forgotten(
    session: ExecutorSession, running: Collection[str], now: float, timeout: float
) -> list[str]:
    """Update `session.missing` with a heartbeat listing `running` (job ids) received at `now`
    (time.monotonic()); return the in-flight attempts missing for `timeout` and at least two
    heartbeats. Not missing: attempts not acknowledged yet (the ack may be in flight), being
    recorded, or whose result arrived within `timeout` (unanswered while the store is
    unavailable, it is re-sent: the executor still has it)."""
    missing = session.missing
    if not session.in_flight and not missing:
        return []
    absent = session.in_flight.keys() - running
    for job_id in missing.keys() - absent:
        del missing[job_id]  # listed again, or gone
    due = []
    for job_id in absent:
        if job_id in session.unacked or job_id in session.recording:
            missing.pop(job_id, None)
            continue
        result_at = session.results_at.get(job_id)
        if result_at is not None and now - result_at <= timeout:
            missing.pop(job_id, None)
            continue
        since, count = missing.get(job_id, (now, 0))
        missing[job_id] = (since, count + 1)
        if count + 1 >= MIN_MISSED_HEARTBEATS and now - since >= timeout:
            due.append(job_id)
    return due


class HeartbeatWatchdog:
    """Ends the sessions silent for `timeout` seconds (see the module docstring)."""

    def __init__(
        self,
        sessions: Callable[[], Collection[ExecutorSession]],
        remove: Callable[[ExecutorSession], Awaitable[None]],
        timeout: float,
    ) -> None:
        self.sessions = sessions
        self.remove = remove
        self.timeout = timeout
        self.ended = 0  # sessions ended for silence (for tests)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="heartbeat-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = self.timeout
        while True:
            await asyncio.sleep(delay)  # a deadline, not a condition: no event to wait for
            delay = await self.check(time.monotonic())

    async def check(self, now: float) -> float:
        """End the sessions silent past the timeout; return the seconds until the next can be."""
        earliest = now + self.timeout
        for session in list(self.sessions()):
            if session.closed:
                continue
            deadline = session.heard_at + self.timeout
            if deadline > now:
                earliest = min(earliest, deadline)
                continue
            silence = now - session.heard_at
            log.warning(
                "executor silent: stream ended",
                extra={
                    "fields": {
                        "event": "dispatch.executor_silent",
                        "executor": session.name,
                        "silent_s": round(silence, 3),
                        "in_flight": len(session.in_flight),
                    }
                },
            )
            session.end(Unavailable(f"no heartbeat for {silence:.1f}s: the session is over"))
            self.ended += 1
            await self.remove(session)
        return max(0.0, earliest - now) + 0.01
