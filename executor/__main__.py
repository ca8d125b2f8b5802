"""`python -m executor`: an executor running the built-in handlers (noop, sleep), until SIGTERM
or SIGINT stops it gracefully. The command line and its configuration file are
executor/flags.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from executor.flags import parse_args
from executor.handlers import builtin_registry
from executor.runner import Executor
from jobsched import logs

log = logging.getLogger("jobsched.executor")


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
