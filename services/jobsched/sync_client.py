"""`jobsched.Client`: a synchronous client for scripts and WSGI apps (Django, Flask): the
`jobsched.AsyncClient` run on an event loop of its own, on a daemon thread, with the same
methods.

    with jobsched.Client("127.0.0.1:50051") as client:
        job = client.submit("resize", {"width": 640})
        print(job.wait(timeout=60))          # the result, or raises JobFailedError
        for event in client.watch(job.id):   # progress, logs, transitions until the end
            ...

It returns `jobsched.jobs.Job` objects (states as JobState, results decoded from JSON, times as
datetimes) and raises the same `jobsched.errors` as the async clients. One Client may be shared
by the threads of a web application: every call is handed to its loop, which serialises nothing
but the hand-off.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Self, TypeVar

from opentelemetry import context as otel_context

from jobsched.async_client import AsyncClient, AsyncJob
from jobsched.client import DEFAULT_ADDRESS, JobSpecLike, Payload
from jobsched.jobs import Job, JobFailedError, WatchEvent
from jobsched.tls import ClientTLS

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

T = TypeVar("T")


async def _in_context(ctx: otel_context.Context, coro: Coroutine[Any, Any, T]) -> T:
    token = otel_context.attach(ctx)
    try:
        return await coro
    finally:
        otel_context.detach(token)


@dataclass(frozen=True, slots=True)
class ClientJob:
    """A Job with the client it came from: `wait`, `refresh`, `cancel`. Its fields are the
    Job's (`job.state`, `job.result`, ...)."""

    job: Job
    client: Client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.job, name)

    def refresh(self) -> ClientJob:
        return self.client.get(self.job.id)

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job ends; its result if it SUCCEEDED, else JobFailedError.
        TimeoutError after `timeout` seconds (the job goes on)."""
        return self.client.wait(self.job.id, timeout=timeout).result

    def cancel(self, reason: str = "") -> ClientJob:
        return self.client.cancel(self.job.id, reason)

    def __repr__(self) -> str:
        return f"<job {self.job.id} {self.job.type} {self.job.state}>"


class Client:
    """Synchronous jobsched client (see the module's docstring). Close it, or use `with`."""

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
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="jobsched-client", daemon=True
        )
        self._thread.start()
        addresses = address if isinstance(address, str) else list(address)

        async def connect() -> AsyncClient:  # its channels bind to the loop that makes them
            return AsyncClient(
                addresses,
                tenant=tenant,
                timeout=timeout,
                retries=retries,
                tls=tls,
                token=token,
                tracer_provider=tracer_provider,
            )

        self._client = self._run(connect())
        self._closed = False

    # -- plumbing ------------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        # The caller's OpenTelemetry context crosses to the client's loop thread with the call,
        # so that its span is the parent of the call's (and its traceparent is sent).
        caller = otel_context.get_current()
        future = asyncio.run_coroutine_threadsafe(_in_context(caller, coro), self._loop)
        try:
            return future.result(timeout)
        except (TimeoutError, KeyboardInterrupt):
            future.cancel()
            raise

    def _iterate(self, make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        async def start() -> AsyncIterator[T]:
            return make()

        stream = self._run(start())

        async def step() -> T:
            return await anext(stream)

        try:
            while True:
                try:
                    yield self._run(step())
                except StopAsyncIteration:
                    return
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None and not self._closed:
                self._run(closer())

    def _bound(self, job: AsyncJob) -> ClientJob:
        return ClientJob(job.job, self)

    def close(self) -> None:
        if self._closed:
            return
        self._run(self._client.close())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ----------------------------------------------------------------------------------

    def submit(
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
    ) -> ClientJob:
        """Submit one job (see JobschedClient.submit); `job_timeout` is its run timeout."""
        job = self._run(
            self._client.submit(
                type,
                payload,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                labels=labels,
                idempotency_key=idempotency_key,
                job_timeout=job_timeout,
                depends_on=depends_on,
            )
        )
        return self._bound(job)

    def submit_many(self, specs: Iterable[JobSpecLike]) -> list[ClientJob]:
        """Submit a batch in one call (job_spec dicts or JobSpecs; a DAG with refs)."""
        return [self._bound(j) for j in self._run(self._client.submit_many(list(specs)))]

    def get(self, job_id: str) -> ClientJob:
        return self._bound(self._run(self._client.get(job_id)))

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job ends; the Job if it SUCCEEDED, else JobFailedError (with the
        Job). TimeoutError after `timeout` seconds."""
        return self._run(self._client.wait(job_id, timeout))

    def watch(self, job_id: str) -> Iterator[WatchEvent]:
        """The job's snapshot, transitions, progress and log lines, until it ends."""
        return self._iterate(lambda: self._client.watch(job_id))

    def cancel(self, job_id: str, reason: str = "") -> ClientJob:
        return self._bound(self._run(self._client.cancel(job_id, reason)))

    def retry(self, job_id: str) -> ClientJob:
        return self._bound(self._run(self._client.retry(job_id)))

    def delete(self, job_id: str) -> None:
        self._run(self._client.delete(job_id))

    def list_active(self, **filters: Any) -> Iterator[Job]:
        """Active jobs (filters as JobschedClient.list_active), page by page as iterated."""
        return self._iterate(lambda: self._client.list_active(**filters))

    def history(self, **filters: Any) -> Iterator[Job]:
        """Finished jobs (filters as JobschedClient.history), newest first."""
        return self._iterate(lambda: self._client.history(**filters))

    def logs(self, job_id: str, attempt: int = 0) -> Iterator[str]:
        return self._iterate(lambda: self._client.logs(job_id, attempt))


__all__ = ["Client", "ClientJob", "JobFailedError", "WatchEvent"]
