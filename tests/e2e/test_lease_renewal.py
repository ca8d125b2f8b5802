"""Heartbeats keep a long job's lease, renewing it when it runs low rather than at every
heartbeat: each renewal rewrites the job's row and an entry in every index of `jobs`."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import grpc
from sqlalchemy import text

from executor.handlers import JobContext, builtin_registry
from executor.runner import Executor
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.store.database import Database
from tests.helpers import assert_eventually
from tests.scripted import serving, state_of

LEASE = timedelta(seconds=2)
HEARTBEAT = 0.05  # seconds: the leases are renewed when they end within max(1 s, 0.15 s)
HEARTBEATS = 80  # about two leases' worth


async def test_a_job_running_for_two_leases_keeps_its_lease_renewed_when_it_runs_low(
    db: Database,
) -> None:
    release = asyncio.Event()

    async def hold(ctx: JobContext) -> str:
        await release.wait()
        return "done"

    async with (
        serving(db, lease=LEASE, heartbeat_interval=HEARTBEAT, leader_tick=0.1) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        executor = Executor(
            [server.address], name="holder", capacity=1, registry=builtin_registry([("hold", hold)])
        )
        await executor.start()
        try:
            await executor.wait_registered()
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            response = await stub.SubmitJob(
                job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="hold"))
            )
            job_id = response.job.id

            async def running() -> None:
                assert executor.running

            await assert_eventually(running)
            first = server.dispatcher.heartbeats
            leases: list[tuple[datetime, datetime]] = []  # (read at, lease end)
            while server.dispatcher.heartbeats - first < HEARTBEATS:
                async with db.read() as conn:
                    row = (
                        await conn.execute(
                            text("SELECT now(), lease_expires_at FROM jobs WHERE id = :id"),
                            {"id": job_id},
                        )
                    ).one()
                leases.append((row[0], row[1]))
                await asyncio.sleep(0.02)  # the polling period of this check
            heartbeats = server.dispatcher.heartbeats - first
            job = await state_of(stub, job_id)
            assert job.state == job_pb2.JOB_STATE_RUNNING
            assert job.attempt == 1  # never rescued: its lease held for two leases' time
            assert all(end > read_at for read_at, end in leases)
            renewals = len({end for _, end in leases}) - 1
            # Renewed about once per second (every ~20 heartbeats); each heartbeat before.
            assert 1 <= renewals <= heartbeats // 4, (renewals, heartbeats)
        finally:
            release.set()
            await executor.stop(grace=5)
