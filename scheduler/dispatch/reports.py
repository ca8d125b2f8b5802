"""What running attempts report between outcomes: their latest progress and their log lines,
buffered in memory and written on a tick (one transaction, one statement each), or with the
attempt's outcome.

Progress is coalesced: only the latest report per job waits for the next tick, so each job's row
is written at most once per interval however often it reports. The latest report is also kept
until the attempt's outcome, which stores it (a success at 100 %): a report the tick has not
written, or is writing, when the result arrives is not lost. Log lines wait for the same tick,
bounded per attempt before they are buffered (domain/log_lines.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.errors import JobschedError
from scheduler.domain.jobs import Progress, ProgressUpdate
from scheduler.domain.log_lines import LogLine, bound_lines
from scheduler.store.attempts import write_progress
from scheduler.store.database import Database
from scheduler.store.logs import insert_log_lines
from scheduler.watch import JobWatchHub

log = logging.getLogger("jobsched.dispatch")

AttemptKey = tuple[str, int]  # (job id, attempt)
BufferedLines = dict[int, tuple[str, datetime]]  # line number -> (text, received at)


def log_lines(buffered: dict[AttemptKey, BufferedLines]) -> list[LogLine]:
    return [
        LogLine(job_id, attempt, number, line, received)
        for (job_id, attempt), lines in buffered.items()
        for number, (line, received) in lines.items()
    ]


class Reports:
    """The progress and log buffers of the running attempts (a start/stop service: the tick)."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime],
        hub: JobWatchHub,
        interval: float = 0.5,
    ) -> None:
        self.db = db
        self.clock = clock
        self.hub = hub
        self.interval = interval
        self._progress: dict[str, ProgressUpdate] = {}  # not written yet
        self._latest: dict[str, ProgressUpdate] = {}  # until the outcome
        self._logs: dict[AttemptKey, BufferedLines] = {}
        # Attempts whose lines a tick is writing: their outcome waits for that write, so that
        # no watcher sees an outcome before the lines reported ahead of it.
        self._logs_writing: dict[AttemptKey, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="progress-writer")

    async def stop(self) -> None:
        """Stop the tick, then write what is buffered (if the store lets us)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(JobschedError):
            await self.flush()

    def progress(self, job_id: str, attempt: int, progress: Progress) -> None:
        """The latest progress of a running attempt (the caller checked it is one)."""
        update = ProgressUpdate(job_id, attempt, progress)
        self._progress[job_id] = self._latest[job_id] = update
        self.hub.publish_progress(job_id, attempt, progress)  # watchers here: at once

    def last_progress(self, job_id: str, attempt: int) -> ProgressUpdate | None:
        """The attempt's latest report, for its outcome to store."""
        update = self._latest.get(job_id)
        return update if update is not None and update.attempt == attempt else None

    def forget(self, job_id: str) -> None:
        """The attempt has its outcome, which stored what it reported."""
        self._progress.pop(job_id, None)
        self._latest.pop(job_id, None)

    def lines(
        self, job_id: str, attempt: int, first_line_number: int, lines: Sequence[str]
    ) -> None:
        """Buffer the lines of a running attempt (the caller checked it is one) until the next
        tick or its outcome; lines beyond the per-attempt bound are dropped here."""
        kept = bound_lines(first_line_number, lines)
        if not kept:
            return
        received = self.clock()
        buffered = self._logs.setdefault((job_id, attempt), {})
        for number, line in kept:
            buffered.setdefault(number, (line, received))  # the first text of a number wins

    async def take_logs(self, job_id: str, attempt: int) -> dict[AttemptKey, BufferedLines]:
        """The buffered lines of one attempt, once a tick writing some of them has finished."""
        key = (job_id, attempt)
        writing = self._logs_writing.get(key)
        if writing is not None:
            await writing.wait()
        lines = self._logs.pop(key, None)
        return {key: lines} if lines else {}

    def restore_logs(self, taken: dict[AttemptKey, BufferedLines]) -> None:
        """Lines whose write failed wait for the next tick (received earlier, they win). Lines of
        attempts that finished meanwhile are written by the tick too: they still belong there."""
        for key, lines in taken.items():
            self._logs[key] = {**self._logs.get(key, {}), **lines}

    async def write_for_outcome(
        self,
        conn: AsyncConnection,
        job_id: str,
        attempt: int,
        logs: dict[AttemptKey, BufferedLines],
    ) -> None:
        """In an outcome's transaction, before it: the attempt's last lines and its latest
        progress (a failure or a cancel keeps what the attempt last reported)."""
        await insert_log_lines(conn, log_lines(logs))
        update = self.last_progress(job_id, attempt)
        if update is not None:
            await write_progress(conn, [update])

    async def flush(self) -> int:
        """Write the pending progress reports and log lines: one transaction, one statement
        each. Returns the number of progress reports written."""
        pending, self._progress = list(self._progress.values()), {}
        logs, self._logs = self._logs, {}
        if not pending and not logs:
            return 0
        written = 0
        done = asyncio.Event()
        for key in logs:
            self._logs_writing[key] = done
        try:
            async with self.db.transaction() as conn:
                if pending:
                    written = await write_progress(conn, pending)
                await insert_log_lines(conn, log_lines(logs))
        except (JobschedError, asyncio.CancelledError):
            # Unavailable, lost a race or stopped mid-write: the next tick (or the final flush
            # of stop()) writes them again; lines already stored are ignored then.
            self.restore_logs(logs)
            raise
        finally:
            for key in logs:
                if self._logs_writing.get(key) is done:
                    del self._logs_writing[key]
            done.set()
        # Log lines reach watchers only through the store: wake them. Progress they had live.
        with_lines = {job_id for job_id, _ in logs}
        for job_id in with_lines:
            self.hub.notify(job_id)
        for job_id in {u.job_id for u in pending} - with_lines:
            self.hub.progress_written(job_id)
        return written

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except JobschedError as exc:
                # Progress is advisory and superseded by the next report; the outcome is not.
                log.warning("progress not written", extra={"fields": {"error": str(exc)}})
