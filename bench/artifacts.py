"""8. Artifact throughput: a handler uploads a 100 MB file (`ctx.upload`, an in-process
executor) to a `python -m scheduler` subprocess storing artifacts in PostgreSQL, then a client
downloads it (`JobschedClient.download_artifact`, checksum checked) to a file; MB/s each way
(1 MB = 10^6 bytes), timed around the calls."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import asyncpg

from bench.console import progress
from bench.in_process import running_executor
from bench.scheduler_process import running_scheduler
from bench.settings import Sizes
from bench.stats import Figures
from executor.handlers import HandlerRegistry, JobContext
from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2

NAME = "8. artifacts (PostgreSQL store)"


async def measure_artifacts(
    database_url: str, conn: asyncpg.Connection, sizes: Sizes, figures: Figures
) -> list[str]:
    size = 20_000_000 if sizes.mode == "quick" else 100_000_000
    with tempfile.TemporaryDirectory(prefix="jobsched-bench-artifacts-") as tmp:
        source = Path(tmp) / "source.bin"
        source.write_bytes(os.urandom(size))
        upload_seconds: list[float] = []

        async def upload(ctx: JobContext) -> None:
            started = time.perf_counter()
            await ctx.upload("big.bin", source)
            upload_seconds.append(time.perf_counter() - started)

        registry = HandlerRegistry({"bench.upload": upload})
        async with (
            running_scheduler(database_url, name="artifacts") as scheduler,
            running_executor(scheduler.address, registry, name="bench-artifacts", capacity=1),
            JobschedClient(scheduler.address, timeout=120) as client,
        ):
            for repetition in range(1, sizes.repetitions + 1):
                progress(f"{NAME} (run {repetition}/{sizes.repetitions})")
                job = await client.submit("bench.upload")
                async for _ in client.watch(job.id):  # ends after the terminal event
                    pass
                assert (await client.get(job.id)).state == job_pb2.JOB_STATE_SUCCEEDED
                mb = size / 1e6
                figures.add(NAME, f"upload {mb:.0f} MB", "MB/s", mb / upload_seconds[-1])
                started = time.perf_counter()
                await client.download_artifact(job.id, "big.bin", Path(tmp) / "copy.bin")
                elapsed = time.perf_counter() - started
                figures.add(NAME, f"download {mb:.0f} MB", "MB/s", mb / elapsed)
                await client.delete(job.id)
    return [
        f"{NAME}: one upload at a time, 1 MiB chunks; the scheduler spools the upload to a "
        "temporary file, then writes it in one transaction (8 MiB per INSERT)"
    ]
