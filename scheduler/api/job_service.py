"""JobService: validates requests, calls the store, answers with protos. Raises domain errors;
the ErrorInterceptor turns them into gRPC statuses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc

from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.api.convert import (
    event_to_proto,
    from_timestamp,
    job_to_proto,
    progress_to_proto,
    spec_from_proto,
    states_from_proto,
)
from scheduler.domain.errors import ConcurrentModification, FieldViolation, InvalidArgument
from scheduler.domain.jobs import JobRecord
from scheduler.domain.pagination import Cursor, decode_token, encode_token, fingerprint, page_size
from scheduler.domain.states import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    CancelAction,
    Event,
    JobState,
    cancel_action,
    check_deletable,
    check_transition,
)
from scheduler.domain.validation import (
    NAME_PATTERN,
    check_name,
    check_states,
    validate_batch,
    validate_job,
    validate_job_id,
    validate_reason,
)
from scheduler.store.jobs import Guard, JobStore
from scheduler.watch import JobWatchHub

TENANT_METADATA_KEY = "x-jobsched-tenant"
# Watchers are woken in-process on every change made by this replica; this poll is the safety net
# (changes made through another replica, until cross-replica notifications exist).
WATCH_POLL_SECONDS = 1.0
DEFAULT_TENANT = "default"
# A guarded write that lost a race is retried after re-reading the job, this many times.
_RACE_RETRIES = 3

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


def tenant_of(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_METADATA_KEY:
            tenant = str(value).lower()
            if not NAME_PATTERN.fullmatch(tenant):
                raise InvalidArgument(
                    [FieldViolation(TENANT_METADATA_KEY, f"must match {NAME_PATTERN.pattern}")]
                )
            return tenant
    return DEFAULT_TENANT


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


class JobService(job_service_pb2_grpc.JobServiceServicer):
    def __init__(
        self,
        store: JobStore,
        clock: Callable[[], datetime] = utcnow,
        *,
        on_new_work: Callable[[], None] = lambda: None,
        on_cancel_requested: Callable[[JobRecord], None] = lambda job: None,
        hub: JobWatchHub | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        # In-process wake-ups of the dispatcher: a local submit is dispatched at once.
        self.on_new_work = on_new_work
        self.on_cancel_requested = on_cancel_requested
        self.hub = hub or JobWatchHub()

    async def SubmitJob(
        self, request: job_service_pb2.SubmitJobRequest, context: Context
    ) -> job_service_pb2.SubmitJobResponse:
        tenant = tenant_of(context)
        new = validate_job(spec_from_proto(request.job, "job"), self.clock())
        [submitted] = await self.store.submit(tenant, [new])
        self.on_new_work()
        job = job_to_proto(submitted.job)
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
        submitted = await self.store.submit(tenant, jobs)
        self.on_new_work()
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
        if request.include_events:
            job, events = await self.store.get_with_events(tenant, job_id)
            return job_service_pb2.GetJobStatusResponse(
                job=job_to_proto(job), events=[event_to_proto(e) for e in events]
            )
        return job_service_pb2.GetJobStatusResponse(
            job=job_to_proto(await self.store.get(tenant, job_id))
        )

    async def ListActiveJobs(
        self, request: job_service_pb2.ListActiveJobsRequest, context: Context
    ) -> job_service_pb2.ListActiveJobsResponse:
        tenant = tenant_of(context)
        queue = _optional_name(request.queue, "queue")
        job_type = _optional_name(request.type, "type")
        states = _check_states(request.states, ACTIVE_STATES, "an active state")
        limit = page_size(request.page_size)
        fp = fingerprint(
            {"list": "active", "tenant": tenant, "queue": queue, "type": job_type, "states": states}
        )
        cursor = decode_token(request.page_token, fp)
        page = await self.store.list_active(
            tenant, states=states, queue=queue, job_type=job_type, after=cursor, limit=limit + 1
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
            }
        )
        cursor = decode_token(request.page_token, fp)
        page = await self.store.list_history(
            tenant,
            states=states,
            queue=queue,
            job_type=job_type,
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
        wake = self.hub.subscribe(job_id)
        try:
            job, events = await self.store.get_with_events(tenant, job_id, last_seq)
            last_progress = job.progress.updated_at
            if last_seq == 0:
                # A fresh watch starts from the snapshot; its history is in the snapshot.
                yield job_service_pb2.WatchJobResponse(
                    sequence=job.event_seq, snapshot=job_to_proto(job)
                )
                last_seq, events = job.event_seq, []
            while True:
                for event in events:
                    yield job_service_pb2.WatchJobResponse(
                        sequence=event.seq, event=event_to_proto(event)
                    )
                    last_seq = event.seq
                if job.state is JobState.RUNNING and job.progress.updated_at != last_progress:
                    last_progress = job.progress.updated_at
                    yield job_service_pb2.WatchJobResponse(
                        sequence=last_seq, progress=progress_to_proto(job.progress)
                    )
                if job.state.is_terminal and last_seq >= job.event_seq:
                    return  # the terminal event has been sent
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WATCH_POLL_SECONDS):
                        await wake.wait()
                wake.clear()
                job, events = await self.store.get_with_events(tenant, job_id, last_seq)
        finally:
            self.hub.unsubscribe(job_id, wake)

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


def _check_states(values: Sequence[int], allowed: frozenset[JobState], what: str) -> list[JobState]:
    return list(check_states(states_from_proto(values, "states"), allowed, "states", what))


__all__ = ["JobService", "job_pb2"]
