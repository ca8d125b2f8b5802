"""The `jobsched` CLI and the JobschedClient against a real scheduler process.

The scheduler runs as `python -m scheduler --listen 127.0.0.1:0` on a fresh database; the CLI runs
as its console script, so exit codes and output are exactly what a user sees.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from jobsched import cli
from jobsched.client import JobschedClient
from jobsched.errors import InvalidArgumentError, JobNotFoundError
from jobsched.v1 import job_pb2

STARTUP_TIMEOUT = 30.0
CLI_TIMEOUT = 30.0


def _jobsched_command() -> list[str]:
    script = Path(sys.executable).with_name("jobsched")
    if script.exists():
        return [str(script)]
    # Not installed as a console script (e.g. a bare checkout): same entry point, same semantics.
    return [sys.executable, "-c", "import sys; from jobsched.cli import main; sys.exit(main())"]


JOBSCHED = _jobsched_command()


@pytest.fixture
def scheduler_address(database_url: str) -> Iterator[str]:
    """Start `python -m scheduler` on a free port; yield the address it reports listening on."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scheduler",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
            "--no-migrate",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # The listening line must not sit in a block buffer of a piped stdout.
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def drain() -> None:
        # Keep reading for the server's whole life: a full pipe would block its logging.
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=drain, name="scheduler-stdout", daemon=True)
    reader.start()
    try:
        address = _wait_listening(lines, time.monotonic() + STARTUP_TIMEOUT)
        if address is None:
            pytest.fail("scheduler did not report listening; its output:\n" + "".join(output))
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        proc.stdout.close()


def _wait_listening(lines: queue.Queue[str | None], deadline: float) -> str | None:
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            return None
        if line is None:  # the process exited
            return None
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("event") == "scheduler.listening":
            return str(record["address"])
    return None


def jobsched(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*JOBSCHED, "--address", address, *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}; stderr:\n{result.stderr}"
    return result.stdout


def test_cli_job_lifecycle(scheduler_address: str):
    payload = '{"to": "ada@example.com"}'
    submitted = json.loads(
        ok(
            jobsched(
                scheduler_address,
                "submit",
                "--type",
                "Email.Send",
                "--queue",
                "Mail",
                "--payload",
                payload,
                "--priority",
                "high",
                "--label",
                "team=core",
                "--json",
            )
        )
    )
    job_id = submitted["id"]
    assert uuid.UUID(job_id)
    assert submitted["type"] == "email.send"
    assert submitted["queue"] == "mail"
    assert submitted["priority"] == 75
    assert submitted["state"] == "JOB_STATE_QUEUED"
    assert submitted["labels"] == {"team": "core"}

    status = json.loads(ok(jobsched(scheduler_address, "status", job_id, "--json")))
    assert status["id"] == job_id
    assert base64.b64decode(status["payload"]) == payload.encode()

    with_events = json.loads(
        ok(jobsched(scheduler_address, "status", job_id, "--events", "--json"))
    )
    assert with_events["job"]["id"] == job_id
    assert [e["to_state"] for e in with_events["events"]] == ["JOB_STATE_QUEUED"]

    readable = ok(jobsched(scheduler_address, "status", job_id, "--events"))
    assert job_id in readable
    assert "queued" in readable

    active = json.loads(ok(jobsched(scheduler_address, "ls", "--active", "--json")))
    assert [job["id"] for job in active] == [job_id]
    assert job_id in ok(jobsched(scheduler_address, "ls"))
    queued_only = json.loads(
        ok(jobsched(scheduler_address, "ls", "--state", "queued", "--queue", "MAIL", "--json"))
    )
    assert [job["id"] for job in queued_only] == [job_id]

    ok(jobsched(scheduler_address, "cancel", job_id, "--reason", "not needed"))
    cancelled = json.loads(ok(jobsched(scheduler_address, "status", job_id, "--json")))
    assert cancelled["state"] == "JOB_STATE_CANCELLED"
    assert json.loads(ok(jobsched(scheduler_address, "ls", "--active", "--json"))) == []
    history = json.loads(ok(jobsched(scheduler_address, "ls", "--history", "--json")))
    assert [job["id"] for job in history] == [job_id]

    # Cancelling a terminal job is a failed precondition.
    assert jobsched(scheduler_address, "cancel", job_id).returncode == 4

    ok(jobsched(scheduler_address, "retry", job_id))
    retried = json.loads(ok(jobsched(scheduler_address, "status", job_id, "--json")))
    assert retried["state"] == "JOB_STATE_QUEUED"

    ok(jobsched(scheduler_address, "delete", job_id))
    gone = jobsched(scheduler_address, "status", job_id)
    assert gone.returncode == 3
    assert job_id in gone.stderr


def test_cli_submit_prints_the_id(scheduler_address: str):
    job_id = ok(jobsched(scheduler_address, "submit", "--type", "report.build")).strip()
    assert str(uuid.UUID(job_id)) == job_id

    again = ok(
        jobsched(scheduler_address, "submit", "--type", "report.build", "--idempotency-key", "k1")
    )
    same = ok(
        jobsched(scheduler_address, "submit", "--type", "report.build", "--idempotency-key", "k1")
    )
    assert again == same


def test_cli_exit_codes(scheduler_address: str):
    unknown = jobsched(scheduler_address, "status", str(uuid.uuid4()))
    assert unknown.returncode == 3

    invalid_queue = jobsched(scheduler_address, "submit", "--type", "t", "--queue", "Bad Queue!")
    assert invalid_queue.returncode == 2
    assert "job.queue" in invalid_queue.stderr

    assert jobsched(scheduler_address, "retry", str(uuid.uuid4())).returncode == 3
    # Checked by argparse, before any call.
    assert jobsched(scheduler_address, "submit", "--type", "t", "--payload", "{").returncode == 2
    assert jobsched(scheduler_address, "ls", "--state", "sleeping").returncode == 2


def test_cli_exit_code_when_the_scheduler_is_down():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    # Nothing listens there any more: the connection is refused at once.
    result = jobsched(address, "ls")
    assert result.returncode == 5
    assert address in result.stderr


def test_cli_migrate_delegates_to_the_scheduler(empty_database_url: str):
    # Options after the command name belong to `python -m scheduler`, not to jobsched.
    result = subprocess.run(
        [*JOBSCHED, "migrate", "--database-url", empty_database_url],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert ok(result).strip().endswith("is at the latest migration")


def test_cli_scheduler_help_is_the_schedulers(capsys: pytest.CaptureFixture[str]):
    assert cli.main(["scheduler", "--help"]) == 0
    assert "--database-url" in capsys.readouterr().out


def test_cli_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for code in range(6):
        assert f"\n  {code}  " in out


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]):
    assert cli.main(["submit"]) == 2  # --type is required
    assert cli.main(["nonsense"]) == 2
    assert cli.main(["submit", "--type", "t", "--label", "novalue"]) == 2
    assert cli.main(["submit", "--type", "t", "--priority", "urgent"]) == 2
    assert cli.main(["submit", "--type", "t", "--run-at", "tomorrow"]) == 2
    assert "usage:" in capsys.readouterr().err


def test_console_script_is_installed():
    assert shutil.which("jobsched", path=str(Path(sys.executable).parent)) is not None


async def test_client_submit_get_and_pages(scheduler_address: str):
    async with JobschedClient(scheduler_address, tenant="acme", timeout=10) as client:
        ids = [
            (await client.submit("Page.Test", queue="pages", payload={"i": i})).id for i in range(5)
        ]

        job = await client.get(ids[0])
        assert job.state == job_pb2.JOB_STATE_QUEUED
        assert json.loads(job.payload) == {"i": 0}
        job, events = await client.get(ids[0], include_events=True)
        assert [e.to_state for e in events] == [job_pb2.JOB_STATE_QUEUED]

        listed = [j.id async for j in client.list_active(queue="pages", page_size=2)]
        assert sorted(listed) == sorted(ids)
        assert len(listed) == len(set(listed))

        page_sizes = []
        token = ""
        while True:
            jobs, token = await client.list_active_page(
                queue="pages", page_size=2, page_token=token
            )
            page_sizes.append(len(jobs))
            if not token:
                break
        assert page_sizes == [2, 2, 1]

        with pytest.raises(InvalidArgumentError) as excinfo:
            await client.submit("", queue="pages")
        assert excinfo.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "job.type" in [field for field, _ in excinfo.value.field_violations]

        first = await client.submit_job({"type": "once", "idempotency_key": "abc"})
        second = await client.submit_job({"type": "once", "idempotency_key": "abc"})
        assert first.created
        assert not second.created
        assert second.job.id == first.job.id

        batch = await client.submit_many([{"type": "batch", "payload": b"x"}, {"type": "batch"}])
        assert [j.type for j in batch] == ["batch", "batch"]

        cancelled = await client.cancel(ids[4], reason="test")
        assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
        history = [j.id async for j in client.history(states=["cancelled"], page_size=1)]
        assert history == [ids[4]]
        await client.delete(ids[4])
        with pytest.raises(JobNotFoundError):
            await client.get(ids[4])

    # Tenants are isolated: another tenant's job is not found.
    async with JobschedClient(scheduler_address, tenant="other", timeout=10) as other:
        with pytest.raises(JobNotFoundError):
            await other.get(ids[0])
