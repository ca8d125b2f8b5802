"""The health probe pings the database only when no other statement got an answer within its
interval, and a failing ping still turns the status to NOT_SERVING."""

from __future__ import annotations

import math
import time
from typing import cast

from grpc_health.v1 import health, health_pb2

from scheduler.api.health import DatabaseHealthProbe
from scheduler.domain.errors import DatabaseUnavailable
from scheduler.store.circuit import Circuit
from scheduler.store.database import Database

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class FakeDatabase:
    def __init__(self) -> None:
        self.up = True
        self.pings = 0
        self.circuit = Circuit()

    def mark_unreachable(self) -> None:
        self.circuit.failed()  # a real Database also starts its recovery pings

    async def ping(self) -> None:
        self.pings += 1
        if not self.up:
            raise DatabaseUnavailable("down")


async def status(servicer: health.aio.HealthServicer) -> int:
    response = await servicer.Check(health_pb2.HealthCheckRequest(service=""), None)
    return int(response.status)


async def test_a_recent_answer_stands_in_for_the_ping_and_an_old_one_does_not() -> None:
    db = FakeDatabase()
    answered = [time.monotonic()]
    servicer = health.aio.HealthServicer()
    probe = DatabaseHealthProbe(
        cast(Database, db), servicer, interval=2.0, answered_at=lambda: answered[0]
    )
    assert await probe.check_once()
    assert db.pings == 0
    assert await status(servicer) == SERVING

    answered[0] = -math.inf  # nothing answered lately (the database went away)
    db.up = False
    assert not await probe.check_once()
    assert db.pings == 1
    assert await status(servicer) == NOT_SERVING

    db.up = True
    assert await probe.check_once()
    assert await status(servicer) == SERVING


async def test_start_always_pings() -> None:
    db = FakeDatabase()
    probe = DatabaseHealthProbe(
        cast(Database, db), health.aio.HealthServicer(), answered_at=time.monotonic
    )
    await probe.start()
    try:
        assert db.pings == 1
    finally:
        await probe.stop()
