"""`python -m scheduler` (also `jobsched scheduler`, `jobsched dev`, `jobsched migrate`).

Without --database-url or DATABASE_URL an embedded PostgreSQL is started on a persistent data
directory (--data-dir, JOBSCHED_DATA_DIR, default ./.jobsched). Migrations are applied first
unless --no-migrate is given.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobsched import logs
from jobsched.cli.arguments import DEFAULT_ADDRESS
from scheduler.server import DEFAULT_LISTEN, SchedulerServer, ServerSettings
from scheduler.store import embedded, migrate
from scheduler.store.credentials import masked, with_password_file
from scheduler.store.database import Database
from scheduler.store.preflight import connection_problem

log = logging.getLogger("jobsched.scheduler")

DEV_BANNER = """
jobsched is running: a scheduler on {address} and one executor (job types noop, sleep)
  PostgreSQL: {database}

In another terminal (from this checkout), submit a demo job and read it back:
  {jobsched} submit --type sleep --payload '{{"seconds": 3}}'
  {jobsched} status <job id printed above>      # RUNNING, then SUCCEEDED
  {jobsched} ls --history
Any gRPC tool works too (server reflection is on), e.g. grpcurl -plaintext {address} list

Press Ctrl-C to stop.
"""


def dev_banner(address: str, database_url: str) -> str:
    """What `jobsched dev` prints once serving: the commands name the address unless it is the
    CLI's default (JOBSCHED_LISTEN=... make run otherwise printed commands that reached
    nothing), and the database URL has its password masked."""
    jobsched = ".venv/bin/jobsched"
    if address != DEFAULT_ADDRESS:
        jobsched += f" --address {address}"
    return DEV_BANNER.format(address=address, database=masked(database_url), jobsched=jobsched)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scheduler", description=__doc__)
    parser.add_argument(
        "--listen",
        default=os.environ.get("JOBSCHED_LISTEN", DEFAULT_LISTEN),
        help="host:port to serve gRPC on; port 0 picks a free one (env JOBSCHED_LISTEN, "
        f"default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL URL (env DATABASE_URL); embedded PostgreSQL when absent. A password "
        "in it is visible to other local users (ps): prefer DATABASE_URL or "
        "--database-password-file",
    )
    parser.add_argument(
        "--database-password-file",
        type=Path,
        default=os.environ.get("JOBSCHED_DATABASE_PASSWORD_FILE") or None,
        help="a file whose content is the database password, replacing the URL's (env "
        "JOBSCHED_DATABASE_PASSWORD_FILE)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("JOBSCHED_DATA_DIR", ".jobsched")),
        help="where the embedded PostgreSQL keeps its data (env JOBSCHED_DATA_DIR)",
    )
    parser.add_argument("--no-migrate", action="store_true", help="do not apply migrations")
    parser.add_argument("--migrate-only", action="store_true", help="apply migrations and exit")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="also run an executor with the built-in handlers, and print how to use it all",
    )
    parser.add_argument("--log-level", default=os.environ.get("JOBSCHED_LOG_LEVEL", "INFO"))
    timing = parser.add_argument_group("timing (seconds; the defaults suit production)")
    defaults = ServerSettings()
    for flag, value, text in (
        ("--heartbeat-interval", defaults.heartbeat_interval, "heartbeats on executor streams"),
        ("--lease", defaults.lease.total_seconds(), "lease of a running attempt"),
        ("--ack-timeout", defaults.ack_timeout.total_seconds(), "to acknowledge an assignment"),
        ("--reconnect-grace", defaults.reconnect_grace.total_seconds(), "for a lost executor"),
        ("--cron-poll-interval", defaults.cron_poll_interval, "the leader's cron safety poll"),
        ("--leader-tick", defaults.leader_tick, "followers' leader election probe interval"),
        ("--leader-renew-timeout", defaults.leader_renew_timeout, "a leader steps down after"),
        (
            "--rescue-interval",
            defaults.rescue_interval,
            "longest sleep of the lease rescue and timeout backstop (it wakes at the earliest "
            "deadline)",
        ),
        ("--timeout-grace", defaults.timeout_grace.total_seconds(), "backstop after a timeout"),
        ("--presence-interval", defaults.presence_interval, "replica presence reports"),
        ("--health-interval", defaults.health_interval, "database health checks"),
    ):
        timing.add_argument(flag, type=float, default=value, help=f"{text} (default {value:g})")
    timing.add_argument(
        "--poll-interval",
        type=float,
        default=defaults.poll_interval,
        help="the dispatcher's safety poll (default 5 with LISTEN/NOTIFY, which the scheduler "
        "always uses; 1 without)",
    )
    timing.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=None,
        help="an executor silent this long has its stream ended, and an attempt missing from "
        "its heartbeats this long is failed (default 4 x heartbeat interval; it gets no "
        "assignments after 2 silent intervals already)",
    )
    timing.add_argument(
        "--rescue-recovery-grace",
        type=float,
        default=None,
        help="after the database was unreachable, the lease rescue waits this long for "
        "executors to renew leases and re-send results (default 3 x heartbeat interval + 1)",
    )
    parser.add_argument(
        "--max-releases",
        type=int,
        default=defaults.max_releases,
        help="hand-backs without running (ack timeouts, releases) a job survives; the next "
        f"ends it DEAD (default {defaults.max_releases})",
    )
    timing.add_argument(
        "--leader-renew-interval",
        type=float,
        default=defaults.leader_renew_interval,
        help="how often the leader renews (default max(leader tick, renew timeout / 3))",
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> ServerSettings:
    return ServerSettings(
        listen=args.listen,
        heartbeat_interval=args.heartbeat_interval,
        lease=timedelta(seconds=args.lease),
        ack_timeout=timedelta(seconds=args.ack_timeout),
        reconnect_grace=timedelta(seconds=args.reconnect_grace),
        poll_interval=args.poll_interval,
        cron_poll_interval=args.cron_poll_interval,
        leader_tick=args.leader_tick,
        leader_renew_timeout=args.leader_renew_timeout,
        leader_renew_interval=args.leader_renew_interval,
        rescue_interval=args.rescue_interval,
        timeout_grace=timedelta(seconds=args.timeout_grace),
        presence_interval=args.presence_interval,
        health_interval=args.health_interval,
        heartbeat_timeout=_seconds(args.heartbeat_timeout),
        rescue_recovery_grace=_seconds(args.rescue_recovery_grace),
        max_releases=args.max_releases,
    )


def _seconds(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def database_url(args: argparse.Namespace) -> str:
    if args.database_url:
        url = str(args.database_url)
        if args.database_password_file is not None:
            url = with_password_file(url, Path(args.database_password_file))
        return url
    pg = embedded.start(args.data_dir / "pgdata", persistent=True, database="jobsched")
    return pg.url("jobsched")


async def serve(url: str, settings: ServerSettings, *, dev: bool) -> None:
    db = Database.from_url(url, application_name="jobsched-scheduler")
    server = SchedulerServer(db, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    dev_executor: Any = None
    try:
        address = await server.start()
        if dev:
            dev_executor = await start_dev_executor(address)
            print(dev_banner(address, url), flush=True)
        await stop.wait()
    finally:
        if dev_executor is not None:
            await dev_executor.stop(grace=5.0)
        await server.stop()
        await db.dispose()


async def start_dev_executor(address: str) -> Any:
    """`jobsched dev` runs one executor with the built-in handlers (noop, sleep) in-process."""
    from executor.handlers import builtin_registry
    from executor.runner import Executor

    executor = Executor([address], name="dev-executor", capacity=10, registry=builtin_registry())
    await executor.start()
    await executor.wait_registered()
    return executor


def fail(line: str) -> int:
    """One clear line on stderr and the exit status of a configuration error (no traceback)."""
    print(f"jobsched: {line}", file=sys.stderr, flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level)
    try:
        url = database_url(args)
    except ValueError as exc:
        return fail(str(exc))
    # Once, before anything else: a wrong password, role or database does not get better.
    problem = asyncio.run(connection_problem(url))
    if problem is not None:
        line, permanent = problem
        if permanent or not args.no_migrate:  # migrations need the database now
            return fail(line)
        log.warning(line, extra={"fields": {"event": "scheduler.database_unreachable"}})
    if not args.no_migrate:
        migrate.upgrade(url)
        log.info("migrated", extra={"fields": {"event": "scheduler.migrated"}})
    if args.migrate_only:
        print(f"database at {masked(url)} is at the latest migration", flush=True)
        return 0
    asyncio.run(serve(url, settings_from(args), dev=args.dev))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
