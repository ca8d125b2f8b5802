"""The job lists filter by label: "key=value" (that value) or "key" (any value), all of them to
hold, in ListActiveJobs and GetJobHistory, across keyset pages; a malformed filter is
INVALID_ARGUMENT naming it; a page token is bound to its filters."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.scripted import violated_fields


def spec(**labels: str) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(type="work", labels=labels)


async def every_page(call: Any, request: Any) -> list[str]:
    """Every id the pages list, sorted (a batch's jobs share created_at: the list orders them
    by id), so that a job listed twice would show."""
    ids: list[str] = []
    while True:
        response = await call(request)
        ids += [job.id for job in response.jobs]
        if not response.next_page_token:
            return sorted(ids)
        request.page_token = response.next_page_token


async def test_lists_filter_by_label_across_pages(scheduler: SchedulerServer) -> None:
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        specs = [
            spec(team="red" if n % 5 == 0 else "blue", **({"tier": "gold"} if n % 2 else {}))
            for n in range(40)
        ]
        response = await stub.SubmitJobs(job_service_pb2.SubmitJobsRequest(jobs=specs))
        ids = [job.id for job in response.jobs]
        red = sorted(i for n, i in enumerate(ids) if n % 5 == 0)
        red_gold = sorted(i for n, i in enumerate(ids) if n % 5 == 0 and n % 2)
        gold = sorted(i for n, i in enumerate(ids) if n % 2)

        def active(*labels: str) -> job_service_pb2.ListActiveJobsRequest:
            return job_service_pb2.ListActiveJobsRequest(page_size=3, labels=labels)

        assert await every_page(stub.ListActiveJobs, active("team=red")) == red
        assert await every_page(stub.ListActiveJobs, active("team=red", "tier")) == red_gold
        assert await every_page(stub.ListActiveJobs, active("tier=gold")) == gold
        assert await every_page(stub.ListActiveJobs, active("team")) == sorted(ids)
        assert await every_page(stub.ListActiveJobs, active("team=red", "team=blue")) == []
        assert await every_page(stub.ListActiveJobs, active("team=green")) == []

        for job_id in red[:3]:
            await stub.CancelJob(job_service_pb2.CancelJobRequest(id=job_id))
        history = job_service_pb2.GetJobHistoryRequest(page_size=2, labels=["team=red"])
        assert await every_page(stub.GetJobHistory, history) == sorted(red[:3])
        none = job_service_pb2.GetJobHistoryRequest(labels=["team=blue"])
        assert await every_page(stub.GetJobHistory, none) == []

        # A token of one filter is refused under another.
        first = await stub.ListActiveJobs(active("team=blue"))
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await stub.ListActiveJobs(
                job_service_pb2.ListActiveJobsRequest(
                    page_size=3, labels=["team=red"], page_token=first.next_page_token
                )
            )
        assert other.value.code() is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        (["=red"], "labels[0]"),
        (["team=red", "Bad Key"], "labels[1]"),
        (["team=" + "x" * 257], "labels[0]"),
        ([f"k{i}" for i in range(17)], "labels"),
    ],
)
async def test_a_malformed_label_filter_is_named(
    scheduler: SchedulerServer, labels: list[str], field: str
) -> None:
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        calls: list[tuple[Any, Any]] = [
            (stub.ListActiveJobs, job_service_pb2.ListActiveJobsRequest(labels=labels)),
            (stub.GetJobHistory, job_service_pb2.GetJobHistoryRequest(labels=labels)),
        ]
        for call, request in calls:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(request)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert field in violated_fields(refused.value)
