"""The client-side loads, each timed on its own. Requests are built before the clock starts."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from jobsched.v1 import job_pb2, job_service_pb2

if TYPE_CHECKING:  # a typing-only class of the generated stubs
    from jobsched.v1.job_service_pb2_grpc import JobServiceAsyncStub

JOB_TYPE = "noop"
PAYLOAD = b"{}"

Request = TypeVar("Request")


@dataclass(frozen=True, slots=True)
class Throughput:
    items_per_second: float
    job_ids: list[str]


@dataclass(frozen=True, slots=True)
class Latencies:
    samples_ms: list[float]
    elapsed_s: float

    @property
    def calls_per_second(self) -> float:
        return len(self.samples_ms) / self.elapsed_s


def noop_spec() -> job_pb2.JobSpec:
    return job_pb2.JobSpec(type=JOB_TYPE, payload=PAYLOAD)


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` as `parts` counts that differ by at most one."""
    share, extra = divmod(total, parts)
    return [share + (1 if i < extra else 0) for i in range(parts)]


def batch_count(total: int, batch_size: int) -> int:
    """How many SubmitJobs calls carry `total` jobs in batches of at most `batch_size`."""
    return max(1, -(-total // batch_size))


async def timed_call(method: Callable[[Request], Awaitable[object]], request: Request) -> float:
    """Milliseconds from issuing the call to its response."""
    start = time.perf_counter()
    await method(request)
    return (time.perf_counter() - start) * 1000


async def submit_in_batches(stub: JobServiceAsyncStub, total: int, batch_size: int) -> Throughput:
    """SubmitJobs, one batch after another: jobs stored per second."""
    requests = [
        job_service_pb2.SubmitJobsRequest(jobs=[noop_spec() for _ in range(size)])
        for size in split_evenly(total, batch_count(total, batch_size))
    ]
    job_ids: list[str] = []
    start = time.perf_counter()
    for request in requests:
        response = await stub.SubmitJobs(request)
        job_ids.extend(job.id for job in response.jobs)
    elapsed = time.perf_counter() - start
    return Throughput(len(job_ids) / elapsed, job_ids)


async def submit_one_by_one(stub: JobServiceAsyncStub, total: int, callers: int) -> Latencies:
    """SubmitJob from `callers` concurrent callers, `total` calls in all."""
    request = job_service_pb2.SubmitJobRequest(job=noop_spec())
    samples: list[float] = []

    async def caller(calls: int) -> None:
        for _ in range(calls):
            samples.append(await timed_call(stub.SubmitJob, request))

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for calls in split_evenly(total, callers):
            group.create_task(caller(calls))
    return Latencies(samples, time.perf_counter() - start)


async def get_statuses(
    stub: JobServiceAsyncStub, job_ids: list[str], calls: int, rng: random.Random
) -> Latencies:
    """GetJobStatus on random existing ids, one call at a time."""
    requests = [job_service_pb2.GetJobStatusRequest(id=rng.choice(job_ids)) for _ in range(calls)]
    return await sequential_latencies(stub.GetJobStatus, requests)


async def sequential_latencies(
    method: Callable[[Request], Awaitable[object]], requests: list[Request]
) -> Latencies:
    """Each request in turn, one call in flight at a time."""
    samples: list[float] = []
    start = time.perf_counter()
    for request in requests:
        samples.append(await timed_call(method, request))
    return Latencies(samples, time.perf_counter() - start)


def active_page_request(page_size: int, token: str = "") -> job_service_pb2.ListActiveJobsRequest:
    return job_service_pb2.ListActiveJobsRequest(page_size=page_size, page_token=token)


async def token_for_page(stub: JobServiceAsyncStub, page: int, page_size: int) -> str:
    """Walk the active-jobs listing from the start; the token that fetches page `page` (1-based)."""
    token = ""
    for number in range(1, page):
        response = await stub.ListActiveJobs(active_page_request(page_size, token))
        token = response.next_page_token
        if not token:
            raise RuntimeError(f"the listing ends at page {number}, before page {page}")
    return token


async def list_page(stub: JobServiceAsyncStub, page_size: int, token: str, calls: int) -> Latencies:
    """The same ListActiveJobs page (first page for an empty token), fetched `calls` times."""
    requests = [active_page_request(page_size, token) for _ in range(calls)]
    return await sequential_latencies(stub.ListActiveJobs, requests)


async def warm_up(stub: JobServiceAsyncStub, callers: int) -> list[str]:
    """Open the server's database connections and prepare its statements; nothing is timed."""
    batch = await submit_in_batches(stub, 1_000, 1_000)
    await submit_one_by_one(stub, 4 * callers, callers)
    await get_statuses(stub, batch.job_ids, 50, random.Random(0))
    await list_page(stub, 100, await token_for_page(stub, 2, 100), 10)
    await list_page(stub, 100, "", 10)
    return batch.job_ids
