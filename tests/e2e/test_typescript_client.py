"""The TypeScript client package (clients/typescript) against a real scheduler: its own tests
(node's test runner: JobService calls with a bearer token and a tenant, rich error details, the
Executor loop with progress, logs, results, retries, cancel and a reconnect re-attaching
in_flight, and an unnumbered LogReport refused) run here against a scheduler with --auth required on a fresh
database, since this harness is what starts schedulers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from jobsched.client import JobschedClient
from scheduler.domain.auth import new_key
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.node import TS_CLIENT, node_tools, run
from tests.scripted import serving

ADMIN = new_key()
TENANT = "acme"


@pytest.fixture
async def server(db: Database) -> AsyncIterator[SchedulerServer]:
    async with serving(
        db,
        auth="required",
        bootstrap_key=ADMIN,
        heartbeat_interval=0.5,
        reconnect_grace=timedelta(seconds=10),
    ) as s:
        yield s


async def keys(server: SchedulerServer) -> dict[str, str]:
    async with JobschedClient(server.address, token=ADMIN, timeout=10) as admin:
        _, operator = await admin.create_api_key("ts operator", "operator", [TENANT])
        _, executor = await admin.create_api_key("ts executor", "executor", [TENANT])
    return {"JOBSCHED_OPERATOR_TOKEN": operator, "JOBSCHED_EXECUTOR_TOKEN": executor}


@pytest.mark.timeout(240)
async def test_the_typescript_package_passes_its_tests_against_a_real_scheduler(
    server: SchedulerServer,
) -> None:
    _, npm = node_tools()
    env = {"JOBSCHED_ADDRESS": server.address, "JOBSCHED_TENANT": TENANT, **await keys(server)}
    code, output = await run(npm, "test", "--silent", cwd=TS_CLIENT, env=env, within=200)
    print(output[-6000:])
    assert code == 0, output[-6000:]
    assert "# fail 0" in output
    assert "# pass 12" in output  # every test ran (none skipped or left out)
