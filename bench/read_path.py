"""5. The read path at scale: `Sizes.scale_jobs` jobs in mixed states, queues and types (loaded
with SQL, bench/dataset.py, in their own tenant), then

- GetJobStatus on random ids, one call at a time: p50, p99; the p99 of QUEUED jobs (whose
  status carries a waiting reason) and of the others; and the store's job-row SELECT alone on
  the benchmark's connection (same ids), to tell the database's share apart;
- ListActiveJobs and GetJobHistory, with no filter and under each filter (queue, type, states),
  the first page and page `Sizes.deep_page` (reached by walking next_page_token): p50, p95;
- that deep page fetched by SQL two ways on the benchmark's own connection: the keyset query the
  store runs (mirrored here with its column list) and the same query with OFFSET; their p50s and
  the ratio OFFSET / keyset. The first row of both is checked against the API's deep page.

The load runs without a scheduler; the scheduler then only serves these reads (no executor is
connected, and the data set's SCHEDULED and RUNNING jobs are due in a week).
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc

from bench import targets
from bench.console import progress
from bench.dataset import (
    SCALE_TENANT,
    Filter,
    clear_jobs,
    listing_filters,
    load_scale,
    sample_jobs,
)
from bench.postgres import BenchDatabase, asyncpg_dsn
from bench.scheduler_process import running_scheduler
from bench.settings import Sizes
from bench.stats import Figures, percentile
from bench.workloads import sequential_latencies
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

if TYPE_CHECKING:  # a typing-only class of the generated stubs
    from jobsched.v1.job_service_pb2_grpc import JobServiceAsyncStub
from scheduler.store.jobs import FULL_COLUMNS, LIST_COLUMNS

METADATA = (("x-jobsched-tenant", SCALE_TENANT),)
WALK_PAGE_SIZE = 1_000  # the API's maximum: the deep page's token is reached in fewer calls
WARM_UP_CALLS = 10
SEED = 6

# The store's GetJobStatus statement (select_job).
_SELECT_JOB = f"SELECT {FULL_COLUMNS} FROM jobs WHERE tenant = $1 AND id = $2::uuid"
_ACTIVE = ("waiting", "scheduled", "queued", "running")
_TERMINAL = ("succeeded", "dead", "cancelled")


@dataclass(frozen=True, slots=True)
class Listing:
    """ListActiveJobs or GetJobHistory, and the SQL the store runs for it."""

    method: str
    terminal: bool

    @property
    def order(self) -> str:
        return "finished_at DESC, id DESC" if self.terminal else "created_at, id"

    @property
    def key(self) -> str:
        return "finished_at" if self.terminal else "created_at"

    def request(self, f: Filter, page_size: int, token: str = "") -> Any:
        states = [job_pb2.JobState.Value(f"JOB_STATE_{s.upper()}") for s in f.states]
        message = (
            job_service_pb2.GetJobHistoryRequest
            if self.terminal
            else job_service_pb2.ListActiveJobsRequest
        )
        return message(
            queue=f.queue, type=f.type, states=states, page_size=page_size, page_token=token
        )

    def sql(self, f: Filter, *, keyset: bool, offset: bool) -> tuple[str, list[Any]]:
        """The store's page query (select_active_page / select_history_page) for filter `f`;
        `keyset` adds the cursor predicate ($n, $n+1: the key of the previous page's last row),
        `offset` an OFFSET parameter instead."""
        states = f.states or (_TERMINAL if self.terminal else _ACTIVE)
        where = ["tenant = $1", f"state IN ({', '.join(repr(s) for s in states)})"]
        params: list[Any] = [SCALE_TENANT]
        if f.queue:
            params.append(f.queue)
            where.append(f"queue = ${len(params)}")
        if f.type:
            params.append(f.type)
            where.append(f"type = ${len(params)}")
        where.append("finished_at IS NOT NULL" if self.terminal else f"state IN {tuple(_ACTIVE)!r}")
        if keyset:
            where.append(
                f"({self.key}, id) {'<' if self.terminal else '>'} "
                f"(${len(params) + 1}, ${len(params) + 2}::uuid)"
            )
        sql = f"SELECT {LIST_COLUMNS} FROM jobs WHERE {' AND '.join(where)} ORDER BY {self.order}"
        sql += f" LIMIT ${len(params) + (3 if keyset else 1)}"
        if offset:
            sql += f" OFFSET ${len(params) + 2}"
        return " ".join(sql.split()), params


LISTINGS = (Listing("ListActiveJobs", terminal=False), Listing("GetJobHistory", terminal=True))


async def _walk_to(
    call: Callable[[Any], Awaitable[Any]], listing: Listing, f: Filter, rows_before: int, size: int
) -> str:
    """The next_page_token after `rows_before` rows: big pages first, then pages of `size`."""
    if rows_before % WALK_PAGE_SIZE % size:
        raise ValueError(f"page size {size} must divide {WALK_PAGE_SIZE}")
    token = ""
    big, rest = divmod(rows_before, WALK_PAGE_SIZE)
    for page_size, pages in ((WALK_PAGE_SIZE, big), (size, rest // size)):
        for _ in range(pages):
            response = await call(listing.request(f, page_size, token))
            token = response.next_page_token
            if not token:
                raise RuntimeError(f"{listing.method} {f.name}: fewer than {rows_before} rows")
    return token


def _moved_token(token: str, at: datetime, job_id: str) -> str | None:
    """`token` (one the API issued for these filters) moved to the row key (at, job_id), if it
    is the base64 JSON with "t" and "i" it is today; None otherwise."""
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        return None
    if not isinstance(body, dict) or not {"t", "i"} <= body.keys():
        return None
    body |= {"t": at.isoformat(), "i": job_id}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def _deep_token(
    call: Callable[[Any], Awaitable[Any]],
    listing: Listing,
    f: Filter,
    rows_before: int,
    size: int,
    cursor: asyncpg.Record,
) -> tuple[str, str]:
    """The page token of the page after `rows_before` rows, and how it was obtained.

    Walking there through the API takes minutes at 1M jobs (a page of 1,000 rows costs the
    scheduler ~150 ms), so the first page's token is moved to the key of the page's previous row
    (`cursor`, found with SQL); the deep page it returns is checked against SQL by the caller.
    If the token cannot be moved (its format changed) or the API refuses it, walk."""
    first = await call(listing.request(f, size))
    moved = _moved_token(first.next_page_token, cursor[listing.key], str(cursor["id"]))
    if moved is not None:
        try:
            await call(listing.request(f, size, moved))
            return moved, "token moved to the row key found by SQL"
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
    return await _walk_to(call, listing, f, rows_before, size), "token reached by walking"


def _fetching(statement: Any) -> Callable[[list[Any]], Awaitable[object]]:
    """A prepared statement as a one-argument call (its parameters), for sequential_latencies."""

    async def fetch(args: list[Any]) -> object:
        return await statement.fetch(*args)

    return fetch


async def measure_listing(
    stub: JobServiceAsyncStub,
    conn: asyncpg.Connection,
    listing: Listing,
    f: Filter,
    sizes: Sizes,
    figures: Figures,
) -> str:
    """Returns how the deep page's token was obtained."""
    size, deep = sizes.list_page_size, sizes.deep_page
    rows_before = (deep - 1) * size
    method = getattr(stub, listing.method)

    async def call(request: Any) -> Any:
        return await method(request, metadata=METADATA)

    name = f"{listing.method}, {f.name} ({sizes.scale_jobs:,} jobs, page_size {size})"
    keyset_sql, params = listing.sql(f, keyset=True, offset=False)
    offset_sql, _ = listing.sql(f, keyset=False, offset=True)
    last = await conn.fetchrow(offset_sql, *params, 1, rows_before - 1)
    token, how = await _deep_token(call, listing, f, rows_before, size, last)
    deep_page = await call(listing.request(f, size, token))
    keyset_args = [*params, last[listing.key], last["id"], size + 1]
    offset_args = [*params, size + 1, rows_before]
    keyset = await conn.prepare(keyset_sql)
    offset = await conn.prepare(offset_sql)
    first_ids = {
        str((await keyset.fetch(*keyset_args))[0]["id"]),
        str((await offset.fetch(*offset_args))[0]["id"]),
        deep_page.jobs[0].id,
    }
    if len(first_ids) != 1:
        raise RuntimeError(f"{name} ({how}): the SQL mirror and the API disagree on page {deep}")
    for repetition in range(1, sizes.repetitions + 1):
        progress(f"{name} (run {repetition}/{sizes.repetitions})")
        for label, page_token in (("page 1", ""), (f"page {deep:,}", token)):
            requests = [listing.request(f, size, page_token) for _ in range(sizes.list_calls)]
            if repetition == 1:
                await sequential_latencies(call, requests[: min(WARM_UP_CALLS, len(requests))])
            run = await sequential_latencies(call, requests)
            target = targets.LIST_PAGE_P95_MS
            figures.add(name, f"{label} p50", "ms", percentile(run.samples_ms, 50))
            figures.add(name, f"{label} p95", "ms", percentile(run.samples_ms, 95), target)
        keyset_run = await sequential_latencies(_fetching(keyset), [keyset_args] * sizes.sql_calls)
        offset_run = await sequential_latencies(_fetching(offset), [offset_args] * sizes.sql_calls)
        keyset_ms, offset_ms = keyset_run.samples_ms, offset_run.samples_ms
        keyset_p50, offset_p50 = percentile(keyset_ms, 50), percentile(offset_ms, 50)
        figures.add(name, f"page {deep:,}, SQL keyset p50", "ms", keyset_p50)
        figures.add(name, f"page {deep:,}, SQL OFFSET {rows_before:,} p50", "ms", offset_p50)
        figures.add(name, f"page {deep:,}, OFFSET / keyset (SQL p50)", "x", offset_p50 / keyset_p50)
    return how


async def measure_read_path(
    database: BenchDatabase, conn: asyncpg.Connection, sizes: Sizes, figures: Figures
) -> list[str]:
    await clear_jobs(conn)
    progress(f"Read path: loading {sizes.scale_jobs:,} jobs with SQL")
    step = max(1, sizes.scale_jobs // 4)
    await load_scale(
        asyncpg_dsn(database.url),
        sizes.scale_jobs,
        progress=lambda n: progress(f"  {n:,} loaded") if n % step == 0 else None,
    )
    counts = await conn.fetch(
        "SELECT state::text AS state, count(*) AS n FROM jobs WHERE tenant = $1 GROUP BY 1 "
        "ORDER BY 2 DESC",
        SCALE_TENANT,
    )
    size_mb = await conn.fetchval("SELECT pg_total_relation_size('jobs') / 1e6")
    sampled = await sample_jobs(conn, SCALE_TENANT, 5_000)  # id -> state
    ids = sorted(sampled)
    rng = random.Random(SEED)
    async with (
        running_scheduler(database.url) as scheduler,
        grpc.aio.insecure_channel(scheduler.address) as channel,
    ):
        stub: JobServiceAsyncStub = job_service_pb2_grpc.JobServiceStub(channel)

        async def get_status(request: job_service_pb2.GetJobStatusRequest) -> Any:
            return await stub.GetJobStatus(request, metadata=METADATA)

        name = f"GetJobStatus: {sizes.status_calls:,} sequential calls on random ids of {sizes.scale_jobs:,} jobs"
        requests = [
            job_service_pb2.GetJobStatusRequest(id=rng.choice(ids))
            for _ in range(sizes.status_calls)
        ]
        await sequential_latencies(get_status, requests[:100])
        status = await conn.prepare(_SELECT_JOB)
        for repetition in range(1, sizes.repetitions + 1):
            progress(f"{name} (run {repetition}/{sizes.repetitions})")
            run = await sequential_latencies(get_status, requests)
            figures.add(name, "latency p50", "ms", percentile(run.samples_ms, 50))
            figures.add(
                name, "latency p99", "ms", percentile(run.samples_ms, 99), targets.STATUS_P99_MS
            )
            # Split by the job's state: a QUEUED job's status also carries its waiting reason,
            # which costs the store more. And the store's job-row SELECT alone, same ids.
            by_state: dict[bool, list[float]] = {True: [], False: []}
            for request, ms in zip(requests, run.samples_ms, strict=True):
                by_state[sampled[request.id] == "queued"].append(ms)
            if by_state[True] and by_state[False]:
                figures.add(name, "latency p99, QUEUED jobs", "ms", percentile(by_state[True], 99))
                figures.add(name, "latency p99, other jobs", "ms", percentile(by_state[False], 99))
            sql = await sequential_latencies(
                _fetching(status), [[SCALE_TENANT, r.id] for r in requests]
            )
            figures.add(name, "job-row SELECT alone, p99", "ms", percentile(sql.samples_ms, 99))
        tokens = {
            await measure_listing(stub, conn, listing, f, sizes, figures)
            for listing in LISTINGS
            for f in listing_filters(listing.terminal)
        }
        # Imported here: bench.dashboard_jobs imports this module's helpers.
        from bench.dashboard_jobs import measure_dashboard_jobs

        dashboard_note = await measure_dashboard_jobs(scheduler.address, conn, sizes, figures)
    states = ", ".join(f"{r['state']} {r['n']:,}" for r in counts)
    return [
        f"Read-path data set: {sizes.scale_jobs:,} jobs in tenant `{SCALE_TENANT}` ({states}; "
        f"jobs table with indexes {size_mb:,.0f} MB; no job_events rows: these reads never touch "
        "them), loaded with INSERT ... SELECT FROM generate_series, then VACUUM ANALYZE. "
        f"Deep pages: {' / '.join(sorted(tokens))}; each checked against SQL (same first row)",
        dashboard_note,
    ]
