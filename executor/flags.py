"""The executor's command line (`python -m executor`, `jobsched executor`): its options and their
environment variables.

Every option may also come from the `[executor]` table of a configuration file (`--config FILE`
or JOBSCHED_CONFIG; see jobsched/config.py): flag > environment > file > default.
"""

from __future__ import annotations

import argparse
import os
import socket

from executor.command_options import COMMAND_ENV, add_command_options
from jobsched.client import DEFAULT_ADDRESS
from jobsched.config import Program, add_config_option
from jobsched.options import add_log_level_option, seconds, whole_number
from jobsched.tls import TLS_ENV, add_tls_options
from jobsched.tokens import TOKEN_ENV, add_token_option
from jobsched.tracing import TRACING_ENV, add_tracing_options

DESCRIPTION = """Run an executor: the built-in handlers (noop, sleep, and command, which runs
only what --allow-command allows), those of --handlers modules, and those installed packages
advertise (entry point group jobsched.handlers). SIGTERM
or SIGINT stops it gracefully: no new work is taken, running jobs get --grace seconds, then the
rest are cancelled and handed back (requeued without burning an attempt)."""

ENV = {
    "schedulers": "JOBSCHED_ADDRESS",
    "name": "JOBSCHED_EXECUTOR_NAME",
    "capacity": "JOBSCHED_CAPACITY",
    "queues": "JOBSCHED_QUEUES",
    "log_level": "JOBSCHED_LOG_LEVEL",
    "handlers": "JOBSCHED_HANDLERS",
    "metrics_listen": "JOBSCHED_METRICS_LISTEN",
    **TLS_ENV,
    **TOKEN_ENV,
    **COMMAND_ENV,  # executor/command_options.py
    **TRACING_ENV,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m executor", description=DESCRIPTION)
    add_config_option(parser)
    parser.add_argument(
        "--scheduler",
        action="append",
        dest="schedulers",
        metavar="ADDR",
        help="scheduler host:port (or a gRPC target such as dns:///name:port), repeatable (env "
        f"JOBSCHED_ADDRESS, comma-separated; default {DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--name",
        help="executor name, unique among connected executors (env JOBSCHED_EXECUTOR_NAME; "
        "default host:pid)",
    )
    parser.add_argument(
        "--capacity",
        type=whole_number,
        default=10,
        help="jobs run at once (env JOBSCHED_CAPACITY; default 10)",
    )
    parser.add_argument(
        "--queue",
        action="append",
        dest="queues",
        default=[],
        metavar="Q",
        help="queue to take work from, repeatable (env JOBSCHED_QUEUES, comma-separated; "
        "default: all queues)",
    )
    parser.add_argument(
        "--handlers",
        action="append",
        dest="handlers",
        default=[],
        metavar="MODULE[:ATTR]",
        help="import MODULE and register its handlers (functions marked @jobsched.handler and "
        "its HandlerRegistry objects), or only ATTR (a registry or one handler); repeatable "
        "(env JOBSCHED_HANDLERS, comma-separated). The current directory is importable",
    )
    parser.add_argument(
        "--grace", type=seconds, default=30.0, help="seconds running jobs get on shutdown"
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        type=listen_address,
        help="serve Prometheus metrics (/metrics) and /healthz on HOST:PORT (port 0: any free "
        "one); needs the telemetry extra (env JOBSCHED_METRICS_LISTEN; default: off)",
    )
    add_log_level_option(parser)
    add_tls_options(parser)
    add_token_option(parser)
    add_command_options(parser)
    add_tracing_options(parser)
    return parser


def listen_address(value: str) -> str:
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return value


PROGRAM = Program("executor", build_parser, ENV)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = PROGRAM.resolve(argv).args
    if not args.schedulers:
        args.schedulers = [DEFAULT_ADDRESS]
    if args.name is None:
        args.name = f"{socket.gethostname()}:{os.getpid()}"
    return args
