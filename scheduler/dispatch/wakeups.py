"""When the dispatch loop runs its next round, and who else is told of new work.

A round runs when something wakes it (`wake`: a local submit, a freed credit, a new executor;
`new_work`: the same, and a debounced NOTIFY so the other replicas' dispatchers wake too), when
an in-memory timer comes due (`wake_at`: the run_at of the next SCHEDULED job, fed by every
promotion's look-ahead; `note_deadline`: an ack timeout or a reconnect grace), and otherwise at
the slow safety poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime

from scheduler.dispatch.notify import Notifier

# A deadline round runs this long after the deadline, so that the clock has passed it.
_DEADLINE_SLACK = 0.01


class WakeUps:
    def __init__(
        self, clock: Callable[[], datetime], poll_interval: float, notifier: Notifier | None
    ) -> None:
        self.clock = clock
        self.poll_interval = poll_interval
        self.notifier = notifier
        self._event = asyncio.Event()
        # time.monotonic() when the next SCHEDULED job is due (promotion then runs).
        self.due_at: float | None = None
        # time.monotonic() of the earliest ack deadline or reconnect grace: a round then
        # reverts or moves on what is due, without waiting for the safety poll.
        self.deadline_at: float | None = None
        # Whether other replicas are alive (set by the server from ReplicaPresence).
        self.has_peers: Callable[[], bool] = lambda: False

    def wake(self) -> None:
        self._event.set()

    def new_work(self) -> None:
        """Jobs became QUEUED here: wake this dispatcher and, debounced, the other replicas'."""
        self.wake()
        if self.notifier is not None:
            self.notifier.work()

    def credit_freed(self) -> None:
        """A running job fewer: wake this dispatcher; a limited queue may take one more, also
        through executors of the other replicas (debounced; only while there are any)."""
        self.wake()
        if self.notifier is not None and self.has_peers():
            self.notifier.work()

    def promote_soon(self) -> None:
        """SCHEDULED jobs appeared that no timer here knows of (the dependency trigger, on any
        replica): promote at the next round, which sets the timer for the earliest."""
        self.due_at = time.monotonic()
        self.wake()

    def wake_at(self, when: datetime) -> None:
        """Promote and dispatch at `when` (the run_at of a SCHEDULED job), without polling."""
        delay = max(0.0, (when - self.clock()).total_seconds())
        due = time.monotonic() + delay
        if self.due_at is None or due < self.due_at:
            self.due_at = due
            self.wake()  # the loop recomputes how long to sleep

    def note_deadline(self, deadline: datetime, now: datetime) -> None:
        """Make sure a round runs just after `deadline` (an ack timeout, a reconnect grace)."""
        at = time.monotonic() + max(0.0, (deadline - now).total_seconds()) + _DEADLINE_SLACK
        if self.deadline_at is None or at < self.deadline_at:
            self.deadline_at = at

    def timer_due(self) -> bool:
        return self.due_at is not None and time.monotonic() >= self.due_at

    async def wait(self) -> bool:
        """Sleep until a wake-up, the earliest timer or the safety poll; True when something
        woke the loop (not the poll)."""
        timeout = self.poll_interval
        for at in (self.due_at, self.deadline_at):
            if at is not None:
                timeout = min(timeout, max(0.0, at - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()
        woken = self._event.is_set()
        self._event.clear()
        return woken
