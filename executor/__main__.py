"""`python -m executor`: an executor running the built-in handlers (noop, sleep) and the user's
(`--handlers`, executor/loading.py), until SIGTERM or SIGINT stops it gracefully. The command
line and its configuration file are executor/flags.py.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from executor.command import COMMAND_TYPE, CommandHandler
from executor.command_options import command_settings
from executor.flags import parse_args
from executor.handlers import HandlerRegistry, builtin_registry
from executor.loading import HandlerLoadError, Loaded, load_handlers
from executor.runner import Executor
from jobsched import logs
from jobsched.tls import ClientTLS, TLSConfigError, tls_from_args

log = logging.getLogger("jobsched.executor")


def registry_of(args: argparse.Namespace) -> tuple[HandlerRegistry, Loaded]:
    """The built-in handlers and the user's (HandlerLoadError when those cannot be loaded)."""
    registry = builtin_registry([(COMMAND_TYPE, CommandHandler(command_settings(args)))])
    loaded = load_handlers(registry, args.handlers)
    return registry, loaded


async def run(
    args: argparse.Namespace, registry: HandlerRegistry, loaded: Loaded, tls: ClientTLS | None
) -> None:
    executor = Executor(
        args.schedulers,
        name=args.name,
        capacity=args.capacity,
        registry=registry,
        queues=args.queues,
        tls=tls,
        token=args.token,
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
                "handlers": loaded.describe(),
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
    try:
        tls = tls_from_args(args)
        registry, loaded = registry_of(args)
    except (HandlerLoadError, TLSConfigError) as exc:
        print(f"jobsched executor: {exc}", file=sys.stderr, flush=True)
        return 2
    asyncio.run(run(args, registry, loaded, tls))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
