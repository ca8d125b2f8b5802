"""The dashboard's jobs page API at scale (issue 18): `GET /api/jobs` through a real dashboard
(uvicorn, in this process) in front of the read path's scheduler and data set, first page and
page `Sizes.deep_page`, one request at a time over HTTP: p50, p95. The deep page's cursor wraps
the ListActiveJobs token the read path reaches (moved with SQL, bench/read_path.py), so the
figure is the dashboard's cost on top of that call."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import grpc
import httpx

from bench import targets
from bench.console import progress
from bench.dataset import SCALE_TENANT, Filter
from bench.read_path import METADATA, Listing, _deep_token
from bench.settings import Sizes
from bench.stats import Figures, percentile
from dashboard.api import _cursor
from dashboard.flags import DashboardSettings
from dashboard.serving import DashboardServer
from jobsched.v1 import job_service_pb2_grpc

WARM_UP = 10


async def measure_dashboard_jobs(
    scheduler_address: str, conn: asyncpg.Connection, sizes: Sizes, figures: Figures
) -> str:
    listing, no_filter = Listing("ListActiveJobs", terminal=False), Filter("no filter")
    size, deep = sizes.list_page_size, sizes.deep_page
    rows_before = (deep - 1) * size
    offset_sql, params = listing.sql(no_filter, keyset=False, offset=True)
    last = await conn.fetchrow(offset_sql, *params, 1, rows_before - 1)
    async with grpc.aio.insecure_channel(scheduler_address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)

        async def call(request: Any) -> Any:
            return await stub.ListActiveJobs(request, metadata=METADATA)

        token, how = await _deep_token(call, listing, no_filter, rows_before, size, last)
    settings = DashboardSettings(schedulers=(scheduler_address,), tenant=SCALE_TENANT)
    dashboard = DashboardServer(settings)
    await dashboard.start()
    name = f"Dashboard GET /api/jobs ({sizes.scale_jobs:,} jobs, page_size {size}, over HTTP)"
    try:
        async with httpx.AsyncClient(base_url=dashboard.url, timeout=30) as http:
            (await http.get("/api/session")).raise_for_status()
            pages = (("page 1", ""), (f"page {deep:,}", _cursor("active", token)))
            for repetition in range(1, sizes.repetitions + 1):
                progress(f"{name} (run {repetition}/{sizes.repetitions})")
                for label, cursor in pages:
                    query = {"page_size": str(size), "cursor": cursor}
                    calls = sizes.list_calls + (WARM_UP if repetition == 1 else 0)
                    samples: list[float] = []
                    for n in range(calls):
                        started = time.perf_counter()
                        answer = await http.get("/api/jobs", params=query)
                        elapsed = (time.perf_counter() - started) * 1000
                        answer.raise_for_status()
                        if len(answer.json()["jobs"]) != size:
                            raise RuntimeError(f"{name} {label}: not a full page")
                        if repetition > 1 or n >= WARM_UP:
                            samples.append(elapsed)
                    figures.add(name, f"{label} p50", "ms", percentile(samples, 50))
                    figures.add(
                        name,
                        f"{label} p95",
                        "ms",
                        percentile(samples, 95),
                        targets.DASHBOARD_JOBS_P95_MS,
                    )
    finally:
        await dashboard.stop()
    return f"Dashboard jobs API: the deep page's cursor wraps a ListActiveJobs {how}"
