"""One chaos soak (issue 20): an embedded PostgreSQL of its own, scheduler replicas reaching it
through a cuttable proxy, executors, the workload, the fault scheduler; then the faults stop,
every process is left running, the system drains, and the invariant checker reads the result.

The seed fixes every random choice of the workload and of the faults (the timing of real
processes still varies from run to run)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text

from jobsched.client import JobschedClient
from scheduler.store import embedded, migrate
from scheduler.store.database import Database
from tests.faults.cuttable_proxy import CuttableProxy
from tests.faults.harness import Cluster, Service, pg_ctl, wait_serving
from tests.faults.invariants import Violation, check_invariants, histories
from tests.soak.faults import FaultScheduler, Injected, Postgres
from tests.soak.workload import FAILING_GLOB, Workload

ACTIVE = "('waiting', 'queued', 'running', 'scheduled')"


@dataclass(slots=True)
class SoakResult:
    seed: int
    minutes: float
    replicas: int
    executors: int
    counts: dict[str, int]
    states: dict[str, int]
    faults: list[Injected]
    drained_in: float | None
    violations: list[Violation]
    histories: dict[str, list[str]] = field(default_factory=dict)
    logs: str = ""


async def _drain(db: Database, within: float) -> float | None:
    """Seconds until no job is left waiting, queued, running or scheduled (None: not within)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        async with db.read() as conn:
            left = (
                await conn.execute(text(f"SELECT count(*) FROM jobs WHERE state IN {ACTIVE}"))
            ).scalar_one()
        if left == 0:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    return None


async def _ensure_running(service: Service) -> None:
    if service.process is None or service.process.returncode is not None:
        await service.start()


async def soak(
    work_dir: Path, *, minutes: float, seed: int, replicas: int = 2, executors: int = 3
) -> SoakResult:
    rng = random.Random(seed)
    data_dir = work_dir / "pg" / "data"
    pg = await asyncio.to_thread(embedded.start, data_dir, persistent=False, database="jobsched")
    url = pg.url("jobsched")
    await asyncio.to_thread(migrate.upgrade, url)
    proxy = CuttableProxy(url)
    await proxy.start()
    db = Database.from_url(url, pool_size=2)
    cluster = Cluster(proxy.proxied(url), work_dir)
    try:
        schedulers = [await cluster.scheduler(f"scheduler-{i + 1}") for i in range(replicas)]
        addresses = [s.address for s in schedulers]
        workers = [
            await cluster.executor(
                f"executor-{i + 1}",
                addresses[i % replicas :] + addresses[: i % replicas],
                8,
                "--allow-command",
                FAILING_GLOB,
            )
            for i in range(executors)
        ]
        async with JobschedClient(",".join(addresses), timeout=5) as client:
            await client.create_schedule(
                "soak-every-minute", "* * * * *", {"type": "noop"}, overlap="allow"
            )
            workload = Workload(client, random.Random(rng.random()))
            started = time.monotonic()
            faults = FaultScheduler(
                random.Random(rng.random()),
                schedulers,
                workers,
                Postgres(data_dir, pg.socket_dir),
                proxy,
                client,
                started,
            )
            stop = asyncio.Event()
            tasks = [asyncio.create_task(workload.run(stop)), asyncio.create_task(faults.run(stop))]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=minutes * 60)
            stop.set()
            await asyncio.gather(*tasks)
            await faults.heal(_ensure_running)
            for scheduler in schedulers:
                await wait_serving(scheduler.address, within=60)
            # Nothing new for the cron schedule while draining: it has fired its share.
            await client.pause_schedule("soak-every-minute")
            drained_in = await _drain(db, within=180)
            await workload.finish_watchers(within=30)
        violations = await check_invariants(db, workload.observed, settled=True)
        async with db.read() as conn:
            states = {
                str(r[0]): int(r[1])
                for r in await conn.execute(
                    text("SELECT state::text, count(*) FROM jobs GROUP BY 1 ORDER BY 1")
                )
            }
        involved = [j for v in violations for j in v.job_ids[:3]]
        return SoakResult(
            seed=seed,
            minutes=minutes,
            replicas=replicas,
            executors=executors,
            counts=dict(workload.counts),
            states=states,
            faults=faults.injected,
            drained_in=drained_in,
            violations=violations,
            histories=dict(await histories(db, involved)),
            logs=cluster.logs() if violations or drained_in is None else "",
        )
    finally:
        await cluster.close()
        await proxy.cut()
        await db.dispose()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(pg_ctl, data_dir, "stop", "-m", "fast")
