"""Watches, from the stream thread, that the handler loop stays responsive.

A blocking call inside an ``async def`` handler (``time.sleep``, a synchronous HTTP client, heavy
CPU work) stalls every handler on its loop. The stream runs on its own thread, so heartbeats go on
and the job keeps its lease, but the mistake would go unnoticed: the watchdog posts a probe to the
handler loop every `interval` and, once one has waited longer than `threshold`, logs one warning
for that blocking episode naming the task that is running on the loop (for a handler, its job).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from executor.runs import AttemptKey

log = logging.getLogger("jobsched.executor")

DEFAULT_INTERVAL = 0.25


class LoopWatchdog:
    """`run()` on the watching loop until cancelled; `job_of(task)` names a handler's attempt."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        threshold: float,
        job_of: Callable[[asyncio.Task[object]], AttemptKey | None],
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.loop = loop
        self.threshold = threshold
        self.interval = interval
        self._job_of = job_of
        self._answered = 0  # the last probe the watched loop ran (written there)

    def _answer(self, probe: int) -> None:
        self._answered = probe

    async def run(self) -> None:
        probe = 0
        sent_at: float | None = None
        warned = False
        while True:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            if sent_at is not None and self._answered != probe:
                blocked_for = now - sent_at
                if not warned and blocked_for >= self.threshold:
                    warned = True
                    self._warn(blocked_for)
                continue
            if warned:
                warned = False
                log.info(
                    "handler loop responsive again",
                    extra={"fields": {"event": "executor.loop_unblocked"}},
                )
            probe += 1
            sent_at = now
            try:
                self.loop.call_soon_threadsafe(self._answer, probe)
            except RuntimeError:
                return  # the watched loop is closed

    def _warn(self, blocked_for: float) -> None:
        # The task stepping on the watched loop now is the one blocking it (or None: a plain
        # callback). Read from this thread, it is a snapshot, which is all a warning needs.
        task = asyncio.current_task(self.loop)
        key = self._job_of(task) if task is not None else None
        fields: dict[str, object] = {
            "event": "executor.loop_blocked",
            "blocked_for": round(blocked_for, 3),
            "task": task.get_name() if task is not None else None,
        }
        if key is not None:
            fields["job_id"], fields["attempt"] = key
            culprit = f"the handler of job {key[0]} (attempt {key[1]})"
            advice = "make it a plain def (run in a thread) or await asyncio.to_thread(...)"
        elif task is not None:
            culprit = f"task {task.get_name()!r}"
            advice = "blocking calls belong in a thread"
        else:
            culprit = "a callback"
            advice = "blocking calls belong in a thread"
        log.warning(
            "%s has blocked the handler event loop for %.1f s; heartbeats go on, but every "
            "other handler on that loop waits (%s)",
            culprit,
            blocked_for,
            advice,
            extra={"fields": fields},
        )
