"""What `make run` gives a newcomer: `jobsched dev` starts the embedded PostgreSQL, migrates,
serves; a client submits a job and reads it back; the job survives a restart. The scheduler runs
as a subprocess without DATABASE_URL, exactly as a user would start it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2
from tests.helpers import assert_eventually

JOBSCHED = str(Path(sys.executable).with_name("jobsched"))
START_TIMEOUT = 60.0


class DevProcess:
    def __init__(self, data_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        # The dashboard next to it on a free port (8080 may be taken on a shared machine).
        env["JOBSCHED_DASHBOARD_LISTEN"] = "127.0.0.1:0"
        self.proc = subprocess.Popen(
            [JOBSCHED, "dev", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.output: list[str] = []
        self.address = self._wait_for_address()

    def _wait_for_address(self) -> str:
        # readline blocks, but the process prints continuously while starting and the per-test
        # timeout bounds a hang; the deadline bounds a process that lives but never listens.
        deadline = time.monotonic() + START_TIMEOUT
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith("{") and '"scheduler.listening"' in line:
                return str(json.loads(line)["address"])
        self.stop()
        raise AssertionError("scheduler did not start:\n" + "".join(self.output))

    def read_rest(self) -> str:
        return "".join(self.output)

    def stop(self) -> int:
        """SIGTERM, wait, and collect the rest of the output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            assert self.proc.stdout is not None
            if not self.proc.stdout.closed:
                self.output.append(self.proc.stdout.read())
                self.proc.stdout.close()
        return code


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "dev"


@pytest.mark.timeout(120)
def test_dev_serves_the_dashboard_next_to_the_scheduler_and_prints_its_url(
    data_dir: Path,
) -> None:
    dev = DevProcess(data_dir)
    try:
        assert dev.proc.stdout is not None
        url = ""
        while not url:
            line = dev.proc.stdout.readline()
            assert line, "jobsched dev ended without a dashboard:\n" + dev.read_rest()
            dev.output.append(line)
            if line.startswith("The dashboard: "):
                url = line.removeprefix("The dashboard: ").strip()
        with urllib.request.urlopen(url + "api/session", timeout=10) as answer:
            session = json.loads(answer.read())
        assert session["auth_required"] is False
        assert "jobs.submit" in session["permissions"]
    finally:
        assert dev.stop() == 0


@pytest.mark.timeout(180)
async def test_dev_scheduler_on_embedded_postgres_serves_and_persists(data_dir: Path) -> None:
    first = DevProcess(data_dir)
    try:
        async with JobschedClient(first.address) as client:
            job = await client.submit("Demo", payload={"hello": "world"}, queue="Emails")
            assert job.state == job_pb2.JOB_STATE_QUEUED
            read_back = await client.get(job.id)
            assert read_back.id == job.id
            assert read_back.type == "demo"
            assert read_back.queue == "emails"
            assert json.loads(read_back.payload) == {"hello": "world"}
            # The dev executor runs the built-in job types.
            demo = await client.submit("sleep", payload={"seconds": 0.2})

            async def succeeded() -> None:
                assert (await client.get(demo.id)).state == job_pb2.JOB_STATE_SUCCEEDED

            await assert_eventually(succeeded, within=20)
    finally:
        assert first.stop() == 0
    output = first.read_rest()
    # The newcomer is told how to submit and read a job, at the address it listens on (not the
    # CLI's default, here: port 0 picked another).
    assert f"jobsched --address {first.address} submit --type sleep" in output
    assert (data_dir / "pgdata" / "PG_VERSION").exists()
    # Stopping the scheduler stops the embedded server it started.
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()

    second = DevProcess(data_dir)
    try:
        async with JobschedClient(second.address) as client:
            again = await client.get(job.id)
            assert again.id == job.id
            assert again.state == job_pb2.JOB_STATE_QUEUED
    finally:
        assert second.stop() == 0
