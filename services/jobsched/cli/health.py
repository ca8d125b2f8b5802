"""`jobsched health`: the gRPC health status of schedulers, for container health checks and
probes. Exit 0 when every address answers SERVING, 5 otherwise."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobsched.cli.arguments import add_client_command
from jobsched.cli.exits import EXIT_OK, EXIT_UNAVAILABLE
from jobsched.client import JobschedClient
from jobsched.errors import JobschedError


async def _health(client: JobschedClient, args: argparse.Namespace) -> int:
    healthy = True
    for address in client.addresses:
        try:
            status = await client.health(args.service, address=address)
        except JobschedError as err:
            status = f"unreachable ({err.message})"
        healthy = healthy and status == "SERVING"
        print(f"{address} {status}", file=sys.stdout if status == "SERVING" else sys.stderr)
    return EXIT_OK if healthy else EXIT_UNAVAILABLE


def add_commands(commands: Any) -> None:
    """Add `jobsched health`."""
    health = add_client_command(
        commands,
        "health",
        _health,
        "check that the schedulers at --address are SERVING (exit 0) or not (exit 5)",
    )
    health.add_argument(
        "--service",
        default="",
        help="the health service name (default: the whole server; also jobsched.v1.JobService)",
    )
