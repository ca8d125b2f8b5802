"""JobTypeService: read and change a job type's settings (the defaults of its jobs, between the
job's own values and its queue's)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import grpc

from jobsched.v1 import job_type_service_pb2 as pb
from jobsched.v1 import job_type_service_pb2_grpc
from scheduler.api.convert import (
    duration,
    from_duration,
    retry_from_proto,
    retry_to_proto,
    timestamp,
)
from scheduler.auth.identity import tenant_of
from scheduler.domain.job_types import JobTypeSettings, apply_update, check_type_name
from scheduler.domain.pagination import decode_name_token, encode_name_token, fingerprint, page_size
from scheduler.domain.retry import RetryOverrides
from scheduler.store.job_types import JobTypeStore

Context = grpc.aio.ServicerContext[Any, Any]


def job_type_to_proto(settings: JobTypeSettings) -> pb.JobType:
    message = pb.JobType(
        name=settings.name,
        timeout=duration(settings.timeout),
        update_time=timestamp(settings.updated_at),
    )
    if settings.max_attempts is not None:
        message.max_attempts = settings.max_attempts
    if settings.retry != RetryOverrides():
        message.retry_policy.CopyFrom(retry_to_proto(settings.retry))
    return message


def _given(job_type: pb.JobType) -> tuple[JobTypeSettings, list[str]]:
    """The settings carried by `job_type`, and the paths of the fields it gives a value (what
    an empty update_mask changes)."""
    settings = JobTypeSettings(
        name=job_type.name,
        max_attempts=job_type.max_attempts if job_type.HasField("max_attempts") else None,
        timeout=from_duration(job_type.timeout, "job_type.timeout")
        if job_type.HasField("timeout")
        else None,
        retry=retry_from_proto(job_type.retry_policy, "job_type.retry_policy")
        if job_type.HasField("retry_policy")
        else RetryOverrides(),
    )
    paths = [name for name in ("max_attempts", "timeout") if job_type.HasField(name)]
    if job_type.HasField("retry_policy"):
        policy = job_type.retry_policy
        paths += [
            f"retry_policy.{name}"
            for name in ("initial_backoff", "backoff_multiplier", "max_backoff", "jitter")
            if policy.HasField(name)
        ]
    return settings, paths


class JobTypeService(job_type_service_pb2_grpc.JobTypeServiceServicer):
    def __init__(self, store: JobTypeStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    async def GetJobType(
        self, request: pb.GetJobTypeRequest, context: Context
    ) -> pb.GetJobTypeResponse:
        name = check_type_name(request.name, "name")
        settings = await self.store.get(tenant_of(context), name)
        return pb.GetJobTypeResponse(job_type=job_type_to_proto(settings))

    async def ListJobTypes(
        self, request: pb.ListJobTypesRequest, context: Context
    ) -> pb.ListJobTypesResponse:
        tenant = tenant_of(context)
        limit = page_size(request.page_size)
        fp = fingerprint({"list": "job_types", "tenant": tenant})
        after = decode_name_token(request.page_token, fp)
        page = await self.store.list_page(tenant, after, limit + 1)
        token = encode_name_token(page[limit - 1].name, fp) if len(page) > limit else ""
        return pb.ListJobTypesResponse(
            job_types=[job_type_to_proto(t) for t in page[:limit]], next_page_token=token
        )

    async def UpdateJobType(
        self, request: pb.UpdateJobTypeRequest, context: Context
    ) -> pb.UpdateJobTypeResponse:
        name = check_type_name(request.job_type.name, "job_type.name")
        given, present = _given(request.job_type)
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else present
        # Validate before any write: bad input changes nothing.
        apply_update(JobTypeSettings(name=name), given, paths)
        updated = await self.store.update(
            tenant_of(context),
            name,
            lambda current: apply_update(current, given, paths),
            self.clock(),
        )
        return pb.UpdateJobTypeResponse(job_type=job_type_to_proto(updated))
