"""The dashboard's live path (issue 18): a handler's ctx.progress() to a browser's event stream
through `GET /api/jobs/{id}/events` (the SSE bridge of WatchJob), with one viewer and with
`VIEWERS` viewers of the same running job, each its own session and connection, and the
dashboard's resident memory with them connected.

The dashboard runs as its own process (`python -m dashboard`), so that its RSS is its own; the
viewers are minimal HTTP clients in this process that parse the event stream (the time to the
browser's DOM update adds the page's own handling, not measured here). The handler reports every
`Sizes.progress_report_interval` seconds with time.time() as the message; a viewer takes receive
time minus that stamp for every progress event in the window. The viewers' sessions carry no key
(the scheduler runs without auth), so they share one upstream WatchJob (dashboard/feeds.py):
viewers on different keys each get a stream of their own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc

from bench import targets
from bench.console import progress
from bench.dataset import clear_jobs
from bench.in_process import PROGRESS_TYPE, ProgressReporter, running_executor
from bench.scheduler_process import running_scheduler
from bench.settings import Sizes
from bench.stats import Figures, percentile
from executor.handlers import HandlerRegistry
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

VIEWERS = 200
ROOT = str(Path(__file__).resolve().parents[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for {pid}")


@contextlib.asynccontextmanager
async def running_dashboard(scheduler: str) -> AsyncIterator[tuple[int, int]]:
    """`python -m dashboard` on a free port: (its pid, its port)."""
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dashboard",
        "--listen",
        f"127.0.0.1:{port}",
        "--scheduler",
        scheduler,
        "--log-level",
        "warning",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    try:
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stderr.readline(), 60)
        if b"jobsched dashboard on" not in line:
            raise RuntimeError(f"the dashboard did not start: {line!r}")
        # Keep reading what it says, so that a full pipe never blocks it.
        tail: list[bytes] = []
        drain = asyncio.create_task(_drain(process.stderr, tail))
        yield process.pid, port
    finally:
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(
                "the dashboard did not stop within 15 s of SIGTERM: "
                + b"".join(tail[-20:]).decode(errors="replace")
            ) from None
        finally:
            with contextlib.suppress(NameError):
                drain.cancel()


async def _drain(stream: asyncio.StreamReader, tail: list[bytes]) -> None:
    while line := await stream.readline():
        tail.append(line)
        del tail[:-50]


class Viewer:
    """One browser tab on the job's page: its own session, then the event stream."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.measuring = False
        self.task: asyncio.Task[None] | None = None
        self.error = ""

    async def run(self, port: int, job_id: str, ready: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /api/session HTTP/1.1\r\nhost: bench\r\n\r\n")
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            cookie = next(
                line.split(":", 1)[1].strip().split(";", 1)[0]
                for line in head.split("\r\n")
                if line.lower().startswith("set-cookie:")
            )
            length = next(
                int(line.split(":", 1)[1])
                for line in head.split("\r\n")
                if line.lower().startswith("content-length:")
            )
            await reader.readexactly(length)
            writer.write(
                f"GET /api/jobs/{job_id}/events HTTP/1.1\r\nhost: bench\r\ncookie: {cookie}\r\n"
                "accept: text/event-stream\r\n\r\n".encode()
            )
            await reader.readuntil(b"\r\n\r\n")
            ready.set()
            event = ""
            while True:
                line = (await reader.readline()).decode()
                if not line:
                    return
                if line.startswith("event: "):
                    event = line[7:].strip()
                elif line.startswith("data: ") and event == "progress" and self.measuring:
                    # chunked transfer: data lines arrive whole, between the chunk sizes
                    stamp = float(json.loads(line[6:])["message"])
                    self.latencies.append((time.time() - stamp) * 1000)
        except (OSError, asyncio.IncompleteReadError, StopIteration, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            ready.set()
        finally:
            writer.close()


async def measure_dashboard_progress(
    database_url: str, conn: asyncpg.Connection, sizes: Sizes, figures: Figures
) -> list[str]:
    notes: list[str] = []
    await clear_jobs(conn)
    reporter = ProgressReporter(sizes.progress_report_interval)
    registry = HandlerRegistry({PROGRESS_TYPE: reporter.handler})
    viewers_many = min(VIEWERS, sizes.many_subscribers)
    async with (
        running_scheduler(database_url) as scheduler,
        grpc.aio.insecure_channel(scheduler.address) as channel,
        running_executor(scheduler.address, registry, name="bench-dash", capacity=1),
        running_dashboard(scheduler.address) as (pid, port),
    ):
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        job = (
            await stub.SubmitJob(
                job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type=PROGRESS_TYPE))
            )
        ).job
        await asyncio.wait_for(reporter.running.wait(), 30)
        idle_rss = _rss_mb(pid)
        for count in (1, viewers_many):
            name = (
                f"Dashboard SSE: progress every {sizes.progress_report_interval * 1000:.0f} ms "
                f"to {count:,} viewer{'s' if count > 1 else ''} of one job, "
                f"{sizes.progress_seconds:.0f} s windows"
            )
            progress(f"{name}: connecting")
            viewers = [Viewer() for _ in range(count)]
            readies = [asyncio.Event() for _ in viewers]
            for viewer, ready in zip(viewers, readies, strict=True):
                viewer.task = asyncio.create_task(viewer.run(port, job.id, ready))
            try:
                await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
                for repetition in range(1, sizes.repetitions + 1):
                    progress(f"{name} (window {repetition}/{sizes.repetitions})")
                    for viewer in viewers:
                        viewer.latencies.clear()
                        viewer.measuring = True
                    await asyncio.sleep(sizes.progress_seconds)  # the measured window
                    for viewer in viewers:
                        viewer.measuring = False
                    samples = [ms for viewer in viewers for ms in viewer.latencies]
                    if not samples:
                        raise RuntimeError(f"{name}: no progress reached a viewer")
                    figures.add(name, "latency p50", "ms", percentile(samples, 50))
                    figures.add(
                        name,
                        "latency p99",
                        "ms",
                        percentile(samples, 99),
                        targets.DASHBOARD_SSE_P99_MS,
                    )
                figures.add(name, "dashboard RSS", "MB", _rss_mb(pid))
                failed = [v.error for v in viewers if v.error]
                if failed:
                    notes.append(f"{name}: {len(failed)} viewers failed, e.g. {failed[0]}")
            finally:
                for viewer in viewers:
                    if viewer.task is not None:
                        viewer.task.cancel()
                await asyncio.gather(
                    *(v.task for v in viewers if v.task is not None), return_exceptions=True
                )
        reporter.stop.set()
    notes.append(f"Dashboard SSE: the dashboard's RSS before any viewer {idle_rss:.0f} MB")
    await clear_jobs(conn)
    return notes
