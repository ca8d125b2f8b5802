"""A database password never reaches a log line or `jobsched config show`: scheduler processes
are run with a password in DATABASE_URL (in the user part, in the query, from a password
file) through a good start, an unreachable server, a malformed URL; every byte they write is
searched for it. API keys never reach the access log."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from jobsched.client import JobschedClient
from jobsched.errors import JobschedError
from scheduler.domain.auth import new_key
from scheduler.store.database import Database
from tests.e2e.test_configuration import clean_environment, jobsched
from tests.scripted import serving

# Each test starts one or two scheduler processes (imports, migrations, a start-up check).
pytestmark = pytest.mark.timeout(180)

PASSWORD = "pw-9f3b1c-s3cret"
UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1


def with_password(url: str) -> str:
    return make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


async def scheduler_output(
    env: dict[str, str], *args: str, until: tuple[str, ...], within: float = 30
) -> tuple[str, int]:
    """Everything a scheduler process writes until each of `until` was written (then it is
    stopped with SIGTERM) or it exits (`until` empty: it must exit by itself): (its output, its
    exit status)."""
    argv = [sys.executable, "-m", "scheduler", "--listen", "127.0.0.1:0", *args]
    env = {"JOBSCHED_LOG_LEVEL": "debug", **env}
    if not until:
        # A plain subprocess (waited for in a thread): asyncio's child watcher once reported
        # a process that exits at once as an "unknown child" with status 255.
        done = await asyncio.to_thread(
            subprocess.run,
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=within,
            check=False,
        )
        return done.stdout.decode(), done.returncode
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    assert process.stdout is not None
    output = ""
    try:
        async with asyncio.timeout(within):
            while not all(text in output for text in until):
                line = await process.stdout.readline()
                if not line:
                    break
                output += line.decode()
    except TimeoutError:
        raise AssertionError(f"never wrote {until}; wrote:\n{output}") from None
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        rest, _ = await process.communicate()
        output += rest.decode()
    assert process.returncode is not None
    return output, process.returncode


async def test_a_good_start_logs_no_password(database_url: str) -> None:
    env = clean_environment(DATABASE_URL=with_password(database_url))
    output, _ = await scheduler_output(env, until=('"scheduler.listening"', '"leader.elected"'))
    assert PASSWORD not in output
    migrated, code = await scheduler_output(env, "--migrate-only", until=())
    assert code == 0, migrated
    assert PASSWORD not in migrated
    assert ":***@" in migrated  # the URL it names, masked


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://jobs:{PASSWORD}@{UNREACHABLE}/jobsched",
        f"postgresql://jobs@{UNREACHABLE}/jobsched?password={PASSWORD}&sslmode=disable",
    ],
)
async def test_connection_errors_log_no_password(url: str) -> None:
    # Without migrations it serves on, and every loop that needs the store logs its failure.
    output, _ = await scheduler_output(
        clean_environment(DATABASE_URL=url),
        "--no-migrate",
        until=('"scheduler.database_unreachable"', '"scheduler.listening"', "notify connection"),
    )
    assert "Connect call failed" in output  # it did try, and said why
    assert PASSWORD not in output
    # With migrations, it stops at once with one line.
    output, code = await scheduler_output(clean_environment(DATABASE_URL=url), until=())
    assert code == 2
    assert PASSWORD not in output
    assert "cannot connect to PostgreSQL at 127.0.0.1:1/jobsched as jobs" in output


async def test_a_password_file_never_shows(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    output, code = await scheduler_output(
        clean_environment(
            DATABASE_URL=f"postgresql://jobs@{UNREACHABLE}/jobsched",
            JOBSCHED_DATABASE_PASSWORD_FILE=str(secret),
        ),
        until=(),
    )
    assert code == 2
    assert PASSWORD not in output


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"postgresql://jobs:{PASSWORD}@db:port/jobsched", "its port is not a number"),
        (f"postgres ql://jobs:{PASSWORD}@db/jobsched", "not a URL"),
    ],
)
async def test_a_malformed_url_is_one_line_without_the_password(url: str, problem: str) -> None:
    output, code = await scheduler_output(clean_environment(DATABASE_URL=url), until=())
    assert code == 2
    assert PASSWORD not in output
    assert "Traceback" not in output
    assert output.strip().splitlines() == [
        "jobsched: the database URL (--database-url, DATABASE_URL) is not a PostgreSQL URL: "
        f"{problem} (postgresql://USER@HOST:PORT/DATABASE)"
    ]


def test_config_show_hides_a_password_in_the_query() -> None:
    env = clean_environment(
        DATABASE_URL=f"postgresql://jobs@db/jobsched?sslmode=require&password={PASSWORD}"
    )
    shown = jobsched("config", "show", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert PASSWORD not in shown.stdout + shown.stderr
    value = json.loads(shown.stdout)["sections"]["scheduler"]["database_url"]["value"]
    assert value == "postgresql://jobs@db/jobsched?sslmode=require&password=***"


async def test_api_keys_never_reach_the_access_log(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin, unknown = new_key(), new_key()
    async with serving(db, auth="required", bootstrap_key=admin) as server:
        async with JobschedClient(server.address, token=admin, timeout=10) as client:
            _, secret = await client.create_api_key("viewer", "viewer", ["default"])
        for token in (secret, unknown, f"{secret}x", "not-a-key"):
            async with JobschedClient(server.address, token=token, timeout=10, retries=0) as c:
                with pytest.raises(JobschedError) as refused:  # not found, or unauthenticated
                    await c.get("7d3a1c7e-0000-4000-8000-000000000000")
                assert secret not in str(refused.value)
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "rpc"]
    assert len(lines) >= 5
    logged = caplog.text + "".join(json.dumps(getattr(r, "fields", {})) for r in caplog.records)
    for token in (admin, secret, unknown):
        assert token not in logged
        assert token[4:20] not in logged  # not even a piece beyond the shown prefix
    assert any(r.fields.get("principal", "").startswith("api_key:") for r in lines)  # type: ignore[attr-defined]
