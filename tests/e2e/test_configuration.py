"""A configuration file, as an operator uses one: a scheduler, an executor and the CLI all
configured from one TOML file (`--config FILE` or JOBSCHED_CONFIG), nothing on their command
lines; `jobsched config show` says where each value came from and never prints a password; a
bad file stops a program at start with one error naming the file and the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobsched.client import JobschedClient
from jobsched.errors import JobNotFoundError
from jobsched.v1 import job_pb2
from tests.faults.harness import Service, cluster_status, free_port, wait_serving
from tests.helpers import assert_eventually

PASSWORD = "file-s3cret"


def clean_environment(**extra: str) -> dict[str, str]:
    """The test's environment without anything that would configure jobsched."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("JOBSCHED_") and key != "DATABASE_URL"
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def jobsched(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobsched", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


async def start(
    services: list[Service], name: str, argv: list[str], env: dict[str, str], log_dir: Path
) -> Service:
    service = Service(name=name, argv=argv, log=log_dir / f"{name}.log", environment=env)
    services.append(service)
    await service.start()
    return service


@pytest.mark.timeout(90)
async def test_a_scheduler_an_executor_and_the_cli_run_from_one_file(
    database_url: str, tmp_path: Path, services: list[Service]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    path = tmp_path / "jobsched.toml"
    path.write_text(
        f"""
[scheduler]
listen = "{address}"
database_url = "{database_url}"
no_migrate = true
heartbeat_interval = 1.0
presence_interval = 0.5

[executor]
schedulers = ["dns:///{address}"]  # as a headless Service is named
name = "configured-by-file"
capacity = 3
queues = ["filed"]

[client]
address = "{address}"
tenant = "acme"
timeout = 10.0
"""
    )
    env = clean_environment()
    await start(services, "scheduler", ["-m", "scheduler", "--config", str(path)], env, tmp_path)
    await wait_serving(address)
    executor_env = clean_environment(JOBSCHED_CONFIG=str(path))
    await start(services, "executor", ["-m", "executor"], executor_env, tmp_path)

    async def executor_registered() -> None:
        status = await cluster_status(address)
        executors = [e for replica in status.replicas for e in replica.executors]
        assert [(e.name, e.capacity, list(e.queues)) for e in executors] == [
            ("configured-by-file", 3, ["filed"])
        ]

    await assert_eventually(executor_registered, within=20)

    submitted = jobsched(
        "--config", str(path), "submit", "--type", "noop", "--queue", "filed", env=env
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().splitlines()[-1]
    async with JobschedClient(address, tenant="acme") as client:

        async def succeeded() -> None:
            assert (await client.get(job_id)).state == job_pb2.JOB_STATE_SUCCEEDED

        await assert_eventually(succeeded, within=20)
    # The client's tenant came from the file too: another tenant does not see the job.
    async with JobschedClient(address, tenant="default") as client:
        with pytest.raises(JobNotFoundError):
            await client.get(job_id)


def test_config_show_names_each_source_and_hides_passwords(tmp_path: Path) -> None:
    path = tmp_path / "jobsched.toml"
    path.write_text(
        '[scheduler]\nlease = 45.0\nlisten = "0.0.0.0:7000"\n'
        "[executor]\ncapacity = 4\n"
        '[client]\ntimeout = 12.0\naddress = "10.1.2.3:50051"\n'
    )
    env = clean_environment(
        JOBSCHED_CONFIG=str(path),
        JOBSCHED_LISTEN="0.0.0.0:7001",
        DATABASE_URL=f"postgresql://jobs:{PASSWORD}@db.internal:5432/jobsched",
    )
    shown = jobsched("--timeout", "3", "config", "show", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert PASSWORD not in shown.stdout + shown.stderr
    report = json.loads(shown.stdout)
    assert report["file"] == str(path)
    scheduler = report["sections"]["scheduler"]
    assert scheduler["lease"] == {"value": 45.0, "source": "file"}
    assert scheduler["listen"] == {"value": "0.0.0.0:7001", "source": "env JOBSCHED_LISTEN"}
    assert scheduler["database_url"] == {
        "value": "postgresql://jobs:***@db.internal:5432/jobsched",
        "source": "env DATABASE_URL",
    }
    assert scheduler["heartbeat_interval"] == {"value": 3.0, "source": "default"}
    assert report["sections"]["executor"]["capacity"] == {"value": 4, "source": "file"}
    client = report["sections"]["client"]
    assert client["timeout"] == {"value": 3.0, "source": "flag"}
    assert client["address"] == {"value": "10.1.2.3:50051", "source": "file"}

    toml = jobsched("config", "show", "scheduler", env=env)
    assert toml.returncode == 0, toml.stderr
    assert f"# configuration file: {path}" in toml.stdout
    assert "[executor]" not in toml.stdout
    lease = next(line for line in toml.stdout.splitlines() if line.startswith("lease = "))
    assert lease.split() == ["lease", "=", "45.0", "#", "file"]
    assert PASSWORD not in toml.stdout


@pytest.mark.parametrize(
    ("program", "text", "expected"),
    [
        (
            "scheduler",
            "[scheduler]\nheartbeat_intervall = 3.0\n",
            "has no key 'heartbeat_intervall'",
        ),
        ("scheduler", "[scheduler]\nlease = 'soon'\n", "lease = 'soon'"),
        ("scheduler", "[scheduler]\nmax_streams = 0\n", "max_streams = 0"),
        ("executor", "[executor]\ncapacity = 0\n", "capacity = 0"),
        ("executor", "[executor]\nschedulers = 'a:1'\n", "expected a list"),
        ("executor", "[executr]\ncapacity = 2\n", "no table [executr]"),
    ],
)
def test_a_bad_file_stops_the_program_naming_the_file_and_the_key(
    tmp_path: Path, program: str, text: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", program, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_environment(),
    )
    assert result.returncode == 2, result.stderr
    [error] = [line for line in result.stderr.splitlines() if "error:" in line]
    assert str(path) in error
    assert expected in error
    assert "Traceback" not in result.stderr


def test_config_show_refuses_a_program_it_does_not_know() -> None:
    shown = jobsched("config", "show", "schedular", env=clean_environment())
    assert shown.returncode == 2
    assert shown.stdout == ""
    assert shown.stderr.strip() == (
        "jobsched: config show: no program 'schedular' (one of scheduler, executor, dashboard, client)"
    )
