"""Jobs put into (and taken out of) the benchmark database with SQL, not through the API.

- `clear_jobs`: every measurement that runs jobs starts from an empty jobs table, so that what an
  earlier one left QUEUED (the submit benchmark's jobs, say) is not in its claim path.
- `load_scale`: the read-path data set, in its own tenant: `total` jobs in mixed states, queues
  and types, generated inside PostgreSQL (INSERT ... SELECT FROM generate_series) in chunks.
  Every bucket is a hash of the row number, so the data set is the same in every run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

SCALE_TENANT = "scale"
LOAD_CHUNK = 50_000

# Shares of the data set (per mille of all jobs, or of the active / terminal ones). Chosen so that
# every filtered listing of the read-path benchmark has at least 20 % of its list's jobs: page
# 1,000 of 100 exists for each filter at 1M jobs (and page 100 at 100k).
ACTIVE_SHARE = 500  # of all jobs; the others are terminal
ACTIVE_STATES = (("queued", 400), ("scheduled", 250), ("running", 150), ("waiting", 200))
TERMINAL_STATES = (("succeeded", 600), ("dead", 250), ("cancelled", 150))
QUEUES = (("default", 500), ("emails", 250), ("reports", 150), ("batch", 100))
# No executor of the benchmark handles these types, so the QUEUED ones stay QUEUED.
TYPES = (("resize_image", 400), ("send_email", 300), ("render_pdf", 200), ("sync_crm", 100))


def _bucket(shares: tuple[tuple[str, int], ...], hashed: str) -> str:
    """A SQL CASE picking a label by `hashed` (0..999) with the given per-mille shares."""
    if sum(share for _, share in shares) != 1000:
        raise ValueError(f"shares must add up to 1000: {shares}")
    arms, upper = [], 0
    for label, share in shares[:-1]:
        upper += share
        arms.append(f"WHEN {hashed} < {upper} THEN '{label}'")
    return f"CASE {' '.join(arms)} ELSE '{shares[-1][0]}' END"


def _hash(seed: int) -> str:
    return f"(abs(hashint8extended(i, {seed})) % 1000)"


# One row per i; `$1`/`$2`: the chunk's first and last row number, `$3` the total, `$4` the
# tenant. created_at is spread evenly over the last 30 days (distinct and increasing with i);
# SCHEDULED jobs are due in a week and RUNNING leases expire in a week, so neither the promotion
# nor the lease rescue of a scheduler touches the data set while it is measured.
_LOAD_SQL = f"""
WITH rows AS (
    SELECT i,
        now() - make_interval(secs => ($3 - i) * 2592000.0 / $3) AS created,
        {_hash(1)} < {ACTIVE_SHARE} AS active,
        {_bucket(ACTIVE_STATES, _hash(2))} AS active_state,
        {_bucket(TERMINAL_STATES, _hash(2))} AS terminal_state,
        {_bucket(QUEUES, _hash(3))} AS queue,
        {_bucket(TYPES, _hash(4))} AS type,
        {_hash(5)} AS runtime_s
    FROM generate_series($1::bigint, $2::bigint) AS i
), shaped AS (
    SELECT *, CAST(CASE WHEN active THEN active_state ELSE terminal_state END AS job_state) AS state
    FROM rows
)
INSERT INTO jobs (id, tenant, queue, type, payload, priority, state, attempt, max_attempts, run_at,
                  created_at, updated_at, started_at, finished_at, progress_percent, last_error,
                  result, executor, lease_expires_at, event_seq)
SELECT gen_random_uuid(), $4, queue, type, '\\x7b7d'::bytea, 50, state,
    CASE state WHEN 'dead' THEN 3 WHEN 'running' THEN 1 WHEN 'succeeded' THEN 1 ELSE 0 END,
    3,
    CASE state WHEN 'scheduled' THEN now() + interval '7 days' ELSE created END,
    created,
    created + make_interval(secs => runtime_s + 1),
    CASE WHEN state IN ('running', 'succeeded', 'dead') THEN created + interval '1 second' END,
    CASE WHEN state IN ('succeeded', 'dead', 'cancelled')
         THEN created + make_interval(secs => runtime_s + 1) END,
    CASE state WHEN 'succeeded' THEN 100 ELSE 0 END,
    CASE state WHEN 'dead' THEN 'RuntimeError: benchmark data' END,
    CASE state WHEN 'succeeded' THEN ''::bytea END,
    CASE state WHEN 'running' THEN 'scale-executor-' || (i % 50) END,
    CASE state WHEN 'running' THEN now() + interval '7 days' END,
    0
FROM shaped
"""


@dataclass(frozen=True, slots=True)
class Filter:
    """One filter of a listing, as an API request sets it and as the SQL mirror applies it."""

    name: str
    queue: str = ""
    type: str = ""
    states: tuple[str, ...] = ()  # lower-case labels of the job_state enum


def listing_filters(terminal: bool) -> list[Filter]:
    """No filter, then each filter the list methods take, on the data set's biggest bucket (the
    dead-letter queue for history's state filter)."""
    return [
        Filter("no filter"),
        Filter(f"queue={QUEUES[0][0]}", queue=QUEUES[0][0]),
        Filter(f"type={TYPES[0][0]}", type=TYPES[0][0]),
        Filter("states=DEAD", states=("dead",))
        if terminal
        else Filter("states=QUEUED", states=("queued",)),
    ]


async def clear_jobs(conn: asyncpg.Connection) -> None:
    """Delete every job (their events and log lines go with them: ON DELETE CASCADE, which the
    append-only trigger allows) and vacuum, so that the next measurement starts alike."""
    await conn.execute("DELETE FROM jobs")
    await conn.execute("VACUUM ANALYZE jobs, job_events")


async def load_scale(
    dsn: str, total: int, parallel: int = 2, progress: Callable[[int], None] | None = None
) -> None:
    """Insert the read-path data set (`total` jobs in SCALE_TENANT) over `parallel` connections,
    then VACUUM ANALYZE it as autovacuum would have on a table that size, so that plans and
    visibility are steady, and CHECKPOINT (when allowed) so that the reads measured next do not
    share the disk with the load's writes."""
    chunks = [
        (first, min(total, first + LOAD_CHUNK - 1)) for first in range(1, total + 1, LOAD_CHUNK)
    ]
    loaded = 0

    async def worker() -> None:
        nonlocal loaded
        conn = await asyncpg.connect(dsn)
        try:
            while chunks:
                first, last = chunks.pop(0)
                await conn.execute(_LOAD_SQL, first, last, total, SCALE_TENANT)
                loaded += last - first + 1
                if progress is not None:
                    progress(loaded)
        finally:
            await conn.close()

    async with asyncio.TaskGroup() as group:
        for _ in range(parallel):
            group.create_task(worker())
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE jobs")
        # The load dirtied ~0.5 GB of pages: written now, not by a checkpoint during the reads.
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def sample_jobs(conn: asyncpg.Connection, tenant: str, count: int) -> dict[str, str]:
    """About `count` random jobs of `tenant` (a Bernoulli sample, no full sort): id -> state."""
    total = int(await conn.fetchval("SELECT count(*) FROM jobs WHERE tenant = $1", tenant))
    pct = min(100.0, 100.0 * 2 * count / max(1, total))
    rows = await conn.fetch(
        f"SELECT id::text, state::text FROM jobs TABLESAMPLE BERNOULLI ({pct:.6f}) REPEATABLE (6) "
        "WHERE tenant = $1 LIMIT $2",
        tenant,
        count,
    )
    return {str(r["id"]): str(r["state"]) for r in rows}
