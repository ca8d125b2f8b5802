"""One PgQueuer worker process for the peer measurement (bench/pgqueuer_peer.py): the setup
the issue's side-by-side table names, asyncpg, one QueueManager, batch 100, a no-op
entrypoint. Run as `python -m bench.pgqueuer_worker DSN MODE OUT`:

- `drain`: runs until the queue is empty and every job has finished, then writes
  {"first_start": t, "end": t, "jobs": n} (time.time()) to OUT;
- `continuous`: runs until SIGTERM, then writes {"started": {job id: time.time()}} to OUT.

It prints "ready" on stdout once its listener is up, so the parent knows when to start."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
from pgqueuer.types import QueueExecutionMode

ENTRYPOINT = "bench_noop"
BATCH_SIZE = 100


async def work(dsn: str, mode: str) -> dict[str, object]:
    connection = await asyncpg.connect(dsn)
    manager = QueueManager(Queries(AsyncpgDriver(connection)))
    started: dict[str, float] = {}

    @manager.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        started[str(job.id)] = time.time()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, manager.shutdown.set)
    drain = mode == "drain"
    print("ready", flush=True)
    await manager.run(
        batch_size=BATCH_SIZE,
        dequeue_timeout=timedelta(seconds=1),
        mode=QueueExecutionMode.drain if drain else QueueExecutionMode.continuous,
        # The log rows stay where the peer measurement reads them (no folding into statistics).
        log_aggregation_interval=timedelta(0),
    )
    end = time.time()
    await connection.close()
    if drain:
        return {"first_start": min(started.values(), default=end), "end": end, "jobs": len(started)}
    return {"started": started}


if __name__ == "__main__":
    Path(sys.argv[3]).write_text(json.dumps(asyncio.run(work(sys.argv[1], sys.argv[2]))))
