"""The dashboard's jobs page API at scale (issue 18): `GET /api/jobs` through a real dashboard
(uvicorn, in this process) in front of the read path's scheduler and data set, first page and
page `Sizes.deep_page`, one request at a time over HTTP: p50, p95. The deep page's cursor wraps
the ListActiveJobs token the read path reaches (moved with SQL, bench/read_path.py), so the
figure is the dashboard's cost on top of that call. The client is a minimal keep-alive HTTP/1.1
one on asyncio streams (httpx alone added ~10 ms a request here), as a browser's connection."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any
from urllib.parse import urlencode

import asyncpg
import grpc

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


class Connection:
    """One keep-alive HTTP/1.1 connection: GET, the status and the JSON body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.cookie = ""

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def get(self, path: str) -> tuple[int, Any]:
        cookie = f"cookie: {self.cookie}\r\n" if self.cookie else ""
        self.writer.write(f"GET {path} HTTP/1.1\r\nhost: bench\r\n{cookie}\r\n".encode())
        await self.writer.drain()
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = [line.split(":", 1) for line in head[1:] if ":" in line]
        length = next(int(v) for k, v in headers if k.lower() == "content-length")
        for k, v in headers:
            if k.lower() == "set-cookie":
                self.cookie = v.strip().split(";", 1)[0]
        return status, json.loads(await self.reader.readexactly(length))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


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
    http = await Connection.open(dashboard.port)
    try:
        status, _ = await http.get("/api/session")
        if status != 200:
            raise RuntimeError(f"{name}: GET /api/session answered {status}")
        pages = (("page 1", ""), (f"page {deep:,}", _cursor("active", token)))
        for repetition in range(1, sizes.repetitions + 1):
            progress(f"{name} (run {repetition}/{sizes.repetitions})")
            for label, cursor in pages:
                path = "/api/jobs?" + urlencode({"page_size": size, "cursor": cursor})
                calls = sizes.list_calls + (WARM_UP if repetition == 1 else 0)
                samples: list[float] = []
                for n in range(calls):
                    started = time.perf_counter()
                    status, body = await http.get(path)
                    elapsed = (time.perf_counter() - started) * 1000
                    if status != 200 or len(body["jobs"]) != size:
                        raise RuntimeError(f"{name} {label}: {status}, not a full page")
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
        await http.close()
        await dashboard.stop()
    return f"Dashboard jobs API: the deep page's cursor wraps a ListActiveJobs {how}"
