"""`jobsched health` (the container HEALTHCHECK and any probe script): exit 0 only while the
scheduler answers SERVING; the real CLI as a subprocess against a real scheduler."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2

from scheduler.server import SchedulerServer
from tests.cli import run_cli
from tests.e2e.test_job_service import database_refusing_connections, wait_for_health
from tests.faults.harness import free_port


async def test_health_exits_0_while_serving(scheduler: SchedulerServer) -> None:
    code, out, err = await run_cli(scheduler.address, "health")
    assert (code, out.strip(), err) == (0, f"{scheduler.address} SERVING", "")
    code, out, _ = await run_cli(scheduler.address, "health", "--service", "jobsched.v1.JobService")
    assert (code, out.strip()) == (0, f"{scheduler.address} SERVING")


@pytest.mark.timeout(90)
async def test_health_exits_5_while_the_database_is_unreachable(
    scheduler: SchedulerServer, channel: grpc.aio.Channel, database_url: str
) -> None:
    async with database_refusing_connections(database_url):
        await wait_for_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
        code, out, err = await run_cli(scheduler.address, "health")
    assert (code, out) == (5, "")
    assert err.strip() == f"{scheduler.address} NOT_SERVING"


async def test_health_exits_5_when_nothing_answers(scheduler: SchedulerServer) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    code, out, err = await run_cli(f"{scheduler.address},{nobody}", "--timeout", "2", "health")
    assert code == 5
    assert out.strip() == f"{scheduler.address} SERVING"
    assert err.startswith(f"{nobody} unreachable")
