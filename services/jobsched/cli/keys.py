"""`jobsched keys`: API keys for schedulers running `--auth required`: create (the secret is
printed once), ls, revoke, and bootstrap (the first admin key, straight into the database)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from jobsched.cli import services
from jobsched.cli.arguments import add_client_command, duration_arg
from jobsched.cli.exits import EXIT_ERROR, EXIT_OK
from jobsched.cli.output import print_json, time_text, to_dict
from jobsched.client import JobschedClient
from jobsched.config import Resolved

ROLES = ("viewer", "submitter", "operator", "admin", "executor")


async def _keys(client: JobschedClient, args: argparse.Namespace) -> int:
    action = args.keys_action
    if action == "create":
        key, secret = await client.create_api_key(args.name, args.role, args.tenants, args.expires)
        if args.json:
            print_json({"api_key": to_dict(key), "secret": secret})
            return EXIT_OK
        print(secret)  # stdout: alone, so that `$(jobsched keys create ...)` is the key
        print(
            f"key {key.id} ({key.role} for {', '.join(key.tenants)}): shown only now, keep it "
            "in a secret store",
            file=sys.stderr,
        )
        return EXIT_OK
    if action == "revoke":
        key = await client.revoke_api_key(args.id)
        if args.json:
            print_json(to_dict(key))
        else:
            print(f"revoked {key.id} ({key.name}) at {time_text(key, 'revoke_time')}")
        return EXIT_OK
    keys = [k async for k in client.list_api_keys()]
    if args.json:
        print_json([to_dict(k) for k in keys])
        return EXIT_OK
    table = Table()
    for column in ("id", "name", "role", "tenants", "prefix", "created", "expires", "revoked"):
        table.add_column(column)
    for k in keys:
        table.add_row(
            k.id,
            k.name,
            k.role,
            ",".join(k.tenants),
            k.prefix,
            time_text(k, "create_time"),
            time_text(k, "expire_time") if k.HasField("expire_time") else "never",
            time_text(k, "revoke_time"),
        )
    Console().print(table)
    return EXIT_OK


def _bootstrap(args: argparse.Namespace, resolved: Resolved) -> int:
    """Through the scheduler's entry point (the client package never imports the server)."""
    command = services.server_command("keys-bootstrap", "keys bootstrap")
    if isinstance(command, str):
        print(f"jobsched: {command}", file=sys.stderr)
        return EXIT_ERROR
    argv = [] if args.database_url is None else ["--database-url", args.database_url]
    return services.exit_code(command, argv)


def add_commands(commands: Any) -> None:
    """Add `jobsched keys` and its actions."""
    keys = add_client_command(
        commands, "keys", _keys, "API keys: create, ls, revoke, bootstrap (the first admin key)"
    )
    keys.epilog = (
        "Roles: viewer (read, list, watch, logs), submitter (+ submit), operator (+ cancel, "
        "retry, delete, priority, queues, schedules, job types), admin (+ keys, cluster, audit), "
        "executor (only runs jobs). Send a key with --token or JOBSCHED_TOKEN.\n\n"
        + (keys.epilog or "")
    )
    actions = keys.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a key and print its secret, once")
    create.add_argument("--name", required=True, help="a name for people, e.g. ci-deploy")
    create.add_argument("--role", required=True, choices=ROLES, help="what the key may do")
    create.add_argument(
        "--tenant",
        dest="tenants",
        action="append",
        required=True,
        metavar="T",
        help='a tenant it acts for (repeatable; "*": every tenant, if yours)',
    )
    create.add_argument(
        "--expires", type=duration_arg, metavar="D", help="lifetime, e.g. 30d (default: never)"
    )
    create.add_argument("--json", action="store_true", help="print the key and secret as JSON")
    ls = actions.add_parser("ls", help="the keys, newest first (never their secrets)")
    ls.add_argument("--json", action="store_true", help="print a JSON list")
    revoke = actions.add_parser("revoke", help="revoke a key (within 5 s on every replica)")
    revoke.add_argument("id", help="the key's id (keys ls)")
    revoke.add_argument("--json", action="store_true", help="print the key as JSON")
    bootstrap = actions.add_parser(
        "bootstrap",
        help="make the first admin key directly in the database, when none exists",
        description="Make the first admin key (for every tenant) directly in the scheduler's "
        "database, when no usable admin key exists, and print it once. Needs the server extra "
        "and the database: whoever can reach it owns the scheduler anyway. For automation, "
        "give the schedulers JOBSCHED_BOOTSTRAP_KEY=jsk_... instead.",
    )
    bootstrap.add_argument("--database-url", help="PostgreSQL URL (env DATABASE_URL)")
    bootstrap.set_defaults(local=_bootstrap)
