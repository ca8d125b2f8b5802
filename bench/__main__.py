"""`python -m bench [--quick]`: measure jobsched as its users see it (issue 6).

Against a throw-away PostgreSQL database, with the scheduler (and, where said, the executors) in
their own processes:

 1. end-to-end throughput of no-op jobs: 1 scheduler + 1 executor, 1 + 4, 2 replicas + 4;
 2. submit throughput: SubmitJobs in batches, SubmitJob from concurrent callers;
 3. enqueue-to-start latency at a steady rate (an in-process executor times its handler);
 4. progress latency, executor report to WatchJob subscriber, with 1 and with many subscribers;
    and through the dashboard's SSE bridge to 1 and 200 viewers, with the dashboard's memory;
 5. the read path at scale: GetJobStatus, ListActiveJobs and GetJobHistory pages (first and deep,
    under each filter) on a million jobs, and the same pages with OFFSET;
 6. database cost: commits per job at saturation (in 1), statements per second of an idle replica;
 7. scheduler memory with many executor streams and watchers connected;
 8. artifact upload and download throughput (MB/s) for a 100 MB file;
 9. command-job overhead: submit to exit of `true` (p50/p99), beside a no-op handler;
10. authentication overhead: GetJobStatus and SubmitJob p50/p99 with an API key, a JWT and an
    mTLS identity against none;
11. the peer: PgQueuer on the same PostgreSQL, and the headline figures as ratios to it.
12. telemetry overhead: throughput and enqueue-to-start latency with tracing off, at 100 % and
    at 10 % sampling (bench/telemetry_overhead.py: one entry per configuration).

Every measurement is repeated (`--quick`: once, smaller) and the median reported next to the
issue's target; the table is printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench import report
from bench.artifacts import measure_artifacts
from bench.auth_overhead import measure_auth_overhead
from bench.command_jobs import measure_command_overhead
from bench.console import progress
from bench.dashboard_sse import measure_dashboard_progress
from bench.latency import measure_start_latency
from bench.memory import measure_memory
from bench.pgqueuer_peer import measure_pgqueuer
from bench.postgres import BenchDatabase, asyncpg_dsn, provisioned_database
from bench.progress import measure_progress_latency
from bench.read_path import measure_read_path
from bench.scheduler_process import LOG_LEVEL
from bench.settings import FULL, QUICK, Sizes
from bench.statements import measure_statements
from bench.stats import Figures
from bench.submits import measure_submits
from bench.telemetry_overhead import measure_telemetry_overhead
from bench.throughput import measure_throughput


@dataclass(frozen=True, slots=True)
class Context:
    database: BenchDatabase
    conn: asyncpg.Connection  # the benchmark's own session: counters, clean-ups, SQL mirrors
    sizes: Sizes
    figures: Figures
    notes: list[str]
    profile_dir: Path | None


Measurement = Callable[[Context], Awaitable[None]]


async def _statements(c: Context) -> None:
    c.notes.extend(await measure_statements(c.database.url, c.conn, c.sizes, c.figures))


async def _submits(c: Context) -> None:
    await measure_submits(c.database.url, c.conn, c.sizes, c.figures)


async def _throughput(c: Context) -> None:
    c.notes.extend(await measure_throughput(c.database, c.conn, c.sizes, c.figures, c.profile_dir))


async def _start_latency(c: Context) -> None:
    await measure_start_latency(c.database.url, c.conn, c.sizes, c.figures)


async def _progress(c: Context) -> None:
    c.notes.extend(await measure_progress_latency(c.database.url, c.conn, c.sizes, c.figures))


async def _dashboard_sse(c: Context) -> None:
    c.notes.extend(await measure_dashboard_progress(c.database.url, c.conn, c.sizes, c.figures))


async def _memory(c: Context) -> None:
    c.notes.extend(await measure_memory(c.database.url, c.conn, c.sizes, c.figures))


async def _artifacts(c: Context) -> None:
    c.notes.extend(await measure_artifacts(c.database.url, c.conn, c.sizes, c.figures))


async def _command(c: Context) -> None:
    c.notes.extend(await measure_command_overhead(c.database.url, c.conn, c.sizes, c.figures))


async def _auth(c: Context) -> None:
    c.notes.extend(await measure_auth_overhead(c.database.url, c.conn, c.sizes, c.figures))


async def _peer(c: Context) -> None:
    c.notes.extend(await measure_pgqueuer(c.database.url, c.conn, c.sizes, c.figures))


async def _telemetry(c: Context) -> None:
    c.notes.extend(await measure_telemetry_overhead(c.database, c.conn, c.sizes, c.figures))


async def _read_path(c: Context) -> None:
    c.notes.extend(await measure_read_path(c.database, c.conn, c.sizes, c.figures))


# In running order. The peer comes after the measurements it is compared with (throughput,
# submit, start-latency). The read path goes last: its million rows would sit in every other
# measurement's claim path.
MEASUREMENTS: dict[str, Measurement] = {
    "throughput": _throughput,
    "submit": _submits,
    "start-latency": _start_latency,
    "progress": _progress,
    "dashboard-sse": _dashboard_sse,
    "statements": _statements,
    "memory": _memory,
    "artifacts": _artifacts,
    "command": _command,
    "auth": _auth,
    "peer": _peer,
    "telemetry": _telemetry,
    "read-path": _read_path,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, one repetition (a smoke run)"
    )
    parser.add_argument(
        "--repetitions", type=int, help="override how often each measurement is repeated"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(MEASUREMENTS),
        help="run only this measurement (repeatable); a partial run is not recorded",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy the scheduler and the executor during the first 1 + 1 throughput run; "
        "collapsed stacks go to DIR, a summary to the notes (needs py-spy)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=report.RESULTS_PATH,
        help="the markdown file the results are appended to (default bench/RESULTS.md)",
    )
    parser.add_argument(
        "--no-record", action="store_true", help="print the figures only, append nothing"
    )
    return parser.parse_args(argv)


def chosen_sizes(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL
    if args.repetitions is not None:
        sizes = dataclasses.replace(sizes, repetitions=max(1, args.repetitions))
    return sizes


def raise_open_files_limit() -> None:
    """A thousand streams each way need a few thousand descriptors (inherited by the
    scheduler processes)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16_384 if hard == resource.RLIM_INFINITY else min(hard, 16_384)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def run_measurements(
    database: BenchDatabase, sizes: Sizes, chosen: list[str], profile_dir: Path | None
) -> tuple[Figures, list[str], str]:
    figures, notes = Figures(), []
    conn = await asyncpg.connect(asyncpg_dsn(database.url))
    try:
        version = str(await conn.fetchval("SELECT version()"))
        settings = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('synchronous_commit', 'fsync', 'shared_buffers', 'max_connections') ORDER BY name"
        )
        notes.append(
            "PostgreSQL settings: " + ", ".join(f"{r['name']}={r['setting']}" for r in settings)
        )
        context = Context(database, conn, sizes, figures, notes, profile_dir)
        for name in chosen:
            started = time.monotonic()
            await MEASUREMENTS[name](context)
            progress(f"{name}: {time.monotonic() - started:.0f} s")
    finally:
        await conn.close()
    return figures, notes, version


def run_notes(sizes: Sizes, wall_seconds: float, load_before: str) -> list[str]:
    return [
        f"Repetitions: {sizes.repetitions} per measurement; wall time {wall_seconds:.0f} s "
        "(setup, data loading and teardown included)",
        f"Load average (1 min) before the run {load_before}, after it {report.load_average()} "
        "(work outside the benchmark skews every figure: see the whole-machine CPU rows)",
        f"Processes: `python -m scheduler` subprocesses (--log-level {LOG_LEVEL}, logs to a file), "
        "one fresh per measurement; `python -m executor` subprocesses for throughput; the load, "
        "the in-process executors of measurements 3-4 and the subscribers run in the benchmark "
        "process (grpc.aio)",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = chosen_sizes(args)
    chosen = [name for name in MEASUREMENTS if args.only is None or name in args.only]
    raise_open_files_limit()
    started, clock, load_before = datetime.now(UTC), time.monotonic(), report.load_average()
    progress(f"{sizes.mode} mode: {', '.join(chosen)}; starting PostgreSQL")
    with provisioned_database() as database:
        figures, notes, version = asyncio.run(
            run_measurements(database, sizes, chosen, args.profile)
        )
    context = report.RunContext(
        started=started,
        mode=sizes.mode if args.only is None else f"{sizes.mode}, partial: {', '.join(chosen)}",
        commit=report.git_commit(),
        command=report.invoked_command(),
        machine=report.machine_description(),
        postgres=version,
        database=database.origin,
        notes=[*run_notes(sizes, time.monotonic() - clock, load_before), *notes],
    )
    table = list(figures)
    print()
    print(report.terminal_table(table))
    for note in notes:
        print(f"- {note}")
    if not args.no_record and args.only is None:
        report.append_results(report.results_section(context, table), args.results)
        print(f"\nappended to {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
