"""Replica presence (a start/stop service): every `interval` seconds this replica records itself
(id, address, connected executors) in scheduler_replicas, for GetClusterStatus; stopping removes
the row. A replica not seen for three intervals is reported as gone. Each report is one
statement in autocommit (the upsert and the count of the other live replicas together), so no
BEGIN and COMMIT around it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.domain.errors import JobschedError
from scheduler.store.database import Database
from scheduler.store.leadership import ExecutorPresence, delete_replica, upsert_replica

log = logging.getLogger("jobsched.cluster")


def new_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class ReplicaPresence:
    def __init__(
        self,
        db: Database,
        replica_id: str,
        dispatcher: Dispatcher,
        clock: Callable[[], datetime],
        *,
        interval: float = 5.0,
    ) -> None:
        self.db = db
        self.replica_id = replica_id
        self.dispatcher = dispatcher
        self.clock = clock
        self.interval = interval
        self.address = ""
        self.started_at = clock()
        # Other live replicas at the last report: job changes are forwarded only when some.
        self.peers = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self, address: str) -> None:
        self.address = address
        self._task = asyncio.create_task(self._run(), name="replica-presence")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(JobschedError):
            async with self.db.read() as conn:  # one statement: autocommit
                await delete_replica(conn, self.replica_id)

    def executors(self) -> list[ExecutorPresence]:
        return [
            ExecutorPresence(
                name=session.name,
                capacity=session.capacity,
                running=len(session.in_flight),
                job_types=session.job_types,
                queues=session.queues,
                draining=session.draining,
            )
            for session in self.dispatcher.sessions.values()
            if not session.closed
        ]

    async def report(self) -> None:
        now = self.clock()
        async with self.db.read() as conn:  # one statement: autocommit
            self.peers = await upsert_replica(
                conn,
                self.replica_id,
                self.address,
                self.started_at,
                now,
                self.executors(),
                now - timedelta(seconds=3 * self.interval),
            )

    async def _run(self) -> None:
        while True:
            try:
                await self.report()
            except JobschedError as exc:
                log.warning("presence not recorded", extra={"fields": {"error": str(exc)}})
            await asyncio.sleep(self.interval)
