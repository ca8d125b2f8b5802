"""gRPC health (grpc.health.v1): SERVING while the job store answers, NOT_SERVING otherwise.

Every `interval` the probe decides: if the database answered another statement of this replica
within the interval (`answered_at`: the leader-election connection, which sends one every tick
or renew), that is the answer and no ping is sent; otherwise it pings (`SELECT 1` through the
pool). So an outage turns the status to NOT_SERVING within about interval + timeout either way,
and an idle replica sends no pings of its own.

The probe also drives the store's circuit breaker (scheduler/store/circuit.py): a ping that
does not answer within `timeout` opens it (later calls fail at once instead of each waiting for
its own timeout), and while it is open the probe pings whatever the other connection says; the
ping goes past the breaker and its answer closes it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from grpc_health.v1 import health, health_pb2

from scheduler.domain.errors import DatabaseUnavailable
from scheduler.store.database import Database

log = logging.getLogger("jobsched.health")

SERVICES = ("", "jobsched.v1.JobService")


class DatabaseHealthProbe:
    """Checks the database every `interval` seconds and publishes the result (start/stop
    service). `answered_at` returns the time.monotonic() at which another statement last got an
    answer from the database; a ping is sent only when that is older than the interval."""

    def __init__(
        self,
        db: Database,
        servicer: health.aio.HealthServicer,
        *,
        interval: float = 2.0,
        timeout: float = 2.0,
        answered_at: Callable[[], float] = lambda: -math.inf,
    ) -> None:
        self.db = db
        self.servicer = servicer
        self.interval = interval
        self.timeout = timeout
        self.answered_at = answered_at
        self.pings = 0  # pings sent (the others were answered by recent statements)
        self._task: asyncio.Task[None] | None = None
        self._serving: bool | None = None

    @property
    def serving(self) -> bool:
        """What the probe last published: the store answered (also /readyz's answer)."""
        return self._serving is True

    async def check_once(self, *, ping: bool = False) -> bool:
        """Publish whether the database answers; `ping` forces a ping."""
        recent = time.monotonic() - self.answered_at() < self.interval
        if not ping and recent and not self.db.circuit.is_open:
            return await self._publish(True)
        try:
            self.pings += 1
            async with asyncio.timeout(self.timeout):
                await self.db.ping()
            ok = True
        except (DatabaseUnavailable, TimeoutError) as exc:
            ok = False
            if isinstance(exc, TimeoutError):
                self.db.mark_unreachable()
            if self._serving is not False:
                error = str(exc.__cause__ or exc) or type(exc).__name__
                log.warning("database unreachable", extra={"fields": {"error": error}})
        return await self._publish(ok)

    async def _publish(self, ok: bool) -> bool:
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
        await self.check_once(ping=True)
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
