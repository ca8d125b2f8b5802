"""The health checks the image and the compose file declare, run for real against a scheduler.

Docker runs the Dockerfile's HEALTHCHECK with /bin/sh in the container; here the same command
line runs with /bin/sh and the console script of this checkout's virtualenv, JOBSCHED_LISTEN
pointing at a real scheduler on a free port. Docker counts exit 1 as unhealthy (and reserves
the other non-zero codes), so the check must exit exactly 0 or 1.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import yaml
from grpc_health.v1 import health_pb2

from scheduler.domain.auth import new_key
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.deploy.chart import REPO
from tests.deploy.dockerfile import stages
from tests.scripted import serving

BIN = str(Path(sys.executable).parent)


def dockerfile_healthcheck() -> str:
    healthcheck = stages()[-1].last("HEALTHCHECK")
    assert healthcheck is not None
    return healthcheck.arguments.split(" CMD ", 1)[1]


async def run(*argv: str, listen: str) -> int:
    process = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "JOBSCHED_LISTEN": listen},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(30):
        return await process.wait()


async def test_the_image_healthcheck_passes_while_the_scheduler_serves(
    scheduler: SchedulerServer,
) -> None:
    port = scheduler.address.rpartition(":")[2]
    listen = f"0.0.0.0:{port}"  # as in the image: the check asks 127.0.0.1 on that port
    assert await run("/bin/sh", "-c", dockerfile_healthcheck(), listen=listen) == 0


async def test_the_image_healthcheck_fails_with_exit_1_when_not_serving(
    scheduler: SchedulerServer,
) -> None:
    port = scheduler.address.rpartition(":")[2]
    await scheduler.probe.stop()  # so that it does not publish SERVING again
    await scheduler.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await run("/bin/sh", "-c", dockerfile_healthcheck(), listen=f"0.0.0.0:{port}") == 1


async def test_the_image_healthcheck_fails_with_exit_1_when_nothing_listens() -> None:
    # Port 1 (tcpmux) is never served here: the connection is refused.
    assert await run("/bin/sh", "-c", dockerfile_healthcheck(), listen="0.0.0.0:1") == 1


async def test_the_compose_healthcheck_passes_while_the_scheduler_serves(
    scheduler: SchedulerServer,
) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    test = compose["services"]["scheduler-1"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    # The compose check names the container's port; the test scheduler has another.
    argv = [scheduler.address if word == "127.0.0.1:50051" else word for word in test[1:]]
    assert argv != test[1:]
    assert await run(*argv, listen="unused") == 0


async def test_the_health_checks_need_no_key_when_authentication_is_required(
    db: Database,
) -> None:
    """compose and the chart run --auth required: their checks send no key and still pass."""
    async with serving(db, auth="required", bootstrap_key=new_key()) as scheduler:
        port = scheduler.address.rpartition(":")[2]
        assert await run("/bin/sh", "-c", dockerfile_healthcheck(), listen=f"0.0.0.0:{port}") == 0
        compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
        test = compose["services"]["scheduler-1"]["healthcheck"]["test"]
        argv = [scheduler.address if word == "127.0.0.1:50051" else word for word in test[1:]]
        assert await run(*argv, listen="unused") == 0
        # While a call that needs a key is refused: authentication is really on.
        assert (
            await run(
                *[w if w != "health" else "status" for w in argv],
                "7d3a1c7e-0000-4000-8000-000000000000",
                listen="unused",
            )
            != 0
        )
