"""Typed asyncio client for the scheduler's JobService.

    async with JobschedClient("127.0.0.1:50051", tenant="acme") as client:
        job = await client.submit("email.send", payload={"to": "ada@example.com"})
        async for active in client.list_active(queue="default"):
            print(active.id, active.state)

Every method returns the generated `jobsched.v1` messages and raises the `jobsched.errors`
exceptions (never a raw grpc error). Iterators walk every page; the `*_page` methods expose the
page tokens for callers that keep their own cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Self, TypeAlias, TypeVar, overload

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobsched import payloads
from jobsched.artifacts import Artifact, ChecksumMismatchError
from jobsched.client_spans import client_interceptors, tracer_of
from jobsched.errors import from_rpc_error
from jobsched.tls import ClientTLS, open_channel
from jobsched.tokens import bearer_metadata
from jobsched.tracing import with_trace_metadata

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider
from jobsched.v1 import (
    artifact_service_pb2,
    artifact_service_pb2_grpc,
    audit_service_pb2,
    audit_service_pb2_grpc,
    auth_service_pb2,
    auth_service_pb2_grpc,
    cluster_service_pb2,
    cluster_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    job_type_service_pb2,
    job_type_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
)

__all__ = [
    "TENANT_METADATA_KEY",
    "JobSpecLike",
    "JobStateLike",
    "JobschedClient",
    "Payload",
    "SubmitResult",
    "job_spec",
    "make_retry_policy",
    "parse_catchup",
    "parse_overlap",
    "parse_state",
]

# Where a scheduler listens unless told otherwise (the CLI's and the executor's default).
DEFAULT_ADDRESS = "127.0.0.1:50051"

TENANT_METADATA_KEY = "x-jobsched-tenant"

Payload: TypeAlias = "bytes | str | Mapping[str, Any] | None"
JobStateLike: TypeAlias = "job_pb2.JobState.ValueType | str"
JobSpecLike: TypeAlias = "job_pb2.JobSpec | Mapping[str, Any]"

_STATE_PREFIX = "JOB_STATE_"

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Item = TypeVar("_Item")
_Stub = TypeVar("_Stub")


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """A submitted job; `created` is False when its idempotency key returned an existing job."""

    job: job_pb2.Job
    created: bool


def parse_state(value: JobStateLike) -> job_pb2.JobState.ValueType:
    """Accept a JobState value or a case-insensitive name ("queued", "JOB_STATE_QUEUED")."""
    if not isinstance(value, str):
        return value
    name = value.strip().upper()
    if not name.startswith(_STATE_PREFIX):
        name = _STATE_PREFIX + name
    if name == _STATE_PREFIX + "UNSPECIFIED":
        raise ValueError(f"{value!r} is not a job state")
    try:
        return job_pb2.JobState.Value(name)
    except ValueError:
        raise ValueError(f"{value!r} is not a job state") from None


async def _every_page(
    fetch: Callable[[str], Awaitable[tuple[list[_Item], str]]],
) -> AsyncGenerator[_Item, None]:
    """Follow next_page_token from the first page to the last, yielding every item."""
    token = ""
    while True:
        items, token = await fetch(token)
        for item in items:
            yield item
        if not token:
            return


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    # Naive datetimes are taken as UTC, as protobuf does; pass an aware one to be explicit.
    ts.FromDatetime(value)
    return ts


def job_spec(
    type: str,
    *,
    queue: str = "",
    payload: Payload = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    run_at: datetime | None = None,
    labels: Mapping[str, str] | None = None,
    idempotency_key: str = "",
    timeout: timedelta | None = None,
    retry_policy: job_pb2.RetryPolicy | Mapping[str, Any] | None = None,
    depends_on: Iterable[str] = (),
    ref: str = "",
    depends_on_refs: Iterable[str] = (),
) -> job_pb2.JobSpec:
    """Build a JobSpec. Payload: bytes as is, str as UTF-8, a mapping as compact JSON.

    None leaves a field unset so the server default applies (priority 50, 3 attempts, now; the
    type's settings, then the queue's, first for max_attempts, timeout and each retry policy
    field). `retry_policy` is a RetryPolicy or a mapping of `retry_policy()` arguments.

    Dependencies: `depends_on` are ids of stored jobs that must succeed first (the job waits,
    WAITING, until then, and is cancelled if one ends DEAD or CANCELLED). Within one
    `submit_jobs` batch, `ref` names this job and `depends_on_refs` names other jobs of the
    batch by their refs, so a whole DAG goes in one call:

        await client.submit_jobs([
            job_spec("extract", ref="extract"),
            job_spec("load", ref="load", depends_on_refs=["extract"]),
        ])
    """
    spec = job_pb2.JobSpec(
        type=type,
        queue=queue,
        payload=payloads.encode(payload),
        labels=dict(labels or {}),
        idempotency_key=idempotency_key,
        depends_on=list(depends_on),
        ref=ref,
        depends_on_refs=list(depends_on_refs),
    )
    # priority and max_attempts are proto3 `optional`: only set them when given, so that an
    # explicit 0 still reaches the server (and is rejected there) instead of meaning "default".
    if priority is not None:
        spec.priority = priority
    if max_attempts is not None:
        spec.max_attempts = max_attempts
    if run_at is not None:
        spec.run_at.CopyFrom(_timestamp(run_at))
    if timeout is not None:
        spec.timeout.CopyFrom(_duration(timeout))
    if retry_policy is not None:
        spec.retry_policy.CopyFrom(
            retry_policy
            if isinstance(retry_policy, job_pb2.RetryPolicy)
            else make_retry_policy(**retry_policy)
        )
    return spec


def _duration(value: timedelta) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(value)
    return duration


def make_retry_policy(
    *,
    initial_backoff: timedelta | None = None,
    backoff_multiplier: float | None = None,
    max_backoff: timedelta | None = None,
    jitter: float | None = None,
) -> job_pb2.RetryPolicy:
    """A RetryPolicy with the given fields set (the others come from the job type, then the
    queue, then the global defaults: 1 s, x2, 10 min, 10 %)."""
    policy = job_pb2.RetryPolicy()
    if initial_backoff is not None:
        policy.initial_backoff.CopyFrom(_duration(initial_backoff))
    if backoff_multiplier is not None:
        policy.backoff_multiplier = backoff_multiplier
    if max_backoff is not None:
        policy.max_backoff.CopyFrom(_duration(max_backoff))
    if jitter is not None:
        policy.jitter = jitter
    return policy


OverlapLike: TypeAlias = "schedule_service_pb2.OverlapPolicy.ValueType | str"
CatchupLike: TypeAlias = "schedule_service_pb2.CatchupPolicy.ValueType | str"


def _enum_value(value: Any, enum: Any, prefix: str, what: str) -> Any:
    if not isinstance(value, str):
        return value
    name = value.strip().upper().replace("-", "_")
    if not name.startswith(prefix):
        name = prefix + name
    if name == prefix + "UNSPECIFIED":
        raise ValueError(f"{value!r} is not {what}")
    try:
        return enum.Value(name)
    except ValueError:
        raise ValueError(f"{value!r} is not {what}") from None


def parse_overlap(value: OverlapLike) -> schedule_service_pb2.OverlapPolicy.ValueType:
    """An OverlapPolicy value or a case-insensitive name: allow, skip, cancel-previous."""
    result: schedule_service_pb2.OverlapPolicy.ValueType = _enum_value(
        value, schedule_service_pb2.OverlapPolicy, "OVERLAP_POLICY_", "an overlap policy"
    )
    return result


def parse_catchup(value: CatchupLike) -> schedule_service_pb2.CatchupPolicy.ValueType:
    """A CatchupPolicy value or a case-insensitive name: none, latest, all."""
    result: schedule_service_pb2.CatchupPolicy.ValueType = _enum_value(
        value, schedule_service_pb2.CatchupPolicy, "CATCHUP_POLICY_", "a catch-up policy"
    )
    return result


def _as_spec(spec: JobSpecLike) -> job_pb2.JobSpec:
    if isinstance(spec, job_pb2.JobSpec):
        return spec
    return job_spec(**spec)


def balancing(target: str) -> list[tuple[str, str]]:
    """Channel options for a target: round_robin over what a `dns:` name resolves to (gRPC's
    default, pick_first, would send every call to the first replica)."""
    return [("grpc.lb_policy_name", "round_robin")] if target.startswith("dns:") else []


class JobschedClient:
    """Async client for the scheduler replicas (any replica serves JobService).

    `address` is one host:port, several separated by commas, or a sequence of them. A call that
    fails UNAVAILABLE moves the client on to the next address; calls that are safe to repeat —
    reads, and submits whose every job has an idempotency key — are retried there, up to
    `retries` more times with a short jittered backoff. Other calls raise, and the caller decides.

    An address may be any gRPC target: `dns:///name:port` (a Kubernetes headless Service, for
    example) resolves to every replica, and such a target's calls are spread over all of them
    (the round_robin policy) rather than sent on one connection.

    `tls` (jobsched.tls.ClientTLS) connects with TLS: the CA to trust, and a client
    certificate for mutual TLS; None is plaintext.

    `token` (an API key, `jsk_...`, or a JWT, sent unchanged) goes with every call as
    `authorization: Bearer`, for schedulers running `--auth required`; the credential's
    tenants bound what `tenant` may name (one for a single tenant needs no `tenant`).

    `tenant` is sent with every call (the server uses "default" without it); `timeout` is the
    deadline of each call in seconds (None: no deadline). Use it as an async context manager or
    call `close()`. Create it inside the event loop that will use it: the channels bind to it.
    """

    def __init__(
        self,
        address: str | Sequence[str],
        *,
        tenant: str | None = None,
        timeout: float | None = None,
        keepalive: timedelta | None = timedelta(seconds=60),
        retries: int = 3,
        tls: ClientTLS | None = None,
        token: str | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        parts = address.split(",") if isinstance(address, str) else list(address)
        self.addresses = [a.strip() for a in parts if a.strip()]
        if not self.addresses:
            raise ValueError("at least one scheduler address is needed")
        self.tenant = tenant
        self.timeout = timeout
        self.retries = retries
        self._current = 0
        options: list[tuple[str, int]] = []
        if keepalive is not None:
            # HTTP/2 pings only while calls are open: a long WatchJob stream can sit idle for
            # minutes, and a half-open connection (NAT or proxy drop) would otherwise hang it
            # forever. The server must accept pings this often (its
            # grpc.http2.min_ping_interval_without_data_ms); if not, it answers too_many_pings
            # and gRPC doubles this interval by itself.
            options += [
                ("grpc.keepalive_time_ms", int(keepalive.total_seconds() * 1000)),
                ("grpc.keepalive_timeout_ms", 20_000),
                ("grpc.keepalive_permit_without_calls", 0),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        self.channel_options = tuple(options)
        # A CLIENT span per call with `tracer_provider`, or OpenTelemetry's global provider when
        # an application installed an SDK one; otherwise no interceptor at all, and the caller's
        # current span context (if any) is still sent as traceparent (`_metadata`).
        self.tracer = tracer_of(tracer_provider)
        interceptors = client_interceptors(self.tracer)
        self._channels: list[grpc.aio.Channel] = [
            open_channel(a, [*options, *balancing(a)], tls, interceptors) for a in self.addresses
        ]
        self._stubs: list[job_service_pb2_grpc.JobServiceAsyncStub] = [
            job_service_pb2_grpc.JobServiceStub(channel) for channel in self._channels
        ]
        self._queue_stubs: list[queue_service_pb2_grpc.QueueServiceAsyncStub] = [
            queue_service_pb2_grpc.QueueServiceStub(channel) for channel in self._channels
        ]
        self._schedule_stubs: list[schedule_service_pb2_grpc.ScheduleServiceAsyncStub] = [
            schedule_service_pb2_grpc.ScheduleServiceStub(channel) for channel in self._channels
        ]
        self._cluster_stubs: list[cluster_service_pb2_grpc.ClusterServiceAsyncStub] = [
            cluster_service_pb2_grpc.ClusterServiceStub(channel) for channel in self._channels
        ]
        self._auth_stubs: list[auth_service_pb2_grpc.AuthServiceAsyncStub] = [
            auth_service_pb2_grpc.AuthServiceStub(channel) for channel in self._channels
        ]
        self._audit_stubs: list[audit_service_pb2_grpc.AuditServiceAsyncStub] = [
            audit_service_pb2_grpc.AuditServiceStub(channel) for channel in self._channels
        ]
        self._job_type_stubs: list[job_type_service_pb2_grpc.JobTypeServiceAsyncStub] = [
            job_type_service_pb2_grpc.JobTypeServiceStub(channel) for channel in self._channels
        ]
        self._artifact_stubs: list[artifact_service_pb2_grpc.ArtifactServiceAsyncStub] = [
            artifact_service_pb2_grpc.ArtifactServiceStub(channel) for channel in self._channels
        ]
        self._base_metadata: tuple[tuple[str, str], ...] = (
            ((TENANT_METADATA_KEY, tenant),) if tenant else ()
        ) + bearer_metadata(token)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        # The caller's trace context goes with every call (the interceptor, when there is one,
        # replaces it with its client span's).
        return with_trace_metadata(self._base_metadata)

    @property
    def address(self) -> str:
        """The address calls go to now."""
        return self.addresses[self._current]

    @property
    def _stub(self) -> job_service_pb2_grpc.JobServiceAsyncStub:
        return self._stubs[self._current]

    async def health(self, service: str = "", *, address: str | None = None) -> str:
        """The grpc.health.v1 status of one scheduler (`address`, default the current one) for
        `service` ("" for the server as a whole): "SERVING", "NOT_SERVING" (its database is
        unreachable), ...; raises like any call when the scheduler cannot be reached. No
        failover: a health check is about that one scheduler."""
        index = self.addresses.index(address) if address is not None else self._current
        stub = health_pb2_grpc.HealthStub(self._channels[index])
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from err
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    async def close(self) -> None:
        """Close the channels; calls still in flight are cancelled."""
        for channel in self._channels:
            await channel.close()

    async def _call(
        self,
        rpc: Callable[
            [job_service_pb2_grpc.JobServiceAsyncStub],
            grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        ],
        request: _Request,
        *,
        safe_to_repeat: bool = False,
    ) -> _Response:
        return await self._invoke(self._stubs, rpc, request, safe_to_repeat)

    async def _call_queues(
        self,
        rpc: Callable[
            [queue_service_pb2_grpc.QueueServiceAsyncStub],
            grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        ],
        request: _Request,
        *,
        safe_to_repeat: bool = False,
    ) -> _Response:
        return await self._invoke(self._queue_stubs, rpc, request, safe_to_repeat)

    async def _call_schedules(
        self,
        rpc: Callable[
            [schedule_service_pb2_grpc.ScheduleServiceAsyncStub],
            grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        ],
        request: _Request,
        *,
        safe_to_repeat: bool = False,
    ) -> _Response:
        return await self._invoke(self._schedule_stubs, rpc, request, safe_to_repeat)

    async def _invoke(
        self,
        per_address: Sequence[_Stub],
        rpc: Callable[[_Stub], grpc.aio.UnaryUnaryMultiCallable[_Request, _Response]],
        request: _Request,
        safe_to_repeat: bool,
    ) -> _Response:
        """Call `rpc` on the stub of the current address (one stub per address)."""
        attempt = 0
        while True:
            stub = self._current
            try:
                return await rpc(per_address[stub])(
                    request, metadata=self._metadata, timeout=self.timeout
                )
            except grpc.aio.AioRpcError as err:
                if err.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise from_rpc_error(err) from err
                if not safe_to_repeat or attempt >= self.retries:
                    if self._current == stub:  # the next call goes to the next replica
                        self._current = (stub + 1) % len(self.addresses)
                    raise from_rpc_error(err) from err
            attempt += 1
            await self._fail_over(stub, attempt)

    async def watch(
        self, job_id: str, after_sequence: int = 0
    ) -> AsyncGenerator[job_service_pb2.WatchJobResponse, None]:
        """The job's live stream: a snapshot (unless resuming after a sequence number), then
        transitions, progress and log lines (the current attempt's stored ones first); it ends
        after the terminal event, which follows the last lines of its attempt. No deadline
        applies.

        A stream that ends UNAVAILABLE (a scheduler restarting, a connection ended by the
        server's maximum connection age) is resumed on the next address after the last
        sequence number seen, up to `retries` times in a row: nothing is missed, and log lines
        already yielded are not yielded again."""
        sequence = after_sequence
        last_line = (0, 0)  # (attempt, line number) of the last log line yielded
        failures = 0
        while True:
            stub = self._current
            call = self._stubs[stub].WatchJob(
                job_service_pb2.WatchJobRequest(id=job_id, after_sequence=sequence),
                metadata=self._metadata,
            )
            try:
                async for item in call:
                    failures = 0
                    if item.HasField("log"):
                        line = (item.log.attempt, item.log.line_number)
                        if line <= last_line:
                            continue  # sent again after a resume
                        last_line = line
                    sequence = max(sequence, item.sequence)
                    yield item
                return
            except grpc.aio.AioRpcError as err:
                if err.code() is not grpc.StatusCode.UNAVAILABLE or failures >= self.retries:
                    raise from_rpc_error(err) from err
                failures += 1
                await self._fail_over(stub, failures)
            finally:
                call.cancel()

    async def _fail_over(self, stub: int, failures: int) -> None:
        """After the address of `stub` answered UNAVAILABLE: move on to the next one, after a
        short jittered backoff that grows with consecutive `failures`."""
        if self._current == stub:
            self._current = (stub + 1) % len(self.addresses)
        await asyncio.sleep(min(1.0, 0.05 * 2**failures) * random.uniform(0.5, 1.5))

    async def watch_jobs(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        states: Iterable[JobStateLike] | None = None,
    ) -> AsyncGenerator[job_service_pb2.WatchJobsResponse, None]:
        """Changes of many jobs, for dashboards: first an item with `subscribed` set (changes from
        then on are delivered), then the current row (without payload and result) of each matching
        job that changed, with `transitions`: every state transition since the job's previous
        item (changes close together arrive as one item); with `states`, a job is also sent once
        when it leaves them. An item with `changes_dropped` means this subscriber fell behind:
        list again (`list_active`) to resynchronise. The stream does not end by itself; no
        deadline applies.

        A stream that ends UNAVAILABLE (a scheduler restarting, a connection ended by the
        server's maximum connection age) is subscribed again on the next address, up to
        `retries` times in a row; changes made in between are not replayed, so the client
        yields `changes_dropped` first (list again), then the new `subscribed`."""
        request = job_service_pb2.WatchJobsRequest(
            queue=queue or "", type=type or "", states=[parse_state(s) for s in states or ()]
        )
        failures = 0
        resumed = False
        while True:
            stub = self._current
            call = self._stubs[stub].WatchJobs(request, metadata=self._metadata)
            try:
                async for item in call:
                    failures = 0
                    if resumed:
                        resumed = False
                        yield job_service_pb2.WatchJobsResponse(changes_dropped=True)
                    yield item
                return
            except grpc.aio.AioRpcError as err:
                if err.code() is not grpc.StatusCode.UNAVAILABLE or failures >= self.retries:
                    raise from_rpc_error(err) from err
                failures += 1
                resumed = True
                await self._fail_over(stub, failures)
            finally:
                call.cancel()

    # -- submit ----------------------------------------------------------------------------

    async def submit_job(self, spec: JobSpecLike) -> SubmitResult:
        """Submit one job (a JobSpec, or a mapping of `job_spec` arguments)."""
        job = _as_spec(spec)
        response = await self._call(
            lambda stub: stub.SubmitJob,
            job_service_pb2.SubmitJobRequest(job=job),
            safe_to_repeat=bool(job.idempotency_key),  # a repeat returns the stored job
        )
        return SubmitResult(job=response.job, created=response.created)

    async def submit(
        self,
        type: str,
        *,
        queue: str = "",
        payload: Payload = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        run_at: datetime | None = None,
        labels: Mapping[str, str] | None = None,
        idempotency_key: str = "",
        # The job's execution timeout (a JobSpec field), not a deadline for this call.
        timeout: timedelta | None = None,  # noqa: ASYNC109
        depends_on: Iterable[str] = (),
    ) -> job_pb2.Job:
        """Submit one job and return it (see `job_spec` for the arguments).

        With an idempotency key already used, this returns the existing job; `submit_job`
        tells the two cases apart.
        """
        spec = job_spec(
            type,
            queue=queue,
            payload=payload,
            priority=priority,
            max_attempts=max_attempts,
            run_at=run_at,
            labels=labels,
            idempotency_key=idempotency_key,
            timeout=timeout,
            depends_on=depends_on,
        )
        return (await self.submit_job(spec)).job

    async def submit_jobs(self, specs: Iterable[JobSpecLike]) -> list[SubmitResult]:
        """Submit a batch atomically (all stored or none); results are in request order."""
        request = job_service_pb2.SubmitJobsRequest(jobs=[_as_spec(s) for s in specs])
        keyed = all(job.idempotency_key for job in request.jobs)
        response = await self._call(lambda stub: stub.SubmitJobs, request, safe_to_repeat=keyed)
        return [
            SubmitResult(job=job, created=created)
            for job, created in zip(response.jobs, response.created, strict=True)
        ]

    async def submit_many(self, specs: Iterable[JobSpecLike]) -> list[job_pb2.Job]:
        """Submit a batch atomically and return the jobs (without payloads), in request order."""
        return [result.job for result in await self.submit_jobs(specs)]

    # -- read ------------------------------------------------------------------------------

    async def status(
        self, job_id: str, include_events: bool = False
    ) -> job_service_pb2.GetJobStatusResponse:
        """The whole GetJobStatus answer: the job, its history when include_events is True,
        and the jobs it depends on with their current states (`dependencies`)."""
        request = job_service_pb2.GetJobStatusRequest(id=job_id, include_events=include_events)
        response: job_service_pb2.GetJobStatusResponse = await self._call(
            lambda stub: stub.GetJobStatus, request, safe_to_repeat=True
        )
        return response

    @overload
    async def get(self, job_id: str, include_events: Literal[False] = False) -> job_pb2.Job: ...

    @overload
    async def get(
        self, job_id: str, include_events: Literal[True]
    ) -> tuple[job_pb2.Job, list[job_pb2.JobEvent]]: ...

    async def get(
        self, job_id: str, include_events: bool = False
    ) -> job_pb2.Job | tuple[job_pb2.Job, list[job_pb2.JobEvent]]:
        """Return the job with payload, result and progress; with its history, oldest first,
        as `(job, events)` when include_events is True."""
        request = job_service_pb2.GetJobStatusRequest(id=job_id, include_events=include_events)
        response = await self._call(lambda stub: stub.GetJobStatus, request, safe_to_repeat=True)
        if include_events:
            return response.job, list(response.events)
        return response.job

    async def list_active_page(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        states: Iterable[JobStateLike] | None = None,
        page_size: int = 0,
        page_token: str = "",
        labels: Iterable[str] = (),
    ) -> tuple[list[job_pb2.Job], str]:
        """One page of active jobs, oldest first, and the next page token ("" on the last).
        `labels`: only jobs with all of them, each "key=value" or "key" (any value)."""
        request = job_service_pb2.ListActiveJobsRequest(
            queue=queue or "",
            type=type or "",
            states=[parse_state(s) for s in states or ()],
            page_size=page_size,
            page_token=page_token,
            labels=list(labels),
        )
        response = await self._call(lambda stub: stub.ListActiveJobs, request, safe_to_repeat=True)
        return list(response.jobs), response.next_page_token

    async def list_active(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        states: Iterable[JobStateLike] | None = None,
        page_size: int = 0,
        labels: Iterable[str] = (),
    ) -> AsyncGenerator[job_pb2.Job, None]:
        """Every active job (WAITING, SCHEDULED, QUEUED, RUNNING), oldest first, page by page."""
        chosen = [parse_state(s) for s in states or ()]
        wanted = list(labels)
        async for job in _every_page(
            lambda token: self.list_active_page(
                queue=queue,
                type=type,
                states=chosen,
                page_size=page_size,
                page_token=token,
                labels=wanted,
            )
        ):
            yield job

    async def history_page(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        states: Iterable[JobStateLike] | None = None,
        finished_after: datetime | None = None,
        finished_before: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
        labels: Iterable[str] = (),
    ) -> tuple[list[job_pb2.Job], str]:
        """One page of terminal jobs, most recently finished first, and the next page token.
        `labels` as in list_active_page."""
        request = job_service_pb2.GetJobHistoryRequest(
            queue=queue or "",
            type=type or "",
            states=[parse_state(s) for s in states or ()],
            page_size=page_size,
            page_token=page_token,
            labels=list(labels),
        )
        if finished_after is not None:
            request.finish_time_after.CopyFrom(_timestamp(finished_after))
        if finished_before is not None:
            request.finish_time_before.CopyFrom(_timestamp(finished_before))
        response = await self._call(lambda stub: stub.GetJobHistory, request, safe_to_repeat=True)
        return list(response.jobs), response.next_page_token

    async def history(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        states: Iterable[JobStateLike] | None = None,
        finished_after: datetime | None = None,
        finished_before: datetime | None = None,
        page_size: int = 0,
        labels: Iterable[str] = (),
    ) -> AsyncGenerator[job_pb2.Job, None]:
        """Every terminal job (SUCCEEDED, DEAD, CANCELLED), most recently finished first.

        `states=["dead"]` reads the dead-letter queue.
        """
        chosen = [parse_state(s) for s in states or ()]
        wanted = list(labels)
        async for job in _every_page(
            lambda token: self.history_page(
                queue=queue,
                type=type,
                states=chosen,
                finished_after=finished_after,
                finished_before=finished_before,
                page_size=page_size,
                page_token=token,
                labels=wanted,
            )
        ):
            yield job

    async def logs_page(
        self, job_id: str, attempt: int = 0, *, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[job_service_pb2.LogLine], str]:
        """One page of a job's log lines (by attempt, then line number) and the next page
        token ("" on the last)."""
        request = job_service_pb2.ListJobLogsRequest(
            id=job_id, attempt=attempt, page_size=page_size, page_token=page_token
        )
        response = await self._call(lambda stub: stub.ListJobLogs, request, safe_to_repeat=True)
        return list(response.lines), response.next_page_token

    async def logs(
        self, job_id: str, attempt: int = 0, *, page_size: int = 0
    ) -> AsyncGenerator[job_service_pb2.LogLine, None]:
        """Every stored log line of the job, by attempt, then line number; only those of
        `attempt` unless it is 0. At most 1000 lines are kept per attempt: a 1001st line says
        that the rest were dropped."""
        async for line in _every_page(
            lambda token: self.logs_page(job_id, attempt, page_size=page_size, page_token=token)
        ):
            yield line

    # -- control ---------------------------------------------------------------------------

    async def cancel(self, job_id: str, reason: str = "") -> job_pb2.Job:
        """Cancel a job: CANCELLED at once, or RUNNING with cancel_requested set."""
        response = await self._call(
            lambda stub: stub.CancelJob, job_service_pb2.CancelJobRequest(id=job_id, reason=reason)
        )
        return response.job

    async def retry(self, job_id: str) -> job_pb2.Job:
        """Move a DEAD or CANCELLED job back to QUEUED for a new attempt."""
        response = await self._call(
            lambda stub: stub.RetryJob, job_service_pb2.RetryJobRequest(id=job_id)
        )
        return response.job

    async def retry_many(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        states: Iterable[JobStateLike] | None = None,
        finished_after: datetime | None = None,
        finished_before: datetime | None = None,
        limit: int = 0,
    ) -> tuple[int, bool]:
        """Move up to `limit` terminal jobs back to QUEUED, oldest finished first, in one call:
        DEAD ones (the dead-letter queue) unless `states` names DEAD and/or CANCELLED.
        `finished_after` is inclusive, `finished_before` exclusive. `limit` 0 means the
        server's default (1000); above 10,000 is coerced. Returns (retried, more): `more` is
        True when other jobs match and another call would retry them.

        Not repeated after UNAVAILABLE (the jobs may have been retried): call again, it only
        picks jobs that are still DEAD or CANCELLED."""
        request = job_service_pb2.RetryJobsRequest(
            queue=queue or "",
            type=type or "",
            states=[parse_state(s) for s in states or ()],
            limit=limit,
        )
        if finished_after is not None:
            request.finish_time_after.CopyFrom(_timestamp(finished_after))
        if finished_before is not None:
            request.finish_time_before.CopyFrom(_timestamp(finished_before))
        response = await self._call(lambda stub: stub.RetryJobs, request)
        return response.retried_count, response.more

    async def retry_all(
        self,
        *,
        queue: str | None = None,
        type: str | None = None,
        states: Iterable[JobStateLike] | None = None,
        finished_after: datetime | None = None,
        finished_before: datetime | None = None,
        limit: int = 0,
    ) -> int:
        """`retry_many` until no more jobs match, `limit` jobs per call; returns how many were
        retried. Jobs that fail again and finish while this runs are retried again only if
        `finished_before` excludes them: pass it (e.g. now) to retry each job at most once."""
        chosen = [parse_state(s) for s in states or ()]
        total = 0
        while True:
            retried, more = await self.retry_many(
                queue=queue,
                type=type,
                states=chosen,
                finished_after=finished_after,
                finished_before=finished_before,
                limit=limit,
            )
            total += retried
            if not more or retried == 0:
                return total

    async def delete(self, job_id: str) -> None:
        """Delete a job and its history (a RUNNING job must be cancelled first)."""
        await self._call(lambda stub: stub.DeleteJob, job_service_pb2.DeleteJobRequest(id=job_id))

    async def update_priority(self, job_id: str, priority: int) -> tuple[job_pb2.Job, bool]:
        """Set the priority of a job that has not started; (job, changed)."""
        response = await self._call(
            lambda stub: stub.UpdateJobPriority,
            job_service_pb2.UpdateJobPriorityRequest(id=job_id, priority=priority),
            safe_to_repeat=True,  # setting a value twice is the same as once
        )
        return response.job, response.changed

    # -- queues ------------------------------------------------------------------------------

    async def queues(self) -> list[queue_service_pb2.Queue]:
        """Every queue with jobs or settings, by name, with its statistics."""
        response = await self._call_queues(
            lambda stub: stub.ListQueues,
            queue_service_pb2.ListQueuesRequest(),
            safe_to_repeat=True,
        )
        return list(response.queues)

    async def get_queue(self, name: str) -> queue_service_pb2.Queue:
        response = await self._call_queues(
            lambda stub: stub.GetQueue,
            queue_service_pb2.GetQueueRequest(name=name),
            safe_to_repeat=True,
        )
        return response.queue

    async def pause_queue(self, name: str) -> queue_service_pb2.Queue:
        response = await self._call_queues(
            lambda stub: stub.PauseQueue,
            queue_service_pb2.PauseQueueRequest(name=name),
            safe_to_repeat=True,  # idempotent
        )
        return response.queue

    async def resume_queue(self, name: str) -> queue_service_pb2.Queue:
        response = await self._call_queues(
            lambda stub: stub.ResumeQueue,
            queue_service_pb2.ResumeQueueRequest(name=name),
            safe_to_repeat=True,  # idempotent
        )
        return response.queue

    async def update_queue(
        self, queue: queue_service_pb2.Queue, paths: Sequence[str] | None = None
    ) -> queue_service_pb2.Queue:
        """Change the queue's settings named by `paths` (None: every field `queue` sets; a path
        whose field is unset clears it)."""
        request = queue_service_pb2.UpdateQueueRequest(queue=queue)
        if paths is not None:
            request.update_mask.paths.extend(paths)
        response = await self._call_queues(
            lambda stub: stub.UpdateQueue,
            request,
            safe_to_repeat=True,  # setting values twice is the same as once
        )
        return response.queue

    async def set_queue_retention(
        self, name: str, retention: timedelta | None
    ) -> queue_service_pb2.Queue:
        """Keep the queue's finished jobs for `retention` before the scheduler deletes them
        (zero: keep them forever; None: back to the scheduler's default)."""
        queue = queue_service_pb2.Queue(name=name)
        if retention is not None:
            queue.retention.FromTimedelta(retention)
        return await self.update_queue(queue, ["retention"])

    # -- API keys ----------------------------------------------------------------------------

    async def create_api_key(
        self,
        name: str,
        role: str,
        tenants: Sequence[str],
        ttl: timedelta | None = None,
    ) -> tuple[auth_service_pb2.ApiKey, str]:
        """Make an API key (needs the admin role); returns it and its secret, which the
        scheduler shows only this once. Not repeated on UNAVAILABLE: a lost answer may have
        made a key (list the keys, revoke a stray one)."""
        request = auth_service_pb2.CreateApiKeyRequest(name=name, role=role, tenants=tenants)
        if ttl is not None:
            request.ttl.FromTimedelta(ttl)
        response = await self._invoke(
            self._auth_stubs, lambda stub: stub.CreateApiKey, request, False
        )
        return response.api_key, response.secret

    async def list_api_keys_page(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[auth_service_pb2.ApiKey], str]:
        """One page of API keys, newest first (never a secret), and the next token."""
        response = await self._invoke(
            self._auth_stubs,
            lambda stub: stub.ListApiKeys,
            auth_service_pb2.ListApiKeysRequest(page_size=page_size, page_token=page_token),
            True,
        )
        return list(response.api_keys), response.next_page_token

    async def list_api_keys(
        self, page_size: int = 0
    ) -> AsyncGenerator[auth_service_pb2.ApiKey, None]:
        """Every API key the caller may manage, newest first."""
        async for key in _every_page(lambda token: self.list_api_keys_page(page_size, token)):
            yield key

    async def revoke_api_key(self, key_id: str) -> auth_service_pb2.ApiKey:
        """Revoke a key (safe to repeat: a revoked key stays revoked)."""
        response = await self._invoke(
            self._auth_stubs,
            lambda stub: stub.RevokeApiKey,
            auth_service_pb2.RevokeApiKeyRequest(id=key_id),
            True,
        )
        return response.api_key

    # -- audit log ---------------------------------------------------------------------------

    async def list_audit_events_page(
        self,
        *,
        principal: str = "",
        action: str = "",
        target: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[audit_service_pb2.AuditEvent], str]:
        """One page of audit events, newest first (needs the admin role), and the next token.
        `principal`: "api_key:<id>", a bare key id or "anonymous"; `since` <= time < `until`."""
        request = audit_service_pb2.ListAuditEventsRequest(
            principal=principal,
            action=action,
            target=target,
            page_size=page_size,
            page_token=page_token,
        )
        if since is not None:
            request.start_time.FromDatetime(since)
        if until is not None:
            request.end_time.FromDatetime(until)
        response = await self._invoke(
            self._audit_stubs, lambda stub: stub.ListAuditEvents, request, True
        )
        return list(response.events), response.next_page_token

    async def list_audit_events(
        self,
        *,
        principal: str = "",
        action: str = "",
        target: str = "",
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 0,
    ) -> AsyncGenerator[audit_service_pb2.AuditEvent, None]:
        """Every audit event matching the filters, newest first."""
        async for event in _every_page(
            lambda token: self.list_audit_events_page(
                principal=principal,
                action=action,
                target=target,
                since=since,
                until=until,
                page_size=page_size,
                page_token=token,
            )
        ):
            yield event

    # -- cluster -----------------------------------------------------------------------------

    async def cluster_status(self) -> cluster_service_pb2.GetClusterStatusResponse:
        """The scheduler replicas (the leader, its epoch), and the executors on each."""
        return await self._invoke(
            self._cluster_stubs,
            lambda stub: stub.GetClusterStatus,
            cluster_service_pb2.GetClusterStatusRequest(),
            True,
        )

    # -- job types ---------------------------------------------------------------------------

    async def _call_job_types(
        self,
        rpc: Callable[
            [job_type_service_pb2_grpc.JobTypeServiceAsyncStub],
            grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        ],
        request: _Request,
    ) -> _Response:
        # Every JobTypeService call is safe to repeat (reads, and updates that set values).
        return await self._invoke(self._job_type_stubs, rpc, request, True)

    async def get_job_type(self, name: str) -> job_type_service_pb2.JobType:
        """A job type's settings (empty ones for a type never configured)."""
        response = await self._call_job_types(
            lambda stub: stub.GetJobType, job_type_service_pb2.GetJobTypeRequest(name=name)
        )
        return response.job_type

    async def list_job_types_page(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[job_type_service_pb2.JobType], str]:
        """One page of the configured job types by name, and the next token ("" on the last)."""
        response = await self._call_job_types(
            lambda stub: stub.ListJobTypes,
            job_type_service_pb2.ListJobTypesRequest(page_size=page_size, page_token=page_token),
        )
        return list(response.job_types), response.next_page_token

    async def list_job_types(
        self, page_size: int = 0
    ) -> AsyncGenerator[job_type_service_pb2.JobType, None]:
        """Every job type of the tenant that has settings, by name."""
        async for job_type in _every_page(lambda token: self.list_job_types_page(page_size, token)):
            yield job_type

    async def update_job_type(
        self, job_type: job_type_service_pb2.JobType, paths: Sequence[str] | None = None
    ) -> job_type_service_pb2.JobType:
        """Change the type's settings named by `paths` (None: every field `job_type` sets; a
        path whose field is unset clears it: the setting inherits from the queue again)."""
        request = job_type_service_pb2.UpdateJobTypeRequest(job_type=job_type)
        if paths is not None:
            request.update_mask.paths.extend(paths)
        response = await self._call_job_types(lambda stub: stub.UpdateJobType, request)
        return response.job_type

    async def set_job_type_defaults(
        self,
        name: str,
        *,
        max_attempts: int | None = None,
        job_timeout: timedelta | None = None,
        retry_policy: job_pb2.RetryPolicy | Mapping[str, Any] | None = None,
    ) -> job_type_service_pb2.JobType:
        """Set the given defaults of a job type's jobs (the others are left as they are):
        `job_timeout` is the execution timeout of each attempt; `retry_policy` a RetryPolicy or
        make_retry_policy() arguments, of which only the set fields change."""
        job_type = job_type_service_pb2.JobType(name=name)
        paths = []
        if max_attempts is not None:
            job_type.max_attempts = max_attempts
            paths.append("max_attempts")
        if job_timeout is not None:
            job_type.timeout.CopyFrom(_duration(job_timeout))
            paths.append("timeout")
        if retry_policy is not None:
            policy = (
                retry_policy
                if isinstance(retry_policy, job_pb2.RetryPolicy)
                else make_retry_policy(**retry_policy)
            )
            job_type.retry_policy.CopyFrom(policy)
            paths += [f"retry_policy.{f.name}" for f, _ in policy.ListFields()]
        return await self.update_job_type(job_type, paths)

    # -- schedules ---------------------------------------------------------------------------

    async def create_schedule(
        self,
        name: str,
        cron: str,
        job: JobSpecLike,
        *,
        time_zone: str = "",
        overlap: OverlapLike = "allow",
        catchup: CatchupLike = "none",
        catchup_window: timedelta | None = None,
    ) -> schedule_service_pb2.Schedule:
        """Create a cron schedule submitting `job` (a JobSpec or `job_spec()` arguments; its
        run_at and idempotency_key are ignored) at each fire time of the five-field `cron`,
        evaluated in the IANA `time_zone` (empty: UTC). `overlap`: "allow", "skip" or
        "cancel-previous"; `catchup`: "none", "latest" or "all" (within `catchup_window`,
        one day when None)."""
        schedule = schedule_service_pb2.Schedule(
            name=name,
            cron=cron,
            time_zone=time_zone,
            job_template=_as_spec(job),
            overlap_policy=parse_overlap(overlap),
            catchup_policy=parse_catchup(catchup),
        )
        if catchup_window is not None:
            schedule.catchup_window.CopyFrom(_duration(catchup_window))
        response = await self._call_schedules(
            lambda stub: stub.CreateSchedule,
            schedule_service_pb2.CreateScheduleRequest(schedule=schedule),
        )
        return response.schedule

    async def get_schedule(self, schedule: str) -> schedule_service_pb2.Schedule:
        """A schedule by id or name, with its next 5 fire times (none while paused)."""
        response = await self._call_schedules(
            lambda stub: stub.GetSchedule,
            schedule_service_pb2.GetScheduleRequest(id=schedule),
            safe_to_repeat=True,
        )
        return response.schedule

    async def list_schedules_page(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[schedule_service_pb2.Schedule], str]:
        """One page of schedules by name, and the token of the next ("" on the last)."""
        response = await self._call_schedules(
            lambda stub: stub.ListSchedules,
            schedule_service_pb2.ListSchedulesRequest(page_size=page_size, page_token=page_token),
            safe_to_repeat=True,
        )
        return list(response.schedules), response.next_page_token

    async def list_schedules(
        self, page_size: int = 0
    ) -> AsyncGenerator[schedule_service_pb2.Schedule, None]:
        """Every schedule of the tenant, by name."""
        async for schedule in _every_page(lambda token: self.list_schedules_page(page_size, token)):
            yield schedule

    async def pause_schedule(self, schedule: str) -> schedule_service_pb2.Schedule:
        response = await self._call_schedules(
            lambda stub: stub.PauseSchedule,
            schedule_service_pb2.PauseScheduleRequest(id=schedule),
            safe_to_repeat=True,  # idempotent
        )
        return response.schedule

    async def resume_schedule(self, schedule: str) -> schedule_service_pb2.Schedule:
        response = await self._call_schedules(
            lambda stub: stub.ResumeSchedule,
            schedule_service_pb2.ResumeScheduleRequest(id=schedule),
            safe_to_repeat=True,  # idempotent
        )
        return response.schedule

    async def delete_schedule(self, schedule: str) -> None:
        """Delete a schedule; the jobs it submitted stay."""
        await self._call_schedules(
            lambda stub: stub.DeleteSchedule,
            schedule_service_pb2.DeleteScheduleRequest(id=schedule),
        )

    async def trigger_schedule(self, schedule: str) -> tuple[job_pb2.Job | None, bool]:
        """Submit the schedule's job now (its overlap policy applies): (job, skipped)."""
        response = await self._call_schedules(
            lambda stub: stub.TriggerSchedule,
            schedule_service_pb2.TriggerScheduleRequest(id=schedule),
        )
        return (response.job if response.HasField("job") else None), response.skipped

    # Artifacts (files the job's handlers uploaded; ArtifactService).

    async def list_artifacts(self, job_id: str) -> list[Artifact]:
        """The job's artifacts by name (JobNotFoundError for an unknown job)."""
        response = await self._invoke(
            self._artifact_stubs,
            lambda stub: stub.ListJobArtifacts,
            artifact_service_pb2.ListJobArtifactsRequest(job_id=job_id),
            True,
        )
        return [Artifact.from_proto(a) for a in response.artifacts]

    async def download_artifact(
        self, job_id: str, name: str, destination: str | os.PathLike[str] | BinaryIO
    ) -> Artifact:
        """Download an artifact into `destination`, a path or a binary file open for writing, and
        check its size and SHA-256 (ChecksumMismatchError otherwise). A path is written to a
        temporary file beside it, renamed into place only once the checksum matched."""
        if isinstance(destination, str | os.PathLike):
            target = Path(destination)
            partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
            try:
                with partial.open("wb") as file:
                    artifact = await self._download(job_id, name, file)
                partial.replace(target)
            finally:
                partial.unlink(missing_ok=True)
            return artifact
        return await self._download(job_id, name, destination)

    async def _download(self, job_id: str, name: str, file: BinaryIO) -> Artifact:
        artifact, chunks = await self.open_artifact(job_id, name)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                await asyncio.to_thread(file.write, chunk)
        return artifact

    async def open_artifact(
        self, job_id: str, name: str
    ) -> tuple[Artifact, AsyncGenerator[bytes, None]]:
        """Start a download: the artifact's metadata (JobschedError here when it cannot be had,
        e.g. ARTIFACT_NOT_FOUND) and its content's chunks as they arrive. The chunks end with
        ChecksumMismatchError, after the last one, when the size or SHA-256 does not match;
        closing the generator early ends the call."""
        stub = self._artifact_stubs[self._current]
        call = stub.GetArtifact(
            artifact_service_pb2.GetArtifactRequest(job_id=job_id, name=name),
            metadata=self._metadata,
            timeout=None,
        )
        messages = call.__aiter__()
        try:
            first = await anext(messages, None)
        except grpc.aio.AioRpcError as err:
            call.cancel()
            raise from_rpc_error(err) from err
        if first is None or not first.HasField("artifact"):
            call.cancel()
            raise ChecksumMismatchError("the download ended before the artifact's metadata")
        artifact = Artifact.from_proto(first.artifact)

        async def chunks() -> AsyncGenerator[bytes, None]:
            digest = hashlib.sha256()
            size = 0
            try:
                async for message in messages:
                    digest.update(message.chunk)
                    size += len(message.chunk)
                    yield message.chunk
            except grpc.aio.AioRpcError as err:
                raise from_rpc_error(err) from err
            finally:
                call.cancel()
            if size != artifact.size_bytes or digest.hexdigest() != artifact.sha256:
                raise ChecksumMismatchError(
                    f"artifact {name!r}: got {size} bytes with SHA-256 {digest.hexdigest()}, "
                    f"expected {artifact.size_bytes} bytes with {artifact.sha256}"
                )

        return artifact, chunks()
