"""JobService: validates requests, calls the store, answers with protos. Raises domain errors;
the ErrorInterceptor turns them into gRPC statuses."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc

from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.api.convert import (
    add_setting_origins,
    dependency_to_proto,
    event_to_proto,
    from_timestamp,
    job_to_proto,
    log_line_to_proto,
    progress_to_proto,
    spec_from_proto,
    states_from_proto,
)
from scheduler.api.shared_reads import SharedReads
from scheduler.auth.identity import tenant_of
from scheduler.domain.errors import (
    ConcurrentModification,
    FieldViolation,
    InvalidArgument,
    ShuttingDown,
)
from scheduler.domain.jobs import JobEventRecord, JobRecord, NewJob, Submitted
from scheduler.domain.label_filters import LabelFilter, parse_label_filters
from scheduler.domain.log_lines import MAX_LOG_LINES_PER_ATTEMPT, LineCursor, LogLine
from scheduler.domain.pagination import (
    Cursor,
    decode_line_token,
    decode_token,
    encode_line_token,
    encode_token,
    fingerprint,
    page_size,
)
from scheduler.domain.queues import QueueSettings
from scheduler.domain.states import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    CancelAction,
    Event,
    JobState,
    cancel_action,
    check_deletable,
    check_transition,
)
from scheduler.domain.validation import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    check_name,
    check_states,
    validate_batch,
    validate_job,
    validate_job_id,
    validate_reason,
)
from scheduler.domain.waiting import reason_of
from scheduler.store.jobs import Guard, JobStore
from scheduler.store.logs import JobLogStore
from scheduler.store.queues import QueueReads
from scheduler.store.submit_groups import SubmitGroups
from scheduler.telemetry.tracing import submit_trace_context
from scheduler.watch import JobWatchHub, LiveProgress

# Watchers are woken in-process on every change made by this replica, and through jobsched_jobs
# notifications on changes made by the others; this poll is only the safety net for a lost signal
# (a replica's first seconds, before it knows its peers; a notify connection being re-made). Each
# poll is a read of the store per watcher: at 1 s, a thousand watchers were a thousand reads a
# second and starved the pool.
WATCH_POLL_SECONDS = 10.0
# At most one progress message per watcher this often (the latest one): a job reporting faster
# (a flood from a raw executor stream) does not fill a slow watcher's stream with progress it
# reads long after the job ended; state changes are not held back by more than this.
WATCH_PROGRESS_INTERVAL = 0.05
# What a WatchJob reads (tenant, job id, events after this seq, lines after this cursor), and
# what it gets: the job, those events and lines.
_WatchRead = tuple[str, str, int, LineCursor | None]
_Watched = tuple[JobRecord, list[JobEventRecord], list[LogLine]]
# Jobs whose latest live progress item is kept encoded (a few hundred bytes each).
ENCODED_PROGRESS_JOBS = 10_000
# Log lines a WatchJob reads at a time: a whole attempt's (with the truncation marker).
WATCH_LOG_BATCH = MAX_LOG_LINES_PER_ATTEMPT + 1
# WatchJobs reads the changed jobs this many ids per statement, and remembers what it last read of
# this many jobs (unchanged rows are not sent again; leaving the watched states is told apart).
WATCH_JOBS_BATCH = 200
WATCH_JOBS_REMEMBERED = 10_000
# A state-filtered WatchJobs reports a job leaving the states by a transition made this long before
# the subscription or later (clock skew between replicas); at worst a job is sent once too often.
WATCH_JOBS_CLOCK_MARGIN = timedelta(seconds=1)
# A guarded write that lost a race is retried after re-reading the job, this many times.
_RACE_RETRIES = 3
# RetryJobs retries at most this many jobs per call by default, and never more than the maximum.
RETRY_JOBS_DEFAULT_LIMIT = 1000
RETRY_JOBS_MAX_LIMIT = 10_000

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _optional_name(value: str, path: str) -> str | None:
    if not value:
        return None
    violations: list[FieldViolation] = []
    name = check_name(value, path, violations)
    if violations:
        raise InvalidArgument(violations)
    return name


def _next_token(
    page: Sequence[JobRecord], limit: int, key: Callable[[JobRecord], datetime], fp: str
) -> str:
    if len(page) <= limit:
        return ""
    last = page[limit - 1]
    return encode_token(Cursor(at=key(last), id=last.id), fp)


def with_trace_context(job: NewJob, context: Context) -> NewJob:
    """The job with the trace context of its submit (scheduler/telemetry/tracing.py)."""
    traceparent = submit_trace_context(context)
    return job if traceparent is None else dataclasses.replace(job, trace_context=traceparent)


class JobService(job_service_pb2_grpc.JobServiceServicer):
    def __init__(
        self,
        store: JobStore,
        clock: Callable[[], datetime] = utcnow,
        *,
        on_new_work: Callable[[], None] = lambda: None,
        on_scheduled: Callable[[datetime], None] = lambda run_at: None,
        on_cancel_requested: Callable[[JobRecord], None] = lambda job: None,
        hub: JobWatchHub | None = None,
        logs: JobLogStore | None = None,
        queue_reads: QueueReads | None = None,
        on_submitted: Callable[[Sequence[JobRecord]], None] | None = None,
        submit_groups: SubmitGroups | None = None,
    ) -> None:
        self.store = store
        # SubmitJob's group commit (concurrent single submits share a transaction); the
        # server closes it on stop.
        self.submit_groups = submit_groups or SubmitGroups(store)
        # Told of the jobs each submit created (the metrics' hook).
        self.on_submitted = on_submitted
        self.logs = logs or JobLogStore(store.db)
        # WatchJob's reads of a job, shared by its watchers (see shared_reads.py).
        self.watch_reads: SharedReads[_WatchRead, _Watched] = SharedReads(self._watch_read)
        # job id -> (the live report, the sequence, that progress item encoded)
        self._encoded_progress: dict[str, tuple[LiveProgress, int, bytes]] = {}
        self.clock = clock
        # In-process wake-ups of the dispatcher: a local submit is dispatched at once.
        self.on_new_work = on_new_work
        # ... and a SCHEDULED one at its run_at, by the dispatcher's timer.
        self.on_scheduled = on_scheduled
        self.on_cancel_requested = on_cancel_requested
        self.hub = hub or JobWatchHub()
        self.queue_reads = queue_reads  # for waiting reasons

    async def SubmitJob(
        self, request: job_service_pb2.SubmitJobRequest, context: Context
    ) -> job_service_pb2.SubmitJobResponse:
        tenant = tenant_of(context)
        new = with_trace_context(
            validate_job(spec_from_proto(request.job, "job"), self.clock()), context
        )
        submitted = await self.submit_groups.submit(tenant, new)
        self._announce([submitted])
        if submitted.created:
            self.hub.notify(submitted.job.id)
        job = job_to_proto(submitted.job)
        add_setting_origins(job, submitted.job)
        if submitted.created:
            job.payload = new.payload  # the insert returns projected columns only
        return job_service_pb2.SubmitJobResponse(job=job, created=submitted.created)

    async def SubmitJobs(
        self, request: job_service_pb2.SubmitJobsRequest, context: Context
    ) -> job_service_pb2.SubmitJobsResponse:
        tenant = tenant_of(context)
        jobs = validate_batch(
            [spec_from_proto(s, f"jobs[{i}]") for i, s in enumerate(request.jobs)], self.clock()
        )
        jobs = [with_trace_context(job, context) for job in jobs]
        submitted = await self.store.submit(tenant, jobs)
        self._announce(submitted)
        self.hub.notify_many(s.job.id for s in submitted if s.created)
        response = job_service_pb2.SubmitJobsResponse(created=[s.created for s in submitted])
        for s in submitted:
            job = response.jobs.add()
            job.CopyFrom(job_to_proto(s.job))
            job.ClearField("payload")
            job.ClearField("result")
        return response

    async def GetJobStatus(
        self, request: job_service_pb2.GetJobStatusRequest, context: Context
    ) -> job_service_pb2.GetJobStatusResponse:
        tenant = tenant_of(context)
        job_id = validate_job_id(request.id)
        # One statement for the job and its dependencies (the events in the same snapshot when
        # asked for), plus one for a QUEUED job's waiting reason.
        job, dependencies, events = await self.store.get_with_dependencies(
            tenant, job_id, events=request.include_events
        )
        response = job_service_pb2.GetJobStatusResponse(
            job=job_to_proto(job), events=[event_to_proto(e) for e in events]
        )
        await self._explain_waiting(tenant, job, response.job)
        add_setting_origins(response.job, job)
        response.job.depends_on.extend(d.job_id for d in dependencies)
        response.dependencies.extend(dependency_to_proto(d) for d in dependencies)
        return response

    async def _explain_waiting(self, tenant: str, job: JobRecord, message: job_pb2.Job) -> None:
        """Fill waiting_reason/detail of a job that has not started (one more statement, for
        QUEUED jobs only: their queue's settings, its running count if it has a concurrency
        limit, and the executors)."""
        if job.state is JobState.QUEUED and self.queue_reads is not None:
            facts = await self.queue_reads.waiting_facts(tenant, job.queue, self.clock())
            waiting = reason_of(job, facts.settings, facts.running, facts.executors)
        elif job.state in (JobState.WAITING, JobState.SCHEDULED):
            waiting = reason_of(job, QueueSettings(name=job.queue), None, ())
        else:
            return
        if waiting.reason is not None:
            message.waiting_reason = job_pb2.WaitingReason.Value(
                f"WAITING_REASON_{waiting.reason.value}"
            )
        message.waiting_detail = waiting.detail

    async def ListActiveJobs(
        self, request: job_service_pb2.ListActiveJobsRequest, context: Context
    ) -> job_service_pb2.ListActiveJobsResponse:
        tenant = tenant_of(context)
        queue = _optional_name(request.queue, "queue")
        job_type = _optional_name(request.type, "type")
        states = _check_states(request.states, ACTIVE_STATES, "an active state")
        labels = parse_label_filters(request.labels)
        limit = page_size(request.page_size)
        fp = fingerprint(
            {
                "list": "active",
                "tenant": tenant,
                "queue": queue,
                "type": job_type,
                "states": states,
                **_labels_part(labels),
            }
        )
        cursor = decode_token(request.page_token, fp)
        page = await self.store.list_active(
            tenant,
            states=states,
            queue=queue,
            job_type=job_type,
            labels=labels,
            after=cursor,
            limit=limit + 1,
        )
        return job_service_pb2.ListActiveJobsResponse(
            jobs=[job_to_proto(j) for j in page[:limit]],
            next_page_token=_next_token(page, limit, lambda j: j.created_at, fp),
        )

    async def GetJobHistory(
        self, request: job_service_pb2.GetJobHistoryRequest, context: Context
    ) -> job_service_pb2.GetJobHistoryResponse:
        tenant = tenant_of(context)
        queue = _optional_name(request.queue, "queue")
        job_type = _optional_name(request.type, "type")
        states = _check_states(request.states, TERMINAL_STATES, "a terminal state")
        labels = parse_label_filters(request.labels)
        after, before = _finish_window(request)
        limit = page_size(request.page_size)
        fp = fingerprint(
            {
                "list": "history",
                "tenant": tenant,
                "queue": queue,
                "type": job_type,
                "states": states,
                "after": after,
                "before": before,
                **_labels_part(labels),
            }
        )
        cursor = decode_token(request.page_token, fp)
        page = await self.store.list_history(
            tenant,
            states=states,
            queue=queue,
            job_type=job_type,
            labels=labels,
            finished_after=after,
            finished_before=before,
            after=cursor,
            limit=limit + 1,
        )

        def finished(job: JobRecord) -> datetime:
            assert job.finished_at is not None  # terminal jobs always have one (CHECK)
            return job.finished_at

        return job_service_pb2.GetJobHistoryResponse(
            jobs=[job_to_proto(j) for j in page[:limit]],
            next_page_token=_next_token(page, limit, finished, fp),
        )

    async def WatchJobs(
        self, request: job_service_pb2.WatchJobsRequest, context: Context
    ) -> AsyncIterator[job_service_pb2.WatchJobsResponse]:
        tenant = tenant_of(context)
        queue = _optional_name(request.queue, "queue")
        job_type = _optional_name(request.type, "type")
        states = frozenset(_check_states(request.states, _ALL_STATES, "a job state"))
        left_states = sorted(states) if states != _ALL_STATES else []
        subscription = self.hub.subscribe_changes()
        since = self.clock() - WATCH_JOBS_CLOCK_MARGIN
        seen = _SeenJobs(WATCH_JOBS_REMEMBERED)
        try:
            yield job_service_pb2.WatchJobsResponse(subscribed=True)
            while not self.hub.closed:
                # The timeout only bounds how long a lost wake-up could go unnoticed.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WATCH_POLL_SECONDS):
                        await subscription.wake.wait()
                if self.hub.closed:
                    break
                ids, dropped = subscription.take(WATCH_JOBS_BATCH)
                if dropped:
                    yield job_service_pb2.WatchJobsResponse(changes_dropped=True)
                changed = await self.store.get_changed(
                    tenant,
                    {job_id: seen.seq(job_id) for job_id in ids},
                    queue=queue,
                    job_type=job_type,
                    left_states=left_states,
                    since=since,
                )
                for change in changed:
                    job = change.job
                    is_new = seen.update(job)
                    if (is_new and job.state in states) or change.left_states:
                        if change.truncated:
                            yield job_service_pb2.WatchJobsResponse(changes_dropped=True)
                        yield job_service_pb2.WatchJobsResponse(
                            job=job_to_proto(job),
                            transitions=[event_to_proto(e) for e in change.transitions],
                        )
            raise ShuttingDown("the scheduler is shutting down; subscribe again")
        finally:
            self.hub.unsubscribe_changes(subscription)

    async def ListJobLogs(
        self, request: job_service_pb2.ListJobLogsRequest, context: Context
    ) -> job_service_pb2.ListJobLogsResponse:
        tenant = tenant_of(context)
        job_id = validate_job_id(request.id)
        if request.attempt < 0:
            raise InvalidArgument(
                [FieldViolation("attempt", "must not be negative (0 means every attempt)")]
            )
        attempt = request.attempt or None
        limit = page_size(request.page_size)
        fp = fingerprint({"list": "logs", "tenant": tenant, "id": job_id, "attempt": attempt})
        cursor = decode_line_token(request.page_token, fp)
        page = await self.logs.list_lines(
            tenant, job_id, attempt=attempt, after=cursor, limit=limit + 1
        )
        next_token = ""
        if len(page) > limit:
            last = page[limit - 1]
            next_token = encode_line_token(LineCursor(last.attempt, last.line_number), fp)
        return job_service_pb2.ListJobLogsResponse(
            lines=[log_line_to_proto(line) for line in page[:limit]], next_page_token=next_token
        )

    async def CancelJob(
        self, request: job_service_pb2.CancelJobRequest, context: Context
    ) -> job_service_pb2.CancelJobResponse:
        tenant = tenant_of(context)
        job_id = validate_job_id(request.id)
        reason = validate_reason(request.reason) or "cancelled by client"

        async def attempt(job: JobRecord) -> JobRecord:
            guard = Guard(tenant, job.id, job.state, job.attempt)
            if cancel_action(job.state) is CancelAction.REQUEST:
                marked = await self.store.request_cancel(guard, self.clock())
                self.on_cancel_requested(marked)
                return marked
            return await self.store.cancel(guard, self.clock(), reason, "client")

        job = await self._with_fresh_read(tenant, job_id, attempt)
        self.hub.notify(job.id)
        return job_service_pb2.CancelJobResponse(job=job_to_proto(job))

    async def UpdateJobPriority(
        self, request: job_service_pb2.UpdateJobPriorityRequest, context: Context
    ) -> job_service_pb2.UpdateJobPriorityResponse:
        tenant = tenant_of(context)
        job_id = validate_job_id(request.id)
        if not PRIORITY_MIN <= request.priority <= PRIORITY_MAX:
            raise InvalidArgument(
                [FieldViolation("priority", f"must be in [{PRIORITY_MIN}, {PRIORITY_MAX}]")]
            )
        job, changed = await self.store.update_priority(
            tenant, job_id, request.priority, self.clock()
        )
        if changed:
            self.hub.notify(job.id)
        return job_service_pb2.UpdateJobPriorityResponse(job=job_to_proto(job), changed=changed)

    async def RetryJob(
        self, request: job_service_pb2.RetryJobRequest, context: Context
    ) -> job_service_pb2.RetryJobResponse:
        tenant = tenant_of(context)
        job_id = validate_job_id(request.id)

        async def attempt(job: JobRecord) -> JobRecord:
            check_transition(job.state, Event.RETRY, JobState.QUEUED)
            guard = Guard(tenant, job.id, job.state, job.attempt)
            retried = await self.store.retry(guard, self.clock(), "retried by client", "client")
            self.on_new_work()
            return retried

        job = await self._with_fresh_read(tenant, job_id, attempt)
        self.hub.notify(job.id)
        return job_service_pb2.RetryJobResponse(job=job_to_proto(job))

    async def RetryJobs(
        self, request: job_service_pb2.RetryJobsRequest, context: Context
    ) -> job_service_pb2.RetryJobsResponse:
        tenant = tenant_of(context)
        queue = _optional_name(request.queue, "queue")
        job_type = _optional_name(request.type, "type")
        chosen = states_from_proto(request.states, "states")
        states = (
            check_states(chosen, _RETRYABLE_STATES, "states", "DEAD or CANCELLED")
            if chosen
            else (JobState.DEAD,)  # the dead-letter queue
        )
        after, before = _finish_window(request)
        limit = page_size(
            request.limit, "limit", default=RETRY_JOBS_DEFAULT_LIMIT, maximum=RETRY_JOBS_MAX_LIMIT
        )
        result = await self.store.retry_many(
            tenant,
            states=states,
            queue=queue,
            job_type=job_type,
            finished_after=after,
            finished_before=before,
            limit=limit,
            now=self.clock(),
            reason="retried by client (bulk)",
            actor="client",
        )
        if result.job_ids:
            self.on_new_work()
            self.hub.notify_many(result.job_ids)
        return job_service_pb2.RetryJobsResponse(retried_count=result.retried, more=result.more)

    async def DeleteJob(
        self, request: job_service_pb2.DeleteJobRequest, context: Context
    ) -> job_service_pb2.DeleteJobResponse:
        tenant = tenant_of(context)
        job_id = validate_job_id(request.id)

        async def attempt(job: JobRecord) -> None:
            check_deletable(job.state)
            await self.store.delete(Guard(tenant, job.id, job.state, job.attempt))

        await self._with_fresh_read(tenant, job_id, attempt)
        self.hub.notify(job_id)  # watchers end with NOT_FOUND
        return job_service_pb2.DeleteJobResponse()

    async def WatchJob(
        self, request: job_service_pb2.WatchJobRequest, context: Context
    ) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        tenant = tenant_of(context)
        job_id = validate_job_id(request.id)
        if request.after_sequence < 0:
            raise InvalidArgument([FieldViolation("after_sequence", "must not be negative")])
        last_seq = request.after_sequence
        watch = self.hub.subscribe(job_id)
        try:
            # Log lines: from the start of the job's current attempt, then as they come (later
            # attempts' too), read in the same snapshot as the events they are merged with.
            job, events, lines = await self.watch_reads.get((tenant, job_id, last_seq, None))
            line_cursor = LineCursor(job.attempt, 0)
            last_progress = job.progress.updated_at
            # When the last live report sent had been reported (the scheduler's clock): the
            # collapse pause counts from there, not from the send. Counted from the send, a
            # report delivered late made the next one wait as long, and the delay never shrank
            # with reports coming once per interval (p50 41.6 ms for 100 watchers at 50 ms).
            sent_report_at: datetime | None = None
            if last_seq == 0:
                # A fresh watch starts from the snapshot; its history is in the snapshot.
                yield job_service_pb2.WatchJobResponse(
                    sequence=job.event_seq, snapshot=job_to_proto(job)
                )
                last_seq, events = job.event_seq, []
            while True:
                # A full batch means that more lines wait: read again before sleeping.
                lines_complete = len(lines) < WATCH_LOG_BATCH
                for item in _in_watch_order(events, lines, lines_complete):
                    if isinstance(item, LogLine):
                        yield job_service_pb2.WatchJobResponse(
                            sequence=last_seq, log=log_line_to_proto(item)
                        )
                        line_cursor = LineCursor(item.attempt, item.line_number)
                    else:
                        yield job_service_pb2.WatchJobResponse(
                            sequence=item.seq, event=event_to_proto(item)
                        )
                        last_seq = item.seq
                if lines_complete:
                    if job.state is JobState.RUNNING and _newer(
                        job.progress.updated_at, last_progress
                    ):
                        last_progress = job.progress.updated_at
                        yield job_service_pb2.WatchJobResponse(
                            sequence=last_seq, progress=progress_to_proto(job.progress)
                        )
                    if job.state.is_terminal and last_seq >= job.event_seq:
                        return  # the terminal event has been sent
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(WATCH_POLL_SECONDS):
                            await watch.wake.wait()
                    woken = watch.wake.is_set()
                    watch.wake.clear()
                    changed = woken and watch.take_changed()
                    pause = _collapse_pause(sent_report_at, self.clock())
                    if woken and not changed and pause > 0:
                        await asyncio.sleep(pause)  # collapse: the latest report, once due
                        watch.wake.clear()
                        changed = watch.take_changed()
                    if woken:
                        # The latest live report, from memory, then (on a change) the store:
                        # an attempt's last report, sent just before its result, comes first.
                        live = self.hub.live_progress(job_id)
                        if (
                            live is not None
                            and job.state is JobState.RUNNING
                            and live.attempt == job.attempt
                            and _newer(live.progress.updated_at, last_progress)
                        ):
                            last_progress = sent_report_at = live.progress.updated_at
                            # The same bytes for every watcher of the job (encoded_streams.py).
                            yield self._live_progress_message(job_id, live, last_seq)
                        if not changed:
                            events, lines = [], []
                            continue
                job, events, lines = await self.watch_reads.get(
                    (tenant, job_id, last_seq, line_cursor)
                )
        finally:
            self.hub.unsubscribe(job_id, watch)

    def _live_progress_message(self, job_id: str, live: LiveProgress, sequence: int) -> Any:
        """WatchJob's progress item for `live`, encoded once for all the job's watchers (typed
        Any: the servicer's stubs know only messages, gRPC sends the bytes as they are)."""
        cached = self._encoded_progress.get(job_id)
        if cached is not None and cached[0] is live and cached[1] == sequence:
            return cached[2]
        encoded = job_service_pb2.WatchJobResponse(
            sequence=sequence, progress=progress_to_proto(live.progress)
        ).SerializeToString()
        if len(self._encoded_progress) >= ENCODED_PROGRESS_JOBS:
            self._encoded_progress.clear()  # bounded: jobs that ended leave their entry
        self._encoded_progress[job_id] = (live, sequence, encoded)
        return encoded

    async def _watch_read(self, key: _WatchRead) -> _Watched:
        tenant, job_id, after_seq, after_line = key
        return await self.logs.get_with_events_and_lines(
            tenant, job_id, after_seq, after_line, WATCH_LOG_BATCH
        )

    def _announce(self, submitted: Sequence[Submitted]) -> None:
        """Wake the dispatcher for new QUEUED jobs, and set its timer for new SCHEDULED ones."""
        created = [s.job for s in submitted if s.created]
        if self.on_submitted is not None and created:
            self.on_submitted(created)
        if any(job.state is JobState.QUEUED for job in created):
            self.on_new_work()
        scheduled = [job.run_at for job in created if job.state is JobState.SCHEDULED]
        if scheduled:
            self.on_scheduled(min(scheduled))

    async def _with_fresh_read(
        self, tenant: str, job_id: str, action: Callable[[JobRecord], Awaitable[T]]
    ) -> T:
        """Read the job, decide, write guarded by what was read; on a lost race, read again."""
        for remaining in range(_RACE_RETRIES, 0, -1):
            job = await self.store.get(tenant, job_id)
            try:
                return await action(job)
            except ConcurrentModification:
                if remaining == 1:
                    raise
        raise AssertionError("unreachable")


def _ends_after(attempt: int, event: JobEventRecord) -> bool:
    """Whether a log line of `attempt` comes before `event` in a watch: the lines of an attempt
    follow the event that started it and precede the one that ended it (leaving RUNNING)."""
    return attempt < event.attempt or (
        attempt == event.attempt and event.from_state is JobState.RUNNING
    )


def _in_watch_order(
    events: Sequence[JobEventRecord], lines: Sequence[LogLine], lines_complete: bool
) -> Iterator[JobEventRecord | LogLine]:
    """Events (by seq) and log lines (by attempt, line number) merged in the order a watcher
    sees them. When more lines wait beyond `lines`, it stops before the first event that must
    follow them; that event is read again together with them."""
    i = 0
    for event in events:
        while i < len(lines) and _ends_after(lines[i].attempt, event):
            yield lines[i]
            i += 1
        unread_first = lines and not lines_complete and _ends_after(lines[-1].attempt, event)
        if unread_first and i == len(lines):
            return
        yield event
    yield from lines[i:]


def _labels_part(labels: Sequence[LabelFilter]) -> dict[str, Any]:
    """The label filters' part of a list's page-token fingerprint (none: the fingerprint is
    what it was before lists had label filters, so older tokens stay valid)."""
    if not labels:
        return {}
    return {
        "labels": [[f.key, f.value] for f in sorted(labels, key=lambda f: (f.key, f.value or ""))]
    }


def _collapse_pause(sent_report_at: datetime | None, now: datetime) -> float:
    """How long a watcher waits before its next live report: until WATCH_PROGRESS_INTERVAL
    after the last one it was sent had been reported (never longer than the interval, whatever
    the clocks say)."""
    if sent_report_at is None:
        return 0.0
    waited = (now - sent_report_at).total_seconds()
    return min(WATCH_PROGRESS_INTERVAL, WATCH_PROGRESS_INTERVAL - waited)


def _newer(candidate: datetime | None, seen: datetime | None) -> bool:
    return candidate is not None and (seen is None or candidate > seen)


def _finish_window(
    request: job_service_pb2.GetJobHistoryRequest | job_service_pb2.RetryJobsRequest,
) -> tuple[datetime | None, datetime | None]:
    """The [finish_time_after, finish_time_before) window of a history-like request."""
    after = (
        from_timestamp(request.finish_time_after, "finish_time_after")
        if request.HasField("finish_time_after")
        else None
    )
    before = (
        from_timestamp(request.finish_time_before, "finish_time_before")
        if request.HasField("finish_time_before")
        else None
    )
    if after is not None and before is not None and after >= before:
        raise InvalidArgument(
            [FieldViolation("finish_time_after", "must be before finish_time_before")]
        )
    return after, before


def _check_states(values: Sequence[int], allowed: frozenset[JobState], what: str) -> list[JobState]:
    return list(check_states(states_from_proto(values, "states"), allowed, "states", what))


_ALL_STATES = frozenset(JobState)
_RETRYABLE_STATES = frozenset(TRANSITIONS[Event.RETRY])  # DEAD and CANCELLED


class _SeenJobs:
    """What a WatchJobs stream last read of each of the `limit` most recently changed jobs: its
    event_seq and a fingerprint of the rest of what can change (row update, progress)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._jobs: dict[str, tuple[int, int]] = {}  # insertion order = least recent first

    def seq(self, job_id: str) -> int:
        """The event_seq last read of the job; 0 if unknown."""
        entry = self._jobs.get(job_id)
        return entry[0] if entry is not None else 0

    def update(self, job: JobRecord) -> bool:
        """Remember the job as read now; whether it differs from what was read of it before."""
        entry = (job.event_seq, hash((job.updated_at, job.progress.updated_at)))
        previous = self._jobs.pop(job.id, None)
        self._jobs[job.id] = entry
        if len(self._jobs) > self.limit:
            del self._jobs[next(iter(self._jobs))]
        return previous != entry


__all__ = ["JobService", "job_pb2"]
