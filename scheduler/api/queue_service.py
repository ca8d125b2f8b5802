"""QueueService: read and change a queue's settings (the defaults of the jobs submitted to it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from jobsched.v1 import queue_service_pb2 as pb
from jobsched.v1 import queue_service_pb2_grpc
from scheduler.api.convert import (
    duration,
    from_duration,
    retry_from_proto,
    retry_to_proto,
    timestamp,
)
from scheduler.auth.identity import tenant_of
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.queues import RETENTION_RULE, QueueSettings, apply_update
from scheduler.domain.retry import RetryOverrides
from scheduler.domain.states import JobState
from scheduler.domain.validation import check_name
from scheduler.domain.waiting import waiting_reason
from scheduler.store.queues import QueueReads, QueueStore

Context = grpc.aio.ServicerContext[Any, Any]


def queue_to_proto(settings: QueueSettings) -> pb.Queue:
    message = pb.Queue(
        name=settings.name,
        default_timeout=duration(settings.default_timeout),
        update_time=timestamp(settings.updated_at),
        paused=settings.paused,
        retention=duration(settings.retention),
    )
    if settings.max_concurrency is not None:
        message.max_concurrency = settings.max_concurrency
    if settings.default_max_attempts is not None:
        message.default_max_attempts = settings.default_max_attempts
    if settings.retry != RetryOverrides():
        message.default_retry_policy.CopyFrom(retry_to_proto(settings.retry))
    return message


def _given(queue: pb.Queue) -> tuple[QueueSettings, list[str]]:
    """The settings carried by `queue`, and the paths of the fields it gives a value (what an
    empty update_mask changes)."""
    retry = (
        retry_from_proto(queue.default_retry_policy, "queue.default_retry_policy")
        if queue.HasField("default_retry_policy")
        else RetryOverrides()
    )
    settings = QueueSettings(
        name=queue.name,
        max_concurrency=queue.max_concurrency if queue.HasField("max_concurrency") else None,
        default_max_attempts=queue.default_max_attempts
        if queue.HasField("default_max_attempts")
        else None,
        default_timeout=from_duration(queue.default_timeout, "queue.default_timeout")
        if queue.HasField("default_timeout")
        else None,
        retry=retry,
        retention=_retention(queue.retention) if queue.HasField("retention") else None,
    )
    paths = [
        name
        for name in ("max_concurrency", "default_max_attempts", "default_timeout", "retention")
        if queue.HasField(name)
    ]
    if queue.HasField("default_retry_policy"):
        policy = queue.default_retry_policy
        paths += [
            f"default_retry_policy.{name}"
            for name in ("initial_backoff", "backoff_multiplier", "max_backoff", "jitter")
            if policy.HasField(name)
        ]
    return settings, paths


def _retention(d: Duration) -> timedelta:
    """Checked on the Duration itself: -1 ns or 1 ns would become zero, which keeps forever."""
    value = from_duration(d, "queue.retention")
    if d.seconds < 0 or d.nanos < 0 or (d.nanos and value == timedelta(0)):
        raise InvalidArgument([FieldViolation("queue.retention", RETENTION_RULE)])
    return value


def _queue_name(value: str, path: str) -> str:
    violations: list[FieldViolation] = []
    name = check_name(value, path, violations) if value else ""
    if not value:
        violations.append(FieldViolation(path, "is required"))
    if violations:
        raise InvalidArgument(violations)
    return name


class QueueService(queue_service_pb2_grpc.QueueServiceServicer):
    def __init__(
        self,
        store: QueueStore,
        reads: QueueReads,
        clock: Callable[[], datetime],
        *,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.reads = reads
        self.clock = clock
        # A resumed queue or a raised limit may make jobs claimable: wake the dispatchers.
        self.on_change = on_change

    async def ListQueues(
        self, request: pb.ListQueuesRequest, context: Context
    ) -> pb.ListQueuesResponse:
        now = self.clock()
        queues, executors = await self.reads.queue_counts(tenant_of(context), now)
        response = pb.ListQueuesResponse()
        for entry in queues:
            message = queue_to_proto(entry.settings)
            stats = message.stats
            running = entry.by_state.get("running", 0)
            stats.running = running
            for state, count in entry.by_state.items():
                stats.jobs_by_state[f"JOB_STATE_{state.upper()}"] = count
            if entry.oldest_waiting is not None:
                stats.oldest_waiting_create_time.FromDatetime(entry.oldest_waiting)
                stats.oldest_waiting_age.FromTimedelta(
                    max(now - entry.oldest_waiting, timedelta(0))
                )
            for (state, job_type), count in entry.by_state_and_type.items():
                if state == "running":
                    continue
                waiting = waiting_reason(
                    state=JobState(state),
                    queue=entry.settings.name,
                    job_type=job_type,
                    settings=entry.settings,
                    running_in_queue=running,
                    executors=executors,
                )
                if waiting.reason is not None:
                    key = f"WAITING_REASON_{waiting.reason.value}"
                    stats.waiting_by_reason[key] = stats.waiting_by_reason[key] + count
            response.queues.append(message)
        return response

    async def PauseQueue(
        self, request: pb.PauseQueueRequest, context: Context
    ) -> pb.PauseQueueResponse:
        updated = await self._set_paused(request.name, True, context)
        return pb.PauseQueueResponse(queue=queue_to_proto(updated))

    async def ResumeQueue(
        self, request: pb.ResumeQueueRequest, context: Context
    ) -> pb.ResumeQueueResponse:
        updated = await self._set_paused(request.name, False, context)
        self.on_change()
        return pb.ResumeQueueResponse(queue=queue_to_proto(updated))

    async def _set_paused(self, value: str, paused: bool, context: Context) -> QueueSettings:
        name = _queue_name(value, "name")
        return await self.store.update(
            tenant_of(context), name, lambda current: replace(current, paused=paused), self.clock()
        )

    async def GetQueue(self, request: pb.GetQueueRequest, context: Context) -> pb.GetQueueResponse:
        name = _queue_name(request.name, "name")
        settings = await self.store.get(tenant_of(context), name)
        return pb.GetQueueResponse(queue=queue_to_proto(settings))

    async def UpdateQueue(
        self, request: pb.UpdateQueueRequest, context: Context
    ) -> pb.UpdateQueueResponse:
        name = _queue_name(request.queue.name, "queue.name")
        given, present = _given(request.queue)
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else present
        # Validate before any write: bad input changes nothing.
        apply_update(QueueSettings(name=name), given, paths)
        updated = await self.store.update(
            tenant_of(context),
            name,
            lambda current: apply_update(current, given, paths),
            self.clock(),
        )
        self.on_change()
        return pb.UpdateQueueResponse(queue=queue_to_proto(updated))
