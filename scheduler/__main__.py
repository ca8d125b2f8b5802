"""`python -m scheduler` (also `jobsched scheduler`, `jobsched dev`, `jobsched migrate`): start
the database (embedded when no URL is given), check and migrate it, serve until SIGTERM or
SIGINT. The command line and its configuration file are scheduler/flags.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from jobsched import logs
from jobsched.client import DEFAULT_ADDRESS
from scheduler.flags import exposure_problem, parse_args, settings_from
from scheduler.server import SchedulerServer, ServerSettings
from scheduler.store import embedded, migrate
from scheduler.store.credentials import masked, parse_database_url, with_password_file
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


def database_url(args: argparse.Namespace) -> str:
    if args.database_url:
        url = str(args.database_url)
        parse_database_url(url)  # a bad URL: one line, never quoting it (nor its password)
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
    loop.add_signal_handler(signal.SIGHUP, server.reload_tls)  # new certificates
    dev_executor: Any = None
    dev_dashboard: Any = None
    try:
        address = await server.start()
        if dev:
            dev_executor = await start_dev_executor(address)
            print(dev_banner(address, url), flush=True)
            dev_dashboard = await start_dev_dashboard(address)
        await stop.wait()
    finally:
        if dev_dashboard is not None:
            await dev_dashboard.stop()
        if dev_executor is not None:
            await dev_executor.stop(grace=5.0)
        await server.stop()
        await db.dispose()


DASHBOARD_ENV = "JOBSCHED_DASHBOARD_LISTEN"


async def start_dev_dashboard(address: str) -> Any:
    """`jobsched dev` serves the dashboard next to the scheduler (on 127.0.0.1:8080, or
    $JOBSCHED_DASHBOARD_LISTEN; "off" for none), when its extra is installed; None otherwise."""
    listen = os.environ.get(DASHBOARD_ENV, "127.0.0.1:8080").strip()
    if listen.lower() == "off":
        return None
    try:
        from dashboard.flags import DashboardSettings, host_port
        from dashboard.serving import DashboardServer
    except ModuleNotFoundError as exc:
        print(f"no dashboard: {exc} (pip install 'jobsched[dashboard]')", flush=True)
        return None
    try:
        host, port = host_port(listen)
    except argparse.ArgumentTypeError as exc:
        print(f"no dashboard: {DASHBOARD_ENV}: {exc}", flush=True)
        return None
    dashboard = DashboardServer(DashboardSettings(schedulers=(address,)), host, port)
    try:
        url = await dashboard.start()
    except OSError as exc:
        print(f"no dashboard: cannot listen on {listen}: {exc.strerror} (set {DASHBOARD_ENV})")
        return None
    print(f"\nThe dashboard: {url}/", flush=True)
    return dashboard


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
        settings = settings_from(args)
        exposed = exposure_problem(settings, args.insecure)
        if exposed is not None:
            return fail(exposed)
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
    asyncio.run(serve(url, settings, dev=args.dev))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
