"""`jobsched artifacts`: list a job's artifacts and download one (its checksum verified)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.table import Table

from jobsched.artifacts import Artifact
from jobsched.cli.arguments import add_client_command
from jobsched.cli.exits import EXIT_OK
from jobsched.cli.output import make_console, print_json
from jobsched.client import JobschedClient


def _as_dict(artifact: Artifact) -> dict[str, Any]:
    return {
        "job_id": artifact.job_id,
        "name": artifact.name,
        "size_bytes": artifact.size_bytes,
        "sha256": artifact.sha256,
        "content_type": artifact.content_type,
        "attempt": artifact.attempt,
        "created_at": artifact.created_at.isoformat(),
    }


async def _artifacts(client: JobschedClient, args: argparse.Namespace) -> int:
    if args.artifacts_action == "ls":
        artifacts = await client.list_artifacts(args.id)
        if args.json:
            print_json([_as_dict(a) for a in artifacts])
            return EXIT_OK
        table = Table("NAME", "SIZE", "TYPE", "ATTEMPT", "CREATED", "SHA256", box=None)
        for a in artifacts:
            table.add_row(
                a.name,
                str(a.size_bytes),
                a.content_type,
                str(a.attempt),
                a.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                a.sha256,
            )
        make_console().print(table)
        return EXIT_OK
    if args.output == "-":
        artifact = await client.download_artifact(args.id, args.name, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        artifact = await client.download_artifact(args.id, args.name, args.output)
        print(
            f"{artifact.name}: {artifact.size_bytes} bytes, sha256 {artifact.sha256} -> "
            f"{args.output}",
            file=sys.stderr,
        )
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Add `jobsched artifacts ls ID` and `jobsched artifacts get ID NAME -o FILE`."""
    artifacts = add_client_command(
        commands, "artifacts", _artifacts, "list and download the files a job's handlers stored"
    )
    actions = artifacts.add_subparsers(dest="artifacts_action", required=True, metavar="ACTION")
    ls = actions.add_parser("ls", help="the job's artifacts: name, size, type, attempt, SHA-256")
    ls.add_argument("id", help="job id")
    ls.add_argument("--json", action="store_true", help="print a JSON list")
    get = actions.add_parser(
        "get", help="download an artifact, checking its SHA-256 (written only if it matches)"
    )
    get.add_argument("id", help="job id")
    get.add_argument("name", help="artifact name")
    get.add_argument("-o", "--output", required=True, help="file to write ('-': standard output)")
