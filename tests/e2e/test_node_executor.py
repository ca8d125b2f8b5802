"""examples/node-executor against a real scheduler process: node.echo submitted from Python runs
on the Node.js executor, which reports progress and log lines and returns its result; SIGTERM
drains it and it exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2
from tests.faults.harness import Cluster
from tests.helpers import assert_eventually
from tests.node import ROOT, TS_CLIENT, node_tools, run

EXAMPLE = ROOT / "examples" / "node-executor"


@pytest.mark.timeout(120)
async def test_the_node_executor_runs_node_echo_to_succeeded(
    database_url: str, tmp_path: Path
) -> None:
    node, npm = node_tools()
    assert (EXAMPLE / "node_modules" / "@jobsched" / "client").exists(), (
        "examples/node-executor/node_modules is missing: run `make node-deps` (npm ci) first"
    )
    code, output = await run(npm, "run", "build", "--silent", cwd=TS_CLIENT, env={})
    assert code == 0, output
    cluster = Cluster(database_url, tmp_path)
    log = (tmp_path / "node-executor.log").open("wb")
    executor: asyncio.subprocess.Process | None = None
    try:
        scheduler = await cluster.scheduler("scheduler")
        executor = await asyncio.create_subprocess_exec(
            node,
            str(EXAMPLE / "executor.mjs"),
            cwd=EXAMPLE,
            env={**os.environ, "JOBSCHED_ADDRESS": scheduler.address,
                 "JOBSCHED_EXECUTOR_NAME": "node-example"},
            stdout=log,
            stderr=log,
        )  # fmt: skip
        async with JobschedClient(scheduler.address, timeout=10) as client:
            job = await client.submit(
                "node.echo", payload={"message": "hello from Python", "steps": 4, "step_ms": 20}
            )

            async def succeeded() -> job_pb2.Job:
                current = await client.get(job.id)
                assert current.state == job_pb2.JOB_STATE_SUCCEEDED, current
                return current

            done = await assert_eventually(succeeded, within=30)
            assert json.loads(done.result) == {
                "echo": "hello from Python",
                "steps": 4,
                "executor": "node",
                "attempt": 1,
            }
            assert done.progress.percent == 100
            assert done.progress.step == "step 4"
            assert done.executor == "node-example"
            lines = [line.line async for line in client.logs(job.id)]
            assert lines == [f"step {n} of 4" for n in range(1, 5)]
        executor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(executor.wait(), 20) == 0
    finally:
        if executor is not None and executor.returncode is None:
            executor.kill()
            await executor.wait()
        log.close()
        await cluster.close()
        print(cluster.logs())
        print((tmp_path / "node-executor.log").read_text(errors="replace")[-3000:])
