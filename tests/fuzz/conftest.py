"""The fuzz tests' scheduler: one database and one server per test module (Hypothesis runs
many examples in one test call, and function-scoped fixtures are not reset between them), on a
frozen clock so that nothing becomes due between two calls: no cron fire, no scheduled job
promoted, no retention sweep. What the examples start from is the `World`: a few jobs in every
state a client alone can reach, schedules, an API key, queues and job types."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from jobsched.v1 import (
    auth_service_pb2,
    auth_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
)
from scheduler.server import SchedulerServer, ServerSettings
from scheduler.store.database import Database
from tests.conftest import _admin, with_database
from tests.fuzz.calls import AccessCodes
from tests.fuzz.requests import World
from tests.fuzz.snapshot import Snapshots

FROZEN = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@dataclass
class Fuzz:
    server: SchedulerServer
    db: Database
    channel: grpc.aio.Channel
    world: World
    snapshots: Snapshots
    access: AccessCodes


@pytest.fixture(scope="module")
async def module_database_url(server_url: str, template_database: str) -> AsyncIterator[str]:
    name = f"jobsched_fuzz_{uuid.uuid4().hex[:12]}"
    await _admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield with_database(server_url, name)
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
async def fuzz(module_database_url: str) -> AsyncIterator[Fuzz]:
    db = Database.from_url(module_database_url, pool_size=5)
    server = SchedulerServer(
        db,
        ServerSettings(
            listen="127.0.0.1:0", shutdown_grace=1.0, reconnect_grace=timedelta(seconds=1)
        ),
        clock=lambda: FROZEN,
    )
    access = AccessCodes()
    rpc_log = logging.getLogger("jobsched.rpc")
    level = rpc_log.level
    rpc_log.setLevel(logging.INFO)
    rpc_log.addHandler(access)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            world = await build_world(channel)
            yield Fuzz(server, db, channel, world, await Snapshots.of(db), access)
    finally:
        await server.stop()
        await db.dispose()
        rpc_log.removeHandler(access)
        rpc_log.setLevel(level)


def _at(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


async def build_world(channel: grpc.aio.Channel) -> World:
    world = World(now=FROZEN)
    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    spec = job_pb2.JobSpec
    submitted = await jobs.SubmitJobs(
        job_service_pb2.SubmitJobsRequest(
            jobs=[
                spec(type="work", payload=b"{}", ref="first"),
                spec(type="work", queue="emails", payload=b"{}"),
                spec(type="email", run_at=_at(FROZEN + timedelta(days=1))),
                spec(type="work", depends_on_refs=["first"]),
                spec(type="work", idempotency_key="k1"),
                spec(type="report.daily"),
            ]
        )
    )
    world.job_ids = [job.id for job in submitted.jobs]
    await jobs.CancelJob(job_service_pb2.CancelJobRequest(id=world.job_ids[-1], reason="world"))
    schedules = schedule_service_pb2_grpc.ScheduleServiceStub(channel)
    for name, paused in (("nightly", False), ("weekly", True)):
        created = await schedules.CreateSchedule(
            schedule_service_pb2.CreateScheduleRequest(
                schedule=schedule_service_pb2.Schedule(
                    name=name, cron="0 2 * * *", job_template=spec(type="work"), paused=paused
                )
            )
        )
        world.schedule_ids.append(created.schedule.id)
    keys = auth_service_pb2_grpc.AuthServiceStub(channel)
    key = await keys.CreateApiKey(
        auth_service_pb2.CreateApiKeyRequest(name="ci", role="viewer", tenants=["default"])
    )
    world.api_key_ids.append(key.api_key.id)
    return world
