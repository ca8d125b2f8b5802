"""gRPC health (grpc.health.v1): SERVING while the job store answers, NOT_SERVING otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc_health.v1 import health, health_pb2

from scheduler.domain.errors import DatabaseUnavailable
from scheduler.store.database import Database

log = logging.getLogger("jobsched.health")

SERVICES = ("", "jobsched.v1.JobService")


class DatabaseHealthProbe:
    """Pings the database every `interval` seconds and publishes the result (start/stop service)."""

    def __init__(
        self,
        db: Database,
        servicer: health.aio.HealthServicer,
        *,
        interval: float = 1.0,
        timeout: float = 2.0,
    ) -> None:
        self.db = db
        self.servicer = servicer
        self.interval = interval
        self.timeout = timeout
        self._task: asyncio.Task[None] | None = None
        self._serving: bool | None = None

    async def check_once(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                await self.db.ping()
            ok = True
        except (DatabaseUnavailable, TimeoutError) as exc:
            ok = False
            if self._serving is not False:
                log.warning("database unreachable", extra={"fields": {"error": str(exc)}})
        if ok != self._serving:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if ok
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for service in SERVICES:
                await self.servicer.set(service, status)
            self._serving = ok
        return ok

    async def start(self) -> None:
        await self.check_once()
        self._task = asyncio.create_task(self._run(), name="db-health-probe")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check_once()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.servicer.enter_graceful_shutdown()
