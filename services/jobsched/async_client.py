"""`jobsched.AsyncClient`: the asyncio client that speaks in Python objects — `jobsched.jobs.Job`
(states as JobState, payloads and results decoded from JSON, times as datetimes) and
`WatchEvent` — over `jobsched.client.JobschedClient`, which stays the protobuf-level client
(every RPC, pages, field masks). The synchronous `jobsched.Client` runs this one on a thread.

    async with jobsched.AsyncClient("127.0.0.1:50051") as client:
        job = await client.submit("resize", {"width": 640})
        async for event in client.watch(job.id):
            ...
        print(await job.wait(timeout=60))    # the result, or raises JobFailedError
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from jobsched.client import DEFAULT_ADDRESS, JobschedClient, JobSpecLike, Payload
from jobsched.jobs import Job, JobFailedError, JobState, WatchEvent, watch_event
from jobsched.tls import ClientTLS
from jobsched.v1 import job_pb2

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider


@dataclass(frozen=True, slots=True)
class AsyncJob:
    """A Job with the client it came from: `wait`, `refresh`, `cancel`. Its fields are the
    Job's (`job.state`, `job.result`, ...)."""

    job: Job
    client: AsyncClient

    def __getattr__(self, name: str) -> Any:
        return getattr(self.job, name)

    async def refresh(self) -> AsyncJob:
        return await self.client.get(self.job.id)

    # `timeout` as in the sync client's job.wait(timeout=...): one vocabulary for both.
    async def wait(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Until the job ends: its result if it SUCCEEDED, else JobFailedError; TimeoutError
        after `timeout` seconds (the job goes on)."""
        return (await self.client.wait(self.job.id, timeout=timeout)).result

    async def cancel(self, reason: str = "") -> AsyncJob:
        return await self.client.cancel(self.job.id, reason)

    def __repr__(self) -> str:
        return f"<job {self.job.id} {self.job.type} {self.job.state}>"


class AsyncClient:
    """See the module's docstring. Create it in the event loop that uses it."""

    def __init__(
        self,
        address: str | Iterable[str] = DEFAULT_ADDRESS,
        *,
        tenant: str | None = None,
        timeout: float | None = 30.0,
        retries: int = 3,
        tls: ClientTLS | None = None,
        token: str | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        addresses = address if isinstance(address, str) else list(address)
        self.raw = JobschedClient(
            addresses,
            tenant=tenant,
            timeout=timeout,
            retries=retries,
            tls=tls,
            token=token,
            tracer_provider=tracer_provider,
        )

    async def close(self) -> None:
        await self.raw.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _bound(self, job: job_pb2.Job) -> AsyncJob:
        return AsyncJob(Job.from_proto(job), self)

    async def submit(
        self,
        type: str,
        payload: Payload = None,
        *,
        queue: str = "",
        priority: int | None = None,
        max_attempts: int | None = None,
        labels: Mapping[str, str] | None = None,
        idempotency_key: str = "",
        job_timeout: timedelta | None = None,
        depends_on: Iterable[str] = (),
    ) -> AsyncJob:
        """Submit one job (see JobschedClient.submit); `job_timeout` is its run timeout."""
        job = await self.raw.submit(
            type,
            queue=queue,
            payload=payload,
            priority=priority,
            max_attempts=max_attempts,
            labels=labels,
            idempotency_key=idempotency_key,
            timeout=job_timeout,
            depends_on=list(depends_on),
        )
        return self._bound(job)

    async def submit_many(self, specs: Iterable[JobSpecLike]) -> list[AsyncJob]:
        """Submit a batch in one call (job_spec dicts or JobSpecs; a DAG with refs)."""
        return [self._bound(j) for j in await self.raw.submit_many(list(specs))]

    async def get(self, job_id: str) -> AsyncJob:
        return self._bound(await self.raw.get(job_id))

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:  # noqa: ASYNC109
        """Until the job ends: the Job if it SUCCEEDED, else JobFailedError (with the Job).
        TimeoutError after `timeout` seconds."""

        async def until_done() -> job_pb2.Job:
            async for item in self.raw.watch(job_id):  # it ends after the terminal event
                if item.HasField("snapshot") and JobState.from_proto(item.snapshot.state).terminal:
                    break
            return await self.raw.get(job_id)

        try:
            job = Job.from_proto(await asyncio.wait_for(until_done(), timeout))
        except TimeoutError:
            raise TimeoutError(f"job {job_id} did not end within {timeout} s") from None
        if job.state is not JobState.SUCCEEDED:
            raise JobFailedError(job)
        return job

    async def watch(self, job_id: str) -> AsyncIterator[WatchEvent]:
        """The job's snapshot, transitions, progress and log lines, until it ends."""
        async for item in self.raw.watch(job_id):
            yield watch_event(item)

    async def cancel(self, job_id: str, reason: str = "") -> AsyncJob:
        return self._bound(await self.raw.cancel(job_id, reason))

    async def retry(self, job_id: str) -> AsyncJob:
        return self._bound(await self.raw.retry(job_id))

    async def delete(self, job_id: str) -> None:
        await self.raw.delete(job_id)

    async def list_active(self, **filters: Any) -> AsyncIterator[Job]:
        """Active jobs (filters as JobschedClient.list_active), page by page as iterated."""
        async for job in self.raw.list_active(**filters):
            yield Job.from_proto(job)

    async def history(self, **filters: Any) -> AsyncIterator[Job]:
        """Finished jobs (filters as JobschedClient.history), newest first."""
        async for job in self.raw.history(**filters):
            yield Job.from_proto(job)

    async def logs(self, job_id: str, attempt: int = 0) -> AsyncIterator[str]:
        async for line in self.raw.logs(job_id, attempt=attempt):
            yield line.line
