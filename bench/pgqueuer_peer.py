"""11. The peer: PgQueuer (asyncpg, one worker process, batch 100) on the same PostgreSQL in
the same run, and jobsched's headline figures as ratios to it (issue 19: "ratios measured side
by side are the contract; absolute figures move with the machine").

PgQueuer's own tables go into the benchmark's database next to jobsched's (installed here,
dropped afterwards). Its figures are measured the way jobsched's are:

- throughput: `throughput_jobs` no-op jobs enqueued first, then one worker process (the
  executor's counterpart) drains them; jobs per second from the first pick to the last
  success, both read from PgQueuer's own log table (as jobsched's come from the job rows);
- batch enqueue: `batch_jobs` jobs in multi-row enqueues of `batch_size` (SubmitJobs' batches);
- enqueue to start: single enqueues issued open-loop at `start_rate`, from the enqueue's return
  to the entrypoint starting in the worker process (time.time() on both sides).

The ratios are jobsched / PgQueuer for throughputs (above 1 is faster) and for latencies (below
1 is faster); they are computed from the medians of both, so they need jobsched's measurements
(throughput, submit, start-latency) in the same run: `--only` runs without them report
PgQueuer's figures alone."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from pgqueuer import AsyncpgDriver, Queries

from bench.console import progress
from bench.pgqueuer_worker import ENTRYPOINT
from bench.postgres import asyncpg_dsn
from bench.settings import Sizes
from bench.stats import Figure, Figures, percentile

START_TIMEOUT = 60.0
PEER = "PgQueuer"

_LOG_RATE = """
SELECT count(*) FILTER (WHERE status = 'successful') AS succeeded,
       EXTRACT(EPOCH FROM max(created) FILTER (WHERE status = 'successful')
                        - min(created) FILTER (WHERE status = 'picked')) AS seconds
FROM pgqueuer_log
"""


@asynccontextmanager
async def worker(dsn: str, mode: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    """A `bench.pgqueuer_worker` process, once it says it is ready; yields it and the file it
    writes its report to when it ends."""
    with tempfile.TemporaryDirectory(prefix="jobsched-bench-pgq-") as scratch:
        out = Path(scratch) / "report.json"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.pgqueuer_worker",
            dsn,
            mode,
            str(out),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert process.stdout is not None
            async with asyncio.timeout(START_TIMEOUT):
                line = await process.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"the PgQueuer worker did not start: {line!r}")
            yield process, out
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()


async def _enqueue_batches(queries: Queries, jobs: int, batch: int) -> float:
    """Enqueue `jobs` no-op jobs in batches of `batch`; returns jobs per second."""
    started = time.perf_counter()
    for offset in range(0, jobs, batch):
        n = min(batch, jobs - offset)
        await queries.enqueue([ENTRYPOINT] * n, [b"{}"] * n, [0] * n)
    return jobs / (time.perf_counter() - started)


async def _clear(conn: asyncpg.Connection) -> None:
    await conn.execute("TRUNCATE pgqueuer, pgqueuer_log")


async def _throughput(conn: asyncpg.Connection, dsn: str, sizes: Sizes) -> tuple[float, int]:
    await _clear(conn)
    await _enqueue_batches(Queries(AsyncpgDriver(conn)), sizes.throughput_jobs, 1_000)
    await conn.execute("ANALYZE pgqueuer")
    async with worker(dsn, "drain") as (process, _out):
        async with asyncio.timeout(START_TIMEOUT + sizes.throughput_jobs / 100):
            if await process.wait() != 0:
                raise RuntimeError(f"the PgQueuer worker exited with {process.returncode}")
    row = await conn.fetchrow(_LOG_RATE)
    assert row is not None
    succeeded, seconds = int(row["succeeded"]), float(row["seconds"] or 0)
    if succeeded != sizes.throughput_jobs:
        raise RuntimeError(f"PgQueuer finished {succeeded} of {sizes.throughput_jobs} jobs")
    return succeeded / seconds, succeeded


async def _start_latency(dsn: str, sizes: Sizes) -> list[float]:
    """Milliseconds from each enqueue's return to its start in the worker."""
    count = round(sizes.start_rate * sizes.start_seconds)
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=8)
    try:
        async with worker(dsn, "continuous") as (process, out):
            enqueued: dict[str, float] = {}

            async def enqueue_one() -> None:
                async with pool.acquire() as connection:
                    (job_id,) = await Queries(AsyncpgDriver(connection)).enqueue(ENTRYPOINT, b"{}")
                enqueued[str(job_id)] = time.time()

            loop = asyncio.get_running_loop()
            start = loop.time()
            async with asyncio.TaskGroup() as group:
                for k in range(count):
                    delay = start + k / sizes.start_rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    group.create_task(enqueue_one())
            async with pool.acquire() as connection:
                async with asyncio.timeout(START_TIMEOUT):
                    while await connection.fetchval(  # noqa: ASYNC110 (a database poll)
                        "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
                    ) < len(enqueued):
                        await asyncio.sleep(0.05)
            process.terminate()
            await process.wait()
            started: dict[str, float] = json.loads(out.read_text())["started"]
    finally:
        await pool.close()
    missing = set(enqueued) - set(started)
    if missing:
        raise RuntimeError(f"PgQueuer started {len(started)} of {len(enqueued)} jobs")
    return [(started[j] - t) * 1000 for j, t in enqueued.items()]


async def measure_pgqueuer(
    database_url: str, conn: asyncpg.Connection, sizes: Sizes, figures: Figures
) -> list[str]:
    dsn = asyncpg_dsn(database_url)
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()
    try:
        for repetition in range(1, sizes.repetitions + 1):
            progress(f"{PEER} peer (run {repetition}/{sizes.repetitions})")
            rate, finished = await _throughput(conn, dsn, sizes)
            figures.add(
                PEER_THROUGHPUT, f"{finished:,} no-op jobs, one worker, batch 100", "jobs/s", rate
            )
            await _clear(conn)
            batch_rate = await _enqueue_batches(queries, sizes.batch_jobs, sizes.batch_size)
            figures.add(PEER_ENQUEUE, f"batches of {sizes.batch_size:,}", "jobs/s", batch_rate)
            await _clear(conn)
            samples = await _start_latency(dsn, sizes)
            figures.add(PEER_START, "start latency p50", "ms", percentile(samples, 50))
            figures.add(PEER_START, "start latency p99", "ms", percentile(samples, 99))
            await _clear(conn)
    finally:
        await queries.uninstall()
    return add_ratios(figures)


PEER_THROUGHPUT = f"{PEER} 1.6: throughput"
PEER_ENQUEUE = f"{PEER} 1.6: batch enqueue"
PEER_START = f"{PEER} 1.6: enqueue-to-start, single enqueues at the same rate"
RATIOS = "jobsched / PgQueuer, medians of this run (throughput: above 1 is faster; latency: below)"

# (ratio name, jobsched figure: measurement prefix and name, PgQueuer figure: measurement, name
# prefix). Prefixes, because the measurement names carry the sizes.
_PAIRS = (
    (
        "throughput, 1 scheduler + 1 executor",
        ("Throughput:", "first claim to last result", " 1 scheduler, 1 executor "),
        (PEER_THROUGHPUT, ""),
    ),
    (
        "throughput, 1 scheduler + 4 executors",
        ("Throughput:", "first claim to last result", " 1 scheduler, 4 executors "),
        (PEER_THROUGHPUT, ""),
    ),
    (
        "throughput, 2 replicas + 4 executors",
        ("Throughput:", "first claim to last result", " 2 scheduler replicas, 4 executors"),
        (PEER_THROUGHPUT, ""),
    ),
    ("batch enqueue (SubmitJobs)", ("SubmitJobs", "throughput", ""), (PEER_ENQUEUE, "")),
    (
        "enqueue-to-start p50",
        ("Enqueue-to-start", "start latency p50", ""),
        (PEER_START, "start latency p50"),
    ),
    (
        "enqueue-to-start p99",
        ("Enqueue-to-start", "start latency p99", ""),
        (PEER_START, "start latency p99"),
    ),
)


def _find(figures: Figures, measurement: str, name: str, contains: str = "") -> Figure | None:
    for figure in figures:
        if (
            figure.measurement.startswith(measurement)
            and contains in figure.measurement
            and figure.name.startswith(name)
        ):
            return figure
    return None


def add_ratios(figures: Figures) -> list[str]:
    """Add each ratio whose two figures this run measured; returns a note for the others."""
    missing = []
    for ratio, (ours, our_name, contains), (theirs, their_name) in _PAIRS:
        mine = _find(figures, ours, our_name, contains)
        peer = _find(figures, theirs, their_name)
        if mine is None or peer is None or peer.median == 0:
            missing.append(ratio)
            continue
        figures.add(RATIOS, ratio, "x", mine.median / peer.median)
    if not missing:
        return []
    return [f"Ratios to {PEER} not computed (a measurement not run): {', '.join(missing)}"]
