"""QueueService: read and change a queue's settings (the defaults of the jobs submitted to it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import grpc

from jobsched.v1 import queue_service_pb2 as pb
from jobsched.v1 import queue_service_pb2_grpc
from scheduler.api.convert import (
    duration,
    from_duration,
    retry_from_proto,
    retry_to_proto,
    timestamp,
)
from scheduler.api.job_service import tenant_of
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.queues import QueueSettings, apply_update
from scheduler.domain.retry import RetryOverrides
from scheduler.domain.validation import check_name
from scheduler.store.queues import QueueStore

Context = grpc.aio.ServicerContext[Any, Any]


def queue_to_proto(settings: QueueSettings) -> pb.Queue:
    message = pb.Queue(
        name=settings.name,
        default_timeout=duration(settings.default_timeout),
        update_time=timestamp(settings.updated_at),
    )
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
        default_max_attempts=queue.default_max_attempts
        if queue.HasField("default_max_attempts")
        else None,
        default_timeout=from_duration(queue.default_timeout, "queue.default_timeout")
        if queue.HasField("default_timeout")
        else None,
        retry=retry,
    )
    paths = [name for name in ("default_max_attempts", "default_timeout") if queue.HasField(name)]
    if queue.HasField("default_retry_policy"):
        policy = queue.default_retry_policy
        paths += [
            f"default_retry_policy.{name}"
            for name in ("initial_backoff", "backoff_multiplier", "max_backoff", "jitter")
            if policy.HasField(name)
        ]
    return settings, paths


def _queue_name(value: str, path: str) -> str:
    violations: list[FieldViolation] = []
    name = check_name(value, path, violations) if value else ""
    if not value:
        violations.append(FieldViolation(path, "is required"))
    if violations:
        raise InvalidArgument(violations)
    return name


class QueueService(queue_service_pb2_grpc.QueueServiceServicer):
    def __init__(self, store: QueueStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

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
        return pb.UpdateQueueResponse(queue=queue_to_proto(updated))
