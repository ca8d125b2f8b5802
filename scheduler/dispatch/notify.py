"""Cross-replica signals over PostgreSQL LISTEN/NOTIFY (a start/stop service).

Every scheduler replica dispatches to the executors connected to it, so a job submitted on
replica A must wake the dispatcher of replica B, and a cancel requested on A must reach the
executor connected to B. Two channels carry that:

    jobsched_work     "there may be new work"; debounced: the first signal of a burst goes out
                      at once, the rest of the burst as one more at the end of the window (at
                      most two NOTIFYs per window however many jobs are submitted). The payload
                      'scheduled' (sent by the dependency trigger, migration 0008) also says a
                      job became SCHEDULED there: promote now, which sets the timer for it
    jobsched_cancel   payload: a job id whose cancellation was requested
    jobsched_jobs     payload: comma-separated ids of jobs that changed here (for the watchers
                      on other replicas); collected for `debounce` seconds, at most
                      JOB_IDS_PER_NOTIFY ids per NOTIFY
    jobsched_schedules payload-less: a schedule was created or resumed (the leader's cron loop
                      looks at the next fire times again)
    jobsched_progress payload: the latest progress reports made here (see progress_payloads),
                      so that watchers on other replicas get them as soon as local ones do,
                      not when the progress writer stores them; collected for
                      `progress_debounce` seconds. A signal only: the store stays the record

One dedicated connection outside the pool LISTENs and sends (NOTIFY is delivered only on commit of
its own autocommit statement, so a signal never precedes the commit of the change it announces:
callers signal after their transaction). A replica ignores its own notifications (by the sending
backend's pid). When the connection is lost, signals are dropped until it is back and the
reconnect itself counts as a work signal; the dispatcher's safety poll and the cancel check in
every lease renewal cover the gap, so a lost signal delays work but never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import asyncpg

from scheduler.domain.jobs import Progress

log = logging.getLogger("jobsched.notify")

WORK_CHANNEL = "jobsched_work"
CANCEL_CHANNEL = "jobsched_cancel"
JOBS_CHANNEL = "jobsched_jobs"
SCHEDULES_CHANNEL = "jobsched_schedules"
PROGRESS_CHANNEL = "jobsched_progress"
JOB_IDS_PER_NOTIFY = 200  # 200 x 37 bytes, within NOTIFY's 8000-byte payload limit
PAYLOAD_LIMIT = 7900  # bytes of one NOTIFY payload (PostgreSQL refuses 8000 and more)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // timedelta(microseconds=1)


def _from_micros(value: object) -> datetime | None:
    return _EPOCH + timedelta(microseconds=value) if isinstance(value, int) else None


def progress_payloads(reports: Iterable[tuple[str, int, Progress]]) -> list[str]:
    """Progress reports as NOTIFY payloads: JSON arrays of [job id, attempt, percent, step,
    message, eta, updated at] (times in microseconds since the epoch), each payload within
    PAYLOAD_LIMIT bytes. A report too long for a payload of its own (a step and a message of
    1,000 wide characters each) is left out: its watchers elsewhere get it from the store."""
    payloads: list[str] = []
    entries: list[str] = []
    size = 2
    for job_id, attempt, p in reports:
        entry = json.dumps(
            [job_id, attempt, p.percent, p.step, p.message, _micros(p.eta), _micros(p.updated_at)],
            separators=(",", ":"),
        )
        if len(entry.encode()) + 2 > PAYLOAD_LIMIT:
            continue
        if entries and size + len(entry.encode()) + 1 > PAYLOAD_LIMIT:
            payloads.append("[" + ",".join(entries) + "]")
            entries, size = [], 2
        entries.append(entry)
        size += len(entry.encode()) + 1
    if entries:
        payloads.append("[" + ",".join(entries) + "]")
    return payloads


def parse_progress(payload: str) -> list[tuple[str, int, Progress]]:
    """The reports of a jobsched_progress payload (malformed entries are skipped)."""
    try:
        entries = json.loads(payload)
    except ValueError:
        return []
    reports: list[tuple[str, int, Progress]] = []
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, list) or len(entry) != 7:
            continue
        job_id, attempt, percent, step, message, eta, updated_at = entry
        if not (
            isinstance(job_id, str)
            and isinstance(attempt, int)
            and isinstance(percent, int | float)
            and isinstance(step, str)
            and isinstance(message, str)
        ):
            continue
        progress = Progress(
            float(percent), step, message, _from_micros(eta), _from_micros(updated_at)
        )
        reports.append((job_id, attempt, progress))
    return reports


_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


class Notifier:
    def __init__(
        self,
        dsn: str,
        *,
        debounce: float = 0.05,
        progress_debounce: float = 0.005,
        liveness_interval: float = 30.0,
        reconnect_max: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.debounce = debounce
        self.progress_debounce = progress_debounce
        self.liveness_interval = liveness_interval
        self.reconnect_max = reconnect_max
        self.on_work: Callable[[], None] = lambda: None
        self.on_scheduled: Callable[[], None] = lambda: None
        self.on_cancel: Callable[[str], object] = lambda job_id: None
        self.on_jobs: Callable[[list[str]], object] = lambda job_ids: None
        self.on_schedules: Callable[[], None] = lambda: None
        self.on_progress: Callable[[str, int, Progress], object] = lambda *report: None
        self._progress: dict[str, tuple[int, Progress]] = {}
        self._progress_sender: asyncio.Task[None] | None = None
        self._changed: set[str] = set()
        self._jobs_sender: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.sent = 0  # NOTIFY statements issued (for tests and benchmarks)
        self._conn: asyncpg.Connection | None = None
        self._pid: int | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._work_sender: asyncio.Task[None] | None = None
        self._work_again = False
        self._senders: set[asyncio.Task[None]] = set()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notifier")

    async def stop(self) -> None:
        tasks = [
            t
            for t in (
                self._task,
                self._work_sender,
                self._jobs_sender,
                self._progress_sender,
                *self._senders,
            )
            if t is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._work_sender = self._jobs_sender = self._progress_sender = None
        self._senders.clear()

    # --- sending -----------------------------------------------------------------------------

    def work(self) -> None:
        """Tell the other replicas there may be new work (debounced, never blocks)."""
        if self._work_sender is not None and not self._work_sender.done():
            self._work_again = True
            return
        self._work_again = False
        self._work_sender = asyncio.create_task(self._send_work(), name="notify-work")

    async def _send_work(self) -> None:
        while True:
            await self._notify(WORK_CHANNEL, "")
            await asyncio.sleep(self.debounce)
            if not self._work_again:
                return
            self._work_again = False

    def cancel(self, job_id: str) -> None:
        """Tell the other replicas the cancellation of `job_id` was requested."""
        task = asyncio.create_task(self._notify(CANCEL_CHANNEL, job_id), name="notify-cancel")
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    def schedules_changed(self) -> None:
        """Tell the other replicas (the leader) a schedule was created or resumed."""
        task = asyncio.create_task(self._notify(SCHEDULES_CHANNEL, ""), name="notify-schedules")
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    def jobs_changed(self, job_id: str) -> None:
        """Tell the other replicas this job changed (collected, then sent in batches)."""
        self._changed.add(job_id)
        if self._jobs_sender is None or self._jobs_sender.done():
            self._jobs_sender = asyncio.create_task(self._send_jobs(), name="notify-jobs")

    async def _send_jobs(self) -> None:
        await asyncio.sleep(self.debounce)
        changed, self._changed = sorted(self._changed), set()
        for start in range(0, len(changed), JOB_IDS_PER_NOTIFY):
            await self._notify(JOBS_CHANNEL, ",".join(changed[start : start + JOB_IDS_PER_NOTIFY]))

    def progress(self, job_id: str, attempt: int, progress: Progress) -> None:
        """Tell the other replicas of a progress report (the latest per job, collected for
        `progress_debounce` seconds, then sent in as few NOTIFYs as fit)."""
        self._progress[job_id] = (attempt, progress)
        if self._progress_sender is None or self._progress_sender.done():
            self._progress_sender = asyncio.create_task(
                self._send_progress(), name="notify-progress"
            )

    async def _send_progress(self) -> None:
        await asyncio.sleep(self.progress_debounce)
        reports, self._progress = self._progress, {}
        for payload in progress_payloads((j, a, p) for j, (a, p) in reports.items()):
            await self._notify(PROGRESS_CHANNEL, payload)

    async def _notify(self, channel: str, payload: str) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            async with self._lock:
                await conn.execute("SELECT pg_notify($1, $2)", channel, payload, timeout=5)
            self.sent += 1
        except _CONNECTION_ERRORS as exc:
            log.warning("notify failed", extra={"fields": {"channel": channel, "error": str(exc)}})

    # --- listening ---------------------------------------------------------------------------

    def _received(self, conn: asyncpg.Connection, pid: int, channel: str, payload: object) -> None:
        if pid == self._pid:
            return  # our own signal: this replica already acted on it
        if channel == WORK_CHANNEL:
            if payload == "scheduled":
                self.on_scheduled()
            self.on_work()
        elif channel == CANCEL_CHANNEL and isinstance(payload, str):
            self.on_cancel(payload)
        elif channel == JOBS_CHANNEL and isinstance(payload, str) and payload:
            self.on_jobs(payload.split(","))
        elif channel == SCHEDULES_CHANNEL:
            self.on_schedules()
        elif channel == PROGRESS_CHANNEL and isinstance(payload, str):
            for job_id, attempt, progress in parse_progress(payload):
                self.on_progress(job_id, attempt, progress)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self.dsn,
                    timeout=5,
                    server_settings={"application_name": "jobsched-notify"},
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _, lost=lost: lost.set())
                await conn.add_listener(WORK_CHANNEL, self._received)
                await conn.add_listener(CANCEL_CHANNEL, self._received)
                await conn.add_listener(JOBS_CHANNEL, self._received)
                await conn.add_listener(SCHEDULES_CHANNEL, self._received)
                await conn.add_listener(PROGRESS_CHANNEL, self._received)
                self._pid = conn.get_server_pid()
                self._conn = conn
                self.connected.set()
                delay = 0.1
                # Signals may have been missed while we were not listening.
                self.on_work()
                self.on_schedules()
                await self._watch(conn, lost)
            except _CONNECTION_ERRORS as exc:
                log.warning("notify connection failed", extra={"fields": {"error": str(exc)}})
            finally:
                self._conn = None
                self.connected.clear()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(min(self.reconnect_max, delay) * random.uniform(0.5, 1.5))
            delay = min(self.reconnect_max, delay * 2)

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return when the connection is closed or stops answering (a half-open link never
        reports its own death, so it is probed every liveness_interval)."""
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self.liveness_interval)
            if lost.is_set():
                return
            async with self._lock:
                await conn.execute("SELECT 1", timeout=5)
