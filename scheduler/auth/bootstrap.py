"""The first admin key, made without a key (there is none yet), and the executors' key of a
deployment. Two ways in for the admin key:

- `JOBSCHED_BOOTSTRAP_KEY=jsk_...` (automation: a secret from the deployment's secret store):
  each scheduler, at start, stores that key as an admin key for every tenant when no usable
  admin key exists. Replicas starting together make one (an advisory lock); a bootstrap key
  that was revoked is never revived, and once any admin key exists the variable does nothing.
- `jobsched keys bootstrap --database-url URL` (a person at a terminal): reaches the database
  directly, like `jobsched migrate`, makes a fresh admin key when none exists and prints it,
  once. Whoever can reach the database owns the scheduler anyway.

And `JOBSCHED_BOOTSTRAP_EXECUTOR_KEY=jsk_...` (a deployment's executors' key, from the same
secret store as their JOBSCHED_TOKEN): each scheduler, at start, stores it as an executor key
for every tenant unless a key of that value exists (revoked, it stays revoked). Rotating it:
deploy a new value (schedulers first), then revoke the old key (`jobsched keys revoke`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from scheduler.api.auth_service import make_key
from scheduler.domain.auth import ALL_TENANTS, ApiKeyRecord, Role, check_key_format
from scheduler.domain.errors import Unauthenticated
from scheduler.store.api_keys import ApiKeyStore
from scheduler.store.database import Database

BOOTSTRAP_ENV = "JOBSCHED_BOOTSTRAP_KEY"
BOOTSTRAP_NAME = "bootstrap admin"
BOOTSTRAP_EXECUTOR_ENV = "JOBSCHED_BOOTSTRAP_EXECUTOR_KEY"
BOOTSTRAP_EXECUTOR_NAME = "bootstrap executors"


def check_bootstrap_key(value: str, variable: str = BOOTSTRAP_ENV) -> str:
    """`value` if it is a usable key (ValueError, one line, otherwise)."""
    try:
        check_key_format(value)
    except Unauthenticated:
        raise ValueError(
            f"{variable} is not an API key: jsk_ followed by 43 URL-safe base64 characters "
            "(make one with: python -c \"import secrets; print('jsk_' + secrets.token_urlsafe(32))\")"
        ) from None
    return value


async def bootstrap_admin_key(
    store: ApiKeyStore, now: datetime, secret: str | None = None
) -> tuple[ApiKeyRecord, str] | None:
    """Store an admin key for every tenant (`secret`, or a fresh one) when no usable admin key
    exists; None when one does."""
    record, key = make_key(BOOTSTRAP_NAME, Role.ADMIN, frozenset({ALL_TENANTS}), now, secret=secret)
    stored = await store.bootstrap(record, now)
    return None if stored is None else (stored, key)


async def bootstrap_executor_key(
    store: ApiKeyStore, now: datetime, secret: str
) -> ApiKeyRecord | None:
    """Store `secret` as an executor key for every tenant unless it is stored already."""
    record, _ = make_key(
        BOOTSTRAP_EXECUTOR_NAME, Role.EXECUTOR, frozenset({ALL_TENANTS}), now, secret=secret
    )
    return await store.ensure(record)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobsched keys bootstrap",
        description="Create the first admin key (for every tenant) directly in the database, "
        "when no usable admin key exists, and print it once.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="the scheduler's PostgreSQL URL (env DATABASE_URL)",
    )
    return parser


async def _bootstrap(url: str, clock: Callable[[], datetime]) -> tuple[ApiKeyRecord, str] | None:
    db = Database.from_url(url, application_name="jobsched-keys-bootstrap")
    try:
        return await bootstrap_admin_key(ApiKeyStore(db), clock())
    finally:
        await db.dispose()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.database_url:
        print("jobsched: keys bootstrap needs --database-url or DATABASE_URL", file=sys.stderr)
        return 2
    made = asyncio.run(_bootstrap(args.database_url, lambda: datetime.now(UTC)))
    if made is None:
        print(
            "jobsched: an admin key exists already; make more with `jobsched keys create` "
            "(or revoke them all to bootstrap again)",
            file=sys.stderr,
        )
        return 1
    record, secret = made
    print(secret)
    print(
        f"admin key {record.id} for every tenant; shown only now, keep it in a secret store",
        file=sys.stderr,
    )
    return 0
