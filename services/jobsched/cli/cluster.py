"""`jobsched cluster`: the scheduler replicas (which leads, since when, at which epoch) and the
executors connected to each (slots used, job types, queues, draining)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from jobsched.cli.arguments import add_client_command
from jobsched.cli.exits import EXIT_OK
from jobsched.cli.output import make_console, print_json, time_text, to_dict
from jobsched.client import JobschedClient


async def _cluster(client: JobschedClient, args: argparse.Namespace) -> int:
    status = await client.cluster_status()
    if args.json:
        print_json(to_dict(status))
        return EXIT_OK
    console = make_console()
    leader = status.leader_id or "none"
    console.print(
        f"leader {leader}, epoch {status.epoch}, since {time_text(status, 'leader_since')}"
    )
    replicas = Table(title="replicas", title_justify="left")
    for column in ("id", "address", "leader", "started", "last seen", "executors"):
        replicas.add_column(column, no_wrap=True)
    executors = Table(title="executors", title_justify="left")
    for column in ("name", "replica", "running", "capacity", "job types", "queues", "draining"):
        executors.add_column(column, no_wrap=column not in {"job types", "queues"})
    for replica in status.replicas:
        replicas.add_row(
            replica.id,
            replica.address,
            "yes" if replica.leader else "",
            time_text(replica, "start_time"),
            time_text(replica, "last_seen_time"),
            str(len(replica.executors)),
        )
        for executor in replica.executors:
            executors.add_row(
                executor.name,
                replica.id,
                str(executor.running),
                str(executor.capacity),
                ", ".join(executor.job_types),
                ", ".join(executor.queues) or "all",
                "yes" if executor.draining else "",
            )
    console.print(replicas)
    console.print(executors)
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Add `jobsched cluster`."""
    cluster = add_client_command(
        commands, "cluster", _cluster, "show the scheduler replicas, the leader and the executors"
    )
    cluster.add_argument("--json", action="store_true", help="print the status as JSON")
