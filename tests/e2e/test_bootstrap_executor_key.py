"""JOBSCHED_BOOTSTRAP_EXECUTOR_KEY: a deployment's executors' key, stored by each scheduler at
start (once, whichever replicas start), with which a real executor runs every tenant's jobs;
revoked, a restart does not revive it. How the Helm chart and compose hand it to both sides."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from executor.handlers import builtin_registry
from executor.runner import Executor
from jobsched.client import JobschedClient
from jobsched.errors import PermissionDeniedError, UnauthenticatedError
from jobsched.v1 import job_pb2
from scheduler.domain.auth import new_key
from scheduler.flags import parse_args, settings_from
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import serving

ADMIN, EXECUTORS = new_key(), new_key()


async def executor_keys(db: Database) -> list[tuple[str, list[str], bool]]:
    async with db.read() as conn:
        rows = await conn.execute(
            text(
                "SELECT name, tenants, revoked_at IS NOT NULL FROM api_keys "
                "WHERE role = 'executor' ORDER BY created_at"
            )
        )
        return [(r[0], list(r[1]), bool(r[2])) for r in rows]


async def test_the_executors_key_is_stored_once_and_runs_every_tenants_jobs(
    db: Database,
) -> None:
    keys: dict[str, Any] = {
        "auth": "required",
        "bootstrap_key": ADMIN,
        "bootstrap_executor_key": EXECUTORS,
    }
    async with serving(db, **keys) as first, serving(db, **keys) as second:
        assert await executor_keys(db) == [("bootstrap executors", ["*"], False)]
        executor = Executor(
            [first.address, second.address],
            name="fleet-1",
            capacity=2,
            registry=builtin_registry(),
            token=EXECUTORS,
        )
        await executor.start()
        try:
            await asyncio.wait_for(executor.wait_registered(), 20)
            for tenant in ("alpha", "beta"):
                async with JobschedClient(first.address, token=ADMIN, tenant=tenant) as c:
                    job = await c.submit("noop")

                    async def done(c: JobschedClient = c, job_id: str = job.id) -> None:
                        assert (await c.get(job_id)).state == job_pb2.JOB_STATE_SUCCEEDED

                    await assert_eventually(done, within=20)
        finally:
            await executor.stop(1.0)
        # It may run jobs, nothing else.
        async with JobschedClient(first.address, token=EXECUTORS, retries=0) as c:
            with pytest.raises(PermissionDeniedError):
                await c.submit("noop")
        async with JobschedClient(first.address, token=ADMIN) as admin:
            [key] = [k async for k in admin.list_api_keys() if k.name == "bootstrap executors"]
            await admin.revoke_api_key(key.id)
    async with serving(db, **keys) as again:
        assert await executor_keys(db) == [("bootstrap executors", ["*"], True)]
        async with JobschedClient(again.address, token=EXECUTORS, retries=0) as c:
            with pytest.raises(UnauthenticatedError):
                await c.get("7d3a1c7e-0000-4000-8000-000000000000")


def test_the_variable_is_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSCHED_BOOTSTRAP_EXECUTOR_KEY", EXECUTORS)
    assert settings_from(parse_args([])).bootstrap_executor_key == EXECUTORS
    assert EXECUTORS not in repr(settings_from(parse_args([])))
    monkeypatch.setenv("JOBSCHED_BOOTSTRAP_EXECUTOR_KEY", "not-a-key")
    with pytest.raises(ValueError, match="JOBSCHED_BOOTSTRAP_EXECUTOR_KEY is not an API key"):
        settings_from(parse_args([]))
