"""A partition between the scheduler and PostgreSQL (packets dropped, nothing refused or
restarted): calls in flight are answered UNAVAILABLE within their deadline, calls after the
health probe noticed are answered at once, and calls succeed again soon after it heals.

Before: calls in flight waited 32 s (a 30 s deadline ended DEADLINE_EXCEEDED) and later calls
~5 s each while health already said NOT_SERVING."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from jobsched.v1 import job_service_pb2, job_service_pb2_grpc
from scheduler.store.database import COMMAND_TIMEOUT, Database
from tests.e2e.test_job_service import submit, wait_for_health
from tests.fault_proxy import FaultProxy
from tests.helpers import assert_eventually
from tests.pg_upstream import through
from tests.scripted import serving


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy.to_postgres(database_url)
    await proxy.start()
    yield proxy
    proxy.pass_through()
    await proxy.stop()


@pytest.fixture
async def proxied_db(database_url: str, proxy: FaultProxy) -> AsyncIterator[Database]:
    db = Database.from_url(through(database_url, proxy.port), pool_size=5)
    yield db
    await db.dispose()


async def timed(call: Any) -> tuple[grpc.StatusCode, float]:
    started = time.monotonic()
    try:
        await call
        code = grpc.StatusCode.OK
    except grpc.aio.AioRpcError as err:
        code = err.code()
    return code, time.monotonic() - started


@pytest.mark.timeout(120)
async def test_a_partitioned_store_is_unavailable_fast_and_recovers(
    proxied_db: Database, proxy: FaultProxy
) -> None:
    async with (
        serving(proxied_db, health_interval=1.0) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        job = await submit(stub)

        def get(timeout: float) -> Any:
            return stub.GetJobStatus(
                job_service_pb2.GetJobStatusRequest(id=job.id), timeout=timeout
            )

        proxy.black_hole()
        # In flight when the partition began: bounded by the statement timeout (and the
        # driver's attempt to cancel the statement), within a 15 s deadline.
        code, took = await timed(get(15))
        assert code == grpc.StatusCode.UNAVAILABLE, (code, took)
        assert took < COMMAND_TIMEOUT + 4, took

        await wait_for_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
        for _ in range(5):
            code, took = await timed(get(15))
            assert code == grpc.StatusCode.UNAVAILABLE
            assert took < 0.5, took

        proxy.pass_through()
        healed = time.monotonic()

        async def answers() -> None:
            code, _ = await timed(get(15))
            assert code == grpc.StatusCode.OK

        await assert_eventually(answers, within=15, interval=0.2)
        recovered_after = time.monotonic() - healed
        assert recovered_after < 12, recovered_after
        await wait_for_health(channel, health_pb2.HealthCheckResponse.SERVING)
        await asyncio.sleep(0)
