"""The messages the dispatcher sends down an executor's stream: assignments and cancels."""

from __future__ import annotations

from datetime import datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from jobsched.v1 import executor_service_pb2 as pb
from scheduler.domain.jobs import JobRecord


def cancel_message(job_id: str, attempt: int, reason: str) -> pb.ConnectResponse:
    return pb.ConnectResponse(
        cancel=pb.CancelAssignment(
            attempt=pb.JobAttempt(job_id=job_id, attempt=attempt), reason=reason
        )
    )


def lease_end(lease: timedelta, now: datetime) -> Timestamp:
    """The lease_expire_time of the assignments of a claim made at `now` (one for them all)."""
    expires = Timestamp()
    expires.FromDatetime(now + lease)
    return expires


def assignment(job: JobRecord, expires: Timestamp) -> pb.ConnectResponse:
    message = pb.Assignment(
        attempt=pb.JobAttempt(job_id=job.id, attempt=job.attempt),
        type=job.type,
        queue=job.queue,
        payload=job.payload,
        labels=job.labels,
        lease_expire_time=expires,
        tenant=job.tenant,
        traceparent=job.trace_context or "",
    )
    if job.timeout is not None:
        timeout = Duration()
        timeout.FromTimedelta(job.timeout)
        message.timeout.CopyFrom(timeout)
    return pb.ConnectResponse(assignment=message)
