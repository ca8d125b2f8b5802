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
from typing import TYPE_CHECKING

from opentelemetry import trace

from executor.command import COMMAND_TYPE, CommandHandler
from executor.command_options import command_settings
from executor.flags import parse_args
from executor.handlers import HandlerRegistry, builtin_registry
from executor.loading import HandlerLoadError, Loaded, load_handlers
from executor.runner import Executor
from jobsched import logs
from jobsched.metric_exporters import metrics_pushed
from jobsched.tls import ClientTLS, TLSConfigError, tls_from_args
from jobsched.tracing import TracingSettings

if TYPE_CHECKING:
    from executor.metrics import ExecutorMetrics

log = logging.getLogger("jobsched.executor")


def registry_of(args: argparse.Namespace) -> tuple[HandlerRegistry, Loaded]:
    """The built-in handlers and the user's (HandlerLoadError when those cannot be loaded)."""
    registry = builtin_registry([(COMMAND_TYPE, CommandHandler(command_settings(args)))])
    loaded = load_handlers(registry, args.handlers)
    return registry, loaded


def metrics_of(args: argparse.Namespace) -> ExecutorMetrics | None:
    """The metrics, when --metrics-listen or OTEL_METRICS_EXPORTER asks for them (ValueError
    for a bad exporter name; ImportError without the telemetry extra)."""
    pushed = metrics_pushed()
    if args.metrics_listen is None and not pushed:
        return None
    try:
        from executor.metrics import ExecutorMetrics
    except ImportError as exc:
        raise ImportError(
            f"metrics need the telemetry extra (pip install 'jobsched[telemetry]'): {exc}"
        ) from exc
    return ExecutorMetrics(prometheus=args.metrics_listen is not None, capacity=args.capacity)


async def run(
    args: argparse.Namespace,
    registry: HandlerRegistry,
    loaded: Loaded,
    tls: ClientTLS | None,
    metrics: ExecutorMetrics | None = None,
) -> None:
    tracing = TracingSettings.from_args(args, "jobsched-executor").build()
    if tracing is not None:
        # This process is one executor: its provider is also the global one, so that handler
        # code using trace.get_tracer(...) records spans in the attempt's trace.
        trace.set_tracer_provider(tracing.provider)
    executor = Executor(
        args.schedulers,
        name=args.name,
        capacity=args.capacity,
        registry=registry,
        queues=args.queues,
        tls=tls,
        token=args.token,
        metrics=metrics,
        tracing=tracing,
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
    served = None
    if metrics is not None and args.metrics_listen is not None:
        from jobsched.metrics_http import MetricsServer

        served = MetricsServer(args.metrics_listen, metrics.exposition)
        await served.start()
    await executor.start()
    try:
        await stop.wait()
    finally:
        await executor.stop(grace=args.grace)
        if served is not None:
            await served.stop()
        if metrics is not None:
            await asyncio.to_thread(metrics.shutdown)  # the last OTLP export
        if tracing is not None:
            tracing.shutdown()  # exports the spans still buffered


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level)
    try:
        tls = tls_from_args(args)
        registry, loaded = registry_of(args)
        metrics = metrics_of(args)
    except (HandlerLoadError, TLSConfigError, ValueError, ImportError) as exc:
        print(f"jobsched executor: {exc}", file=sys.stderr, flush=True)
        return 2
    asyncio.run(run(args, registry, loaded, tls, metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
