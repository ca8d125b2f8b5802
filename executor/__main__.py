"""`python -m executor`: an executor running the built-in handlers (noop, sleep).

SIGTERM or SIGINT stops it gracefully: no new work is taken, running jobs get --grace seconds,
then the rest are cancelled and handed back (requeued without burning an attempt).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket

from executor.handlers import builtin_registry
from executor.runner import Executor
from jobsched import logs

log = logging.getLogger("jobsched.executor")

DEFAULT_ADDRESS = "127.0.0.1:50051"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m executor", description=__doc__)
    parser.add_argument(
        "--scheduler",
        action="append",
        dest="schedulers",
        metavar="ADDR",
        help="scheduler host:port, repeatable (env JOBSCHED_ADDRESS, comma-separated; "
        f"default {DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--name",
        default=f"{socket.gethostname()}:{os.getpid()}",
        help="executor name, unique among connected executors (default host:pid)",
    )
    parser.add_argument("--capacity", type=int, default=10, help="jobs run at once (default 10)")
    parser.add_argument(
        "--queue",
        action="append",
        dest="queues",
        default=[],
        metavar="Q",
        help="queue to take work from, repeatable (default: all queues)",
    )
    parser.add_argument(
        "--grace", type=float, default=30.0, help="seconds running jobs get on shutdown"
    )
    parser.add_argument("--log-level", default=os.environ.get("JOBSCHED_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if not args.schedulers:
        env = os.environ.get("JOBSCHED_ADDRESS", DEFAULT_ADDRESS)
        args.schedulers = [a.strip() for a in env.split(",") if a.strip()]
    if args.capacity < 1:
        parser.error("--capacity must be at least 1")
    return args


async def run(args: argparse.Namespace) -> None:
    executor = Executor(
        args.schedulers,
        name=args.name,
        capacity=args.capacity,
        registry=builtin_registry(),
        queues=args.queues,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "executor starting",
        extra={
            "fields": {
                "event": "executor.starting",
                "executor": args.name,
                "schedulers": args.schedulers,
                "capacity": args.capacity,
                "queues": args.queues,
                "job_types": executor.registry.types,
            }
        },
    )
    await executor.start()
    try:
        await stop.wait()
    finally:
        await executor.stop(grace=args.grace)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
