"""`jobsched.Client`: a synchronous client for scripts and WSGI apps (Django, Flask), over the
async one (jobsched.client.JobschedClient) run on an event loop of its own, on a daemon thread.

    with jobsched.Client("127.0.0.1:50051") as client:
        job = client.submit("resize", {"width": 640})
        print(job.wait(timeout=60))          # the result, or raises JobFailedError
        for event in client.watch(job.id):   # progress, logs, transitions until the end
            ...

It returns `jobsched.jobs.Job` objects (states as JobState, results decoded from JSON, times as
datetimes) and raises the same `jobsched.errors` as the async client. One Client may be shared
by the threads of a web application: every call is handed to its loop, which serialises nothing
but the hand-off.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Self, TypeVar

from jobsched.client import DEFAULT_ADDRESS, JobschedClient, JobSpecLike, Payload
from jobsched.jobs import Job, JobFailedError, JobState, Progress
from jobsched.tls import ClientTLS
from jobsched.v1 import job_pb2

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One item of a watch: `kind` is "snapshot", "transition", "progress" or "log"; `job` is
    set on snapshots, `state` and `reason` on transitions (the state entered, and why),
    `progress` on progress, and `line` (with `attempt`) on log lines."""

    kind: str
    sequence: int
    job: Job | None = None
    state: JobState | None = None
    reason: str = ""
    progress: Progress | None = None
    line: str = ""
    attempt: int = 0


def _event(item: Any) -> WatchEvent:
    kind = item.WhichOneof("item")
    if kind == "snapshot":
        return WatchEvent("snapshot", item.sequence, job=Job.from_proto(item.snapshot))
    if kind == "event":
        return WatchEvent(
            "transition",
            item.sequence,
            state=JobState.from_proto(item.event.to_state),
            reason=item.event.reason,
        )
    if kind == "progress":
        p = item.progress
        return WatchEvent(
            "progress", item.sequence, progress=Progress(p.percent, p.step, p.message)
        )
    return WatchEvent("log", item.sequence, line=item.log.line, attempt=item.log.attempt)


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
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="jobsched-client", daemon=True
        )
        self._thread.start()
        addresses = address if isinstance(address, str) else list(address)

        async def connect() -> JobschedClient:  # its channels bind to the loop that makes them
            return JobschedClient(
                addresses, tenant=tenant, timeout=timeout, retries=retries, tls=tls
            )

        self._client = self._run(connect())
        self._closed = False

    # -- plumbing ------------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise
        except KeyboardInterrupt:
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

    def _bound(self, job: job_pb2.Job) -> ClientJob:
        return ClientJob(Job.from_proto(job), self)

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
        timeout: timedelta | None = None,
        depends_on: Iterable[str] = (),
    ) -> ClientJob:
        """Submit one job (see JobschedClient.submit); `timeout` is the job's run timeout."""
        job = self._run(
            self._client.submit(
                type,
                queue=queue,
                payload=payload,
                priority=priority,
                max_attempts=max_attempts,
                labels=labels,
                idempotency_key=idempotency_key,
                timeout=timeout,
                depends_on=list(depends_on),
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

        async def until_done() -> job_pb2.Job:
            async for item in self._client.watch(job_id):
                if item.HasField("snapshot") and JobState.from_proto(item.snapshot.state).terminal:
                    break
            return await self._client.get(job_id)

        try:
            job = Job.from_proto(self._run(asyncio.wait_for(until_done(), timeout)))
        except TimeoutError:
            raise TimeoutError(f"job {job_id} did not end within {timeout} s") from None
        if job.state is not JobState.SUCCEEDED:
            raise JobFailedError(job)
        return job

    def watch(self, job_id: str) -> Iterator[WatchEvent]:
        """The job's snapshot, transitions, progress and log lines, until it ends."""
        for item in self._iterate(lambda: self._client.watch(job_id)):
            yield _event(item)

    def cancel(self, job_id: str, reason: str = "") -> ClientJob:
        return self._bound(self._run(self._client.cancel(job_id, reason)))

    def retry(self, job_id: str) -> ClientJob:
        return self._bound(self._run(self._client.retry(job_id)))

    def delete(self, job_id: str) -> None:
        self._run(self._client.delete(job_id))

    def list_active(self, **filters: Any) -> Iterator[Job]:
        """Active jobs (filters as JobschedClient.list_active), page by page as iterated."""
        for job in self._iterate(lambda: self._client.list_active(**filters)):
            yield Job.from_proto(job)

    def history(self, **filters: Any) -> Iterator[Job]:
        """Finished jobs (filters as JobschedClient.history), newest first."""
        for job in self._iterate(lambda: self._client.history(**filters)):
            yield Job.from_proto(job)

    def logs(self, job_id: str, attempt: int = 0) -> Iterator[str]:
        for line in self._iterate(lambda: self._client.logs(job_id, attempt=attempt)):
            yield line.line


__all__ = ["Client", "ClientJob", "JobFailedError", "WatchEvent"]
