"""`jobsched dashboard` as a user runs it: a process serving on the address of --listen (or of
the config file's [dashboard] table), a client of the scheduler it is given; bad input is one
line and exit 2."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import httpx

from scheduler.server import SchedulerServer
from tests.cli import JOBSCHED
from tests.faults.harness import free_port


async def serving_url(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    async with asyncio.timeout(30):
        while True:
            line = (await process.stderr.readline()).decode()
            assert line, "jobsched dashboard ended before serving"
            if line.startswith("jobsched dashboard on "):
                return line.removeprefix("jobsched dashboard on ").strip()


async def run_dashboard(*argv: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        JOBSCHED, "dashboard", *argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    try:
        return process, await serving_url(process)
    except BaseException:
        process.kill()
        await process.wait()
        raise


async def stop(process: asyncio.subprocess.Process) -> int:
    process.terminate()
    async with asyncio.timeout(20):
        return await process.wait()


async def test_the_command_serves_the_api_for_the_scheduler_it_is_given(
    scheduler: SchedulerServer, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "jobsched.toml"
    config.write_text(
        f'[dashboard]\nlisten = "127.0.0.1:{port}"\nschedulers = ["{scheduler.address}"]\n'
    )
    process, url = await run_dashboard("--config", str(config))
    try:
        assert url == f"http://127.0.0.1:{port}/"
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            session = (await http.get("/api/session")).json()
            assert session["auth_required"] is False
            made = await http.post(
                "/api/jobs", json={"type": "x"}, headers={"x-csrf-token": session["csrf_token"]}
            )
            assert made.status_code == 201
            listed = (await http.get("/api/jobs")).json()["jobs"]
            assert [job["id"] for job in listed] == [made.json()["job"]["id"]]
    finally:
        assert await stop(process) == 0


def test_a_bad_listen_address_is_one_line_and_exit_2() -> None:
    result = subprocess.run(
        [JOBSCHED, "dashboard", "--listen", "nowhere"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "jobsched dashboard: 'nowhere' is not HOST:PORT"


def test_config_show_prints_the_dashboard_table(tmp_path: Path) -> None:
    config = tmp_path / "jobsched.toml"
    config.write_text('[dashboard]\nlisten = "127.0.0.1:9000"\nsession_secret = "s3cret"\n')
    result = subprocess.run(
        [JOBSCHED, "--config", str(config), "config", "show", "dashboard", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)["sections"]["dashboard"]
    assert shown["listen"]["value"] == "127.0.0.1:9000"
    assert "s3cret" not in result.stdout
