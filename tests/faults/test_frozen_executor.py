"""A frozen executor (SIGSTOP: its TCP connection and stream stay open, its heartbeats stop) with
free slots, next to a healthy one: the scheduler stops assigning to it after two heartbeat
intervals and ends its session after heartbeat_timeout, so work submitted meanwhile all runs on
the healthy executor, long before an ack timeout (10 s) could revert anything."""

from __future__ import annotations

import signal
import time

from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2
from scheduler.store.database import Database
from tests.faults.harness import Cluster, check_nothing_lost, cluster_status
from tests.helpers import assert_eventually

HEARTBEAT = 0.3  # tests/faults/harness.py
TIMEOUT = 4 * HEARTBEAT  # the default heartbeat timeout
PRESENCE = 0.3
# The frozen session ends within the timeout plus a presence report and a loaded machine's lag.
SESSION_BOUND = TIMEOUT + 2 * PRESENCE + 2.0


async def executors_of(address: str) -> set[str]:
    status = await cluster_status(address)
    return {e.name for r in status.replicas for e in r.executors}


async def test_work_goes_around_a_frozen_executor_and_its_session_ends(
    cluster: Cluster, db: Database
) -> None:
    scheduler = await cluster.scheduler("s1")
    frozen = await cluster.executor("frozen", [scheduler.address], capacity=4)
    await cluster.executor("healthy", [scheduler.address], capacity=2)

    async def both_connected() -> None:
        assert await executors_of(scheduler.address) == {"frozen", "healthy"}

    await assert_eventually(both_connected, within=20)
    frozen.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        async with JobschedClient(scheduler.address) as client:
            # More than the healthy one's slots: undetected, the frozen one's free slots would
            # take some (and hold them for the 10 s ack timeout).
            jobs = [await client.submit("sleep", payload={"seconds": 0.2}) for _ in range(8)]

            async def all_done() -> None:
                for job in jobs:
                    current = await client.get(job.id)
                    assert current.state == job_pb2.JOB_STATE_SUCCEEDED
                    assert current.executor == "healthy"

            await assert_eventually(all_done, within=8)
            assert time.monotonic() - stopped_at < 8  # well within the ack timeout

            async def session_ended() -> None:
                assert await executors_of(scheduler.address) == {"healthy"}

            await assert_eventually(session_ended, within=SESSION_BOUND)
            ended_after = time.monotonic() - stopped_at
            assert ended_after < SESSION_BOUND, f"frozen session ended after {ended_after:.1f}s"
            assert ended_after >= TIMEOUT - HEARTBEAT  # not before it fell silent long enough
    finally:
        frozen.signal(signal.SIGCONT)
    await check_nothing_lost(db, [j.id for j in jobs])
